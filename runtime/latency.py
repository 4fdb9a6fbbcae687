"""Loop timing shared by every fixed-rate loop and benchmark: periods, per-section latency, deadline misses.

Samples go into fixed-size ring buffers, so a loop that runs for days uses constant memory and time.
"""

import time
from contextlib import contextmanager

import numpy as np


class LatencyStats:
    """Ring buffer of durations (seconds) with percentile summaries in milliseconds."""

    def __init__(self, capacity: int = 4096):
        self._buf = np.zeros(capacity)
        self._n = 0

    def add(self, seconds: float) -> None:
        self._buf[self._n % len(self._buf)] = seconds
        self._n += 1

    @property
    def count(self) -> int:
        return self._n

    def summary_ms(self) -> dict[str, float]:
        window = self._buf[: min(self._n, len(self._buf))] * 1e3
        if not len(window):
            return {
                "count": 0,
                "p50_ms": float("nan"),
                "p95_ms": float("nan"),
                "p99_ms": float("nan"),
                "max_ms": float("nan"),
            }
        p50, p95, p99 = np.percentile(window, [50, 95, 99])
        return {
            "count": self._n,
            "p50_ms": float(p50),
            "p95_ms": float(p95),
            "p99_ms": float(p99),
            "max_ms": float(window.max()),
        }


class LoopTimer:
    """`tick()` at the top of each iteration, `with section(name):` around each stage, `wait()` at the end.

    With `rate_hz=None` the loop runs flat out and `wait()` only records. A deadline miss is an iteration
    whose work overran its period; the loop then restarts its schedule from now instead of bursting to
    catch up (a robot should not receive a backlog of stale commands).
    """

    def __init__(self, rate_hz: float | None, capacity: int = 4096):
        if rate_hz is not None and not rate_hz > 0:
            raise ValueError(f"`rate_hz` must be > 0 or None, got {rate_hz}")
        self.period_s = 1.0 / rate_hz if rate_hz else None
        self.sections: dict[str, LatencyStats] = {}
        self.iteration = LatencyStats(capacity)
        self.deadline_misses = 0
        self.iterations = 0
        self._capacity = capacity
        self._start: float | None = None
        self._next: float | None = None
        self._t0 = time.perf_counter()

    def tick(self) -> None:
        now = time.perf_counter()
        if self._next is None:
            self._next = now
        self._start = now

    @contextmanager
    def section(self, name: str):
        t = time.perf_counter()
        try:
            yield
        finally:
            stats = self.sections.get(name)
            if stats is None:
                stats = self.sections[name] = LatencyStats(self._capacity)
            stats.add(time.perf_counter() - t)

    def wait(self) -> None:
        now = time.perf_counter()
        if self._start is not None:
            self.iteration.add(now - self._start)
        self.iterations += 1
        if self.period_s is None:
            return
        self._next += self.period_s
        if now > self._next:
            self.deadline_misses += 1
            self._next = now
        else:
            time.sleep(self._next - now)

    @property
    def elapsed_s(self) -> float:
        return time.perf_counter() - self._t0

    def summary(self) -> dict[str, dict[str, float]]:
        out = {name: s.summary_ms() for name, s in self.sections.items()}
        out["iteration"] = self.iteration.summary_ms()
        return out


# The path from a camera frame to the action it caused, as the brain times it and publishes it per action on
# `brain/latency` (ms; one row per action, stamped with the frame's capture time). `e2e_ms` is capture to the
# action handed to the socket; the stages after it add up to it.
ACTION_STAGES = (
    "send",  # capture -> on the sensor's socket (render, encode)
    "transport",  # socket -> the brain's receive
    "sync",  # received -> the V-sync tick that holds it went out
    "model",  # encoders and backbone: the belief
    "plan",  # the final planning pass (the rest of the search ran ahead) with its lead
    "safety",  # the safety filter
    "publish",  # handed to the socket
)
ACTION_COLUMNS = ("e2e_ms", *ACTION_STAGES)
