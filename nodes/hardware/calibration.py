"""Servo ticks <-> joint radians, per joint: where the joint's zero is, which way it turns, how far it goes.

A calibration file (JSON, versioned, written atomically) holds for every joint of a robot profile its servo
id, the tick reading at the joint's zero (`zero_ticks`), its direction (+1 or -1) and the range of ticks
recorded while a person moved it through its travel (`min_ticks`, `max_ticks`). `launch.calibrate` makes
it; the hardware node loads it on connect and refuses one made for another robot or other servo ids.
Without a file the profile's own `offset_rad` and `direction` apply about the middle of the servo's turn.

    joint = direction * (ticks - zero_ticks) * 2 pi / TICKS_PER_TURN

The limits the node enforces are the profile's, narrowed to the calibrated range where it is narrower: a
joint is never commanded past where a person could move it by hand.
"""

import json
import math
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from runtime.profiles.robots import RobotProfile

FORMAT_VERSION = 1
TICKS_PER_TURN = 4096  # XL430, XL330 and STS3215 alike: 12-bit absolute encoders
CENTER_TICKS = 2048  # the middle of the turn: where an uncalibrated joint's zero is taken to be


class CalibrationError(ValueError):
    pass


@dataclass(frozen=True)
class JointCalibration:
    id: int
    zero_ticks: int
    direction: int
    min_ticks: int
    max_ticks: int


@dataclass(frozen=True)
class Calibration:
    robot: str
    joints: dict[str, JointCalibration]  # by joint name, in the profile's order

    @classmethod
    def from_profile(cls, profile: RobotProfile) -> "Calibration":
        """The profile's offsets and directions about the middle of the turn, the whole turn as range."""
        joints = {}
        for j in profile.joints:
            zero = CENTER_TICKS + round(j.direction * j.offset_rad * TICKS_PER_TURN / (2 * math.pi))
            joints[j.name] = JointCalibration(j.id, zero, j.direction, 0, TICKS_PER_TURN - 1)
        return cls(profile.name, joints)

    def check(self, profile: RobotProfile) -> None:
        """CalibrationError unless this calibration is for `profile`'s robot, joints and servo ids."""
        if self.robot != profile.name:
            raise CalibrationError(f"calibration is for robot {self.robot!r}, not {profile.name!r}")
        if list(self.joints) != profile.joint_names:
            raise CalibrationError(
                f"calibration joints {list(self.joints)} != profile's {profile.joint_names}"
            )
        for j in profile.joints:
            c = self.joints[j.name]
            if c.id != j.id:
                raise CalibrationError(
                    f"joint {j.name!r}: calibrated servo id {c.id}, the profile says {j.id}"
                )
            if c.direction not in (1, -1) or not c.min_ticks < c.max_ticks:
                raise CalibrationError(f"joint {j.name!r}: direction must be +-1 and min_ticks < max_ticks")

    def to_rad(self, ticks: dict[int, int]) -> np.ndarray:
        """Present positions by servo id -> joint angles (rad), in the profile's joint order."""
        return np.array(
            [
                c.direction * (ticks[c.id] - c.zero_ticks) * 2 * math.pi / TICKS_PER_TURN
                for c in self.joints.values()
            ]
        )

    def to_ticks(self, rad: np.ndarray) -> dict[int, int]:
        """Joint angles (rad, profile order) -> goal positions by servo id, inside the calibrated range."""
        out = {}
        for value, c in zip(rad, self.joints.values(), strict=True):
            ticks = c.zero_ticks + c.direction * value * TICKS_PER_TURN / (2 * math.pi)
            out[c.id] = int(np.clip(round(ticks), c.min_ticks, c.max_ticks))
        return out

    def limits(self, profile: RobotProfile) -> tuple[np.ndarray, np.ndarray]:
        """The profile's joint limits narrowed to the calibrated ranges (rad)."""
        low, high = profile.limits()
        for k, c in enumerate(self.joints.values()):
            ends = sorted(
                c.direction * (t - c.zero_ticks) * 2 * math.pi / TICKS_PER_TURN
                for t in (c.min_ticks, c.max_ticks)
            )
            low[k], high[k] = max(low[k], ends[0]), min(high[k], ends[1])
            if not low[k] < high[k]:
                raise CalibrationError(
                    f"joint {profile.joints[k].name!r}: the calibrated range misses its limits"
                )
        return low, high

    def save(self, path: Path) -> None:
        """Atomically: a temporary file, fsync, rename (a crash leaves the old file or the new one)."""
        path = Path(path)
        payload = {
            "format_version": FORMAT_VERSION,
            "robot": self.robot,
            "joints": {k: asdict(v) for k, v in self.joints.items()},
        }
        tmp = path.with_suffix(path.suffix + ".tmp")
        with open(tmp, "w") as f:
            json.dump(payload, f, indent=2)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: Path, profile: RobotProfile | None = None) -> "Calibration":
        path = Path(path)
        try:
            raw = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise CalibrationError(f"{path}: cannot read a calibration: {exc}") from None
        if raw.get("format_version") != FORMAT_VERSION:
            raise CalibrationError(
                f"{path}: calibration format {raw.get('format_version')}, this runtime reads {FORMAT_VERSION}"
            )
        try:
            joints = {
                name: JointCalibration(**{k: int(v) for k, v in j.items()})
                for name, j in raw["joints"].items()
            }
            calibration = cls(str(raw["robot"]), joints)
        except (KeyError, TypeError, ValueError) as exc:
            raise CalibrationError(f"{path}: malformed calibration: {exc}") from None
        if profile is not None:
            try:
                calibration.check(profile)
            except CalibrationError as exc:
                raise CalibrationError(f"{path}: {exc}") from None
        return calibration
