"""Synthetic sensor streams with ground-truth capture times, for the V-sync benchmark and tests.

Each stream samples on its own clock: regularly, at its nominal rate times (1 +- drift). Its capture stamp is
the true capture time plus a stamping delay uniform in [0, jitter * period] (the driver stamps the sample
when it hands it over: late, never early); a fraction `drop` of captures never arrives. A message arrives
a transport delay after its stamp. The sensors are fakes; the timing model is the one the scheduler's
oscillators are built for, stated here so the benchmark can be judged by it.
"""

from dataclasses import dataclass

import numpy as np

from runtime.vsync.config import Assemble, StreamConfig


@dataclass(frozen=True)
class SyntheticStream:
    name: str
    nominal_hz: float
    assemble: Assemble = Assemble.NEAREST
    jitter: float = 0.3  # stamping delay up to this fraction of the period
    drop: float = 0.05  # fraction of captures lost
    drift: float = 0.01  # true rate = nominal * (1 + drift) or (1 - drift), sign drawn per stream
    chunk: int = 1  # rows per sample (audio: samples per chunk), for CONCAT payloads

    def config(self, **overrides) -> StreamConfig:
        return StreamConfig(self.name, self.nominal_hz, self.assemble, **overrides)


# The benchmark's streams (issue 4): vision 30 Hz, audio 100 chunks/s, actions 10 Hz.
BENCH_STREAMS = (
    SyntheticStream("camera", 30.0, Assemble.NEAREST),
    SyntheticStream("audio", 100.0, Assemble.CONCAT, chunk=160),
    SyntheticStream("action", 10.0, Assemble.HOLD),
)

SAMPLE_DTYPE = np.dtype(
    [
        ("stream", np.int64),
        ("seq", np.int64),
        ("true_ns", np.int64),
        ("stamp_ns", np.int64),
        ("arrival_ns", np.int64),
    ]
)


def generate(
    streams: tuple[SyntheticStream, ...],
    seconds: float,
    seed: int = 0,
    start_ns: int = 10**12,
    transport_s: tuple[float, float] = (50e-6, 300e-6),
) -> np.ndarray:
    """Every sample of every stream over `seconds`, sorted by arrival: a SAMPLE_DTYPE record array."""
    rng = np.random.default_rng(seed)
    parts = []
    for k, s in enumerate(streams):
        period_ns = 1e9 / s.nominal_hz
        true_period = period_ns / (1.0 + rng.choice((-1.0, 1.0)) * s.drift)
        n = int(seconds * s.nominal_hz * (1.0 + s.drift)) + 1
        true = start_ns + rng.uniform(0.0, period_ns) + np.arange(n) * true_period
        true = true[true < start_ns + seconds * 1e9]
        kept = rng.random(true.size) >= s.drop
        true = true[kept]
        stamp = true + rng.uniform(0.0, s.jitter * period_ns, true.size)
        arrival = stamp + rng.uniform(transport_s[0] * 1e9, transport_s[1] * 1e9, true.size)
        part = np.empty(true.size, SAMPLE_DTYPE)
        part["stream"] = k
        part["seq"] = np.arange(true.size)  # what the publisher numbers: lost captures were never sent
        part["true_ns"] = np.round(true)
        part["stamp_ns"] = np.round(stamp)
        part["arrival_ns"] = np.round(arrival)
        parts.append(part)
    samples = np.concatenate(parts)
    return samples[np.argsort(samples["arrival_ns"], kind="stable")]


def payloads(streams: tuple[SyntheticStream, ...]) -> list[np.ndarray]:
    """One read-only payload per stream (the scheduler never looks inside, except CONCAT's shape)."""
    out = []
    for s in streams:
        data = np.zeros((s.chunk,) if s.assemble is Assemble.CONCAT else (4,), np.float32)
        data.flags.writeable = False
        out.append(data)
    return out
