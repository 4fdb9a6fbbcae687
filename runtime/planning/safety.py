"""The safety filter between any policy and any actuator (DESIGN.md, "Planning"; issue 7, item 3).

`send_action(action, measured)` returns the action actually applied:
- a non-finite or malformed action is a protective stop: the filter holds the last applied command (or the
  measured position if nothing was applied yet) from then on and refuses every later action, until `reset`;
- a measurement that is not finite or has the wrong shape is not trusted (counted): only the velocity
  limit from the last command applies then;
- joint targets are clamped to the position limits, to `max_velocity * dt` from the last applied target
  (from the measured position for the first action) and to `max_relative_target` from the measured
  position (as LeRobot's `max_relative_target`: a far target is approached in bounded steps, never jumped
  to), all at once; where the last two disagree, the velocity limit wins;
- the gripper entry (the last) is clamped to its range only.
Every clamp is counted by kind, never silent.
"""

import logging
from dataclasses import dataclass, field

import numpy as np

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SafetyLimits:
    low: np.ndarray  # (A,) joint targets then gripper, lower bounds
    high: np.ndarray
    max_velocity: np.ndarray  # (A - 1,) rad/s per joint: how fast a target may move
    max_relative_target: float | None = None  # rad: the farthest a target may be from the measured position

    def __post_init__(self):
        low, high = np.asarray(self.low, float), np.asarray(self.high, float)
        if low.shape != high.shape or low.ndim != 1 or not np.all(low < high):
            raise ValueError(f"`low` and `high` must be (A,) with low < high, got {low} and {high}")
        if np.asarray(self.max_velocity).shape != (len(low) - 1,) or np.any(
            np.asarray(self.max_velocity) <= 0
        ):
            raise ValueError(
                f"`max_velocity` must be {len(low) - 1} positive values, got {self.max_velocity}"
            )
        if self.max_relative_target is not None and not self.max_relative_target > 0:
            raise ValueError(f"`max_relative_target` must be > 0, got {self.max_relative_target}")


@dataclass
class SafetyFilter:
    limits: SafetyLimits
    dt_s: float  # the control period: how far a target may move per action
    stopped: str | None = None  # why, once a protective stop happened
    clamps: dict = field(
        default_factory=lambda: {"position": 0, "velocity": 0, "refused": 0, "bad_measurement": 0}
    )
    last: np.ndarray | None = None

    def __post_init__(self):
        if not (np.isfinite(self.dt_s) and self.dt_s > 0):
            raise ValueError(f"`dt_s` must be a finite number > 0, got {self.dt_s}")

    def send_action(self, action, measured=None) -> np.ndarray:
        """The action to apply now, from the policy's `action` (A,) and measured joint positions (A - 1,)."""
        lim = self.limits
        action = np.asarray(action, float)
        if measured is not None:
            measured = np.asarray(measured, float)
            if measured.shape != (len(lim.low) - 1,) or not np.all(np.isfinite(measured)):
                self.clamps["bad_measurement"] += 1
                measured = None  # not trusted: the velocity limit from the last command still applies
        if self.stopped is None and (action.shape != lim.low.shape or not np.all(np.isfinite(action))):
            self.stopped = f"non-finite or malformed action {action.tolist()!r}"
            log.error("safety: protective stop: %s; holding the last command, refusing actions", self.stopped)
        if self.stopped is not None:
            self.clamps["refused"] += 1
            return self._hold(measured)
        out = np.clip(action, lim.low, lim.high)
        self.clamps["position"] += int(np.any(out != action))
        ref = self.last[:-1] if self.last is not None else measured  # where the targets are now
        lo, hi = lim.low[:-1].copy(), lim.high[:-1].copy()
        if ref is not None:
            step = np.asarray(lim.max_velocity) * self.dt_s
            lo, hi = np.maximum(lo, ref - step), np.minimum(hi, ref + step)
        if lim.max_relative_target is not None and measured is not None:
            # Both windows at once; where they do not overlap (the arm lags far behind its command), the
            # velocity window wins: its point nearest the measured position, never a jump.
            r = lim.max_relative_target
            rlo, rhi = np.maximum(lo, measured - r), np.minimum(hi, measured + r)
            apart = rlo > rhi
            nearest = np.clip(measured, lo, hi)
            lo, hi = np.where(apart, nearest, rlo), np.where(apart, nearest, rhi)
        joints = np.clip(out[:-1], lo, hi)
        self.clamps["velocity"] += int(np.any(joints != out[:-1]))
        out[:-1] = joints
        self.last = out
        return out.copy()

    def _hold(self, measured) -> np.ndarray:
        """The last applied command; before any, the measured position with the gripper at its range's
        middle; with neither, no target is invented (the actuator keeps its own hold)."""
        if self.last is not None:
            return self.last.copy()
        if measured is not None:
            middle = (self.limits.low[-1] + self.limits.high[-1]) / 2
            self.last = np.clip(np.append(measured, middle), self.limits.low, self.limits.high)  # latched
            return self.last.copy()
        raise RuntimeError("safety: protective stop before any command or measurement: nothing safe to hold")

    def reset(self) -> None:
        """Clear a protective stop (an operator's decision, never automatic)."""
        self.stopped, self.last = None, None
