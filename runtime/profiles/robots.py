"""Robot profiles: one arm per `firmware_profiles/robots/<name>.toml`, as frozen dataclasses.

A profile describes an arm for the hardware node and the safety filter: its bus (protocol, port, baud rate),
its joints (servo id and model, position and velocity limits, direction, offset, home pose, and which of the
brain's five action channels drives it), the control mode and rates, the watchdog (`watchdog_ms`, and what
to do when it fires: hold position or torque off) and `max_relative_target` (the largest step a command may
ask of a joint away from where it is measured).

    robot = load_robot("koch-v1.1")   # or a path to a .toml
    robot.joint_names, robot.limits()

The brain plans for the simulated arm's action: four joint targets and the gripper (envs/manipulation).
A real arm with other joints maps them by `action_index`; a joint without one (a wrist roll the sim arm does
not have) holds its home pose. Every refusal is a `ProfileError` naming the file and the dotted field.
"""

import math
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np

from runtime.profiles.schema import ProfileError, _Table, load_profile

ROBOTS_DIR = Path(__file__).resolve().parents[2] / "firmware_profiles" / "robots"
ACTION_DIM = 5  # the brain's action: four arm joint targets and the gripper (envs/manipulation)
GRIPPER_CHANNEL = 4  # -1 open to +1 closed: scaled onto the gripper joint's range, not radians
# bus type -> the servo models its driver has register tables for, and the baud rates they run at
BUSES = {
    "dynamixel-2.0": {
        "models": ("xl430-w250", "xl330-m288"),
        "baud": (57_600, 115_200, 1_000_000, 2_000_000),
    },
    "feetech-sts": {"models": ("sts3215",), "baud": (115_200, 500_000, 1_000_000)},
    "mujoco": {"models": ("mujoco",), "baud": (0,)},  # the simulated arm: no wire
    "zmq": {"models": ("remote",), "baud": (0,)},  # an arm with its own controller, on our wire format
}
CONTROL_MODES = ("position",)  # what the servos are commanded in; the planner plans joint targets
ON_WATCHDOG = ("hold", "torque_off")


@dataclass(frozen=True)
class Bus(_Table):
    TABLE: ClassVar[str] = "bus"
    type: str  # a key of BUSES
    port: str  # a serial device, `emulator` (the protocol emulator on a pseudo-terminal), or an endpoint
    baudrate: int
    command_port: str = ""  # zmq only: the endpoint we bind for the controller to read targets from

    def _validate(self) -> None:
        self._one_of("type", BUSES)
        self._one_of("baudrate", BUSES[self.type]["baud"])
        if not self.port.strip():
            raise ProfileError("`bus.port` must not be empty")
        if (self.type == "zmq") != bool(self.command_port.strip()):
            raise ProfileError(
                "`bus.command_port` is where a zmq bus's controller reads its targets: set it for a zmq bus "
                f"and for no other, got {self.command_port!r} on a {self.type} bus"
            )


@dataclass(frozen=True)
class Joint(_Table):
    TABLE: ClassVar[str] = "joints"
    name: str
    id: int  # the servo's id on the bus
    model: str  # the servo model: its register table
    min_rad: float  # position limits after calibration, in the joint's own frame
    max_rad: float
    max_velocity_rad_s: float
    direction: int  # +1, or -1 where the servo turns against the joint's positive sense
    offset_rad: float  # servo zero to joint zero, until a calibration file says otherwise
    home_rad: float  # where the joint rests, and where a joint no action drives is held
    action_index: int  # which of the brain's ACTION_DIM channels drives it; -1 for none

    def _validate(self) -> None:
        if not self.name.strip():
            raise ProfileError("`joints.name` must not be empty")
        self._between("id", 0, 252)
        for name in ("min_rad", "max_rad", "offset_rad", "home_rad"):
            if not math.isfinite(getattr(self, name)):
                raise ProfileError(f"`joints.{name}` must be finite, got {getattr(self, name)!r}")
        if not self.min_rad < self.max_rad:
            raise ProfileError(
                f"`joints.min_rad` must be < `max_rad` ({self.max_rad:g}), got {self.min_rad:g}"
            )
        if not self.min_rad <= self.home_rad <= self.max_rad:
            raise ProfileError(
                f"`joints.home_rad` must be within [{self.min_rad:g}, {self.max_rad:g}], "
                f"got {self.home_rad:g}"
            )
        self._between("max_velocity_rad_s", 0, 50, low_open=True)
        self._one_of("direction", (1, -1))
        self._between("action_index", -1, ACTION_DIM - 1)


@dataclass(frozen=True)
class RobotProfile(_Table):
    name: str
    description: str
    control_mode: str
    command_hz: float  # goal positions written to the bus per second
    state_hz: float  # positions read (and published) per second
    watchdog_ms: float  # no fresh action this long: the watchdog acts
    on_watchdog: str  # "hold": keep the last target, torque on; "torque_off": go limp
    max_relative_target_rad: float  # the largest step a command may ask of a joint from where it is
    bus: Bus
    joints: tuple[Joint, ...]

    def _validate(self) -> None:
        for name in ("name", "description"):
            if not getattr(self, name).strip():
                raise ProfileError(f"`{name}` must not be empty")
        self._one_of("control_mode", CONTROL_MODES)
        self._between("command_hz", 0, 1000, low_open=True)
        self._between("state_hz", 0, 1000, low_open=True)
        self._one_of("on_watchdog", ON_WATCHDOG)
        # the watchdog must allow at least two command periods, or a healthy loop trips it
        if not 2000 / self.command_hz <= self.watchdog_ms <= 5000:
            raise ProfileError(
                f"`watchdog_ms` must be between two command periods ({2000 / self.command_hz:g} ms) and "
                f"5000, got {self.watchdog_ms:g}"
            )
        self._between("max_relative_target_rad", 0, math.pi, low_open=True)
        if not self.joints:
            raise ProfileError("`joints` must list at least one [[joints]] table")
        for field in ("name", "id"):
            values = [getattr(j, field) for j in self.joints]
            twice = sorted({v for v in values if values.count(v) > 1})
            if twice:
                raise ProfileError(f"`joints.{field}` must be unique, repeated: {twice}")
        used = [j.action_index for j in self.joints if j.action_index >= 0]
        if len(set(used)) != len(used):
            raise ProfileError(f"`joints.action_index` must be unique among the joints, got {used}")
        models = BUSES[self.bus.type]["models"]
        for i, joint in enumerate(self.joints):
            if joint.model not in models:
                raise ProfileError(
                    f"`joints[{i}].model` must be one of {models} on a {self.bus.type} bus, "
                    f"got {joint.model!r}"
                )
            # a remote joint travels as a one-turn virtual servo's ticks (nodes/hardware/bridge.py)
            if self.bus.type == "zmq" and not -math.pi < joint.min_rad < joint.max_rad < math.pi:
                raise ProfileError(f"`joints[{i}]` limits must lie within +-pi on a zmq bus")

    def summary(self) -> str:
        """One paragraph for reports."""
        b = self.bus
        return (
            f"{self.name}: {self.description} {len(self.joints)} joints on a {b.type} bus at {b.baudrate} "
            "baud; "
            f"commands at {self.command_hz:g} Hz; watchdog {self.watchdog_ms:g} ms ({self.on_watchdog}); "
            f"at most {self.max_relative_target_rad:g} rad from the measured position per command."
        )

    @property
    def joint_names(self) -> list[str]:
        return [j.name for j in self.joints]

    def limits(self) -> tuple[np.ndarray, np.ndarray]:
        """Position limits (rad) per joint, in profile order."""
        return np.array([j.min_rad for j in self.joints]), np.array([j.max_rad for j in self.joints])

    def home(self) -> np.ndarray:
        return np.array([j.home_rad for j in self.joints])

    def joint_targets(self, action: np.ndarray, held: np.ndarray) -> np.ndarray:
        """The brain's action (ACTION_DIM,) as targets per joint: each joint its action channel, the others
        `held` (their last targets); the gripper channel scaled from [-1, 1] onto its joint's range."""
        out = np.array(held, dtype=np.float64)
        for k, joint in enumerate(self.joints):
            if joint.action_index == GRIPPER_CHANNEL:
                out[k] = joint.min_rad + (action[GRIPPER_CHANNEL] + 1) / 2 * (joint.max_rad - joint.min_rad)
            elif joint.action_index >= 0:
                out[k] = action[joint.action_index]
        return out

    def action_of(self, targets: np.ndarray) -> np.ndarray:
        """Joint targets (profile order) in the brain's action layout (ACTION_DIM,): `joint_targets`
        undone for the joints a channel drives (what the arm was commanded, as the brain's model reads it)."""
        out = np.zeros(ACTION_DIM)
        for k, joint in enumerate(self.joints):
            if joint.action_index == GRIPPER_CHANNEL:
                out[GRIPPER_CHANNEL] = 2 * (targets[k] - joint.min_rad) / (joint.max_rad - joint.min_rad) - 1
            elif joint.action_index >= 0:
                out[joint.action_index] = targets[k]
        return out


def robot_names() -> list[str]:
    return sorted(path.stem for path in ROBOTS_DIR.glob("*.toml"))


def load_robot(name_or_path: str | Path) -> RobotProfile:
    """A robot profile by name (a file stem in ROBOTS_DIR) or a path to a .toml file; ProfileError if not."""
    return load_profile(RobotProfile, name_or_path, ROBOTS_DIR, "robot")
