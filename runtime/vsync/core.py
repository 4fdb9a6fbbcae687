"""The scheduler's per-sample and per-tick work as numba kernels over flat state arrays.

`VSync` (scheduler.py) keeps the clock, the windows and the Python objects; everything touched per sample
lives here: admission (future, too old, duplicate, publisher restart, late, overflow), the oscillator update,
the pending buffers, coverage of the open window, staleness; and per tick, assigning pending samples to the
window. State is one float64 row per stream: the oscillator's columns first, then the scheduler's, then the
ring of recent sequence numbers. Kernels take few arrays because each array argument costs a numba call
about 0.15 us, and a push is budgeted at a few microseconds.
"""

import numpy as np
from numba import njit

from runtime.vsync import oscillator

# Scheduler columns, after the oscillator's.
_C = oscillator.STATE_SIZE
LAST_SEQ, NEWEST_STAMP, LAST_ARRIVAL, LAG, COVERED, COUNT = _C, _C + 1, _C + 2, _C + 3, _C + 4, _C + 5
STALE, WAITING, HEARD, STALE_AFTER, MODE = _C + 6, _C + 7, _C + 8, _C + 9, _C + 10
RECEIVED, DELIVERED, STALE_EVENTS, RESUMED, RESETS = _C + 11, _C + 12, _C + 13, _C + 14, _C + 15
DROPPED = _C + 16  # one column per reason in DROP_REASONS, in that order
DROP_REASONS = ("future", "too_old", "duplicate", "late", "superseded", "overflow", "shape")
FUTURE, TOO_OLD, DUPLICATE, LATE, SUPERSEDED, OVERFLOW, SHAPE = range(len(DROP_REASONS))
SEEN = DROPPED + len(DROP_REASONS)  # first column of the ring: seq % ring -> seq

# Globals, one small array shared by the kernels.
EMITTED_END, WINDOW_END, DEADLINE, HAS_WINDOW, FUTURE_TOL, MAX_DELAY, MAX_WAIT = range(7)
GLOBALS_SIZE = 7

# What `take_all` reports per stream: samples taken, the one handed on (-1: all, CONCAT), whether the taken
# are the first to arrive in capture order, the estimate and seq of the one handed on (for CONCAT the
# newest estimate), staleness, samples left pending.
S_TAKEN, S_CHOSEN, S_PREFIX, S_EST, S_SEQ, S_STALE, S_LEFT = range(7)
SUMMARY_COLUMNS = 7

# Assemble modes (config.Assemble) as numbers.
CONCAT, NEAREST, HOLD = 0, 1, 2

# What `ingest` returns: the drop reason + 1 in the low bits (0: accepted), and flags.
READY = 16  # the open window may be complete (every stream it waited for has covered it) or is past due
RESET = 32  # the stream's publisher restarted (sequence back, stamp forward): the oscillator re-locks
RESUMED_FLAG = 64  # the stream was stale and spoke again

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
    ring = state.shape[1] - SEEN
    slot = SEEN + seq % ring
    if state[k, slot] == seq:
        return _drop(state, k, DUPLICATE, g, 0, arrival)
    flags = 0
    if seq < state[k, LAST_SEQ] and stamp > state[k, NEWEST_STAMP]:
        state[k, RESETS] += 1.0  # the sequence went back while time went forward: its publisher restarted
        state[k, SEEN:] = -1.0
        state[k, LAST_SEQ] = seq
        oscillator.relock(state, k)
        flags |= RESET
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
    _, _, est, covered = oscillator.update(state, blocks[0], blocks[1], k, stamp)
    if covered > state[k, COVERED]:
        state[k, COVERED] = covered
    if stamp <= g[EMITTED_END]:
        return _drop(state, k, LATE, g, flags, arrival)
    i = int(state[k, COUNT])
    if i == pending.shape[2]:
        return _drop(state, k, OVERFLOW, g, flags, arrival)
    pending[0, k, i] = stamp
    pending[1, k, i] = est
    pending[2, k, i] = seq
    state[k, COUNT] = i + 1
    return flags | (READY if _ready(state, g, k, arrival) else 0)


@njit("int64(float64[:, :], float64[:], float64, float64)", cache=True, nogil=True)
def open_window(state, g, end, max_wait):
    """Make (.., end] the open window: flag the live streams that have not covered it; set its deadline
    `max_wait` past the end plus the slowest of those streams' stamp-to-arrival lag. Returns how many wait."""
    waiting = 0
    lag = 0.0
    for k in range(state.shape[0]):
        live = state[k, HEARD] != 0.0 and state[k, STALE] == 0.0
        if live and state[k, COVERED] < end:
            state[k, WAITING] = 1.0
            waiting += 1
            lag = max(lag, min(state[k, LAG], _MAX_LAG))
        else:
            state[k, WAITING] = 0.0
    g[WINDOW_END] = end
    g[DEADLINE] = end + max_wait + lag
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
        count = int(state[k, COUNT])
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
        state[k, COUNT] = rest
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


@njit("int64[:, :](float64[:, :, :], float64[:, :], int64)", cache=True, nogil=True)
def handed_on(out, summary, origin):
    """One (2, total) int64 array per tick: capture time (ns, with `origin` added) and seq of every sample
    each stream hands on, streams in order (one for NEAREST and HOLD, all taken for CONCAT)."""
    total = 0
    for k in range(summary.shape[0]):
        n = int(summary[k, S_TAKEN])
        total += 1 if (n and summary[k, S_CHOSEN] >= 0) else n
    packed = np.empty((2, total), np.int64)
    i = 0
    for k in range(summary.shape[0]):
        n = int(summary[k, S_TAKEN])
        chosen = int(summary[k, S_CHOSEN])
        first, last = (chosen, chosen + 1) if (n and chosen >= 0) else (0, n)
        for j in range(first, last):
            packed[0, i] = origin + np.int64(out[0, k, j])
            packed[1, i] = np.int64(out[1, k, j])
            i += 1
    return packed
