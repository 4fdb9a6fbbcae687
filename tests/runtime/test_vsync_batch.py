"""`VSync.push_many` (a batch per call, the brain's path) gives exactly the ticks and counts of `push`."""

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from runtime.vsync import Assemble, StreamConfig, VSync, VSyncConfig
from runtime.vsync.synthetic import SyntheticStream, generate


def _ticks_equal(a, b) -> None:
    assert len(a) == len(b)
    for x, y in zip(a, b, strict=True):
        assert (x.index, x.capture_ns, x.window_start_ns, x.window_end_ns, x.by_deadline) == (
            y.index,
            y.capture_ns,
            y.window_start_ns,
            y.window_end_ns,
            y.by_deadline,
        )
        assert x.dt_eff == y.dt_eff
        np.testing.assert_array_equal(x.samples, y.samples)
        np.testing.assert_array_equal(x.status, y.status)
        for u, v in zip(x.data, y.data, strict=True):
            assert (u is None) == (v is None)
            if u is not None:
                np.testing.assert_array_equal(u, v)


@settings(max_examples=30, deadline=None)
@given(
    seed=st.integers(0, 2**16),
    jitter=st.floats(0.0, 0.3),
    drop=st.floats(0.0, 0.2),
    batch=st.integers(1, 50),
    events=st.booleans(),
)
def test_push_many_equals_push(seed, jitter, drop, batch, events):
    """Any jitter and drop rate, fed in batches of any size (plus an unknown topic and a duplicate): the same
    ticks (times, windows, samples, status, data) and the same per-stream counts as one push each."""
    streams = (
        SyntheticStream("cam", 30.0, Assemble.NEAREST, jitter, drop),
        SyntheticStream("mic", 100.0, Assemble.CONCAT, jitter, drop, chunk=4),
        SyntheticStream("act", 10.0, Assemble.HOLD, jitter, drop),
    )
    cfg = VSyncConfig(streams=tuple(s.config() for s in streams), event_stream="act" if events else None)
    samples = generate(streams, 6.0, seed=seed)
    names = ["cam", "mic", "act"]
    rows = [(names[r["stream"]], int(r["seq"]), int(r["stamp_ns"]), int(r["arrival_ns"])) for r in samples]
    rows.insert(len(rows) // 2, ("nobody", 0, rows[len(rows) // 2][2], rows[len(rows) // 2][3]))
    rows.insert(len(rows) // 3, rows[len(rows) // 3 - 1])  # a duplicate
    payload = {"cam": np.zeros(2), "mic": np.arange(4.0), "act": np.ones(3), "nobody": None}
    one, many = VSync(cfg, clock=lambda: rows[-1][3]), VSync(cfg, clock=lambda: rows[-1][3])
    ticks_one = []
    for name, seq, stamp, arrival in rows:
        ticks_one += one.push(name, seq, stamp, payload[name], arrival)
    ticks_many = []
    for i in range(0, len(rows), batch):
        chunk = rows[i : i + batch]
        ticks_many += many.push_many(
            [r[0] for r in chunk],
            [r[1] for r in chunk],
            [r[2] for r in chunk],
            [payload[r[0]] for r in chunk],
            [r[3] for r in chunk],
        )
    ticks_one += one.flush()
    ticks_many += many.flush()
    _ticks_equal(ticks_one, ticks_many)
    assert one.status() == many.status()
    assert one.unknown_streams == many.unknown_streams == 1


def test_push_many_without_arrival_uses_the_clock():
    """With no arrival times the batch arrives now (one clock read): a stamp from the future is refused."""
    now = 10**12
    v = VSync(VSyncConfig(streams=(StreamConfig("cam", 30.0),)), clock=lambda: now)
    v.push_many(["cam", "cam"], [0, 1], [now - 1_000_000, now + 10**9], [None, None])
    s = v.status()[0]
    assert s.received == 2 and s.dropped["future"] == 1
