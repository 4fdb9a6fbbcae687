"""LoopTimer and LatencyStats: bounded memory, correct percentiles, pacing and deadline misses."""

import time

import numpy as np
import pytest

from runtime.latency import LatencyStats, LoopTimer


def test_stats_percentiles_match_numpy_over_the_window():
    """Percentiles are those of the last `capacity` samples, in milliseconds."""
    stats = LatencyStats(capacity=100)
    samples = np.linspace(0.001, 0.2, 250)
    for s in samples:
        stats.add(float(s))
    summary = stats.summary_ms()
    assert summary["count"] == 250
    window = samples[-100:] * 1e3
    assert summary["p50_ms"] == pytest.approx(np.percentile(window, 50))
    assert summary["p99_ms"] == pytest.approx(np.percentile(window, 99))
    assert summary["max_ms"] == pytest.approx(window.max())


def test_empty_stats_are_nan_not_zero():
    """No samples must not read as 'zero latency'."""
    summary = LatencyStats().summary_ms()
    assert summary["count"] == 0 and np.isnan(summary["p50_ms"])


def test_loop_timer_paces_and_counts_deadline_misses():
    """A 100 Hz loop takes ~10 ms per iteration; an iteration that overruns its period is a deadline miss."""
    timer = LoopTimer(rate_hz=100)
    t0 = time.perf_counter()
    for i in range(10):
        timer.tick()
        with timer.section("work"):
            if i == 5:
                time.sleep(0.03)
        timer.wait()
    elapsed = time.perf_counter() - t0
    assert elapsed >= 0.09
    assert timer.deadline_misses == 1
    assert timer.iterations == 10
    assert set(timer.summary()) == {"work", "iteration"}
    assert timer.summary()["work"]["max_ms"] >= 30


def test_loop_timer_rejects_non_positive_rate():
    """A rate of 0 is a config error, not an infinite period."""
    with pytest.raises(ValueError, match="rate_hz"):
        LoopTimer(rate_hz=0)
