"""A stand-in brain in a process of its own: publishes `brain/action` (the simulated arm's five channels) at a
rate until killed, the joints swinging slowly so an arm that follows it keeps moving.

    python tests/fakes/brain_actions.py --endpoint ipc:///tmp/run/brain.sock --rate 10 --amplitude 0.5

Prints `bound <endpoint>` once bound. SIGKILL is what the watchdog tests use.
"""

import argparse
import sys
import time

import numpy as np

from runtime.transport import Publisher


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--endpoint", required=True)
    parser.add_argument("--rate", type=float, default=10.0)
    parser.add_argument("--amplitude", type=float, default=0.5, help="rad, on the four arm channels")
    parser.add_argument("--period", type=float, default=2.0, help="s, of the swing")
    args = parser.parse_args(argv)
    pub = Publisher(args.endpoint, "brain", heartbeat_period_s=0.2)
    print(f"bound {pub.endpoint}", flush=True)
    start = next_t = time.perf_counter()
    while True:
        now = time.perf_counter()
        if now >= next_t:
            phase = 2 * np.pi * (now - start) / args.period
            action = np.append(args.amplitude * np.sin(phase + np.arange(4)), np.sin(phase)).astype(
                np.float32
            )
            pub.publish("brain/action", "action", action, time.monotonic_ns())
            next_t += 1.0 / args.rate
        pub.service()
        time.sleep(0.002)


if __name__ == "__main__":
    sys.exit(main())
