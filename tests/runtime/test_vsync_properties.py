"""V-sync properties over random stream sets: accounting, tick order, dt_eff, staleness, oscillator tracking.

Everything runs in virtual time: samples carry explicit arrival times, the scheduler's clock is a fake, and
the driver polls at the deadlines the scheduler announces, as a node would. Schedules come from
`runtime.vsync.synthetic` (true capture times, one-sided stamping jitter, drops, drift), then get reordered
neighbours and injected duplicates."""

import math
from collections import Counter
from dataclasses import dataclass

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from runtime.vsync import Assemble, DtEffMode, StreamConfig, Tick, VSync, VSyncConfig, synthetic
from runtime.vsync import kernels as oscillator  # the oscillator's state columns
from runtime.vsync.synthetic import SyntheticStream

MS = 1_000_000
T0 = 10**12
NAMES = ("s0", "s1", "s2")
SETTINGS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


# ------------------------------------------------------------------------------------------ driver
def oscillator_rows(v: VSync) -> np.ndarray:
    """The scheduler's private oscillator state: (K, >= oscillator.STATE_SIZE) rows, the oscillator's columns
    first (`_state`; `_osc` before the numba core). Only the PHASE formula check reads it."""
    for name in ("_state", "_osc"):
        rows = getattr(v, name, None)
        if isinstance(rows, np.ndarray) and rows.ndim == 2 and rows.shape[1] >= oscillator.STATE_SIZE:
            return rows
    raise AssertionError("VSync's oscillator state moved: update oscillator_rows() in this test")


class Driver:
    """Feeds a VSync in virtual time and polls at its announced deadlines; records every call's ticks together
    with the oscillator state they were made with (for the PHASE dt_eff formula)."""

    def __init__(self, config: VSyncConfig):
        self.now = 0
        self.v = VSync(config, clock=lambda: self.now)
        self.ticks: list[Tick] = []
        self.calls: list[tuple[list[Tick], np.ndarray]] = []  # (ticks of one call, oscillator state after it)

    def _record(self, ticks: list[Tick]) -> list[Tick]:
        if ticks:
            self.ticks += ticks
            self.calls.append((ticks, oscillator_rows(self.v).copy()))
        return ticks

    def poll(self, t: int) -> list[Tick]:
        self.now = max(self.now, t)
        return self._record(self.v.poll(self.now))

    def advance(self, t: int) -> None:
        """Poll at every deadline next_deadline_ns() announces before t, then at t."""
        d = None
        while True:
            last, d = d, self.v.next_deadline_ns()
            if d is None or d >= t:
                break
            assert d != last, "a poll at the announced deadline made no progress"
            self.poll(d)
        self.poll(t)

    def push(self, name: str, seq: int, stamp: int, data, arrival: int) -> list[Tick]:
        self.advance(arrival)
        return self._record(self.v.push(name, seq, stamp, data, arrival_ns=arrival))

    def flush(self) -> list[Tick]:
        return self._record(self.v.flush())

    def status(self) -> dict:
        return {s.name: s for s in self.v.status()}


# ------------------------------------------------------------------------------------------ schedules
@dataclass(frozen=True)
class Scenario:
    streams: tuple[SyntheticStream, ...]
    seed: int
    swap: float  # fraction of neighbours whose arrival order is swapped (the first one is delayed)
    dup: float  # fraction of samples sent again a few messages later
    mode: str  # "master", "tick_hz" or "event"
    dt_eff: DtEffMode
    seconds: float = 3.0

    def config(self) -> VSyncConfig:
        streams = tuple(s.config() for s in self.streams)
        if self.mode == "tick_hz":
            return VSyncConfig(streams=streams, tick_hz=self.streams[-1].nominal_hz * 0.9, dt_eff=self.dt_eff)
        if self.mode == "event":
            return VSyncConfig(streams=streams, event_stream=self.streams[-1].name, dt_eff=self.dt_eff)
        return VSyncConfig(streams=streams, dt_eff=self.dt_eff)

    def samples(self) -> np.ndarray:
        """The synthetic schedule with reordered neighbours and duplicates; arrivals stay non-decreasing."""
        samples = synthetic.generate(self.streams, self.seconds, seed=self.seed)
        rng = np.random.default_rng(self.seed + 1)
        order = list(range(len(samples)))
        for i in range(len(order) - 1):
            if rng.random() < self.swap:
                order[i], order[i + 1] = order[i + 1], order[i]
        with_dups = list(order)
        for i in range(len(order) - 1, -1, -1):
            if rng.random() < self.dup:
                with_dups.insert(min(len(with_dups), i + 1 + int(rng.integers(0, 5))), order[i])
        out = samples[np.array(with_dups, np.int64)]
        out["arrival_ns"] = np.maximum.accumulate(out["arrival_ns"])  # a message overtaken is delayed
        return out


@st.composite
def scenarios(draw, modes=("master", "tick_hz", "event"), dt_modes=tuple(DtEffMode)) -> Scenario:
    k = draw(st.integers(1, 3))
    streams = tuple(
        SyntheticStream(
            NAMES[i],
            draw(st.floats(5.0, 200.0)),
            draw(st.sampled_from(list(Assemble))),
            jitter=draw(st.floats(0.0, 0.3)),
            drop=draw(st.floats(0.0, 0.2)),
            drift=draw(st.floats(0.0, 0.02)),
            chunk=draw(st.integers(1, 3)),
        )
        for i in range(k)
    )
    return Scenario(
        streams,
        seed=draw(st.integers(0, 2**32 - 1)),
        swap=draw(st.sampled_from([0.0, 0.05, 0.2])),
        dup=draw(st.sampled_from([0.0, 0.02, 0.1])),
        mode=draw(st.sampled_from(modes)),
        dt_eff=draw(st.sampled_from(dt_modes)),
    )


def payload(stream: SyntheticStream, seq: int) -> np.ndarray:
    """A payload that names its sample: CONCAT (chunk,) rows of seq, else (4,) of seq."""
    return np.full(stream.chunk if stream.assemble is Assemble.CONCAT else 4, seq, np.float64)


def run(scenario: Scenario) -> tuple[Driver, np.ndarray]:
    d = Driver(scenario.config())
    samples = scenario.samples()
    for r in samples:
        s = scenario.streams[int(r["stream"])]
        seq = int(r["seq"])
        d.push(s.name, seq, int(r["stamp_ns"]), payload(s, seq), int(r["arrival_ns"]))
    d.flush()
    return d, samples


# ------------------------------------------------------------------------------------------ 1. accounting
@SETTINGS
@given(scenarios())
def test_every_sample_delivered_once_or_counted_once(scenario):
    """Over random rates, jitters, drops, drifts, reorderings and duplicates, after flush() every pushed
    sample is delivered fresh in exactly one tick or counted in exactly one drop reason: received == delivered
    + dropped per stream, no (stream, seq) is delivered fresh twice, held re-deliveries are only of samples
    delivered fresh earlier, and every delivered sample lies in its tick's window with an estimated capture <=
    its stamp."""
    d, samples = run(scenario)
    pushed = Counter(int(k) for k in samples["stream"])
    stamps = {(NAMES[int(r["stream"])], int(r["seq"])): int(r["stamp_ns"]) for r in samples}
    fresh: Counter = Counter()
    status = d.status()
    for t in d.ticks:
        for name, slot in t.streams.items():
            seqs = [int(q) for q in slot.seqs]
            assert len(slot.capture_ns) == len(seqs)
            if seqs:  # the payloads are those of the samples named, in order; the age is the newest's
                rows = slot.data.reshape(len(seqs), -1)
                assert np.all(rows == np.array(seqs, np.float64)[:, None]), (t.index, name, seqs)
                assert slot.age_s == pytest.approx((t.capture_ns - slot.capture_ns[-1]) / 1e9, abs=3e-9)
                assert np.all(np.diff(slot.capture_ns) >= 0)
            else:
                assert slot.data is None and math.isnan(slot.age_s) and not slot.valid
            if slot.fresh:
                assert seqs, (t.index, name)
                fresh.update((name, q) for q in seqs)
                for q, c in zip(seqs, slot.capture_ns, strict=True):
                    assert c <= stamps[name, q]  # a capture is never after its stamp
                    assert stamps[name, q] <= t.window_end_ns
                    assert t.window_start_ns < stamps[name, q]
            else:
                assert all(fresh[name, q] == 1 for q in seqs), "a held sample must have been delivered fresh"
                assert not seqs or scenario.streams[NAMES.index(name)].assemble is Assemble.HOLD
    assert all(n == 1 for n in fresh.values()), [key for key, n in fresh.items() if n > 1]
    for k, s in enumerate(scenario.streams):
        st_ = status[s.name]
        assert st_.received == pushed[k]
        assert st_.received == st_.delivered + sum(st_.dropped.values()), st_
        assert st_.delivered == sum(1 for name, _ in fresh if name == s.name)
        assert st_.pending == 0 and st_.resets == 0
        if scenario.dup == 0.0:
            assert st_.dropped["duplicate"] == 0
    assert set(fresh) <= set(stamps)


# ------------------------------------------------------------------------------------------ 2. tick order
@SETTINGS
@given(scenarios())
def test_ticks_are_ordered_and_windows_tile(scenario):
    """Ticks are strictly increasing in capture_ns with index going up by one; window ends increase; each
    window starts where the previous one ended; the tick time lies in its window."""
    d, _ = run(scenario)
    ticks = d.ticks
    assert ticks, "every scenario has samples, so at least flush() makes a tick"
    assert [t.index for t in ticks] == list(range(len(ticks)))
    for a, b in zip(ticks, ticks[1:], strict=False):
        assert b.capture_ns > a.capture_ns
        assert b.window_end_ns > a.window_end_ns
        assert b.window_start_ns == a.window_end_ns
    for t in ticks:
        assert t.window_start_ns <= t.capture_ns <= t.window_end_ns
        assert t.mask.shape == (len(scenario.streams),) and t.mask.dtype == bool
        assert t.ages.shape == (len(scenario.streams),) and t.ages.dtype == np.float32
        assert list(t.streams) == [s.name for s in scenario.streams]
        for k, slot in enumerate(t.streams.values()):
            assert t.mask[k] == slot.valid
            assert slot.valid == (slot.fresh or (len(slot.seqs) > 0 and not slot.stale))
            assert (math.isnan(t.ages[k]) and math.isnan(slot.age_s)) or t.ages[k] == np.float32(slot.age_s)


# ------------------------------------------------------------------------------------------ 3. dt_eff
@SETTINGS
@given(scenarios(dt_modes=(DtEffMode.MEASURED,)))
def test_dt_eff_measured_sums_to_elapsed_capture_time(scenario):
    """MEASURED: each dt_eff is the capture-time interval from the previous tick (the first: the nominal tick
    period), so dt_eff over ticks 1..N-1 sums to (capture_ns[N-1] - capture_ns[0]) / 1e9 within 1e-6 s."""
    d, _ = run(scenario)
    ticks = d.ticks
    caps = np.array([t.capture_ns for t in ticks], np.int64)
    dts = np.array([t.dt_eff for t in ticks])
    assert dts[0] == pytest.approx(d.v.config.tick_period_ns / 1e9)
    assert np.all(np.abs(dts[1:] - np.diff(caps) / 1e9) <= 2e-9)
    assert abs(dts[1:].sum() - (caps[-1] - caps[0]) / 1e9) <= 1e-6
    assert np.all(dts[1:] > 0)


@SETTINGS
@given(scenarios(dt_modes=(DtEffMode.FIXED,)))
def test_dt_eff_fixed_is_the_tick_period(scenario):
    """FIXED: every dt_eff is 1 / the tick rate (tick_hz, else the master's nominal rate)."""
    d, _ = run(scenario)
    cfg = scenario.config()
    rate = cfg.tick_hz if cfg.tick_hz is not None else cfg.stream(cfg.master_stream).nominal_hz
    assert all(t.dt_eff == pytest.approx(1.0 / rate, rel=1e-12) for t in d.ticks)


def phase_formula(tick: Tick, osc: np.ndarray, origin: int, dt: float) -> float:
    """dt * (1 + mean_k cos theta_k) over the streams live at the tick whose oscillator has two samples or
    more, theta_k = 2 pi (t - T_NEWEST_k) / PERIOD_k; dt when there is none."""
    t = float(tick.capture_ns - origin)
    cosines = [
        math.cos(2 * math.pi * (t - osc[k, oscillator.T_NEWEST]) / osc[k, oscillator.PERIOD])
        for k, slot in enumerate(tick.streams.values())
        if not slot.stale and osc[k, oscillator.COUNT] >= 2
    ]
    return dt * (1 + sum(cosines) / len(cosines)) if cosines else dt


@SETTINGS
@given(scenarios(dt_modes=(DtEffMode.PHASE,)))
def test_dt_eff_phase_is_the_phase_formula(scenario):
    """PHASE: every dt_eff is in [0, 2 dt] and equals dt * (1 + mean_k cos theta_k) over the live, locked
    streams' tracked phases at the tick time (dt the nominal tick period)."""
    d, _ = run(scenario)
    dt = d.v.config.tick_period_ns / 1e9
    for ticks, osc in d.calls:
        for t in ticks:
            assert -1e-12 <= t.dt_eff <= 2 * dt + 1e-12
            assert t.dt_eff == pytest.approx(
                phase_formula(t, osc, d.v._origin, dt), abs=1e-5 * dt
            )  # 1 ns of t


def test_dt_eff_phase_varies_with_several_streams():
    """PHASE with the benchmark's three streams at different rates: dt_eff is not constant, spans a good part
    of [0, 2 dt], and averages near dt; a lone master stream ticks at its own phase 0 (dt_eff ~ 2 dt)."""
    scenario = Scenario(
        synthetic.BENCH_STREAMS, seed=3, swap=0.0, dup=0.0, mode="master", dt_eff=DtEffMode.PHASE
    )
    d, _ = run(scenario)
    dt = d.v.config.tick_period_ns / 1e9
    dts = np.array([t.dt_eff for t in d.ticks])
    assert len(dts) > 50
    assert np.all((dts >= 0) & (dts <= 2 * dt))
    assert dts.max() - dts.min() > 0.5 * dt
    assert 0.5 * dt < dts.mean() < 1.5 * dt
    single = Scenario((synthetic.BENCH_STREAMS[0],), seed=3, swap=0.0, dup=0.0, mode="master", dt_eff="phase")
    d1, _ = run(single)
    assert np.median([t.dt_eff for t in d1.ticks]) == pytest.approx(2 * dt, rel=0.01)


# ------------------------------------------------------------------------------------------ 4. staleness
@settings(max_examples=25, deadline=None)
@given(
    rate_a=st.floats(20.0, 60.0),
    rate_b=st.floats(5.0, 100.0),
    assemble=st.sampled_from(list(Assemble)),
    periods=st.floats(1.5, 5.0),
    step_ms=st.floats(0.5, 5.0),
    stop_s=st.floats(0.5, 1.5),
)
def test_stale_detected_in_time_and_cleared_on_resume(rate_a, rate_b, assemble, periods, step_ms, stop_s):
    """A stream that stops is reported stale (status().stale, slot.stale, mask False) after exactly
    stale_after_periods of its periods of silence, by arrival time: not before, and no later than one poll
    step after; when it speaks again `resumed` increments and later ticks have it valid again."""
    cfg = VSyncConfig(
        streams=(StreamConfig("a", rate_a), StreamConfig("b", rate_b, assemble)),
        master="a",
        stale_after_periods=periods,
    )
    d = Driver(cfg)
    stale_after = periods * 1e9 / rate_b
    resume_s = stop_s + stale_after / 1e9 + 0.3
    end_s = resume_s + 1.0
    step = int(step_ms * MS)
    events = []  # (arrival, kind: 0 poll / 1 push, name, seq, stamp)
    arrivals = {"b-before": [], "b-after": []}
    for name, rate, ranges in (("a", rate_a, [(0, end_s)]), ("b", rate_b, [(0, stop_s), (resume_s, end_s)])):
        for part, (lo, hi) in zip(("before", "after"), ranges, strict=False):
            for i in range(math.ceil(lo * rate), math.ceil(hi * rate)):
                stamp = T0 + int(i * 1e9 / rate)
                events.append((stamp + 100_000, 1, name, i, stamp))
                arrivals.setdefault(f"{name}-{part}", []).append(stamp + 100_000)
    events += [(T0 + j * step, 0, "", 0, 0) for j in range(1, int(end_s * 1e9) // step)]
    events.sort()
    chunk = np.zeros(4, np.float32)
    last_b = max(arrivals["b-before"])
    first_b_again = min(arrivals["b-after"])
    detected = resumed = None
    for time, kind, name, seq, stamp in events:
        if kind:
            ticks = d.push(name, seq, stamp, chunk, time)
        else:
            ticks = d.poll(time)
        s = d.status()["b"]
        if detected is None and s.stale:
            detected = time
        for t in ticks:
            slot = t.streams["b"]
            if detected is None:
                assert not slot.stale
            elif resumed is None:
                assert slot.stale and t.mask[1] == slot.fresh
                if t.window_start_ns >= last_b:
                    assert not slot.fresh and not t.mask[1]
            else:
                assert not slot.stale
        if time == first_b_again and name == "b":
            resumed = time
            assert not s.stale and s.resumed == 1
        if detected is not None and resumed is None:
            assert s.stale and s.resumed == 0
    assert detected is not None and resumed is not None
    assert detected - last_b > stale_after  # not before
    assert detected <= last_b + stale_after + step  # not later than one poll step after
    s = d.status()["b"]
    assert s.stale_events == 1 and s.resumed == 1 and not s.stale
    later = [t for t in d.ticks if t.window_start_ns > first_b_again + 2 * 1e9 / rate_b]
    assert later and any(t.streams["b"].fresh for t in later)
    for t in later:
        slot = t.streams["b"]
        assert not slot.stale
        assert t.mask[1] == (slot.fresh or assemble == Assemble.HOLD)


# ------------------------------------------------------------------------------------------ 5. oscillator
def jittered_stream(
    hz: float,
    rate_offset: float,
    seconds: float,
    seed: int,
    jitter: float = 0.2,
    gap: tuple[float, float] | None = None,
    step_at: float | None = None,
    step: float = 0.4,
):
    """(true_ns, stamp_ns) of a stream at hz * (1 + rate_offset), stamped late by U(0, jitter) periods; no
    captures inside `gap` (seconds); stamps shifted by `step` periods from `step_at` seconds on."""
    rng = np.random.default_rng(seed)
    period = 1e9 / hz
    true_period = period / (1 + rate_offset)
    out = []
    t = float(T0)
    while t < T0 + seconds * 1e9:
        rel = (t - T0) / 1e9
        if gap is None or not gap[0] <= rel < gap[1]:
            shift = int(step * period) if step_at is not None and rel >= step_at else 0
            out.append((int(t), int(t + rng.uniform(0, jitter * period)) + shift))
        t += true_period
    return out


def track(hz: float, stamps) -> tuple[VSync, list[tuple[float, float, int]]]:
    """Push a lone stream's stamps; returns the scheduler and (true s, tracked rate, relocks) after each."""
    v = VSync(VSyncConfig(streams=(StreamConfig("s", hz),)), clock=lambda: 0)
    trace = []
    for seq, (true, stamp) in enumerate(stamps):
        v.poll(stamp + 100_000)
        v.push("s", seq, stamp, None, arrival_ns=stamp + 100_000)
        s = v.status()[0]
        trace.append(((true - T0) / 1e9, s.rate_hz, s.relocks))
    return v, trace


RATES = [(30.0, 0.02), (30.0, -0.02), (100.0, 0.02), (100.0, -0.02)]
RATE_IDS = [f"{hz:g}Hz{off:+.0%}" for hz, off in RATES]


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("hz, offset", RATES, ids=RATE_IDS)
def test_oscillator_tracks_rate_within_half_percent(hz, offset, seed):
    """A stream 2 % off its nominal rate with 20 % one-sided jitter: after 2 s of samples the tracked rate
    (status().rate_hz, the PERIOD column) is within 0.5 % of the true rate, and the loop is locked."""
    v, trace = track(hz, jittered_stream(hz, offset, 2.0, seed))
    true_rate = hz * (1 + offset)
    assert trace[-1][1] == pytest.approx(true_rate, rel=0.005)
    assert v.status()[0].locked
    assert 0 < v.status()[0].jitter_ms < 0.2 * 1e3 / hz


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("hz, offset", RATES, ids=RATE_IDS)
def test_oscillator_relocks_after_a_gap(hz, offset, seed):
    """After 2 s, a 5 s gap (longer than max_coast_cycles periods): the first sample after it re-locks the
    loop (relocks + 1) and 2 s later the tracked rate is again within 0.5 % of the true rate."""
    _, trace = track(hz, jittered_stream(hz, offset, 9.0, seed, gap=(2.0, 7.0)))
    first_after = next(i for i, (t, _, _) in enumerate(trace) if t >= 7.0)
    assert 5.0 * hz > StreamConfig("s", hz).max_coast_cycles
    assert trace[first_after][2] == trace[first_after - 1][2] + 1
    assert trace[-1][0] > 8.9
    assert trace[-1][1] == pytest.approx(hz * (1 + offset), rel=0.005)


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("hz, offset", RATES, ids=RATE_IDS)
def test_oscillator_relocks_on_a_clock_step(hz, offset, seed):
    """A +0.4 period step in the stamps (a clock offset step) re-locks the loop within a handful (<= 8) of
    samples; 2 s later the tracked rate is within 0.5 % of the true rate."""
    _, trace = track(hz, jittered_stream(hz, offset, 4.0, seed, step_at=2.0))
    at = next(i for i, (t, _, _) in enumerate(trace) if t >= 2.0)
    before = trace[at - 1][2]
    relocked = next((i - at for i in range(at, len(trace)) if trace[i][2] > before), None)
    assert relocked is not None and relocked < 8, relocked
    assert trace[-1][1] == pytest.approx(hz * (1 + offset), rel=0.005)


# Regression: stepped stamps inside the late band were fed and widened it, and stepped stamps wrapping to the
# next cycle reset a same-sign outlier run, so some steps re-locked after 11-13 samples or never.
@pytest.mark.parametrize(
    "offset, seed", [(-0.02, 76), (0.02, 47), (-0.02, 45)], ids=["-2%-76", "+2%-47", "-2%-45"]
)
def test_oscillator_relocks_on_a_clock_step_whatever_the_jitter_draw(offset, seed):
    """As test_oscillator_relocks_on_a_clock_step, for the 30 Hz jitter draws (seeds) where it takes longest:
    the +0.4 period step still re-locks within 10 samples (the step detector wants 8 high delays in a row, so
    that real delay tails do not re-lock a clean stream)."""
    _, trace = track(30.0, jittered_stream(30.0, offset, 4.0, seed, step_at=2.0))
    at = next(i for i, (t, _, _) in enumerate(trace) if t >= 2.0)
    before = trace[at - 1][2]
    relocked = next((i - at for i in range(at, len(trace)) if trace[i][2] > before), None)
    assert relocked is not None and relocked <= 10, relocked


# Regression: stamps under the envelope by more than 0.02 period were early outliers, never fed, so a
# phase that settled late could not come down and three low-delay stamps in a row re-locked a clean stream.
@pytest.mark.parametrize("case", ["clean-30Hz+2%-seed19", "after-gap-30Hz-2%-seed43"])
def test_oscillator_does_not_relock_a_clean_stream(case):
    """A steady stream (one-sided jitter within 20 % of a period, no steps) is never re-locked: relocks stays
    0 (1 after a gap), and the rate is within 0.5 % at the end."""
    if case.startswith("clean"):
        offset, seed, gap, expected_relocks = 0.02, 19, None, 0
    else:
        offset, seed, gap, expected_relocks = -0.02, 43, (2.0, 7.0), 1
    _, trace = track(30.0, jittered_stream(30.0, offset, 9.0, seed, gap=gap))
    assert trace[-1][2] == expected_relocks
    assert trace[-1][1] == pytest.approx(30.0 * (1 + offset), rel=0.005)
