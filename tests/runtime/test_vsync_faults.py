"""V-sync under bad input: every fault is counted per stream, never raised, and the scheduler keeps working.

All in virtual time: every sample is pushed with an explicit `arrival_ns`, the scheduler's clock is a fake,
and the driver polls at every deadline the scheduler announces, as a node would.
"""

import gc
import weakref
from collections import Counter

import numpy as np
import pytest

from runtime.vsync import DROP_REASONS, Assemble, StreamConfig, Tick, VSync, VSyncConfig

MS = 1_000_000
T0 = 10**12  # virtual time origin, ns
TRANSPORT = 150_000  # stamp -> arrival, ns


class Driver:
    """Feeds a VSync in virtual time, polling at its deadlines between arrivals; collects the ticks."""

    def __init__(self, config: VSyncConfig):
        self.now = 0
        self.v = VSync(config, clock=lambda: self.now)
        self.ticks: list[Tick] = []
        self.pushed: Counter = Counter()

    def advance(self, t: int) -> None:
        """Poll at every deadline next_deadline_ns() announces before `t`, then at `t`."""
        d = None
        while True:
            last, d = d, self.v.next_deadline_ns()
            if d is None or d >= t:
                break
            assert d != last, "a poll at the announced deadline made no progress"
            self.now = max(self.now, d)
            self.ticks += self.v.poll(self.now)
        self.now = max(self.now, t)
        self.ticks += self.v.poll(self.now)

    def push(self, name: str, seq: int, stamp: int, data=None, arrival: int | None = None) -> list[Tick]:
        arrival = stamp + TRANSPORT if arrival is None else arrival
        self.advance(arrival)
        out = self.v.push(name, seq, stamp, data, arrival_ns=arrival)
        self.ticks += out
        self.pushed[name] += 1
        return out

    def flush(self) -> None:
        self.ticks += self.v.flush()

    def status(self) -> dict:
        return {s.name: s for s in self.v.status()}

    def fresh_seqs(self, name: str) -> list[int]:
        """Sequence numbers delivered fresh, in tick order (held re-deliveries excluded)."""
        return [int(q) for t in self.ticks if t.streams[name].fresh for q in t.streams[name].seqs]

    def check_accounting(self) -> None:
        """Every sample pushed to a known stream is delivered once or counted once in a drop reason."""
        for name, s in self.status().items():
            assert s.received == self.pushed[name], name
            assert set(s.dropped) == set(DROP_REASONS)
            assert s.received == s.delivered + sum(s.dropped.values()), (name, s)
            fresh = self.fresh_seqs(name)
            assert len(fresh) == s.delivered, name
        for a, b in zip(self.ticks, self.ticks[1:], strict=False):
            assert b.index == a.index + 1
            assert b.capture_ns > a.capture_ns
            assert b.window_start_ns == a.window_end_ns


def interleaved(d: Driver, rates: dict[str, float], start_s: float, stop_s: float, data=None, seq_offset=0):
    """Push several jitter-free streams merged in stamp order, numbered from round(start_s * rate) +
    seq_offset on (so a later call continues the sequence); data maps name -> payload."""
    events = []
    for name, hz in rates.items():
        n = np.arange(round(start_s * hz), round(stop_s * hz))
        for i, t in zip(n, T0 + n * 1e9 / hz, strict=True):
            events.append((int(t), name, int(i) + seq_offset))
    events.sort()
    for t, name, i in events:
        d.push(name, i, t, (data or {}).get(name))


def cam_mic(**kw) -> VSyncConfig:
    return VSyncConfig(
        streams=(StreamConfig("cam", 30.0), StreamConfig("mic", 100.0, Assemble.CONCAT)),
        **kw,
    )


CHUNK = np.zeros(160, np.float32)


# ------------------------------------------------------------------------------------------ stamps
def test_future_stamps_counted():
    """A stamp ahead of its arrival by more than future_tolerance_s is dropped as "future"; at the bound it is
    not."""
    d = Driver(cam_mic())
    interleaved(d, {"cam": 30.0, "mic": 100.0}, 0.0, 1.0, {"mic": CHUNK})
    now = T0 + 1_000 * MS
    d.push("mic", 100, now + 10 * MS + 1, CHUNK, arrival=now)  # 1 ns beyond the tolerance
    d.push("mic", 101, now + 500 * MS, CHUNK, arrival=now)
    d.push("cam", 30, now + 3_600_000 * MS, None, arrival=now)
    assert d.status()["mic"].dropped["future"] == 2
    assert d.status()["cam"].dropped["future"] == 1
    d.push("mic", 102, now + 10 * MS, CHUNK, arrival=now)  # exactly at the tolerance: accepted
    assert d.status()["mic"].dropped["future"] == 2
    interleaved(d, {"cam": 30.0, "mic": 100.0}, 1.1, 2.0, {"mic": CHUNK})
    d.flush()
    d.check_accounting()
    assert 102 in d.fresh_seqs("mic")
    assert d.fresh_seqs("cam")[-1] == 59  # the stream goes on


def test_far_past_stamps_counted():
    """A stamp older than max_delay_s at arrival is dropped as "too_old"; a stamp inside an emitted window as
    "late"."""
    d = Driver(cam_mic())
    interleaved(d, {"cam": 30.0, "mic": 100.0}, 0.0, 2.0, {"mic": CHUNK})
    now = T0 + 2_000 * MS
    d.push("mic", 5000, now - 1_000 * MS - 1, CHUNK, arrival=now)
    d.push("cam", 5000, now - 3_600_000 * MS, None, arrival=now)
    d.push("cam", 5001, T0 - 10**11, None, arrival=now)
    d.push("mic", 5001, now - 500 * MS, CHUNK, arrival=now)  # not too old, but its window went out long ago
    s = d.status()
    assert s["mic"].dropped["too_old"] == 1 and s["cam"].dropped["too_old"] == 2
    assert s["mic"].dropped["late"] == 1
    d.push("cam", 5002, now + 5 * MS, None)
    d.advance(now + 200 * MS)
    d.flush()
    d.check_accounting()
    assert d.fresh_seqs("cam")[-1] == 5002


def test_duplicates_counted_and_delivered_once():
    """A repeated sequence number is dropped as "duplicate", right away or a while later; the original goes
    out once."""
    d = Driver(cam_mic())
    period = 1e9 / 30
    for i in range(60):
        stamp = T0 + int(i * period)
        d.push("cam", i, stamp, None)
        if i % 10 == 3:
            d.push("cam", i, stamp, None)  # the same message twice
        if i % 10 == 7:
            d.push("cam", i - 5, T0 + int((i - 5) * period), None)  # a stale retransmission
    d.flush()
    s = d.status()["cam"]
    assert s.dropped["duplicate"] == 12
    d.check_accounting()
    fresh = d.fresh_seqs("cam")
    assert sorted(fresh) == list(range(60)) and len(set(fresh)) == 60


def test_unknown_stream_counted():
    """A sample on a topic the scheduler was not configured for counts in unknown_streams, nothing else."""
    d = Driver(cam_mic())
    interleaved(d, {"cam": 30.0, "mic": 100.0}, 0.0, 0.5, {"mic": CHUNK})
    before = {n: (s.received, s.delivered) for n, s in d.status().items()}
    assert d.v.push("sim/lidar", 0, T0 + 500 * MS, None, arrival_ns=T0 + 501 * MS) == []
    assert d.v.push("", 1, T0 + 500 * MS, None, arrival_ns=T0 + 501 * MS) == []
    assert d.v.unknown_streams == 2
    assert {n: (s.received, s.delivered) for n, s in d.status().items()} == before
    assert [s.name for s in d.v.status()] == ["cam", "mic"]
    interleaved(d, {"cam": 30.0, "mic": 100.0}, 0.6, 1.0, {"mic": CHUNK})
    d.flush()
    d.check_accounting()


def test_unknown_stream_before_anything_else():
    """An unknown topic before any known sample neither starts the clock nor breaks poll/next_deadline."""
    v = VSync(cam_mic(), clock=lambda: T0)
    assert v.push("nope", 0, T0, None, arrival_ns=T0) == []
    assert v.unknown_streams == 1
    assert v.poll(T0 + 10**9) == [] and v.next_deadline_ns() is None and v.flush() == []


# ------------------------------------------------------------------------------------------ sequences
def test_sequence_reset_with_newer_stamp_is_a_restart():
    """The sequence going back while the stamp goes forward is a publisher restart: resets == 1, the
    oscillator re-locks, and the restarted publisher's samples are delivered (none taken for duplicates)."""
    d = Driver(cam_mic())
    period = 1e9 / 30
    n_old = 300  # more than dedup_window: the old sequence numbers have left the duplicate memory
    for i in range(n_old):
        d.push("cam", i, T0 + int(i * period))
    relocks = d.status()["cam"].relocks
    for i in range(100):
        d.push("cam", i, T0 + int((n_old + 20 + i) * period))  # restarted after a short outage
    d.flush()
    s = d.status()["cam"]
    assert s.resets == 1
    assert s.relocks > relocks
    assert s.dropped["duplicate"] == 0
    d.check_accounting()
    assert d.fresh_seqs("cam") == list(range(n_old)) + list(range(100))


# Regression: the duplicate check ran before the restart check, so a restart within dedup_window
# samples of the start had its new run dropped as duplicates and was never seen as a restart.
def test_sequence_reset_after_a_short_run_is_a_restart():
    """A publisher that restarts after 60 samples (fewer than dedup_window): resets == 1, nothing dropped."""
    d = Driver(cam_mic())
    period = 1e9 / 30
    for i in range(60):
        d.push("cam", i, T0 + int(i * period))
    for i in range(100):
        d.push("cam", i, T0 + int((80 + i) * period))
    d.flush()
    s = d.status()["cam"]
    d.check_accounting()
    assert (s.resets, s.dropped["duplicate"], s.delivered) == (1, 0, 160)


def test_sequence_going_back_with_an_older_stamp_is_not_a_restart():
    """A reordered (older) sample has a lower seq and an older stamp: no reset; it is delivered or counted
    late."""
    d = Driver(cam_mic())
    period = 1e9 / 30
    for i in range(0, 60, 2):
        d.push("cam", i + 1, T0 + int((i + 1) * period))
        d.push("cam", i, T0 + int(i * period), arrival=T0 + int((i + 1) * period) + TRANSPORT + 1)
    d.flush()
    s = d.status()["cam"]
    assert s.resets == 0 and s.dropped["duplicate"] == 0
    d.check_accounting()


# ------------------------------------------------------------------------------------------ bursts, floods
def test_burst_after_a_stall_loses_nothing():
    """200 samples of one stream arriving at one instant after a 0.8 s stall are each delivered or counted
    (delivered + dropped == received), and the stream is delivered normally afterwards."""
    d = Driver(VSyncConfig(streams=(StreamConfig("cam", 30.0), StreamConfig("imu", 250.0, Assemble.CONCAT))))
    events = []
    for i in range(int(3.0 * 250)):
        events.append((T0 + i * 4 * MS, "imu", i, np.full((1, 6), i, np.float32)))
    for i in range(int(3.0 * 30)):
        events.append((T0 + int(i * 1e9 / 30), "cam", i, None))
    stall = (T0 + 1_000 * MS, T0 + 1_800 * MS)
    arrivals = []
    for stamp, name, seq, data in events:
        arrival = stamp + TRANSPORT
        if name == "imu" and stall[0] <= stamp < stall[1]:
            arrival = stall[1] + TRANSPORT  # the transport held them, then delivered them all at once
        arrivals.append((arrival, stamp, name, seq, data))
    arrivals.sort(key=lambda e: (e[0], e[1]))
    burst = sum(name == "imu" and stall[0] <= stamp < stall[1] for _, stamp, name, _, _ in arrivals)
    for arrival, stamp, name, seq, data in arrivals:
        d.push(name, seq, stamp, data, arrival=arrival)
    assert burst == 200
    d.flush()
    s = d.status()["imu"]
    assert s.received == 750
    d.check_accounting()
    assert s.pending == 0
    fresh = d.fresh_seqs("imu")
    assert fresh[-50:] == list(range(700, 750))  # after the burst the stream goes on normally
    data = np.concatenate([t.streams["imu"].data for t in d.ticks if t.streams["imu"].fresh])
    assert data.shape == (len(fresh), 6) and list(data[:, 0]) == fresh


def test_burst_within_one_window_all_delivered():
    """200 chunks stamped inside one window and arriving at one instant are all delivered, in order."""
    d = Driver(cam_mic())
    interleaved(d, {"cam": 30.0, "mic": 100.0}, 0.0, 1.0, {"mic": CHUNK})
    t = T0 + 1_000 * MS
    for i in range(200):
        d.push("mic", 1000 + i, t + i * 10_000, np.full(2, i, np.float32), arrival=t + 2 * MS)
    d.push("cam", 30, t + 5 * MS, None)
    interleaved(d, {"cam": 30.0, "mic": 100.0}, 1.05, 1.5, {"mic": CHUNK}, seq_offset=2000)
    d.flush()
    d.check_accounting()
    s = d.status()["mic"]
    assert sum(s.dropped.values()) == 0
    burst = [t for t in d.ticks if t.streams["mic"].fresh and 1000 in t.streams["mic"].seqs]
    assert len(burst) == 1
    slot = burst[0].streams["mic"]
    seqs = list(slot.seqs)
    assert seqs[seqs.index(1000) : seqs.index(1000) + 200] == list(range(1000, 1200))
    assert np.all(np.diff(slot.capture_ns) >= 0)


def test_flood_beyond_max_pending_is_counted_and_bounded():
    """With no tick to take them (the event stream is silent), samples beyond max_pending are dropped as
    "overflow"; pending never exceeds max_pending, the payloads of dropped samples are not kept, and the ones
    kept go out at flush."""
    cfg = VSyncConfig(
        streams=(StreamConfig("trigger", 5.0), StreamConfig("mic", 100.0, Assemble.CONCAT)),
        event_stream="trigger",
        max_pending=16,
    )
    d = Driver(cfg)
    alive = []
    for i in range(1000):
        chunk = np.full(160, i, np.float32)
        alive.append(weakref.ref(chunk))
        d.push("mic", i, T0 + i * 10 * MS, chunk)
        del chunk
        assert d.status()["mic"].pending <= 16
    s = d.status()["mic"]
    assert s.pending == 16
    assert s.dropped["overflow"] == 1000 - 16
    gc.collect()
    assert [i for i, ref in enumerate(alive) if ref() is not None] == list(range(16))  # memory stays bounded
    d.flush()
    d.check_accounting()
    assert d.fresh_seqs("mic") == list(range(16))
    assert [row[0] for t in d.ticks for row in t.streams["mic"].data.reshape(-1, 160)] == list(range(16))


def test_flood_of_future_stamps_in_master_mode():
    """A flood stamped ahead (within the tolerance) waits for windows that cannot close yet: overflow is
    counted, pending stays bounded, and the streams go on afterwards."""
    d = Driver(cam_mic(max_pending=16, future_tolerance_s=1.0))
    interleaved(d, {"cam": 30.0, "mic": 100.0}, 0.0, 1.0, {"mic": CHUNK})
    now = T0 + 1_000 * MS
    for i in range(100):
        d.push("mic", 1000 + i, now + (i + 1) * MS, CHUNK, arrival=now)
        assert d.status()["mic"].pending <= 16
    assert d.status()["mic"].dropped["overflow"] > 0
    d.push("cam", 1000, now + 150 * MS, None)
    d.advance(now + 400 * MS)
    d.flush()
    d.check_accounting()
    assert d.status()["mic"].pending == 0


# ------------------------------------------------------------------------------------------ shapes
def odd_chunk_run(odd, position: int, master: str = "cam"):
    """cam at 10 Hz (ticks every 100 ms, windows +-50 ms), mic at 100 Hz: ~10 chunks per window (one, with mic
    the master). The chunk `position` ms after the capture at 1.0 s is replaced by `odd`."""
    cfg = VSyncConfig(
        streams=(StreamConfig("cam", 10.0), StreamConfig("mic", 100.0, Assemble.CONCAT)), master=master
    )
    d = Driver(cfg)
    events = [(T0 + i * 100 * MS, "cam", i) for i in range(20)]
    events += [(T0 + 5 * MS + i * 10 * MS, "mic", i) for i in range(200)]
    odd_seq = (1000 + position - 5) // 10
    for stamp, name, seq in sorted(events):
        data = None if name == "cam" else (odd if seq == odd_seq else np.full(160, seq, np.float32))
        d.push(name, seq, stamp, data)
    d.flush()
    return d, odd_seq


@pytest.mark.parametrize(
    "odd",
    [np.zeros((160, 2), np.float32), np.zeros(160, np.float64), np.zeros((80, 2), np.int16)],
    ids=["extra-axis", "dtype", "both"],
)
def test_concat_chunk_of_another_shape_counted(odd):
    """A CONCAT chunk whose trailing shape or dtype differs from its window's first chunk is dropped as
    "shape"; the others are concatenated."""
    d, odd_seq = odd_chunk_run(odd, position=25)
    s = d.status()["mic"]
    assert s.dropped["shape"] == 1
    d.check_accounting()
    fresh = d.fresh_seqs("mic")
    assert odd_seq not in fresh and len(fresh) == 199
    for t in d.ticks:
        slot = t.streams["mic"]
        if slot.fresh:
            assert slot.data.shape == (160 * len(slot.seqs),) and slot.data.dtype == np.float32
            assert len(slot.capture_ns) == len(slot.seqs)


def test_concat_first_length_may_vary():
    """Chunks of different lengths on axis 0 (same trailing shape and dtype) are not a shape fault."""
    d = Driver(cam_mic())
    rng = np.random.default_rng(0)
    d.push("cam", 0, T0)
    for i in range(100):
        d.push("mic", i, T0 + i * 10 * MS, np.zeros(int(rng.integers(1, 300)), np.float32))
        if i % 3 == 0:
            d.push("cam", i // 3 + 1, T0 + int((i // 3 + 1) * 1e9 / 30))
    d.flush()
    d.check_accounting()
    assert d.status()["mic"].dropped["shape"] == 0


NOT_ARRAYS = [b"\x00" * 320, [0.0] * 160, np.float32(0.0), np.zeros((), np.float32), None]
NOT_ARRAY_IDS = ["bytes", "list", "scalar", "0-d", "None"]


@pytest.mark.parametrize("odd", NOT_ARRAYS, ids=NOT_ARRAY_IDS)
def test_concat_chunk_that_is_not_an_array_counted(odd):
    """A CONCAT chunk that is not an array (bytes, a list, a scalar, None) after good chunks in its window is
    counted as "shape", not raised."""
    d, odd_seq = odd_chunk_run(odd, position=25)
    assert d.status()["mic"].dropped["shape"] == 1
    d.check_accounting()
    assert odd_seq not in d.fresh_seqs("mic")


@pytest.mark.parametrize("odd", NOT_ARRAYS, ids=NOT_ARRAY_IDS)
def test_concat_chunk_that_is_not_an_array_alone_in_its_window_counted(odd):
    """With the CONCAT stream as master (one chunk per window), a non-array chunk is counted as "shape" and
    that tick has no data for the stream; nothing is raised."""
    d, odd_seq = odd_chunk_run(odd, position=25, master="mic")
    assert d.status()["mic"].dropped["shape"] == 1
    d.check_accounting()
    stamp = T0 + 5 * MS + odd_seq * 10 * MS
    (tick,) = [t for t in d.ticks if t.window_start_ns < stamp <= t.window_end_ns]
    assert tick.streams["mic"].data is None and not tick.mask[1]


# Regression: the layout reference was each window's first chunk, so a malformed first chunk was
# delivered and the good ones dropped (or, not an array, the whole window dropped or an exception raised).
@pytest.mark.parametrize(
    "odd", [np.zeros((160, 2), np.float32), *NOT_ARRAYS], ids=["extra-axis", *NOT_ARRAY_IDS]
)
def test_concat_odd_chunk_first_in_its_window_is_the_one_dropped(odd):
    """After 1 s of (160,) float32 chunks, a malformed chunk that is the first of its window is the one
    counted as "shape"; the window's other chunks are delivered."""
    d, odd_seq = odd_chunk_run(odd, position=-45)  # 45 ms before a capture: the first chunk of its window
    assert d.status()["mic"].dropped["shape"] == 1
    d.check_accounting()
    assert d.fresh_seqs("mic") == [q for q in range(200) if q != odd_seq]


# ------------------------------------------------------------------------------------------ clocks
def test_event_stream_one_tick_per_event():
    """With event_stream, every event sample makes one tick whose window ends at that sample's stamp (and
    starts at the previous one's); other streams' samples go to the event whose window holds them."""
    cfg = VSyncConfig(
        streams=(
            StreamConfig("trigger", 5.0),
            StreamConfig("cam", 30.0),
            StreamConfig("mic", 100.0, "concat"),
        ),
        event_stream="trigger",
    )
    d = Driver(cfg)
    rng = np.random.default_rng(7)
    gaps = rng.uniform(40 * MS, 400 * MS, 30).astype(np.int64)  # irregular: button presses, not a clock
    event_stamps = list(T0 + 50 * MS + np.cumsum(gaps))
    end = event_stamps[-1] + 100 * MS
    events = [(int(t), "trigger", i) for i, t in enumerate(event_stamps)]
    events += [(int(T0 + i * 1e9 / 30), "cam", i) for i in range(int((end - T0) * 30 / 1e9))]
    events += [(T0 + 3 * MS + i * 10 * MS, "mic", i) for i in range((end - T0) // (10 * MS))]
    for stamp, name, seq in sorted(events):
        d.push(name, seq, stamp, CHUNK if name == "mic" else None)
    d.advance(end + 200 * MS)
    assert [t.window_end_ns for t in d.ticks] == event_stamps
    assert [list(t.streams["trigger"].seqs) for t in d.ticks] == [[i] for i in range(30)]
    stamps = {(n, i): s for s, n, i in events}
    for t in d.ticks:
        # The tick time is the event's capture as the oscillator estimates it, clamped into the window.
        assert t.window_start_ns <= t.capture_ns <= t.window_end_ns
        for name in ("cam", "mic"):
            for c, q in zip(t.streams[name].capture_ns, t.streams[name].seqs, strict=True):
                stamp = stamps[name, int(q)]
                assert t.window_start_ns < stamp <= t.window_end_ns
                assert c <= stamp
    assert d.ticks[0].window_start_ns <= event_stamps[0] - 200 * MS  # a nominal period, or all before it
    d.flush()
    d.check_accounting()
    assert len(d.ticks) == 31  # flush: one more window for what came after the last event


def test_free_running_tick_hz():
    """With tick_hz the ticks run at that rate (in capture time), whatever the streams' rates and phases."""
    cfg = VSyncConfig(
        streams=(StreamConfig("cam", 30.0), StreamConfig("mic", 100.0, Assemble.CONCAT)), tick_hz=50.0
    )
    d = Driver(cfg)
    interleaved(d, {"cam": 29.0, "mic": 103.0}, 0.0, 3.0, {"mic": CHUNK})
    d.flush()
    d.check_accounting()
    times = np.array([t.capture_ns for t in d.ticks])
    assert len(times) >= 145
    steps = np.diff(times)
    assert np.all(np.abs(steps - 20 * MS) <= 1), steps
    ends = np.array([t.window_end_ns for t in d.ticks])
    assert np.all(np.abs(ends - times - 10 * MS) <= 1)  # the window is the half-period either side
    assert [t.dt_eff for t in d.ticks[1:]] == pytest.approx([0.02] * (len(times) - 1))


# Regression: tick 0 took every pending sample up to its end, its start half a period before its time.
@pytest.mark.parametrize("case", ["mic-80ms-ahead", "event-after-300ms", "master-silent"])
def test_first_tick_holds_only_its_window(case):
    """Every sample a tick delivers is stamped inside its window (start exclusive, end inclusive), the first
    tick included: when a non-master stream starts 80 ms before the master, when the first event comes 300 ms
    after the other streams started, and when the master stays silent."""
    events = case == "event-after-300ms"
    streams = (
        StreamConfig("cam", 30.0),
        StreamConfig("mic", 100.0, Assemble.CONCAT),
        StreamConfig("ev", 5.0),
    )
    d = Driver(VSyncConfig(streams=streams, event_stream="ev" if events else None))
    stamps = {("mic", i): T0 + i * 10 * MS for i in range(50)}
    if case != "master-silent":
        stamps.update({("cam", i): T0 + 80 * MS + int(i * 1e9 / 30) for i in range(12)})
    if events:
        stamps["ev", 0] = T0 + 300 * MS
    for (name, seq), stamp in sorted(stamps.items(), key=lambda kv: kv[1]):
        d.push(name, seq, stamp, CHUNK if name == "mic" else None)
    d.advance(T0 + 600 * MS)
    d.flush()
    d.check_accounting()
    for t in d.ticks:
        for name, slot in t.streams.items():
            if slot.fresh:
                for q in slot.seqs:
                    assert t.window_start_ns < stamps[name, int(q)] <= t.window_end_ns, (t.index, name, q)


# Regression: tick 0 took a sample that arrived after its window opened with an earlier stamp, outside the
# window start it reported.
@pytest.mark.parametrize("assemble", [Assemble.CONCAT, Assemble.NEAREST])
def test_first_tick_holds_only_its_window_when_the_first_sample_is_overtaken(assemble):
    """The first sample arriving after the second (the first window is already open): it is delivered or
    counted in a tick whose window holds its stamp, not in tick 0 outside its window."""
    d = Driver(VSyncConfig(streams=(StreamConfig("cam", 5.0, assemble),)))
    d.push("cam", 1, T0 + 200 * MS, CHUNK)
    d.push("cam", 0, T0, CHUNK, arrival=T0 + 200 * MS + 2 * TRANSPORT)  # overtaken by seq 1
    for i in range(2, 6):
        d.push("cam", i, T0 + i * 200 * MS, CHUNK)
    d.flush()
    d.check_accounting()
    assert d.ticks[0].window_start_ns < T0 or d.status()["cam"].dropped["late"] == 1


# ------------------------------------------------------------------------------------------ deadlines
# Regression: next_deadline_ns() truncated, so a poll exactly at it did nothing and a virtual-time loop
# polling at the announced deadlines never advanced.
def test_poll_at_next_deadline_makes_progress():
    """Polling at the time next_deadline_ns() announced does what is due: the next deadline moves on."""
    v = VSync(cam_mic(), clock=lambda: 0)
    period = 1e9 / 30
    for i in range(10):
        stamp = T0 + int(i * period)
        v.push("cam", i, stamp, None, arrival_ns=stamp + TRANSPORT)
        v.push("mic", 3 * i, stamp + 1000, CHUNK, arrival_ns=stamp + TRANSPORT + 1000)
    first = v.next_deadline_ns()
    v.poll(first)
    assert v.next_deadline_ns() > first


# Regression: in event mode next_deadline_ns() announced the master-silent anchor time, which poll()
# never acts on there: the deadline stayed in the past for ever.
def test_poll_at_a_silent_event_deadline_makes_progress():
    """Event mode, the event stream silent, another stream's samples pending: a poll just past each announced
    deadline moves the next deadline on (or there is none)."""
    cfg = VSyncConfig(
        streams=(StreamConfig("trigger", 5.0), StreamConfig("mic", 100.0, Assemble.CONCAT)),
        event_stream="trigger",
    )
    v = VSync(cfg, clock=lambda: 0)
    for i in range(5):
        v.push("mic", i, T0 + i * 10 * MS, CHUNK, arrival_ns=T0 + i * 10 * MS + TRANSPORT)
    for _ in range(4):
        d = v.next_deadline_ns()
        if d is None:
            break
        v.poll(d + 1)
        after = v.next_deadline_ns()
        assert after is None or after > d


# Regression: a push after a silence closed the overdue windows with the pusher counted as live, so
# the clock never paused: one push emitted a tick per master period of the silence.
def test_push_after_a_silence_pauses_like_a_poll():
    """After every stream fell silent for 60 s, a push gives the same ticks whether or not poll() was called
    during the silence: the clock pauses and the new sample goes out in the next tick."""
    results = []
    for poll_during_silence in (False, True):
        v = VSync(cam_mic(), clock=lambda: 0)
        ticks = []
        period = 1e9 / 30
        for i in range(30):
            stamp = T0 + int(i * period)
            ticks += v.poll(stamp + TRANSPORT)
            ticks += v.push("cam", i, stamp, None, arrival_ns=stamp + TRANSPORT)
        if poll_during_silence:
            ticks += v.poll(T0 + 10 * 10**9)
        stamp = T0 + 60 * 10**9
        ticks += v.push("cam", 30, stamp, None, arrival_ns=stamp + TRANSPORT)
        ticks += v.poll(stamp + 100 * MS)
        results.append([(t.index, list(t.streams["cam"].seqs)) for t in ticks if t.streams["cam"].fresh])
    assert results[0] == results[1]


@pytest.mark.parametrize("wait", [True, False])
def test_a_stream_not_waited_for_never_holds_a_tick_and_loses_nothing(wait):
    """Camera frames as events, audio chunks arriving a chunk after their stamp (stamped at their first
    sample). Waited for, each tick goes out when the chunk covering its frame has arrived, about 10 ms after
    the frame; with `wait: false` it goes out as soon as its frame is in, and a chunk stamped in a window
    already out is delivered in the next tick (not dropped as late). Either way every chunk is delivered
    once, in order, with its own capture time."""
    cfg = VSyncConfig(
        streams=(StreamConfig("cam", 30.0), StreamConfig("mic", 100.0, Assemble.CONCAT, wait=wait)),
        event_stream="cam",
    )
    d = Driver(cfg)
    events = [(T0 + int(i * 1e9 / 30), "cam", i, TRANSPORT) for i in range(60)]
    events += [(T0 + 1 * MS + i * 10 * MS, "mic", i, 10 * MS + TRANSPORT) for i in range(200)]
    for stamp, name, seq, lag in sorted(events, key=lambda e: e[0] + e[3]):
        d.push(name, seq, stamp, CHUNK if name == "mic" else None, arrival=stamp + lag)
    d.advance(T0 + 3 * 10**9)
    d.flush()
    frames = {i: T0 + int(i * 1e9 / 30) for i in range(60)}
    delays = [(t.emitted_ns - frames[int(t.streams["cam"].seqs[0])]) / MS for t in d.ticks[1:59]]
    if wait:
        assert np.median(delays) > 4  # waits for the chunk that covers the frame
    else:
        assert max(delays) < 1  # out with its frame
    assert d.fresh_seqs("mic") == list(range(200))
    assert d.status()["mic"].dropped["late"] == 0
    stamps = {i: T0 + 1 * MS + i * 10 * MS for i in range(200)}
    for t in d.ticks:
        for c, q in zip(t.streams["mic"].capture_ns, t.streams["mic"].seqs, strict=True):
            assert abs(int(c) - stamps[int(q)]) < 2 * MS  # its own (estimated) capture time


def test_the_master_stream_must_be_waited_for():
    """`wait: false` on the stream that clocks the ticks is refused, naming the field."""
    with pytest.raises(ValueError, match=r"streams\[cam\]\.wait"):
        VSyncConfig(streams=(StreamConfig("cam", 30.0, wait=False), StreamConfig("mic", 100.0)))
