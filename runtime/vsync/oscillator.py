"""Per-stream oscillators: the phase and frequency of a sensor's sampling clock, tracked from capture stamps.

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

Residuals outside the jitter band are outliers and not fed; three in a row (a clock offset step, a node that
restarted with a new phase) or a gap longer than `max_coast_cycles` re-lock the loop, keeping the period.

The kernels run per sample. They are compiled when this module is imported (explicit signatures, cached on
disk), so nothing compiles once the robot is moving. Times are float64 nanoseconds from the scheduler's
origin: exact to well below a microsecond for months.
"""

import numpy as np
from numba import njit

ENVELOPE_BLOCKS = 32  # points on the lower envelope; the hull over 33 points costs well under a microsecond
OUTLIER_RUN_RELOCK = 3  # consecutive outliers that mean the stream's clock has stepped, not jittered
PRIOR_RATE_SIGMA = 0.01  # sensors run within about 1 % of nominal (crystal and firmware tolerance)
COVER_MARGIN = 0.05  # of a period: the next capture is predicted to far better than this
CHORD_MIN_SPAN = 24  # cycles under the envelope before its chord beats least squares over every stamp

# Columns of one stream's state row (float64).
PERIOD, NOMINAL, MIN_PERIOD, MAX_PERIOD, COAST, LOCK_PERIOD = 0, 1, 2, 3, 4, 5
T_NEWEST, N_NEWEST, DELAY_MEAN, DELAY_DEV, COUNT, OUTLIER_RUN = 6, 7, 8, 9, 10, 11
BLOCK_ID, OPEN_N, OPEN_S, OPEN_R, N_BLOCKS, BLOCK_HEAD, MAX_BLOCK_LEN = 12, 13, 14, 15, 16, 17, 18
SUM_W, SUM_X, SUM_Y, SUM_XX, SUM_XY, ORIGIN_N, ORIGIN_S = 19, 20, 21, 22, 23, 24, 25
MISSED, RELOCKS, LOCKED = 26, 27, 28
STATE_SIZE = 29

# What `update` did with a sample.
FED = 0  # in phase: fed to the loop
LOCKED_NEW = 1  # the first sample: the loop locked on it
RELOCK_GAP = 2  # came after a gap longer than max_coast_cycles: re-locked on it
RELOCK_STEP = 3  # the third outlier in a row: re-locked on it
OUTLIER = 4  # outside the jitter band: estimated, not fed
BEHIND = 5  # a cycle at or before the newest (reordered or extra): estimated, not fed


def new_state(streams: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """State rows (K, STATE_SIZE) and envelope points (K, ENVELOPE_BLOCKS): cycle index and stamp."""
    return (
        np.zeros((streams, STATE_SIZE)),
        np.zeros((streams, ENVELOPE_BLOCKS)),
        np.zeros((streams, ENVELOPE_BLOCKS)),
    )


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
    st[k, OUTLIER_RUN] = 0.0
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
    # While the envelope is young it is only an upper bound: an early stamp then just lowers it.
    low = -(0.02 * period + 0.5 * dev) if st[k, COUNT] >= 16.0 else -0.5 * period
    high = st[k, DELAY_MEAN] + 4.0 * dev + 0.05 * period
    if residual < low or residual > high:
        sign = 1.0 if residual > high else -1.0
        run = st[k, OUTLIER_RUN]
        run = run + sign if run * sign > 0.0 else sign
        st[k, OUTLIER_RUN] = run
        if abs(run) >= OUTLIER_RUN_RELOCK:
            st[k, RELOCKS] += 1.0
            _lock(st, k, s, n)
            return float(RELOCK_STEP), n, s, s
        # A late outlier is most likely a long delay (the grid holds); an early one contradicts the grid.
        est = t_pred if sign > 0.0 else s - st[k, DELAY_MEAN]
        return float(OUTLIER), n, min(est, s), s

    st[k, OUTLIER_RUN] = 0.0
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
    return float(FED), n, t_env, max(s, t_env + (1.0 - COVER_MARGIN) * period)


@njit("float64(float64[:, :], int64, float64)", cache=True, nogil=True)
def phase(st, k, t):
    """Tracked phase of stream `k` at time `t`, radians in [0, 2 pi): 0 at its capture instants."""
    cycles = (t - st[k, T_NEWEST]) / st[k, PERIOD]
    return 2.0 * np.pi * (cycles - np.floor(cycles))
