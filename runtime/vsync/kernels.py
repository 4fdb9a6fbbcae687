"""Every numba kernel of the V-sync scheduler, in one file: numba's on-disk cache notices only edits to the
file a kernel is defined in, so kernels that call each other must share one (or an upgrade runs stale code).

## Per-stream oscillators

A sensor samples on its own crystal: regularly, at a rate a little off nominal (drift). Its capture stamp is
taken when the driver hands the sample over, a random delay later: stamps are late, never early. The
oscillator is a phase-locked loop over those stamps:

- the numerically controlled oscillator predicts cycle n at `t_newest + k * period` (k cycles on; a skipped
  cycle is a sensor-side drop, counted);
- the phase detector is the stamp's residual against that prediction;
- the loop filter corrects frequency and phase. A proportional-integral filter would lock onto the stamps'
  *mean* delay, off by half the jitter (5 ms for a 30 Hz camera with 30 % jitter). The delay is one-sided,
  so this loop locks onto the lower envelope of the stamps instead. The window of `fit_cycles` cycles is cut
  into ENVELOPE_BLOCKS blocks, each keeping its earliest stamp; the period is the slope of a long chord of
  the lower convex hull of those points, the phase the lowest line of that slope under all of them. While
  the lock is young, the period is least squares over every stamp with a prior at nominal.

Residuals outside the jitter band are outliers and not fed. The loop re-locks, keeping the period, on three
outliers among four samples (a clock offset step, a node that restarted with a new phase), on STEP_SAMPLES
fed in a row all well above the envelope (a smaller step up: no stamp touches it any more), or after a gap
longer than `max_coast_cycles`.

The kernels run per sample. They are compiled when this module is imported (explicit signatures, cached on
disk), so nothing compiles once the robot is moving. Times are float64 nanoseconds from the scheduler's
origin: exact to well below a microsecond for months.

## The scheduler's per-sample and per-tick work

`VSync` (scheduler.py) keeps the clock, the windows and the Python objects; everything touched per sample
lives here: admission (future, too old, duplicate, publisher restart, late, overflow), the oscillator update,
the pending buffers, coverage of the open window, staleness; and per tick, assigning pending samples to the
window. State is one float64 row per stream: the oscillator's columns first, then the scheduler's, then the
ring of recent sequence numbers. Kernels take few arrays because each array argument costs a numba call
about 0.15 us, and a push is budgeted at a few microseconds.
"""

import numpy as np
from numba import njit

# ================================================================================== per-stream oscillators
ENVELOPE_BLOCKS = 32  # points on the lower envelope; the hull over 33 points costs well under a microsecond
OUTLIER_RELOCK = 3  # outliers among the last 4 samples (either side): its clock stepped, it did not jitter
STEP_SAMPLES = 8  # fed in a row, each delayed over twice the mean delay: a step (exponential: p = 1e-7)
PRIOR_RATE_SIGMA = 0.01  # sensors run within about 1 % of nominal (crystal and firmware tolerance)
COVER_MARGIN = 0.05  # of a period, while the lock is young (under 64 samples): its phase may be off that much
COVER_MARGIN_LOCKED = 0.01  # then: locked phases are off by a small fraction of this (0.6 ms p99 at 10 Hz)
CHORD_MIN_SPAN = 24  # cycles under the envelope before its chord beats least squares over every stamp

# Columns of one stream's state row (float64).
PERIOD, NOMINAL, MIN_PERIOD, MAX_PERIOD, COAST, LOCK_PERIOD = 0, 1, 2, 3, 4, 5
T_NEWEST, N_NEWEST, DELAY_MEAN, DELAY_DEV, COUNT, OUTLIERS = 6, 7, 8, 9, 10, 11
BLOCK_ID, OPEN_N, OPEN_S, OPEN_R, N_BLOCKS, BLOCK_HEAD, MAX_BLOCK_LEN = 12, 13, 14, 15, 16, 17, 18
SUM_W, SUM_X, SUM_Y, SUM_XX, SUM_XY, ORIGIN_N, ORIGIN_S = 19, 20, 21, 22, 23, 24, 25
MISSED, RELOCKS, LOCKED, HIGH_RUN = 26, 27, 28, 29
STATE_SIZE = 30

# What `update` did with a sample.
FED = 0  # in phase: fed to the loop
LOCKED_NEW = 1  # the first sample: the loop locked on it
RELOCK_GAP = 2  # came after a gap longer than max_coast_cycles: re-locked on it
RELOCK_STEP = 3  # the third outlier in a row: re-locked on it
OUTLIER = 4  # outside the jitter band: estimated, not fed
BEHIND = 5  # a cycle at or before the newest (reordered or extra): estimated, not fed


def configure(
    state: np.ndarray, k: int, period_ns: float, max_rate_error: float, fit_cycles: int, coast: int
):
    row = state[k]
    row[:STATE_SIZE] = 0.0  # callers may keep their own columns after these
    row[PERIOD] = row[NOMINAL] = period_ns
    row[MIN_PERIOD] = period_ns / (1.0 + max_rate_error)
    row[MAX_PERIOD] = period_ns * (1.0 + max_rate_error)
    row[COAST] = coast
    row[MAX_BLOCK_LEN] = max(1, int(np.ceil(fit_cycles / ENVELOPE_BLOCKS)))
    row[DELAY_DEV] = 0.1 * period_ns  # prior on jitter before any is measured: a tenth of a period


@njit("void(float64[:, :], int64, float64, float64)", cache=True, nogil=True)
def _lock(st, k, s, n):
    """(Re)start the loop on stamp `s` as cycle `n`, keeping the period and the delay statistics."""
    st[k, T_NEWEST] = s
    st[k, N_NEWEST] = n
    st[k, COUNT] = 1.0
    st[k, OUTLIERS] = 0.0
    st[k, HIGH_RUN] = 0.0
    st[k, BLOCK_ID] = n  # blocks start one cycle long
    st[k, OPEN_N] = n
    st[k, OPEN_S] = s
    st[k, OPEN_R] = 0.0
    st[k, N_BLOCKS] = 0.0
    st[k, BLOCK_HEAD] = 0.0
    st[k, SUM_W] = 1.0
    st[k, SUM_X] = 0.0
    st[k, SUM_Y] = 0.0
    st[k, SUM_XX] = 0.0
    st[k, SUM_XY] = 0.0
    st[k, ORIGIN_N] = n
    st[k, ORIGIN_S] = s
    st[k, LOCK_PERIOD] = st[k, PERIOD]
    st[k, LOCKED] = 1.0


@njit("void(float64[:, :], int64)", cache=True, nogil=True)
def relock(st, k):
    """Forget the phase (the next sample locks anew); keep the tracked period."""
    if st[k, LOCKED] != 0.0:
        st[k, RELOCKS] += 1.0
    st[k, LOCKED] = 0.0


@njit("float64(float64[:, :], float64[:, :], float64[:, :], int64, int64)", cache=True, nogil=True)
def _envelope_slope(st, block_n, block_s, k, blocks):
    """Slope of a long chord of the lower convex hull of the block minima.

    Hull vertices are the stamps with the least delay, so a chord between a vertex in the oldest quarter and
    one in the newest quarter has a baseline of at least half the window and endpoints within a small
    fraction of the jitter of the true line. (The hull edge over the middle, the linear-programming line of
    clock-skew estimation, is often short early on and then off by hundreds of ppm.)
    """
    m = blocks + 1
    xs = np.empty(m)
    ys = np.empty(m)
    head = int(st[k, BLOCK_HEAD]) if blocks == ENVELOPE_BLOCKS else 0
    for j in range(blocks):  # oldest first
        xs[j] = block_n[k, (head + j) % ENVELOPE_BLOCKS]
        ys[j] = block_s[k, (head + j) % ENVELOPE_BLOCKS]
    xs[blocks] = st[k, OPEN_N]
    ys[blocks] = st[k, OPEN_S]
    hull = np.empty(m, np.int64)
    h = 0
    for j in range(m):  # monotone chain, lower hull
        while h >= 2:
            a = hull[h - 2]
            b = hull[h - 1]
            if (xs[b] - xs[a]) * (ys[j] - ys[a]) - (ys[b] - ys[a]) * (xs[j] - xs[a]) <= 0.0:
                h -= 1
            else:
                break
        hull[h] = j
        h += 1
    span = xs[m - 1] - xs[0]
    a = hull[0]
    for e in range(h):
        if xs[hull[e]] <= xs[0] + 0.25 * span:
            a = hull[e]
    b = hull[h - 1]
    for e in range(h - 1, -1, -1):
        if xs[hull[e]] >= xs[m - 1] - 0.25 * span:
            b = hull[e]
    if xs[b] - xs[a] < 0.25 * span or span <= 0.0:
        return st[k, PERIOD]
    return (ys[b] - ys[a]) / (xs[b] - xs[a])


@njit(
    "UniTuple(float64, 4)(float64[:, :], float64[:, :], float64[:, :], int64, float64)",
    cache=True,
    nogil=True,
)
def update(st, block_n, block_s, k, s):
    """Feed stamp `s` of stream `k`: returns (status, cycle index, estimated capture time, covered until).

    "Covered until": no later sample of this stream can be stamped at or before it (the next capture, less
    COVER_MARGIN of a period, once the lock has two samples; else this stamp)."""
    if st[k, LOCKED] == 0.0:
        relocking = st[k, RELOCKS] > 0.0 or st[k, COUNT] > 0.0
        n = st[k, N_NEWEST] + 1.0 if relocking else 0.0
        _lock(st, k, s, n)
        return float(RELOCK_STEP if relocking else LOCKED_NEW), n, s, s

    period = st[k, PERIOD]
    k_cycles = np.floor((s - st[k, T_NEWEST] - st[k, DELAY_MEAN]) / period + 0.5)
    if k_cycles > st[k, COAST]:
        n = st[k, N_NEWEST] + k_cycles
        st[k, RELOCKS] += 1.0
        _lock(st, k, s, n)
        return float(RELOCK_GAP), n, s, s
    n = st[k, N_NEWEST] + k_cycles
    t_pred = st[k, T_NEWEST] + k_cycles * period
    if k_cycles <= 0.0:
        return float(BEHIND), n, min(t_pred, s), s  # a capture is never after its stamp

    residual = s - t_pred
    dev = max(st[k, DELAY_DEV], 0.002 * period)
    # A stamp under the envelope proves the envelope late (a capture is never after its stamp), so it is fed
    # and lowers it; only one far under it (a quarter period: a clock step back) is an outlier. While the
    # lock is young, anything in the unwrapping range is fed.
    low = -0.25 * period if st[k, COUNT] >= 16.0 else -0.5 * period
    high = st[k, DELAY_MEAN] + 4.0 * dev + 0.05 * period
    if residual < low or residual > high:
        # A clock step shows as outliers on both sides: those past half a period wrap to the next cycle.
        sign = 1.0 if residual > high else -1.0
        recent = (int(st[k, OUTLIERS]) << 1 | 1) & 15  # the last 4 samples, 1 = outlier
        st[k, OUTLIERS] = recent
        if (recent & 1) + (recent >> 1 & 1) + (recent >> 2 & 1) + (recent >> 3 & 1) >= OUTLIER_RELOCK:
            st[k, RELOCKS] += 1.0
            _lock(st, k, s, n)
            return float(RELOCK_STEP), n, s, s
        # A late outlier is most likely a long delay (the grid holds); an early one contradicts the grid.
        est = t_pred if sign > 0.0 else s - st[k, DELAY_MEAN]
        return float(OUTLIER), n, min(est, s), s

    st[k, OUTLIERS] = (int(st[k, OUTLIERS]) << 1) & 15
    # A step up smaller than the band: every stamp now sits well above the envelope, none touches it.
    high_delay = residual > max(2.0 * st[k, DELAY_MEAN], 0.05 * period)
    st[k, HIGH_RUN] = st[k, HIGH_RUN] + 1.0 if high_delay and st[k, COUNT] >= 16.0 else 0.0
    if st[k, HIGH_RUN] >= STEP_SAMPLES:
        st[k, RELOCKS] += 1.0
        _lock(st, k, s, n)
        return float(RELOCK_STEP), n, s, s
    st[k, MISSED] += k_cycles - 1.0
    count = st[k, COUNT] + 1.0
    st[k, COUNT] = count
    alpha = max(1.0 / count, 1.0 / 64.0)
    st[k, DELAY_MEAN] += alpha * (residual - st[k, DELAY_MEAN])
    st[k, DELAY_DEV] += alpha * (abs(residual - st[k, DELAY_MEAN]) - st[k, DELAY_DEV])

    # Envelope blocks: each keeps its earliest stamp (lowest residual); closed blocks go to a ring. Blocks
    # start one cycle long, so the envelope has points from the start, and double as the lock matures.
    max_blocks = ENVELOPE_BLOCKS
    block_len = min(st[k, MAX_BLOCK_LEN], max(1.0, 2.0 ** np.floor(np.log2(count / 8.0))))
    block = np.floor(n / block_len)
    if block != st[k, BLOCK_ID]:
        head = int(st[k, BLOCK_HEAD])
        block_n[k, head] = st[k, OPEN_N]
        block_s[k, head] = st[k, OPEN_S]
        st[k, BLOCK_HEAD] = (head + 1) % max_blocks
        st[k, N_BLOCKS] = min(st[k, N_BLOCKS] + 1.0, float(max_blocks))
        st[k, BLOCK_ID] = block
        st[k, OPEN_N] = n
        st[k, OPEN_S] = s
        st[k, OPEN_R] = residual
    elif residual < st[k, OPEN_R]:
        st[k, OPEN_N] = n
        st[k, OPEN_S] = s
        st[k, OPEN_R] = residual

    # Frequency: least squares over every stamp while the lock is young (unbiased for a one-sided delay,
    # only noisier), then the envelope's chord once its points span CHORD_MIN_SPAN cycles.
    x = n - st[k, ORIGIN_N]
    y = s - st[k, ORIGIN_S]
    st[k, SUM_W] += 1.0
    st[k, SUM_X] += x
    st[k, SUM_Y] += y
    st[k, SUM_XX] += x * x
    st[k, SUM_XY] += x * y
    blocks = int(st[k, N_BLOCKS])
    oldest = block_n[k, int(st[k, BLOCK_HEAD]) if blocks == max_blocks else 0]
    new_period = period
    if blocks >= 3 and n - oldest >= CHORD_MIN_SPAN:
        new_period = _envelope_slope(st, block_n, block_s, k, blocks)
    else:
        # A Gaussian prior at the period the lock started with keeps a few jittery stamps from pulling the
        # rate away (three stamps 30 % jittered can fake a 15 % rate error, which then miscounts cycles).
        w = st[k, SUM_W]
        denom = w * st[k, SUM_XX] - st[k, SUM_X] * st[k, SUM_X]
        if w >= 3.0 and denom > 0.0:
            slope = (w * st[k, SUM_XY] - st[k, SUM_X] * st[k, SUM_Y]) / denom
            sigma = 1.15 * max(st[k, DELAY_DEV], 0.002 * period)  # a uniform delay's sd from its mean abs dev
            precision = denom / (w * sigma * sigma)
            prior = 1.0 / (PRIOR_RATE_SIGMA * st[k, LOCK_PERIOD]) ** 2
            new_period = (slope * precision + st[k, LOCK_PERIOD] * prior) / (precision + prior)
    period = min(max(new_period, st[k, MIN_PERIOD]), st[k, MAX_PERIOD])
    st[k, PERIOD] = period

    # Phase: the lowest line of that slope under every stamp kept (a capture is never after its stamp).
    t_env = min(s, st[k, OPEN_S] + (n - st[k, OPEN_N]) * period)
    for j in range(blocks):
        t_env = min(t_env, block_s[k, j] + (n - block_n[k, j]) * period)
    st[k, T_NEWEST] = t_env
    st[k, N_NEWEST] = n
    margin = COVER_MARGIN_LOCKED if count >= 64.0 else COVER_MARGIN
    return float(FED), n, t_env, max(s, t_env + (1.0 - margin) * period)


@njit("float64(float64[:, :], int64, float64)", cache=True, nogil=True)
def phase(st, k, t):
    """Tracked phase of stream `k` at time `t`, radians in [0, 2 pi): 0 at its capture instants."""
    cycles = (t - st[k, T_NEWEST]) / st[k, PERIOD]
    return 2.0 * np.pi * (cycles - np.floor(cycles))


# ================================================================= admission, coverage, windows
# Scheduler columns, after the oscillator's.
_C = STATE_SIZE
LAST_SEQ, NEWEST_STAMP, LAST_ARRIVAL, LAG, COVERED, PENDING = _C, _C + 1, _C + 2, _C + 3, _C + 4, _C + 5
STALE, WAITING, HEARD, STALE_AFTER, MODE = _C + 6, _C + 7, _C + 8, _C + 9, _C + 10
RECEIVED, DELIVERED, STALE_EVENTS, RESUMED, RESETS = _C + 11, _C + 12, _C + 13, _C + 14, _C + 15
HELD_EST, HELD_SEQ = _C + 16, _C + 17  # HOLD: the sample handed on last (seq -1: none)
# 1: ticks wait for this stream to cover their window, and a sample stamped in a window already emitted is
# dropped (late); 0: ticks do not wait for it, and such a sample goes to the next window instead
WAIT = _C + 18
DROPPED = _C + 19  # one column per reason in DROP_REASONS, in that order
DROP_REASONS = ("future", "too_old", "duplicate", "late", "superseded", "overflow", "shape")
FUTURE, TOO_OLD, DUPLICATE, LATE, SUPERSEDED, OVERFLOW, SHAPE = range(len(DROP_REASONS))
SEEN = DROPPED + len(DROP_REASONS)  # first column of the ring: seq % ring -> seq

# Globals, one small array shared by the kernels.
EMITTED_END, WINDOW_END, DEADLINE, HAS_WINDOW, FUTURE_TOL, MAX_DELAY, MAX_WAIT, MASTER, TICK_TIME = range(9)
ALL_ADMITTED = 9  # ingest_many: every sample of the span it returned was admitted
GLOBALS_SIZE = 10

# What `take_all` reports per stream: samples taken, the one handed on (-1: all, CONCAT), whether the taken
# are the first to arrive in capture order, the estimate and seq of the one handed on (for CONCAT the
# newest estimate), staleness, samples left pending.
S_TAKEN, S_CHOSEN, S_PREFIX, S_EST, S_SEQ, S_STALE, S_LEFT = range(7)
SUMMARY_COLUMNS = 7

# What `close_window` reports per stream in a tick's `status` rows.
T_VALID, T_FRESH, T_STALE, T_AGE, T_FROM, T_TO = range(6)
STATUS_COLUMNS = 6

# Assemble modes (config.Assemble) as numbers.
CONCAT, NEAREST, HOLD = 0, 1, 2

# What `ingest` returns: the drop reason + 1 in the low bits (0: accepted), and flags.
READY = 16  # the open window may be complete (every stream it waited for has covered it) or is past due
RESET = 32  # the stream's publisher restarted (sequence back, stamp forward): the oscillator re-locks
RESUMED_FLAG = 64  # the stream was stale and spoke again
OVERDUE = 128  # ingest_many: not admitted; the open window's deadline passed before it arrived
UNKNOWN = 256  # ingest_many: a stream this scheduler does not know

_LAG_RISE = 0.01  # per sample: a stream whose delivery slows is followed within a few hundred samples
_MAX_LAG = 0.25e9  # ns: no stream holds a tick back longer than this past its window's end


def new_state(streams: int, dedup_window: int) -> np.ndarray:
    state = np.zeros((streams, SEEN + dedup_window))
    state[:, LAST_SEQ] = -1.0
    state[:, NEWEST_STAMP] = -np.inf
    state[:, LAST_ARRIVAL] = -np.inf
    state[:, LAG] = np.inf
    state[:, COVERED] = -np.inf
    state[:, SEEN:] = -1.0
    state[:, HELD_SEQ] = -1.0
    state[:, WAIT] = 1.0
    return state


@njit("boolean(float64[:, :], float64[:], int64, float64)", cache=True, nogil=True)
def _ready(state, g, k, arrival):
    if g[HAS_WINDOW] == 0.0 or arrival >= g[DEADLINE]:
        return True
    if state[k, WAITING] != 0.0 and state[k, COVERED] >= g[WINDOW_END]:
        state[k, WAITING] = 0.0
    for j in range(state.shape[0]):
        if state[j, WAITING] != 0.0:
            return False
    return True


@njit("int64(float64[:, :], int64, int64, float64[:], int64, float64)", cache=True, nogil=True)
def _drop(state, k, reason, g, flags, arrival):
    state[k, DROPPED + reason] += 1.0
    return (reason + 1) | flags | (READY if _ready(state, g, k, arrival) else 0)


@njit(
    "int64(float64[:, :], float64[:, :, :], float64[:, :, :], float64[:], int64, int64, float64, float64)",
    cache=True,
    nogil=True,
)
def ingest(state, blocks, pending, g, k, seq, stamp, arrival):
    """Admit one sample of stream `k` (times in ns from the scheduler's origin); see the flags above."""
    state[k, RECEIVED] += 1.0
    if stamp > arrival + g[FUTURE_TOL]:
        return _drop(state, k, FUTURE, g, 0, arrival)
    if stamp < arrival - g[MAX_DELAY]:
        return _drop(state, k, TOO_OLD, g, 0, arrival)
    flags = 0
    if seq < state[k, LAST_SEQ] and stamp > state[k, NEWEST_STAMP]:
        # The sequence went back while time went forward: its publisher restarted. (Checked before
        # duplicates: the new run's numbers are still in the ring from the old one.)
        state[k, RESETS] += 1.0
        state[k, SEEN:] = -1.0
        state[k, LAST_SEQ] = seq
        relock(state, k)
        flags |= RESET
    ring = state.shape[1] - SEEN
    slot = SEEN + seq % ring
    if state[k, slot] == seq:
        return _drop(state, k, DUPLICATE, g, flags, arrival)
    state[k, slot] = seq
    if seq > state[k, LAST_SEQ]:
        state[k, LAST_SEQ] = seq
    if stamp > state[k, NEWEST_STAMP]:
        state[k, NEWEST_STAMP] = stamp
    state[k, LAST_ARRIVAL] = arrival
    state[k, HEARD] = 1.0
    lag = arrival - stamp  # transport, plus a chunk's length when a chunk is stamped at its first sample
    state[k, LAG] = lag if lag < state[k, LAG] else state[k, LAG] + _LAG_RISE * (lag - state[k, LAG])
    if state[k, STALE] != 0.0:
        state[k, STALE] = 0.0
        state[k, RESUMED] += 1.0
        flags |= RESUMED_FLAG
    _, _, est, covered = update(state, blocks[0], blocks[1], k, stamp)
    if covered > state[k, COVERED]:
        state[k, COVERED] = covered
    if stamp <= g[EMITTED_END] and state[k, WAIT] != 0.0:  # a stream not waited for: the next window
        return _drop(state, k, LATE, g, flags, arrival)
    i = int(state[k, PENDING])
    if i == pending.shape[2]:
        return _drop(state, k, OVERFLOW, g, flags, arrival)
    pending[0, k, i] = stamp
    pending[1, k, i] = est
    pending[2, k, i] = seq
    state[k, PENDING] = i + 1
    return flags | (READY if _ready(state, g, k, arrival) else 0)


@njit("int64(float64[:, :], float64[:], float64)", cache=True, nogil=True)
def open_window(state, g, end):
    """Make (.., end] the open window: flag the live streams waited for that have not covered it; its
    deadline is g[MAX_WAIT] past the end plus the slowest of those streams' stamp-to-arrival lag. Returns
    the count."""
    waiting = 0
    lag = 0.0
    for k in range(state.shape[0]):
        live = state[k, HEARD] != 0.0 and state[k, STALE] == 0.0
        if live and state[k, WAIT] != 0.0 and state[k, COVERED] < end:
            state[k, WAITING] = 1.0
            waiting += 1
            lag = max(lag, min(state[k, LAG], _MAX_LAG))
        else:
            state[k, WAITING] = 0.0
    g[WINDOW_END] = end
    g[DEADLINE] = end + g[MAX_WAIT] + lag
    g[HAS_WINDOW] = 1.0
    return waiting


@njit("int64(float64[:, :], float64)", cache=True, nogil=True)
def mark_stale(state, t):
    """Streams silent for more than their stale time as of `t` become stale; returns how many are live."""
    live = 0
    for k in range(state.shape[0]):
        if state[k, HEARD] == 0.0:
            continue
        if state[k, STALE] == 0.0 and t - state[k, LAST_ARRIVAL] > state[k, STALE_AFTER]:
            state[k, STALE] = 1.0
            state[k, STALE_EVENTS] += 1.0
        if state[k, STALE] == 0.0:
            live += 1
    return live


@njit("boolean(float64[:, :], float64, float64)", cache=True, nogil=True)
def complete(state, t, end):
    """Staleness as of `t`, then: is (.., end] covered by every live stream (and is any stream live)?"""
    if mark_stale(state, t) == 0:
        return False
    for k in range(state.shape[0]):
        if state[k, WAITING] != 0.0:
            if state[k, STALE] == 0.0 and state[k, COVERED] < end:
                return False
            state[k, WAITING] = 0.0
    return True


@njit(
    "int64(float64[:, :], float64[:, :, :], float64[:, :, :], int64[:, :], float64[:, :], float64, float64)",
    cache=True,
    nogil=True,
)
def take_all(state, pending, out, order, summary, end, tick_time):
    """Close the window (.., end] at `tick_time`: for each stream, take the pending samples stamped at or
    before `end`. Taken samples go to out[0 (estimate), 1 (seq), k, :n], sorted by estimated capture time;
    the rest stay pending, compacted in arrival order; `order[k, :count]` is the permutation applied (taken
    first) for the caller's payload list. summary[k] holds the SUMMARY_COLUMNS: `chosen` is the sample a
    NEAREST (nearest the tick time) or HOLD (newest) stream hands on, -1 for CONCAT. Counts delivered and
    superseded samples. Returns the number taken over all streams."""
    total = 0
    for k in range(state.shape[0]):
        count = int(state[k, PENDING])
        taken = 0
        for i in range(count):
            if pending[0, k, i] <= end:  # insertion sort by estimate: a window holds a handful
                j = taken
                while j > 0 and pending[1, k, order[k, j - 1]] > pending[1, k, i]:
                    order[k, j] = order[k, j - 1]
                    j -= 1
                order[k, j] = i
                taken += 1
        kept = taken
        for i in range(count):
            if pending[0, k, i] > end:
                order[k, kept] = i
                kept += 1
        prefix = 1
        for j in range(taken):
            i = order[k, j]
            if i != j:
                prefix = 0
            out[0, k, j] = pending[1, k, i]
            out[1, k, j] = pending[2, k, i]
        rest = 0
        for j in range(taken, count):  # order[k, taken:] increases, so compacting in place is safe
            i = order[k, j]
            pending[0, k, rest] = pending[0, k, i]
            pending[1, k, rest] = pending[1, k, i]
            pending[2, k, rest] = pending[2, k, i]
            rest += 1
        state[k, PENDING] = rest
        chosen = -1
        mode = int(state[k, MODE])
        if taken and mode == NEAREST:
            chosen = 0
            for j in range(1, taken):
                if abs(out[0, k, j] - tick_time) < abs(out[0, k, chosen] - tick_time):
                    chosen = j
        elif taken and mode == HOLD:
            chosen = taken - 1
        if taken:
            if mode == CONCAT:
                state[k, DELIVERED] += taken
            else:
                state[k, DELIVERED] += 1.0
                state[k, DROPPED + SUPERSEDED] += taken - 1
        summary[k, S_TAKEN] = taken
        summary[k, S_CHOSEN] = chosen
        summary[k, S_PREFIX] = prefix
        summary[k, S_EST] = out[0, k, chosen] if chosen >= 0 else (out[0, k, taken - 1] if taken else 0.0)
        summary[k, S_SEQ] = out[1, k, chosen] if chosen >= 0 else 0.0
        summary[k, S_STALE] = state[k, STALE]
        summary[k, S_LEFT] = rest
        total += taken
    return total


@njit(
    "UniTuple(float64, 3)(float64[:, :], float64[:], float64, float64, boolean)",
    cache=True,
    nogil=True,
)
def advance_window(state, g, last_tick, nominal_period, follow):
    """Open the window after the last tick's: a period on, snapped to the master's nearest capture instant
    when the clock follows a live master (the tick follows its real rate and phase). Returns (tick time,
    start, end)."""
    m = int(g[MASTER])
    locked = state[m, COUNT] >= 2
    period = state[m, PERIOD] if follow and locked else nominal_period
    tick_time = last_tick + period
    if follow and locked and state[m, HEARD] != 0.0 and state[m, STALE] == 0.0:
        t_newest, master_period = state[m, T_NEWEST], state[m, PERIOD]
        tick_time = t_newest + np.floor((tick_time - t_newest) / master_period + 0.5) * master_period
        if tick_time <= last_tick + period / 2:
            tick_time += master_period
    start = g[EMITTED_END]
    end = max(tick_time + period / 2, start + period / 4)
    open_window(state, g, end)
    return tick_time, start, end


@njit(
    "Tuple((int64[:, :], float64[:, :]))(float64[:, :], float64[:, :, :], float64[:, :, :], int64[:, :], "
    "float64[:, :], float64[:], float64, float64, float64, float64, boolean, int64)",
    cache=True,
    nogil=True,
)
def close_window(state, pending, out, order, summary, g, start, end, tick_time, last_tick, refine, origin):
    """Close the window (start, end]: take its samples (`take_all`), move the tick time to the master's
    capture instant if `refine` (into g[TICK_TIME]), and return the tick's arrays: (2, n) int64 capture
    times (ns, `origin` added) and seqs of every sample handed on, streams in order, a held sample included;
    and (K, STATUS_COLUMNS) float64 status rows (valid, fresh, stale, age in s, and each stream's columns
    [from, to) in the first array)."""
    take_all(state, pending, out, order, summary, end, tick_time)
    m = int(g[MASTER])
    if refine and summary[m, S_TAKEN] > 0:
        lower = last_tick + 1.0 if last_tick == last_tick else -np.inf  # nan: no tick yet
        tick_time = min(max(summary[m, S_EST], start, lower), end)
    g[TICK_TIME] = tick_time
    streams = state.shape[0]
    total = 0
    for k in range(streams):
        n = int(summary[k, S_TAKEN])
        if n:
            total += 1 if summary[k, S_CHOSEN] >= 0 else n
        elif state[k, MODE] == HOLD and state[k, HELD_SEQ] >= 0:
            total += 1
    packed = np.empty((2, total), np.int64)
    status = np.empty((streams, STATUS_COLUMNS))
    i = 0
    for k in range(streams):
        n = int(summary[k, S_TAKEN])
        chosen = int(summary[k, S_CHOSEN])
        stale = state[k, STALE]
        status[k, T_FROM] = i
        newest = np.nan
        if n:
            first, last = (chosen, chosen + 1) if chosen >= 0 else (0, n)
            for j in range(first, last):
                packed[0, i] = origin + np.int64(out[0, k, j])
                packed[1, i] = np.int64(out[1, k, j])
                i += 1
            newest = out[0, k, last - 1]
            if state[k, MODE] == HOLD:
                state[k, HELD_EST] = newest
                state[k, HELD_SEQ] = out[1, k, last - 1]
            status[k, T_VALID] = 1.0
            status[k, T_FRESH] = 1.0
        elif state[k, MODE] == HOLD and state[k, HELD_SEQ] >= 0:
            newest = state[k, HELD_EST]
            packed[0, i] = origin + np.int64(newest)
            packed[1, i] = np.int64(state[k, HELD_SEQ])
            i += 1
            status[k, T_VALID] = 1.0 - stale
            status[k, T_FRESH] = 0.0
        else:
            status[k, T_VALID] = 0.0
            status[k, T_FRESH] = 0.0
        status[k, T_STALE] = stale
        status[k, T_AGE] = (tick_time - newest) / 1e9
        status[k, T_TO] = i
    return packed, status


@njit(
    "int64(float64[:, :], float64[:, :, :], float64[:, :, :], float64[:], int64[:], int64[:], float64[:], "
    "float64[:], int64[:], float64[:], int64)",
    cache=True,
    nogil=True,
)
def ingest_many(state, blocks, pending, g, ks, seqs, stamps, arrivals, codes, ests, start):
    """`ingest` for samples start.. in arrival order, until one may complete the open window (READY: returns
    the index after it) or one arrives past the open window's deadline (OVERDUE, not admitted: returns its
    index, for the caller to close the overdue windows first), or the end. codes[i] as `ingest`; ests[i] the
    estimated capture time of an admitted sample; g[ALL_ADMITTED] 1 if every sample of the span was."""
    g[ALL_ADMITTED] = 1.0
    for i in range(start, ks.shape[0]):
        k = ks[i]
        if k < 0:
            codes[i] = UNKNOWN
            g[ALL_ADMITTED] = 0.0
            continue
        if g[HAS_WINDOW] != 0.0 and arrivals[i] >= np.floor(g[DEADLINE]) + 1.0:
            codes[i] = OVERDUE
            return i
        code = ingest(state, blocks, pending, g, k, seqs[i], stamps[i], arrivals[i])
        codes[i] = code
        if code & 15:
            g[ALL_ADMITTED] = 0.0
        else:
            ests[i] = pending[1, k, int(state[k, PENDING]) - 1]
        if code & READY:
            return i + 1
    return ks.shape[0]
