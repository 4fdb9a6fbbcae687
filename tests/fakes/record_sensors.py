"""A sensor publisher for record/replay tests: camera, audio and proprioception at native rates, real ZeroMQ.

    python tests/fakes/record_sensors.py --endpoint ipc:///tmp/x/sensors.sock --seconds 3 --go-file /tmp/x/go

Binds a `Publisher`, answers handshakes until `--go-file` exists, then publishes for `--seconds`: `cam/image`
(uint8 HxWx3, 30 Hz), `mic/audio` (160 float32, 100 Hz: 10 ms chunks at 16 kHz) and `arm/joint` (10 float32,
100 Hz), each on its own schedule. Every payload is a function of (topic, seq), see `sample`, so a test can
check a recording against what was sent. At the end it prints one JSON line: messages sent per topic.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from functools import lru_cache
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository root, for `runtime`

from runtime.transport import Publisher  # noqa: E402

RATES_HZ = {"cam/image": 30.0, "mic/audio": 100.0, "arm/joint": 100.0}
KINDS = {"cam/image": "image", "mic/audio": "audio", "arm/joint": "joint"}


@lru_cache(maxsize=4)
def _frames(height: int, width: int) -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (4, height, width, 3), dtype=np.uint8)


def sample(topic: str, seq: int, camera_shape: tuple[int, int] = (64, 64)) -> np.ndarray:
    """The payload the publisher sends as message `seq` of `topic`."""
    if topic == "cam/image":
        frame = _frames(*camera_shape)[seq % 4].copy()
        frame.reshape(-1)[:8] = np.frombuffer(np.int64(seq).tobytes(), np.uint8)  # every frame differs
        return frame
    if topic == "mic/audio":
        t = (seq * 160 + np.arange(160)) / 16_000
        return np.sin(2 * np.pi * 440 * t).astype(np.float32)
    if topic == "arm/joint":
        return (np.arange(10) * 0.1 + seq * 0.01).astype(np.float32)
    raise KeyError(topic)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--endpoint", required=True)
    parser.add_argument("--seconds", type=float, required=True)
    parser.add_argument("--go-file", type=Path, required=True)
    parser.add_argument("--camera", default="64x64", help="HxW of the camera image")
    parser.add_argument("--source", default="sensors")
    args = parser.parse_args(argv)
    camera_shape = tuple(int(v) for v in args.camera.split("x"))
    pub = Publisher(args.endpoint, args.source)
    deadline = time.monotonic() + 60
    while not args.go_file.exists():
        if time.monotonic() > deadline:
            print("record_sensors: no go file within 60 s", file=sys.stderr)
            return 1
        pub.service()
        time.sleep(0.002)
    counts = dict.fromkeys(RATES_HZ, 0)
    start = time.monotonic()
    due = dict.fromkeys(RATES_HZ, start)
    while True:
        topic = min(due, key=due.get)
        if due[topic] - start >= args.seconds:
            break
        while (left := due[topic] - time.monotonic()) > 0:
            pub.service()
            time.sleep(min(left, 0.005))
        data = sample(topic, counts[topic], camera_shape)
        pub.publish(topic, KINDS[topic], data, time.monotonic_ns())
        counts[topic] += 1
        due[topic] += 1.0 / RATES_HZ[topic]
    end = time.monotonic() + 0.5  # the socket closes with linger 0: let queued messages leave first
    while time.monotonic() < end:
        pub.service()
        time.sleep(0.01)
    pub.close()
    print(json.dumps(counts), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
