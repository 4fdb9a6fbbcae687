"""Ticks and scheduler status as ndarrays, for the wire (`brain/tick`, `brain/vsync`) and the dashboard."""

import numpy as np

from runtime.vsync.scheduler import StreamStatus, Tick

TICK_HEAD = ("index", "dt_eff_s", "emit_latency_ms", "by_deadline")
TICK_PER_STREAM = ("valid", "age_s", "samples")
# "dropped" counts faults: every drop reason but "superseded" (NEAREST and HOLD hand on one sample per tick
# by design, so a 100 Hz stream held into 30 Hz ticks supersedes two of three without anything being wrong).
STATUS_COLUMNS = ("rate_hz", "nominal_hz", "jitter_ms", "missed", "dropped", "stale", "relocks", "resets")


def tick_summary(tick: Tick) -> np.ndarray:
    """(4 + 3K,) float64: TICK_HEAD, then TICK_PER_STREAM for each stream in config order."""
    head = [tick.index, tick.dt_eff, (tick.emitted_ns - tick.window_end_ns) / 1e6, float(tick.by_deadline)]
    per_stream = [
        (float(slot.valid), slot.age_s, float(len(slot.seqs) if slot.fresh else 0))
        for slot in tick.streams.values()
    ]
    return np.array(head + [v for row in per_stream for v in row], np.float64)


def read_tick_summary(data: np.ndarray, streams: int) -> tuple[dict, np.ndarray]:
    """The head as a dict, and a (K, 3) array of TICK_PER_STREAM."""
    if data.shape != (len(TICK_HEAD) + len(TICK_PER_STREAM) * streams,):
        raise ValueError(f"tick summary for {streams} streams has shape {data.shape}")
    head = dict(zip(TICK_HEAD, data[: len(TICK_HEAD)].tolist(), strict=True))
    return head, data[len(TICK_HEAD) :].reshape(streams, len(TICK_PER_STREAM))


def status_table(status: list[StreamStatus]) -> np.ndarray:
    """(K, len(STATUS_COLUMNS)) float64, streams in config order."""
    return np.array(
        [
            (
                s.rate_hz,
                s.nominal_hz,
                s.jitter_ms,
                s.missed_cycles,
                s.dropped_total - s.dropped["superseded"],
                s.stale,
                s.relocks,
                s.resets,
            )
            for s in status
        ],
        np.float64,
    )
