"""The phase-manifold V-sync scheduler: streams at their own rates in, synchronized ticks out.

    vsync = VSync(config)
    for msg in subscriber.poll(timeout_s):
        ticks += vsync.push(msg.topic, msg.seq, msg.capture_ns, msg.data)  # or push_many(...) per poll
    ticks += vsync.poll()  # deadlines; call at least by vsync.next_deadline_ns()
    for tick in ticks:
        tick.mask, tick.ages, tick.data  # (K,) bool, (K,) float32 s, one entry per stream

Ticks run on a master clock in capture time: by default the master stream's tracked oscillator (tick n at
its n-th capture instant, following its real rate and phase), else a free-running `tick_hz`, or one tick per
sample of an `event_stream`. Tick n's window is the half-period either side of its time (for events: from
the previous event to this one), so every sample goes to the tick nearest it. Samples are assigned to windows
by their capture stamp, and reported at the oscillator's estimate of when they were really captured (stamps
come a random delay late; see `kernels`). A sample's age is the tick time minus that estimate: negative
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
from runtime.vsync import kernels
from runtime.vsync.config import Assemble, DtEffMode, VSyncConfig
from runtime.vsync.kernels import DROP_REASONS

_TICK_TIME, _EMITTED_END, _HAS_WINDOW = kernels.TICK_TIME, kernels.EMITTED_END, kernels.HAS_WINDOW
_MODES = {Assemble.CONCAT: kernels.CONCAT, Assemble.NEAREST: kernels.NEAREST, Assemble.HOLD: kernels.HOLD}


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
    """One tick: flat arrays, streams in config order (`names`); `streams` gives the per-stream view."""

    index: int
    capture_ns: int  # the tick time, in capture time
    window_start_ns: int  # exclusive
    window_end_ns: int  # inclusive
    dt_eff: float  # seconds
    names: tuple[str, ...]
    data: tuple  # per stream: concat: chunks on axis 0; nearest/hold: the sample; None if there is none
    samples: np.ndarray  # (2, n) int64, read-only: estimated capture time and seq of every sample handed on
    status: np.ndarray  # (K, 6) float64, read-only: valid, fresh, stale, age_s, and [from, to) in `samples`
    emitted_ns: int  # host time the tick went out
    by_deadline: bool  # went out at its deadline, not because every live stream had covered it

    @property
    def mask(self) -> np.ndarray:
        """(K,) bool: the streams usable in this tick (fresh, or held and not stale)."""
        return self.status[:, kernels.T_VALID] > 0

    @property
    def ages(self) -> np.ndarray:
        """(K,) float32 seconds: tick time minus the newest sample's capture; nan where there is none."""
        return self.status[:, kernels.T_AGE].astype(np.float32)

    @property
    def streams(self) -> dict[str, StreamSlot]:
        out = {}
        for k, name in enumerate(self.names):
            valid, fresh, stale, age, start, stop = self.status[k].tolist()
            a, b = int(start), int(stop)
            out[name] = StreamSlot(
                self.data[k], self.samples[0, a:b], self.samples[1, a:b], valid > 0, fresh > 0, stale > 0, age
            )
        return out


class _Stream:
    """Per-stream Python-side state: its config, the payloads pending (in arrival order), the held sample."""

    def __init__(self, k: int, cfg):
        self.k, self.cfg, self.name = k, cfg, cfg.name
        self.mode = cfg.assemble
        self.hold = cfg.assemble is Assemble.HOLD
        self.payloads: list = []
        self.held = None  # HOLD: the payload handed on last (its time and seq are in the kernels' state)
        self.layout: tuple | None = None  # CONCAT: trailing shape and dtype of the chunks delivered so far


class VSync:
    """The scheduler; `clock` gives host ns (arrivals default to it: inject one to run in virtual time)."""

    def __init__(self, config: VSyncConfig, clock=now_ns):
        self.config = config
        self._clock = clock
        self._streams = [_Stream(k, s) for k, s in enumerate(config.streams)]
        self._k = {s.name: s.k for s in self._streams}
        self._payloads = [s.payloads for s in self._streams]  # the same lists, indexed for push
        K = len(self._streams)
        self._state = kernels.new_state(K, config.dedup_window)
        self._blocks = np.zeros((2, K, kernels.ENVELOPE_BLOCKS))
        self._pending = np.zeros((3, K, config.max_pending))  # stamp, estimate, seq
        self._out = np.zeros((2, K, config.max_pending))  # a closing window's estimates and seqs
        self._order = np.zeros((K, config.max_pending), np.int64)
        self._summary = np.zeros((K, kernels.SUMMARY_COLUMNS))
        self._g = np.zeros(kernels.GLOBALS_SIZE)
        self._g[kernels.EMITTED_END] = -np.inf
        self._g[kernels.FUTURE_TOL] = config.future_tolerance_s * 1e9
        self._g[kernels.MAX_DELAY] = config.max_delay_s * 1e9
        for st in self._streams:
            c = st.cfg
            coast = c.max_coast_cycles
            kernels.configure(self._state, st.k, c.period_ns, c.max_rate_error, c.fit_cycles, coast)
            self._state[st.k, kernels.STALE_AFTER] = config.stale_after_periods * c.period_ns
            self._state[st.k, kernels.MODE] = _MODES[c.assemble]
            self._state[st.k, kernels.WAIT] = float(c.wait)
        self._master = self._streams[self._k[config.master_stream]]
        self._g[kernels.MASTER] = self._master.k
        self._g[kernels.MAX_WAIT] = config.max_wait_s * 1e9
        self._names = tuple(s.name for s in self._streams)
        self._events = config.event_stream is not None
        self._follow_master = config.tick_hz is None and not self._events
        self._tick_period = config.tick_period_ns
        self._measured = config.dt_eff is DtEffMode.MEASURED
        self._refine = not config.tick_hz  # ticks move to the master's (or event's) capture instant
        self._origin: int | None = None
        self._window: tuple[float, float, float] | None = None  # (tick time, start, end) being filled
        self._event_windows: deque[tuple[float, float]] = deque()  # (tick time, end) per event sample
        self._emitted_end = -math.inf  # end of the last window that went out
        self._last_tick_time: float | None = None
        self._first_arrival = math.inf  # of the samples waiting for the clock to start
        self._paused = False  # every stream went silent: the next sample re-anchors the clock
        self._deadline_ns = 0  # of the open window: host ns at which it is due
        self._index = 0
        self.unknown_streams = 0  # messages on topics this scheduler was not configured for
        self.deadline_ticks = 0

    # ------------------------------------------------------------------------------------------ input
    def push(self, stream: str, seq: int, capture_ns: int, data, arrival_ns: int | None = None) -> list[Tick]:
        """Take one sample; returns the ticks it completed (usually none)."""
        k = self._k.get(stream)
        if k is None:
            self.unknown_streams += 1
            return []
        now = self._clock() if arrival_ns is None else int(arrival_ns)
        if self._origin is None:
            self._origin = int(capture_ns)
        origin = self._origin
        ticks = []
        if self._window is not None and now >= self._deadline_ns:
            # Windows that came due before this sample: closed as a poll just before it would have, so a
            # stream that was silent until now counts as silent.
            ticks = self._emit_ready(now)
        arrival = float(now - origin)
        stamp = float(capture_ns - origin)
        code = kernels.ingest(self._state, self._blocks, self._pending, self._g, k, int(seq), stamp, arrival)
        if not code & 15:
            self._payloads[k].append(data)
            if arrival < self._first_arrival:
                self._first_arrival = arrival
            if self._events and k == self._master.k:
                i = int(self._state[k, kernels.PENDING]) - 1
                self._event_windows.append((self._pending[1, k, i], self._pending[0, k, i]))
        if code & kernels.READY:
            return ticks + self._emit_ready(now) if ticks else self._emit_ready(now)
        return ticks

    def push_many(self, streams, seqs, capture_ns, data, arrival_ns=None) -> list[Tick]:
        """`push` for a batch in arrival order (parallel sequences; `arrival_ns` None: all arrived now): the
        same ticks as pushing them one by one, with the per-sample work in one kernel call per tick."""
        n = len(streams)
        if not n:
            return []
        kmap = self._k
        ks = np.fromiter((kmap.get(s, -1) for s in streams), np.int64, n)
        capture = np.asarray(capture_ns, np.int64)
        if arrival_ns is None:
            arrival = np.full(n, self._clock(), np.int64)
        else:
            arrival = np.asarray(arrival_ns, np.int64)
        if self._origin is None:
            known = np.flatnonzero(ks >= 0)
            if not len(known):
                self.unknown_streams += n
                return []
            self._origin = int(capture[known[0]])
        origin = self._origin
        stamps = (capture - origin).astype(np.float64)
        arrivals = (arrival - origin).astype(np.float64)
        seqs = np.asarray(seqs, np.int64)
        codes = np.zeros(n, np.int64)
        ests = np.zeros(n)
        ticks: list[Tick] = []
        payloads, events, master = self._payloads, self._events, self._master.k
        ks_list = ks.tolist()
        i = 0
        while i < n:
            j = kernels.ingest_many(
                self._state, self._blocks, self._pending, self._g, ks, seqs, stamps, arrivals, codes, ests, i
            )
            if j > i and not events and self._g[kernels.ALL_ADMITTED]:
                for x in range(i, j):  # all admitted: the usual case
                    payloads[ks_list[x]].append(data[x])
                self._first_arrival = min(self._first_arrival, float(arrivals[i]))  # batches: arrival order
            else:
                for x, k, code in zip(range(i, j), ks_list[i:j], codes[i:j].tolist(), strict=True):
                    if code & kernels.UNKNOWN:
                        self.unknown_streams += 1
                    elif not code & 15:
                        payloads[k].append(data[x])
                        self._first_arrival = min(self._first_arrival, float(arrivals[x]))
                        if events and k == master:
                            self._event_windows.append((float(ests[x]), float(stamps[x])))
            if j < n and codes[j] & kernels.OVERDUE:
                ticks += self._emit_ready(int(arrival[j]))  # as `push` does before admitting a late-comer
            elif j > i and codes[j - 1] & kernels.READY:
                ticks += self._emit_ready(int(arrival[j - 1]))
            i = j
        return ticks

    def poll(self, now_ns: int | None = None) -> list[Tick]:
        """Ticks whose deadline has passed (and staleness as of now)."""
        if self._origin is None:
            return []
        return self._emit_ready(self._clock() if now_ns is None else int(now_ns))

    def next_deadline_ns(self) -> int | None:
        """When `poll` next has something to do (a tick deadline, a stream going stale), or None."""
        if self._origin is None:
            return None
        state = self._state
        times = []
        if self._window is not None:
            times.append(self._g[kernels.DEADLINE])
        elif self._first_arrival < math.inf and not self._events:  # the clock starts without its master
            times.append(self._first_arrival + state[self._master.k, kernels.STALE_AFTER])
        heard = (state[:, kernels.HEARD] != 0) & (state[:, kernels.STALE] == 0)
        if heard.any():
            silent_at = state[heard, kernels.LAST_ARRIVAL] + state[heard, kernels.STALE_AFTER]
            times.append(float(silent_at.min()))
        # +1 ns: a deadline is due at `now >= deadline`, a stream stale once silent *longer* than its time
        return self._origin + math.floor(min(times)) + 1 if times else None

    def flush(self) -> list[Tick]:
        """Emit every window that still holds samples, without waiting (end of a recording, shutdown)."""
        ticks = []
        while self._state[:, kernels.PENDING].any():
            window = self._current_window(math.inf, force=True)
            if window is None:
                break
            ticks.append(self._emit(window, self._clock(), by_deadline=True))
        return ticks

    # ------------------------------------------------------------------------------------------ status
    def status(self) -> list[StreamStatus]:
        """Per-stream counts and tracking, in config order (fresh snapshots)."""
        out = []
        for st in self._streams:
            row = self._state[st.k]
            osc_count = row[kernels.COUNT]
            out.append(
                StreamStatus(
                    st.name,
                    st.cfg.nominal_hz,
                    received=int(row[kernels.RECEIVED]),
                    delivered=int(row[kernels.DELIVERED]),
                    dropped={r: int(row[kernels.DROPPED + i]) for i, r in enumerate(DROP_REASONS)},
                    stale=bool(row[kernels.STALE]),
                    stale_events=int(row[kernels.STALE_EVENTS]),
                    resumed=int(row[kernels.RESUMED]),
                    resets=int(row[kernels.RESETS]),
                    relocks=int(row[kernels.RELOCKS]),
                    missed_cycles=int(row[kernels.MISSED]),
                    rate_hz=float(1e9 / row[kernels.PERIOD]),
                    delay_ms=float(row[kernels.DELAY_MEAN] / 1e6),
                    jitter_ms=float(row[kernels.DELAY_DEV] / 1e6) if osc_count > 1 else 0.0,
                    locked=bool(row[kernels.LOCKED]) and osc_count > 1,
                    pending=int(row[kernels.PENDING]),
                )
            )
        return out

    @property
    def ticks_emitted(self) -> int:
        return self._index

    # ------------------------------------------------------------------------------------------ internals
    def _live(self, k: int) -> bool:
        return self._state[k, kernels.HEARD] != 0 and self._state[k, kernels.STALE] == 0

    def _emit_ready(self, now: int) -> list[Tick]:
        ticks = []
        now_rel = float(now - self._origin)
        state = self._state
        while True:
            window = self._current_window(now_rel)
            if window is None:
                kernels.mark_stale(state, now_rel)
                break
            if kernels.complete(state, now_rel, window[2]):
                ticks.append(self._emit(window, now, by_deadline=False))
                continue
            deadline = self._g[kernels.DEADLINE]
            if now_rel < deadline:
                break
            if not kernels.mark_stale(state, deadline):  # staleness as of the deadline, as if polled then
                self._window = None  # everything silent: the clock pauses, and re-anchors on the next sample
                self._g[kernels.HAS_WINDOW] = 0.0
                self._paused = True
                break
            self.deadline_ticks += 1
            ticks.append(self._emit(window, now, by_deadline=True))
        return ticks

    def _tick_period_now(self) -> float:
        row = self._state[self._master.k]
        if self._follow_master and row[kernels.COUNT] >= 2:
            return row[kernels.PERIOD]
        return self._tick_period

    def _current_window(self, now_rel: float, force: bool = False) -> tuple[float, float, float] | None:
        if self._window is not None:
            return self._window
        if self._events:
            while self._event_windows:
                tick_time, end = self._event_windows.popleft()
                if end > self._emitted_end:
                    start = self._emitted_end if self._index else end - self._tick_period
                    return self._open(tick_time, start, end)
            if force:
                end = max(
                    float(self._pending[0, k, : int(self._state[k, kernels.PENDING])].max(initial=-np.inf))
                    for k in range(len(self._streams))
                )
                return self._open(end, self._emitted_end, end)
            return None
        if self._last_tick_time is None or self._paused:
            period = self._tick_period_now()
            tick_time = self._anchor(now_rel, force)
            if tick_time is None:
                return None
            self._paused = False
            start = tick_time - period / 2 if not self._index else self._emitted_end
            tick_time = max(tick_time, start + 1.0)
        else:
            return self._opened(
                kernels.advance_window(
                    self._state, self._g, self._last_tick_time, self._tick_period, self._follow_master
                )
            )
        end = max(tick_time + period / 2, start + period / 4)
        return self._open(tick_time, start, end)

    def _open(self, tick_time: float, start: float, end: float) -> tuple[float, float, float]:
        # The bounded wait runs from when a stream's samples up to the window's end can first be here: its
        # stamp-to-arrival lag (an audio chunk stamped at its first sample arrives a chunk later).
        kernels.open_window(self._state, self._g, end)
        return self._opened((tick_time, start, end))

    def _opened(self, window: tuple[float, float, float]) -> tuple[float, float, float]:
        self._window = window
        self._deadline_ns = self._origin + math.floor(self._g[kernels.DEADLINE]) + 1
        return window

    def _anchor(self, now_rel: float, force: bool) -> float | None:
        """Time of the first tick (or the first after a pause): the master's first sample waiting; or, if the
        master stays silent for its stale time, half a period after the earliest sample waiting."""
        state, pending = self._state, self._pending
        m = self._master.k
        if state[m, kernels.PENDING]:
            return float(pending[1, m, : int(state[m, kernels.PENDING])].min())
        waiting = [k for k in range(len(self._streams)) if state[k, kernels.PENDING]]
        if not waiting:
            return None
        if force or now_rel - self._first_arrival > state[m, kernels.STALE_AFTER]:
            earliest = min(float(pending[0, k, : int(state[k, kernels.PENDING])].min()) for k in waiting)
            return earliest + self._tick_period_now() / 2
        return None

    def _emit(self, window: tuple[float, float, float], now: int, by_deadline: bool) -> Tick:
        tick_time, start, end = window
        origin = self._origin
        if not self._index:  # the first window also holds whatever came before it: nothing was ever late
            counts = self._state[:, kernels.PENDING]
            earliest = min(
                (float(self._pending[0, k, : int(c)].min()) for k, c in enumerate(counts) if c), default=start
            )
            start = min(start, earliest - 1.0)
        last = self._last_tick_time
        samples, status = kernels.close_window(
            self._state,
            self._pending,
            self._out,
            self._order,
            self._summary,
            self._g,
            start,
            end,
            tick_time,
            math.nan if last is None else last,
            self._refine,
            origin,
        )
        g = self._g
        tick_time = g[_TICK_TIME]
        data = []
        for st, (n, chosen, prefix, _, _, _, left) in zip(self._streams, self._summary.tolist(), strict=True):
            if not n:
                data.append(st.held if st.hold else None)
                continue
            n = int(n)
            payloads = st.payloads
            if prefix:  # the first n to arrive, already in capture order: the usual case
                taken = payloads[:n]
                del payloads[:n]
            else:
                perm = self._order[st.k, : n + int(left)].tolist()
                taken = [payloads[i] for i in perm[:n]]
                payloads[:] = [payloads[i] for i in perm[n:]]
            if chosen >= 0:  # NEAREST or HOLD: one sample
                sample = taken[int(chosen)]
                data.append(sample)
                if st.hold:
                    st.held = sample
                continue
            chunks = self._chunks(st, taken)
            if chunks is None:
                samples, status = self._drop_misshapen(st, taken, samples, status, tick_time)
                chunks = self._chunks(st, [p for p in taken if _layout(p) == st.layout])
            data.append(chunks)
        samples.flags.writeable = False
        status.flags.writeable = False
        if self._measured and last is not None:
            dt_eff = (tick_time - last) / 1e9
        else:
            dt_eff = self._dt_eff(tick_time)
        tick = Tick(
            self._index,
            origin + int(tick_time),
            origin + int(start) if start > -math.inf else origin,
            origin + int(end),
            dt_eff,
            self._names,
            tuple(data),
            samples,
            status,
            now,
            by_deadline,
        )
        self._index += 1
        self._emitted_end = end
        g[_EMITTED_END] = end
        g[_HAS_WINDOW] = 0.0
        self._last_tick_time = tick_time
        self._window = None
        self._first_arrival = math.inf
        return tick

    @staticmethod
    def _chunks(st: _Stream, taken: list) -> np.ndarray | None:
        """CONCAT: the chunks on axis 0, or None if one has another layout than the stream's."""
        if not taken:
            return None
        layout = st.layout or next((_layout(p) for p in taken if _layout(p) is not None), None)
        if layout is None:
            return None
        first = taken[0]
        data = (first if isinstance(first, np.ndarray) else None) if len(taken) == 1 else _concat(taken)
        # One check on the result: a chunk of another trailing shape fails the concatenation, one of another
        # dtype (or a list) changes the result's dtype.
        if data is None or data.ndim == 0 or data.shape[1:] != layout[0] or data.dtype != layout[1]:
            return None
        st.layout = layout
        return data

    def _drop_misshapen(self, st: _Stream, taken: list, samples, status, tick_time: float):
        """Count chunks of another layout as dropped ('shape') and take them out of the tick's arrays."""
        if st.layout is None:
            st.layout = next((_layout(p) for p in taken if _layout(p) is not None), None)
        bad = [i for i, p in enumerate(taken) if st.layout is None or _layout(p) != st.layout]
        k = st.k
        self._state[k, kernels.DROPPED + kernels.SHAPE] += len(bad)
        self._state[k, kernels.DELIVERED] -= len(bad)
        lo = int(status[k, kernels.T_FROM])
        samples = np.delete(samples, [lo + i for i in bad], axis=1)
        status = status.copy()
        status[k, kernels.T_TO] -= len(bad)
        status[k + 1 :, kernels.T_FROM] -= len(bad)
        status[k + 1 :, kernels.T_TO] -= len(bad)
        kept = int(status[k, kernels.T_TO]) - lo
        if kept:
            status[k, kernels.T_AGE] = (tick_time - float(samples[0, lo + kept - 1] - self._origin)) / 1e9
        else:
            status[k, kernels.T_VALID] = status[k, kernels.T_FRESH] = 0.0
            status[k, kernels.T_AGE] = math.nan
        return samples, status

    def _dt_eff(self, tick_time: float) -> float:
        dt = self._tick_period / 1e9
        mode = self.config.dt_eff
        if mode is DtEffMode.FIXED:
            return dt
        if mode is DtEffMode.MEASURED:
            return (tick_time - self._last_tick_time) / 1e9 if self._last_tick_time is not None else dt
        # PHASE: seed 000 eq. 8 with the tracked phases instead of the open-loop 2 pi f n dt.
        phases = [
            kernels.phase(self._state, st.k, tick_time)
            for st in self._streams
            if self._live(st.k) and self._state[st.k, kernels.COUNT] >= 2
        ]
        if not phases:
            return dt
        return dt * (1.0 + sum(math.cos(theta) for theta in phases) / len(phases))


_EMPTY_I64 = np.empty(0, np.int64)


def _concat(chunks: list) -> np.ndarray | None:
    try:
        return np.concatenate(chunks, axis=0)
    except (ValueError, TypeError):
        return None


def _layout(chunk) -> tuple | None:
    """What chunks of one stream must share to be concatenated: trailing shape and dtype."""
    if isinstance(chunk, np.ndarray) and chunk.ndim > 0:
        return chunk.shape[1:], chunk.dtype
    return None
