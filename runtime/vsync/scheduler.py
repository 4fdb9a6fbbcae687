"""The phase-manifold V-sync scheduler: streams at their own rates in, synchronized ticks out.

    vsync = VSync(config)
    for msg in subscriber.poll(timeout_s):
        ticks += vsync.push(msg.topic, msg.seq, msg.capture_ns, msg.data)
    ticks += vsync.poll()  # deadlines; call at least by vsync.next_deadline_ns()

Ticks run on a master clock in capture time: by default the master stream's tracked oscillator (tick n at
its n-th capture instant, following its real rate and phase), else a free-running `tick_hz`, or one tick per
sample of an `event_stream`. Tick n's window is the half-period either side of its time (for events: from
the previous event to this one), so every sample goes to the tick nearest it. Samples are assigned to windows
by their capture stamp, and reported at the oscillator's estimate of when they were really captured (stamps
come a random delay late; see `oscillator`). A sample's age is the tick time minus that estimate: negative
for a sample captured after the tick time, inside its window.

A tick goes out as soon as every live stream has covered its window (a stamp past its end, or an oscillator
that puts the stream's next capture past it), or `max_wait_s` after the window's end, without the streams
that have not. Faults are counted per stream, never raised: stamps from the future or too far in the past,
duplicates, samples whose window already went out (late), floods beyond `max_pending`, concatenated
samples of another shape. A sequence number that goes back while the stamp goes forward is a publisher
restart: the stream re-locks. A stream silent for `stale_after_periods` of its periods is stale: masked and
no longer waited for, until it speaks again.

Every sample pushed is, in the end, delivered in exactly one tick or counted in `dropped` with its reason.
"""

import math
from collections import deque
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np

from runtime.clock import now_ns
from runtime.vsync import oscillator, windows
from runtime.vsync.config import Assemble, DtEffMode, VSyncConfig

_LAG_RISE = 0.01  # per sample: a stream whose delivery slows is followed within a few hundred samples
_MAX_LAG = 0.25e9  # ns: no stream holds a tick back longer than this past its window's end
DROP_REASONS = ("future", "too_old", "duplicate", "late", "superseded", "overflow", "shape")


@dataclass
class StreamStatus:
    """What the scheduler knows about one stream: counts since start, and the oscillator's tracking."""

    name: str
    nominal_hz: float
    received: int = 0
    delivered: int = 0
    dropped: dict[str, int] = field(default_factory=lambda: dict.fromkeys(DROP_REASONS, 0))
    stale: bool = False
    stale_events: int = 0  # times it went silent long enough to be masked
    resumed: int = 0  # times it spoke again after that
    resets: int = 0  # sequence restarts: its publisher restarted
    relocks: int = 0  # the oscillator lost phase (a gap, a clock step, a restart) and locked again
    missed_cycles: int = 0  # capture cycles with no sample: sensor-side drops
    rate_hz: float = 0.0  # tracked rate
    delay_ms: float = 0.0  # mean stamping delay above the envelope
    jitter_ms: float = 0.0  # mean absolute deviation of that delay
    locked: bool = False
    pending: int = 0

    @property
    def dropped_total(self) -> int:
        return sum(self.dropped.values())


class StreamSlot(NamedTuple):
    """One stream's part of a tick (a tuple: cheap to build 30 times a second per stream, immutable)."""

    data: np.ndarray | None  # concat: chunks on axis 0; nearest/hold: the sample; None if there is none
    capture_ns: np.ndarray  # (n,) int64: estimated capture times of the samples delivered, in order
    seqs: np.ndarray  # (n,) int64: their sequence numbers
    valid: bool  # usable: fresh, or held and not stale
    fresh: bool  # a new sample landed in this window
    stale: bool
    age_s: float  # tick time minus the capture time of the newest sample given; nan if none


class Tick(NamedTuple):
    index: int
    capture_ns: int  # the tick time, in capture time
    window_start_ns: int  # exclusive
    window_end_ns: int  # inclusive
    dt_eff: float  # seconds
    streams: dict[str, StreamSlot]
    mask: np.ndarray  # (K,) bool, streams in config order: valid
    ages: np.ndarray  # (K,) float32 seconds, nan where no sample
    emitted_ns: int  # host time the tick went out
    by_deadline: bool  # went out at its deadline, not because every live stream had covered it


class _Stream:
    """Per-stream bookkeeping: sequence numbers, liveness, pending samples, the held sample."""

    def __init__(self, k: int, cfg, capacity: int, dedup_window: int):
        self.k, self.cfg = k, cfg
        self.status = StreamStatus(cfg.name, cfg.nominal_hz)
        self.period = cfg.period_ns
        self.last_seq = -1
        self.seen = [-1] * dedup_window  # seq % window -> seq: the recent sequence numbers, for duplicates
        self.newest_stamp_ns = -(2**63)
        self.covered_until = -math.inf  # relative to the scheduler's origin, like every float time here
        self.last_arrival = -math.inf
        self.lag = math.inf  # the least recent stamp-to-arrival delay (ns), rising slowly if it grows
        self.capacity = capacity
        self.stamps, self.ests, self.seqs, self.order, self.out_est, self.out_seq = windows.scratch(capacity)
        self.payloads: list = []
        self.count = 0
        self.held: tuple | None = None  # (data, est, seq) of the last sample given, for HOLD


class VSync:
    def __init__(self, config: VSyncConfig, clock=now_ns):
        self.config = config
        self._clock = clock
        self._streams = [
            _Stream(k, s, config.max_pending, config.dedup_window) for k, s in enumerate(config.streams)
        ]
        self._by_name = {s.cfg.name: s for s in self._streams}
        self._osc, self._block_n, self._block_s = oscillator.new_state(len(self._streams))
        for s in self._streams:
            c = s.cfg
            oscillator.configure(
                self._osc, s.k, c.period_ns, c.max_rate_error, c.fit_cycles, c.max_coast_cycles
            )
        self._master = self._by_name[config.master_stream]
        self._events = config.event_stream is not None
        self._follow_master = config.tick_hz is None and not self._events
        self._tick_period = config.tick_period_ns
        self._future_tol = int(config.future_tolerance_s * 1e9)
        self._max_delay = int(config.max_delay_s * 1e9)
        self._max_wait = config.max_wait_s * 1e9
        self._origin: int | None = None
        self._window: tuple[float, float, float] | None = None  # (tick time, start, end) being filled
        self._event_windows: deque[tuple[float, float]] = deque()  # (tick time, end) per event sample
        self._emitted_end = -math.inf  # end of the last window that went out
        self._last_tick_time: float | None = None
        self._first_arrival = math.inf  # of the samples waiting for the clock to start
        self._paused = False  # every stream went silent: the next sample re-anchors the clock
        self._deadline = 0.0  # of the open window, relative
        self._deadline_ns = 0
        self._waiting: set[int] = set()  # streams the open window still waits for (a shortcut for push)
        self._index = 0
        self.unknown_streams = 0  # messages on topics this scheduler was not configured for
        self.deadline_ticks = 0

    # ------------------------------------------------------------------------------------------ input
    def push(self, stream: str, seq: int, capture_ns: int, data, arrival_ns: int | None = None) -> list[Tick]:
        """Take one sample; returns the ticks it completed (usually none)."""
        st = self._by_name.get(stream)
        if st is None:
            self.unknown_streams += 1
            return []
        now = self._clock() if arrival_ns is None else int(arrival_ns)
        capture_ns = int(capture_ns)
        seq = int(seq)
        status = st.status
        status.received += 1
        if capture_ns > now + self._future_tol:
            return self._drop(st, "future")
        if capture_ns < now - self._max_delay:
            return self._drop(st, "too_old")
        slot = seq % len(st.seen)
        if st.seen[slot] == seq:
            return self._drop(st, "duplicate")
        if seq < st.last_seq and capture_ns > st.newest_stamp_ns:
            status.resets += 1  # the sequence went back while time went forward: its publisher restarted
            st.seen = [-1] * len(st.seen)
            st.last_seq = seq
            oscillator.relock(self._osc, st.k)
        st.seen[slot] = seq
        if seq > st.last_seq:
            st.last_seq = seq
        if self._origin is None:
            self._origin = capture_ns
        stamp = float(capture_ns - self._origin)
        if capture_ns > st.newest_stamp_ns:
            st.newest_stamp_ns = capture_ns
        st.last_arrival = arrival = float(now - self._origin)
        lag = arrival - stamp  # stamp to arrival: transport, plus a chunk's length when stamped at its start
        st.lag = lag if lag < st.lag else st.lag + _LAG_RISE * (lag - st.lag)
        if status.stale:
            status.stale = False
            status.resumed += 1
        _, _, est, covered = oscillator.update(self._osc, self._block_n, self._block_s, st.k, stamp)
        if covered > st.covered_until:
            st.covered_until = covered
        if stamp <= self._emitted_end:
            return self._drop(st, "late", now)
        i = st.count
        if i == st.capacity:
            return self._drop(st, "overflow", now)
        st.stamps[i] = stamp
        st.ests[i] = est
        st.seqs[i] = seq
        st.payloads.append(data)
        st.count = i + 1
        if arrival < self._first_arrival:
            self._first_arrival = arrival
        if st is self._master and self._events:
            self._event_windows.append((est, stamp))
        elif self._window is not None and now < self._deadline_ns:
            # Fast path: only the streams the open window still waits for can complete it before its deadline.
            waiting = self._waiting
            if st.k in waiting and st.covered_until >= self._window[2]:
                waiting.discard(st.k)
            if waiting:
                return []
        return self._emit_ready(now)

    def poll(self, now_ns: int | None = None) -> list[Tick]:
        """Ticks whose deadline has passed (and staleness as of now)."""
        if self._origin is None:
            return []
        return self._emit_ready(self._clock() if now_ns is None else int(now_ns))

    def next_deadline_ns(self) -> int | None:
        """When `poll` next has something to do (a tick deadline, a stream going stale), or None."""
        if self._origin is None:
            return None
        times = []
        if self._window is not None:
            times.append(self._deadline)
        elif self._follow_master or not self._events:
            if self._first_arrival < math.inf:
                times.append(self._first_arrival + self._stale_after(self._master))
        for st in self._streams:
            if not st.status.stale and st.last_arrival > -math.inf:
                times.append(st.last_arrival + self._stale_after(st))
        return self._origin + int(min(times)) if times else None

    def flush(self) -> list[Tick]:
        """Emit every window that still holds samples, without waiting (end of a recording, shutdown)."""
        ticks = []
        while any(st.count for st in self._streams):
            window = self._current_window(math.inf, force=True)
            if window is None:
                break
            ticks.append(self._emit(window, self._clock(), by_deadline=True))
        return ticks

    # ------------------------------------------------------------------------------------------ status
    def status(self) -> list[StreamStatus]:
        """Per-stream counts and tracking, in config order (fresh snapshots of the oscillator figures)."""
        out = []
        for st in self._streams:
            row = self._osc[st.k]
            s = st.status
            s.rate_hz = 1e9 / row[oscillator.PERIOD]
            s.delay_ms = row[oscillator.DELAY_MEAN] / 1e6
            s.jitter_ms = row[oscillator.DELAY_DEV] / 1e6 if row[oscillator.COUNT] > 1 else 0.0
            s.relocks = int(row[oscillator.RELOCKS])
            s.missed_cycles = int(row[oscillator.MISSED])
            s.locked = bool(row[oscillator.LOCKED]) and row[oscillator.COUNT] > 1
            s.pending = st.count
            out.append(s)
        return out

    @property
    def ticks_emitted(self) -> int:
        return self._index

    # ------------------------------------------------------------------------------------------ internals
    def _drop(self, st: _Stream, reason: str, now: int | None = None) -> list[Tick]:
        st.status.dropped[reason] += 1
        return self._emit_ready(now) if now is not None and self._origin is not None else []

    def _stale_after(self, st: _Stream) -> float:
        return self.config.stale_after_periods * st.period

    def _update_stale(self, t: float) -> None:
        for st in self._streams:
            if (
                not st.status.stale
                and st.last_arrival > -math.inf
                and t - st.last_arrival > self._stale_after(st)
            ):
                st.status.stale = True
                st.status.stale_events += 1

    def _live(self, st: _Stream) -> bool:
        return st.last_arrival > -math.inf and not st.status.stale

    @staticmethod
    def _covered(st: _Stream, end: float) -> bool:
        # A capture is never after its stamp, so once the oscillator puts the stream's next capture past the
        # window's end, nothing stamped inside the window can still come.
        return st.covered_until >= end

    def _emit_ready(self, now: int) -> list[Tick]:
        ticks = []
        now_rel = float(now - self._origin)
        while True:
            self._update_stale(now_rel)
            window = self._current_window(now_rel)
            if window is None:
                break
            deadline = self._deadline
            live = [st for st in self._streams if self._live(st)]
            if all(self._covered(st, window[2]) for st in live) and live:
                ticks.append(self._emit(window, now, by_deadline=False))
                continue
            if now_rel < deadline:
                break
            self._update_stale(deadline)  # staleness as of the deadline, as if polled right then
            if not any(self._live(st) for st in self._streams):
                self._window = None  # everything silent: the clock pauses, and re-anchors on the next sample
                self._paused = True
                break
            self.deadline_ticks += 1
            ticks.append(self._emit(window, now, by_deadline=True))
        return ticks

    def _tick_period_now(self) -> float:
        row = self._osc[self._master.k]
        if self._follow_master and row[oscillator.COUNT] >= 2:
            return row[oscillator.PERIOD]
        return self._tick_period

    def _current_window(self, now_rel: float, force: bool = False) -> tuple[float, float, float] | None:
        if self._window is not None:
            return self._window
        if self._events:
            while self._event_windows:
                tick_time, end = self._event_windows.popleft()
                if end > self._emitted_end:
                    start = self._emitted_end if self._index else end - self._tick_period
                    self._open(tick_time, start, end)
                    break
            if self._window is None and force:
                end = max(float(st.stamps[: st.count].max()) for st in self._streams if st.count)
                start = self._emitted_end
                self._open(end, start, end)
            return self._window
        period = self._tick_period_now()
        if self._last_tick_time is None or self._paused:
            tick_time = self._anchor(now_rel, force)
            if tick_time is None:
                return None
            self._paused = False
            start = tick_time - period / 2 if not self._index else self._emitted_end
            tick_time = max(tick_time, start + 1.0)
        else:
            tick_time = self._last_tick_time + period
            master = self._master
            row = self._osc[master.k]
            if self._follow_master and self._live(master) and row[oscillator.COUNT] >= 2:
                # Snap to the master's nearest capture instant: the tick follows its real rate and phase.
                t_newest, master_period = row[oscillator.T_NEWEST], row[oscillator.PERIOD]
                tick_time = t_newest + round((tick_time - t_newest) / master_period) * master_period
                if tick_time <= self._last_tick_time + period / 2:
                    tick_time += master_period
            start = self._emitted_end
        end = max(tick_time + period / 2, start + period / 4)
        return self._open(tick_time, start, end)

    def _open(self, tick_time: float, start: float, end: float) -> tuple[float, float, float]:
        self._window = (tick_time, start, end)
        self._waiting = {st.k for st in self._streams if self._live(st) and not self._covered(st, end)}
        # The bounded wait runs from when a stream's samples up to the window's end can first be here: its
        # stamp-to-arrival lag (an audio chunk stamped at its first sample arrives a chunk later).
        lag = max((min(self._streams[k].lag, _MAX_LAG) for k in self._waiting), default=0.0)
        self._deadline = end + self._max_wait + lag
        self._deadline_ns = self._origin + int(self._deadline)
        return self._window

    def _anchor(self, now_rel: float, force: bool) -> float | None:
        """Time of the first tick (or the first after a pause): the master's first sample waiting; or, if the
        master stays silent for its stale time, half a period after the earliest sample waiting."""
        master = self._master
        if master.count:
            return float(master.ests[: master.count].min())
        waiting = [st for st in self._streams if st.count]
        if not waiting:
            return None
        if force or now_rel - self._first_arrival > self._stale_after(master):
            return min(float(st.stamps[: st.count].min()) for st in waiting) + self._tick_period_now() / 2
        return None

    def _emit(self, window: tuple[float, float, float], now: int, by_deadline: bool) -> Tick:
        tick_time, start, end = window
        origin = self._origin
        taken: dict[int, tuple[int, list]] = {}
        for st in self._streams:
            if not st.count:
                continue
            n = windows.take_window(
                st.stamps, st.ests, st.seqs, st.count, end, st.order, st.out_est, st.out_seq
            )
            if n:
                perm = st.order[: st.count].tolist()
                payloads = st.payloads
                taken[st.k] = (n, [payloads[i] for i in perm[:n]])
                st.payloads = [payloads[i] for i in perm[n:]]
                st.count -= n
        master = self._master
        if master.k in taken and (self._follow_master or self._events):
            # The tick is at the master's capture instant, as estimated now that its sample is here.
            n = taken[master.k][0]
            est = master.out_est[windows.nearest(master.out_est, n, tick_time)]
            lower = self._last_tick_time if self._last_tick_time is not None else -math.inf
            tick_time = min(max(est, start, lower + 1.0), end)
        slots, mask, ages = (
            {},
            np.zeros(len(self._streams), bool),
            np.full(len(self._streams), np.nan, np.float32),
        )
        for st in self._streams:
            n, payloads = taken.get(st.k, (0, []))
            slot = self._assemble(st, n, payloads, tick_time, origin)
            slots[st.cfg.name] = slot
            mask[st.k] = slot.valid
            ages[st.k] = slot.age_s
        dt_eff = self._dt_eff(tick_time)
        tick = Tick(
            self._index,
            origin + int(tick_time),
            origin + int(start) if start > -math.inf else origin,
            origin + int(end),
            dt_eff,
            slots,
            mask,
            ages,
            now,
            by_deadline,
        )
        self._index += 1
        self._emitted_end = end
        self._last_tick_time = tick_time
        self._window = None
        self._first_arrival = math.inf
        return tick

    def _assemble(self, st: _Stream, n: int, payloads: list, tick_time: float, origin: int) -> StreamSlot:
        mode = st.cfg.assemble
        stale = st.status.stale
        if n == 0:
            if mode is Assemble.HOLD and st.held is not None:
                data, est, seq = st.held
                capture = np.array([origin + int(est)], np.int64)
                return StreamSlot(
                    data, capture, np.array([seq], np.int64), not stale, False, stale, (tick_time - est) / 1e9
                )
            return StreamSlot(None, _EMPTY_I64, _EMPTY_I64, False, False, stale, math.nan)
        if mode is Assemble.CONCAT:
            ests, seqs = st.out_est[:n], st.out_seq[:n]
            first = payloads[0]
            keep = [i for i, p in enumerate(payloads) if _same_layout(p, first)]
            if len(keep) < n:
                st.status.dropped["shape"] += n - len(keep)
                ests, seqs, payloads = ests[keep], seqs[keep], [payloads[i] for i in keep]
            data = first if len(payloads) == 1 else np.concatenate(payloads, axis=0)
            st.status.delivered += len(payloads)
            capture = ests.astype(np.int64)
            capture += origin
            return StreamSlot(data, capture, seqs.copy(), True, True, stale, (tick_time - ests[-1]) / 1e9)
        j = n - 1 if mode is Assemble.HOLD else windows.nearest(st.out_est, n, tick_time)
        st.status.dropped["superseded"] += n - 1
        st.status.delivered += 1
        data, est, seq = payloads[j], float(st.out_est[j]), int(st.out_seq[j])
        if mode is Assemble.HOLD:
            st.held = (data, est, seq)
        capture = np.array([origin + int(est)], np.int64)
        return StreamSlot(
            data, capture, np.array([seq], np.int64), True, True, stale, (tick_time - est) / 1e9
        )

    def _dt_eff(self, tick_time: float) -> float:
        dt = self._tick_period / 1e9
        mode = self.config.dt_eff
        if mode is DtEffMode.FIXED:
            return dt
        if mode is DtEffMode.MEASURED:
            return (tick_time - self._last_tick_time) / 1e9 if self._last_tick_time is not None else dt
        # PHASE: seed 000 eq. 8 with the tracked phases instead of the open-loop 2 pi f n dt.
        phases = [
            oscillator.phase(self._osc, st.k, tick_time)
            for st in self._streams
            if self._live(st) and self._osc[st.k, oscillator.COUNT] >= 2
        ]
        if not phases:
            return dt
        return dt * (1.0 + sum(math.cos(theta) for theta in phases) / len(phases))


_EMPTY_I64 = np.empty(0, np.int64)


def _same_layout(a, b) -> bool:
    return isinstance(a, np.ndarray) and a.ndim >= 1 and a.shape[1:] == b.shape[1:] and a.dtype == b.dtype
