"""A publisher in a process of its own, for transport tests: publishes topics at given rates until killed.

    python tests/fakes/publisher_proc.py --endpoint ipc:///tmp/t/pub --source cam \\
        --topic cam/image:image:uint8:64x64x3:30 --topic mic/audio:audio:float32:160:100

A topic is NAME:KIND:DTYPE:SHAPE:RATE (SHAPE like 64x64x3 or 160, RATE in Hz). Each sample is stamped with
`time.monotonic_ns()` when published, on a fixed schedule per topic (a late loop catches up, so the mean rate
holds). Heartbeats and handshakes are serviced between sends.

stdout, one flushed line each: `bound <endpoint>` once bound (a wildcard port resolved);
`welcome <topic>=<next seq> ...` for every handshake answered (the sequence number each topic publishes next,
so a test can check that nothing after the welcome was missed); `done <topic>=<count> ...` when it stops.
SIGTERM stops it cleanly; SIGKILL is what the liveness tests use.
"""

import argparse
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from runtime.messages import DTYPES
from runtime.transport import CurveServer, Publisher


@dataclass
class Topic:
    name: str
    kind: str
    data: np.ndarray
    period_s: float
    next_t: float = 0.0
    count: int = 0


def parse_topic(spec: str) -> Topic:
    try:
        name, kind, dtype, shape, rate = spec.split(":")
        dims = tuple(int(d) for d in shape.split("x"))
        rate_hz = float(rate)
    except ValueError:
        raise argparse.ArgumentTypeError(f"topic must be NAME:KIND:DTYPE:SHAPE:RATE, got {spec!r}") from None
    if dtype not in DTYPES or not rate_hz > 0:
        raise argparse.ArgumentTypeError(f"unknown dtype or rate <= 0 in {spec!r}")
    data = (np.arange(int(np.prod(dims))) % 251).astype(DTYPES[dtype]).reshape(dims)
    return Topic(name, kind, data, 1.0 / rate_hz)


class LoggingPublisher(Publisher):
    """Prints, for each handshake it answers, the sequence number every topic will publish next."""

    topics: list[Topic] = []

    def service(self) -> None:
        welcomes = self.welcomes
        super().service()
        # Nothing is published inside service(), so the counts now are the counts when the welcome went out.
        for _ in range(self.welcomes - welcomes):
            print("welcome " + " ".join(f"{t.name}={t.count}" for t in self.topics), flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--endpoint", required=True)
    parser.add_argument("--source", default="fake")
    parser.add_argument("--topic", type=parse_topic, action="append", default=[], dest="topics")
    parser.add_argument("--heartbeat", type=float, default=0.2, help="heartbeat period, seconds")
    parser.add_argument("--sndhwm", type=int, default=100)
    parser.add_argument("--seconds", type=float, default=None, help="stop publishing after this long")
    parser.add_argument(
        "--wait-subscribers", type=int, default=0, help="publish once this many topic subscriptions exist"
    )
    parser.add_argument("--curve-secret", type=Path, default=None, help="server secret certificate")
    parser.add_argument("--curve-clients", type=Path, default=None, help="authorized client public keys")
    args = parser.parse_args(argv)

    stopping = False

    def stop(_signum, _frame):
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    curve = CurveServer(args.curve_secret, args.curve_clients) if args.curve_secret else None
    pub = LoggingPublisher(
        args.endpoint, args.source, heartbeat_period_s=args.heartbeat, sndhwm=args.sndhwm, curve=curve
    )
    pub.topics = args.topics
    print(f"bound {pub.endpoint}", flush=True)
    if args.wait_subscribers and not pub.wait_for_subscribers(args.wait_subscribers, timeout_s=20):
        print("no subscribers", flush=True)
        return 1
    start = time.perf_counter()
    for t in args.topics:
        t.next_t = start
    try:
        while not stopping and (args.seconds is None or time.perf_counter() - start < args.seconds):
            now = time.perf_counter()
            for t in args.topics:
                if now - t.next_t > 0.5:  # stalled for long (suspended): restart the schedule, no burst
                    t.next_t = now
                while t.next_t <= now:
                    pub.publish(t.name, t.kind, t.data, time.monotonic_ns())
                    t.count += 1
                    t.next_t += t.period_s
            pub.service()
            due = min((t.next_t for t in args.topics), default=now + 0.005)
            time.sleep(min(0.005, max(0.0, due - time.perf_counter())))
        if not stopping:  # finished: keep answering for a moment so the last messages and heartbeats go out
            end = time.perf_counter() + 0.3
            while time.perf_counter() < end and not stopping:
                pub.service()
                time.sleep(0.005)
    finally:
        print("done " + " ".join(f"{t.name}={t.count}" for t in args.topics), flush=True)
        pub.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
