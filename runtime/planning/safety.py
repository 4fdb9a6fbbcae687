"""The safety filter between any policy and any actuator (DESIGN.md, "Planning"; issue 7, item 3).

`send_action(action, measured)` returns the action actually applied:
- a non-finite value anywhere is a protective stop: the filter holds the last applied command (or the
  measured position if nothing was applied yet) from then on and refuses every later action, until `reset`;
- joint targets are clamped to the position limits, then to `max_velocity * dt` from the last applied
  target (from the measured position for the first action), then to `max_relative_target` from the
  measured position (as LeRobot's `max_relative_target`: a far target is approached in bounded steps,
  never jumped to);
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
    clamps: dict = field(default_factory=lambda: {"position": 0, "velocity": 0, "relative": 0, "refused": 0})
    last: np.ndarray | None = None

    def send_action(self, action, measured=None) -> np.ndarray:
        """The action to apply now, from the policy's `action` (A,) and measured joint positions (A - 1,)."""
        lim = self.limits
        measured = None if measured is None else np.asarray(measured, float)
        action = np.asarray(action, float)
        if self.stopped is None and (action.shape != lim.low.shape or not np.all(np.isfinite(action))):
            self.stopped = f"non-finite or malformed action {action.tolist()!r}"
            log.error("safety: protective stop: %s; holding position and refusing actions", self.stopped)
        if self.stopped is not None:
            self.clamps["refused"] += 1
            return self._hold(measured)
        out = np.clip(action, lim.low, lim.high)
        self.clamps["position"] += int(np.any(out != action))
        known = measured is not None and np.all(np.isfinite(measured))
        ref = (
            self.last[:-1] if self.last is not None else measured if known else None
        )  # where targets are now
        if ref is not None:
            step = np.asarray(lim.max_velocity) * self.dt_s
            joints = np.clip(out[:-1], ref - step, ref + step)
            self.clamps["velocity"] += int(np.any(joints != out[:-1]))
            out[:-1] = joints
        if lim.max_relative_target is not None and known:
            r = lim.max_relative_target
            joints = np.clip(out[:-1], measured - r, measured + r)
            self.clamps["relative"] += int(np.any(joints != out[:-1]))
            out[:-1] = joints
        out = np.clip(out, lim.low, lim.high)  # the relative clamp around a measured position out of range
        self.last = out
        return out.copy()

    def _hold(self, measured) -> np.ndarray:
        if self.last is not None:
            return self.last.copy()
        if measured is not None and np.all(np.isfinite(measured)):
            gripper = self.limits.low[-1]  # open
            return np.clip(np.append(measured, gripper), self.limits.low, self.limits.high)
        return np.clip(np.zeros_like(self.limits.low), self.limits.low, self.limits.high)

    def reset(self) -> None:
        """Clear a protective stop (an operator's decision, never automatic)."""
        self.stopped, self.last = None, None
