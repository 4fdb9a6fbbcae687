"""`python -m launch.bench transport`: capture-to-receive latency between two processes, ours vs bare pyzmq.

A publisher process stamps each frame with `time.monotonic_ns()` just before publishing; the subscriber (this
process) subtracts that from its own clock on receipt (same host, same clock). The raw baseline sends the
same frames with bare pyzmq PUB/SUB and a msgpack map {capture_ns, data}, same rate, same endpoints, same run.

Ours and raw alternate in rounds, and which goes first alternates too, so a slow or fast spell of a shared
machine hits both alike; the percentiles pool every round's frames, and the details keep each round's p50.
"""

import multiprocessing as mp
import os
import tempfile
import time
from dataclasses import dataclass

import msgpack
import numpy as np
import zmq

from runtime.benchmarks.report import Report
from runtime.transport import Publisher, Subscriber

TARGETS = {"hop_p50_us_64": ("<=", 150), "hop_p99_us_64": ("<=", 1000), "overhead_ratio_64": ("<=", 1.3)}


@dataclass
class TransportBenchConfig:
    frames: int = 4000
    """Frames per measurement (image sizes 64 and 224, ours and raw)."""
    rounds: int = 8
    """Ours and raw alternate this many times (frames split evenly), so both see the same machine state."""
    rate_hz: float = 500.0
    """Publish rate of the timed frames."""
    audio_seconds: float = 2.0
    """Duration of the audio throughput measurement (lossless 10 ms chunks)."""
    audio_rate_hz: float = 20_000.0
    """Chunks per second offered in the audio measurement: 200x the native 100 chunks/s."""


def _ours_publisher(endpoint: str, side: int, frames: int, rate_hz: float, start: mp.Event) -> None:
    pub = Publisher(endpoint, "bench")
    image = np.random.default_rng(0).integers(0, 255, (side, side, 3), dtype=np.uint8)
    deadline = time.monotonic() + 10
    while not start.is_set() and time.monotonic() < deadline:
        pub.service()
        time.sleep(0.001)
    period = 1.0 / rate_hz
    next_t = time.perf_counter()
    for _ in range(frames):
        pub.service()
        pub.publish("camera/image", "image", image, time.monotonic_ns())
        next_t += period
        time.sleep(max(0.0, next_t - time.perf_counter()))
    time.sleep(0.2)
    pub.close()


def _raw_publisher(endpoint: str, side: int, frames: int, rate_hz: float, start: mp.Event) -> None:
    ctx = zmq.Context()
    sock = ctx.socket(zmq.PUB)
    sock.setsockopt(zmq.LINGER, 0)
    sock.bind(endpoint)
    image = np.random.default_rng(0).integers(0, 255, (side, side, 3), dtype=np.uint8)
    start.wait(10)
    period = 1.0 / rate_hz
    next_t = time.perf_counter()
    for _ in range(frames):
        sock.send(msgpack.packb({"capture_ns": time.monotonic_ns(), "data": image.tobytes()}))
        next_t += period
        time.sleep(max(0.0, next_t - time.perf_counter()))
    time.sleep(0.2)
    sock.close()
    ctx.term()


def _audio_publisher(endpoint: str, seconds: float, rate_hz: float, start: mp.Event) -> None:
    pub = Publisher(endpoint, "bench")
    chunk = np.zeros(160, np.float32)
    while not start.is_set():
        pub.service()
        time.sleep(0.001)
    t0 = time.perf_counter()
    sent = 0
    while (elapsed := time.perf_counter() - t0) < seconds:
        due = int(elapsed * rate_hz)  # paced in 1 ms bursts: offered load, not a flood
        while sent < due:
            pub.publish("mic/audio", "audio", chunk, time.monotonic_ns())
            sent += 1
        pub.service()
        time.sleep(0.001)
    time.sleep(0.2)
    pub.close()


def _measure_ours(endpoint: str, side: int, cfg: TransportBenchConfig) -> np.ndarray:
    ctx = mp.get_context("spawn")
    start = ctx.Event()
    proc = ctx.Process(target=_ours_publisher, args=(endpoint, side, cfg.frames, cfg.rate_hz, start))
    proc.start()
    sub = Subscriber([endpoint], {"camera/image": "lossless"}, name="bench")
    if not sub.wait_ready(10):
        raise RuntimeError("benchmark publisher never became ready")
    latencies: list[int] = []
    start.set()
    deadline = time.monotonic() + cfg.frames / cfg.rate_hz + 10
    while len(latencies) < cfg.frames and time.monotonic() < deadline:
        for msg in sub.poll(0.1):
            latencies.append(time.monotonic_ns() - msg.capture_ns)
    sub.close()
    proc.join(5)
    return np.array(latencies, np.float64) / 1e3  # microseconds


def _measure_raw(endpoint: str, side: int, cfg: TransportBenchConfig) -> np.ndarray:
    ctx = mp.get_context("spawn")
    start = ctx.Event()
    proc = ctx.Process(target=_raw_publisher, args=(endpoint, side, cfg.frames, cfg.rate_hz, start))
    proc.start()
    zctx = zmq.Context()
    sock = zctx.socket(zmq.SUB)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.SUBSCRIBE, b"")
    sock.connect(endpoint)
    time.sleep(1.0)  # bare pyzmq has no handshake: wait out the slow joiner
    poller = zmq.Poller()
    poller.register(sock, zmq.POLLIN)
    latencies: list[int] = []
    start.set()
    deadline = time.monotonic() + cfg.frames / cfg.rate_hz + 10
    while len(latencies) < cfg.frames and time.monotonic() < deadline:
        if poller.poll(100):
            while True:
                try:
                    raw = sock.recv(zmq.NOBLOCK)
                except zmq.Again:
                    break
                msg = msgpack.unpackb(raw)
                np.frombuffer(msg["data"], np.uint8).reshape(side, side, 3)
                latencies.append(time.monotonic_ns() - msg["capture_ns"])
    sock.close()
    zctx.term()
    proc.join(5)
    return np.array(latencies, np.float64) / 1e3  # microseconds


def _measure_audio(endpoint: str, cfg: TransportBenchConfig) -> tuple[float, int]:
    ctx = mp.get_context("spawn")
    start = ctx.Event()
    proc = ctx.Process(target=_audio_publisher, args=(endpoint, cfg.audio_seconds, cfg.audio_rate_hz, start))
    proc.start()
    sub = Subscriber([endpoint], {"mic/audio": "lossless"}, name="bench")
    sub.wait_ready(10)
    start.set()
    got, first, last = 0, None, None
    deadline = time.monotonic() + cfg.audio_seconds + 5
    while proc.is_alive() or got == 0:
        msgs = sub.poll(0.05)
        if msgs:
            now = time.monotonic()
            first = first or now
            last = now
            got += len(msgs)
        if time.monotonic() > deadline:
            break
    while msgs := sub.poll(0.05):
        got += len(msgs)
        last = time.monotonic()
    gaps = sub.stats.topics["mic/audio"].gaps
    sub.close()
    proc.join(5)
    return got / max(1e-9, (last or 0) - (first or 0)), gaps


def _percentiles_us(samples: list[np.ndarray]) -> dict[str, float]:
    merged = np.concatenate(samples)
    p50, p99 = np.percentile(merged, [50, 99])
    return {"p50": float(p50), "p99": float(p99), "count": int(merged.size)}


def _round_p50s(samples: list[np.ndarray]) -> list[float]:
    return [round(float(np.percentile(s, 50)), 1) if s.size else float("nan") for s in samples]


def run(cfg: TransportBenchConfig) -> Report:
    report = Report("transport", config=vars(cfg).copy(), targets=TARGETS)
    block = TransportBenchConfig(frames=max(1, cfg.frames // cfg.rounds), rate_hz=cfg.rate_hz)
    runs: dict[str, list[np.ndarray]] = {"ours64": [], "raw64": [], "ours224": [], "raw224": []}
    with tempfile.TemporaryDirectory() as tmp:
        endpoint = lambda name: f"ipc://{tmp}/{name}-{os.getpid()}"  # noqa: E731
        for i in range(cfg.rounds):  # alternate, so a busy moment of the machine hits both sides alike
            for side in (64, 224):
                order = ("ours", "raw") if i % 2 == 0 else ("raw", "ours")  # neither always goes first
                for who in order:
                    measure = _measure_ours if who == "ours" else _measure_raw
                    runs[f"{who}{side}"].append(measure(endpoint(f"{who}{side}-{i}"), side, block))
        audio_rate, audio_gaps = _measure_audio(endpoint("audio"), cfg)
    ours64, raw64 = _percentiles_us(runs["ours64"]), _percentiles_us(runs["raw64"])
    ours224, raw224 = _percentiles_us(runs["ours224"]), _percentiles_us(runs["raw224"])
    r = report.results
    r["hop_p50_us_64"] = ours64["p50"]
    r["hop_p99_us_64"] = ours64["p99"]
    r["hop_p50_us_224"] = ours224["p50"]
    r["hop_p99_us_224"] = ours224["p99"]
    r["raw_p50_us_64"] = raw64["p50"]
    r["overhead_ratio_64"] = r["hop_p50_us_64"] / r["raw_p50_us_64"]
    r["audio_msgs_per_s"] = audio_rate
    report.details.update(
        {
            "raw_p99_us_64": raw64["p99"],
            "raw_p50_us_224": raw224["p50"],
            "raw_p99_us_224": raw224["p99"],
            "frames_received_64": ours64["count"],
            "raw_frames_received_64": raw64["count"],
            "round_p50_us_64": {"ours": _round_p50s(runs["ours64"]), "raw": _round_p50s(runs["raw64"])},
            "audio_offered_msgs_per_s": cfg.audio_rate_hz,
            "audio_gaps": audio_gaps,
            "transport": "ipc (Unix domain socket), publisher in a spawned process, subscriber in this one",
        }
    )
    return report
