"""A real arm under the brain's actions, without the transport: profile, bus, calibration, safety filter and
watchdog in one object. The hardware node (node.py) feeds it messages; tests and `launch.bench hardware`
drive it directly.

    arm = Arm(load_robot("koch-v1.1"), bus, calibration)
    arm.connect()                         # every servo answers; goals set where the joints are; torque on
    positions = arm.read()                # rad, profile order
    applied = arm.act(action, now_s)      # the brain's action (5,), filtered, written as goal positions
    arm.check_watchdog(now_s)             # no action for watchdog_ms: hold, or torque off
    arm.disconnect()                      # torque off, port closed
"""

import logging

import numpy as np

from nodes.hardware.calibration import Calibration
from runtime.planning.safety import SafetyFilter, SafetyLimits
from runtime.profiles.robots import ACTION_DIM, RobotProfile

log = logging.getLogger(__name__)


class Arm:
    def __init__(
        self, profile: RobotProfile, bus, calibration: Calibration | None = None, action_hz: float = 10.0
    ):
        self.profile, self.bus = profile, bus
        self.calibration = calibration or Calibration.from_profile(profile)
        self.calibration.check(profile)
        self.low, self.high = self.calibration.limits(profile)
        velocity = np.array([j.max_velocity_rad_s for j in profile.joints[:-1]])
        limits = SafetyLimits(self.low, self.high, velocity, profile.max_relative_target_rad)
        self.safety = SafetyFilter(limits, 1.0 / action_hz)  # a velocity window per action
        self.watchdog_s = profile.watchdog_ms / 1e3
        self.stats = {"watchdog_trips": 0, "actions": 0, "refused": 0}
        self.last_action_s: float | None = None
        self.watchdog_fired = False
        self.torque = False
        self.positions = self.targets = None

    def connect(self) -> None:
        """Every servo must answer (BusError names one that does not; no torque then); the goals are set to
        where the joints are before torque goes on, so nothing jumps."""
        self.bus.connect()
        self.positions = self.read()
        self.targets = np.clip(self.positions, self.low, self.high)
        self.bus.sync_write("goal_position", self.calibration.to_ticks(self.targets))
        self.bus.enable_torque()
        self.torque = True

    def read(self) -> np.ndarray:
        self.positions = self.calibration.to_rad(self.bus.sync_read("present_position"))
        return self.positions

    @property
    def stopped(self) -> str | None:
        return self.safety.stopped

    def stop(self, reason: str) -> None:
        """A protective stop: the last safe targets are held, every later action refused."""
        if self.safety.stopped is None:
            self.safety.stopped = reason
            log.error("arm: protective stop (%s): holding the last targets, refusing actions", reason)

    def act(self, action: np.ndarray, now_s: float) -> np.ndarray:
        """The brain's action (ACTION_DIM,) as safe joint targets, written to the servos; returns them. A
        non-finite or malformed action is a protective stop."""
        if self.safety.stopped is not None:
            self.stats["refused"] += 1
            return self.targets
        action = np.asarray(action, np.float64)
        if action.shape != (ACTION_DIM,):
            action = np.full(ACTION_DIM, np.nan)  # malformed: the filter's protective stop
        if self.watchdog_fired:  # control resumes from where the arm is now
            self.watchdog_fired = False
            self.safety.last = None
            self.targets = np.clip(self.positions, self.low, self.high)
            if not self.torque:
                self.bus.sync_write("goal_position", self.calibration.to_ticks(self.targets))
                self.bus.enable_torque()
                self.torque = True
            log.info("arm: actions resumed")
        wanted = self.profile.joint_targets(action, self.targets)
        applied = self.safety.send_action(wanted, self.positions[:-1])
        self.last_action_s = now_s
        if self.safety.stopped is not None:
            self.stats["refused"] += 1
        else:
            self.stats["actions"] += 1
        self.targets = applied
        self.bus.sync_write("goal_position", self.calibration.to_ticks(applied))
        return applied

    def check_watchdog(self, now_s: float) -> bool:
        """Fires once when no action has come for `watchdog_ms` since the last: holds the targets, or turns
        torque off (the profile's `on_watchdog`). Returns whether it fired now."""
        if self.last_action_s is None or self.watchdog_fired or now_s - self.last_action_s <= self.watchdog_s:
            return False
        self.watchdog_fired = True
        self.stats["watchdog_trips"] += 1
        if self.profile.on_watchdog == "torque_off":
            self.bus.disable_torque()
            self.torque = False
        else:  # hold: the goal stays where the last action put it
            self.bus.sync_write("goal_position", self.calibration.to_ticks(self.targets))
        log.warning(
            "arm: no action for %.0f ms: %s",
            self.profile.watchdog_ms,
            self.profile.on_watchdog.replace("_", " "),
        )
        return True

    def disconnect(self) -> None:
        """Torque off, port closed (the bus does both, in that order)."""
        if self.bus.is_connected:
            self.bus.disconnect()
        self.torque = False
