"""Window assignment: which pending samples of a stream belong to the tick being closed (a numba kernel)."""

import numpy as np
from numba import njit


@njit(
    "int64(float64[:], float64[:], int64[:], int64, float64, int64[:], float64[:], int64[:])",
    cache=True,
    nogil=True,
)
def take_window(stamps, ests, seqs, count, window_end, order, out_est, out_seq):
    """Take the pending samples stamped at or before `window_end`; returns how many.

    The taken samples go to `out_est`/`out_seq` sorted by estimated capture time; the rest stay pending,
    compacted to the front of `stamps`/`ests`/`seqs` in arrival order. `order[:count]` is the permutation
    applied (taken first), for the caller's payload list.
    """
    taken = 0
    for i in range(count):
        if stamps[i] <= window_end:
            # insertion sort by estimated capture time: a window holds a handful of samples
            j = taken
            while j > 0 and ests[order[j - 1]] > ests[i]:
                order[j] = order[j - 1]
                j -= 1
            order[j] = i
            taken += 1
    kept = taken
    for i in range(count):
        if stamps[i] > window_end:
            order[kept] = i
            kept += 1
    for j in range(taken):
        out_est[j] = ests[order[j]]
        out_seq[j] = seqs[order[j]]
    rest = 0
    for j in range(taken, count):  # order[taken:] is increasing, so compacting in place is safe
        i = order[j]
        stamps[rest] = stamps[i]
        ests[rest] = ests[i]
        seqs[rest] = seqs[i]
        rest += 1
    return taken


@njit("int64(float64[:], int64, float64)", cache=True, nogil=True)
def nearest(ests, count, t):
    """Index of the estimate nearest `t` among the first `count` (the earlier one on a tie)."""
    best = 0
    for j in range(1, count):
        if abs(ests[j] - t) < abs(ests[best] - t):
            best = j
    return best


def scratch(capacity: int) -> tuple[np.ndarray, ...]:
    """Pending stamps, estimates, sequence numbers, and the kernel's permutation and outputs."""
    return (
        np.empty(capacity),
        np.empty(capacity),
        np.empty(capacity, np.int64),
        np.empty(capacity, np.int64),
        np.empty(capacity),
        np.empty(capacity, np.int64),
    )
