"""The hardware node: a real arm on a servo bus, in place of the sim node (`python -m launch.hw`).

Params: `robot` (a profile in firmware_profiles/robots), `port` (its serial device, or a remote
controller's endpoint: bridge.py), `command_port` (a remote controller's: where we publish targets; default
the profile's), `calibration` (a file from `launch.calibrate`, or none: the profile's offsets), `action_hz`
(the brain's action rate, 10: the safety filter's velocity window per action), `retries` (per bus
transfer).

Connect: the bus opens and every servo id must answer (else the error names the id and no torque is
enabled); the goals are set to where the joints are, then torque goes on, so nothing jumps.
Each action from the brain (the simulated arm's five channels) becomes one target per joint
(`RobotProfile.joint_targets`) and passes the safety filter (runtime/planning/safety.py) with the profile's
limits, narrowed by the calibration, its velocity limits and `max_relative_target` around the measured
position; the result is written to the servos as goal positions. A non-finite or malformed action, or a
message on `brain/stop`, is a protective stop: the last safe targets are held and every later action is
refused. The watchdog: when no fresh action has come for `watchdog_ms`, the node holds the last targets or
turns torque off (the profile's `on_watchdog`), and says so; a fresh action resumes control (after torque
off, from where the arm now is). Torque is turned off on exit, Ctrl-C and SIGTERM included.

This is a protective stop, not an emergency stop: a node killed outright (SIGKILL, a crash of the machine)
leaves the servos holding their last goal with torque on. An emergency stop must cut the servos' power in
hardware.

Publishes the arm's joints (`<name>/joint`, the proprioception layout the brain reads: the five action
channels' joint positions, their velocities, and three zeros where the sim gives the tool position) and the
targets in force (`<name>/command`, in the brain's action layout: the action stream it aligns) at the
node's rate, and `<name>/status` twice a second (bus transfers, retries, failures, servo errors, watchdog
trips, torque, stopped).
"""

import logging

import numpy as np

from nodes.hardware.arm import Arm
from nodes.hardware.bus import BusError
from nodes.hardware.calibration import Calibration
from nodes.node import Node
from runtime.clock import now_ns
from runtime.profiles.robots import ACTION_DIM, RobotProfile, load_robot

log = logging.getLogger(__name__)
STATUS_PERIOD_S = 0.5
# reads in a row that fail after their retries before the node gives up (torque off on the way out): with
# 3 retries of ~34 ms each, about a second and a half of a silent bus
MAX_FAILED_READS = 10
STATUS_COLUMNS = (
    "transfers",
    "retries",
    "failures",
    "servo_errors",
    "watchdog_trips",
    "torque",
    "stopped",
    "actions",
    "refused",
)


def make_bus(profile: RobotProfile, port: str, retries: int = 3, command_port: str | None = None):
    """The profile's servo bus on `port` (not yet connected); a zmq bus binds `command_port` (default the
    profile's) for its controller."""
    ids = [j.id for j in profile.joints]
    if profile.bus.type == "zmq":
        from nodes.hardware.bridge import ZmqBus

        period = 1.0 / profile.state_hz  # a state older than 5 periods is missed; wait 2 for the next
        cmd = command_port or profile.bus.command_port
        return ZmqBus(port, cmd, ids, retries=retries, stale_s=5 * period, timeout_s=2 * period)
    if profile.bus.type == "dynamixel-2.0":
        from nodes.hardware.dynamixel import DynamixelBus

        return DynamixelBus(port, profile.bus.baudrate, ids, retries=retries)
    if profile.bus.type == "feetech-sts":
        from nodes.hardware.feetech import FeetechBus

        return FeetechBus(port, profile.bus.baudrate, ids, retries=retries)
    raise ValueError(f"robot {profile.name!r} has a {profile.bus.type} bus, which no driver here drives")


def proprioception(positions: np.ndarray, velocities: np.ndarray, profile: RobotProfile) -> np.ndarray:
    """(13,) as envs.proprioception: the five action channels' joints, their velocities, the tool (zeros)."""
    out = np.zeros(2 * ACTION_DIM + 3, np.float32)
    for k, joint in enumerate(profile.joints):
        if joint.action_index >= 0:
            out[joint.action_index] = positions[k]
            out[ACTION_DIM + joint.action_index] = velocities[k]
    return out


class HardwareNode(Node):
    def connect(self) -> None:
        p = self.params
        profile = load_robot(str(p["robot"]))
        calibration = p.get("calibration")
        calibration = None if calibration in (None, "none") else Calibration.load(calibration, profile)
        command_port = p.get("command_port") or None  # a zmq bus's: launch.hw's emulator has its own
        bus = make_bus(profile, str(p["port"]), int(p.get("retries", 3)), command_port)
        self.arm = Arm(profile, bus, calibration, float(p.get("action_hz", 10.0)))
        self.arm.connect()  # BusError names a servo that does not answer; no torque is on then
        self.profile = profile
        name = self.spec.name
        self.joint_topic, self.status_topic = f"{name}/joint", f"{name}/status"
        self.command_topic = f"{name}/command"  # what the servos were told, in the brain's action layout
        self.stop_topics = set(p.get("stop_topics", ["brain/stop"]))
        self.prev_positions, self.prev_read_s = self.arm.positions.copy(), now_ns() / 1e9
        self.next_status_s = 0.0
        self.failed_reads = 0
        self.remote_off_since, self.remote_off_logged = None, False  # a remote controller's own stop
        log.info("hardware: %s on %s, %d servos, torque on", profile.name, p["port"], len(profile.joints))

    def step(self) -> None:
        capture_ns = now_ns()
        now_s = capture_ns / 1e9
        try:
            positions = self.arm.read()
            self.failed_reads = 0
        except BusError as exc:  # one lost read (its retries spent) is reported; a dead bus ends the node
            self.failed_reads += 1
            log.error("hardware: %s (%d in a row)", exc, self.failed_reads)
            if self.failed_reads >= MAX_FAILED_READS:
                raise
            return
        self._check_remote_torque(now_s)
        velocities = (positions - self.prev_positions) / max(now_s - self.prev_read_s, 1e-3)
        self.prev_positions, self.prev_read_s = positions, now_s
        self.publish(self.joint_topic, proprioception(positions, velocities, self.profile), capture_ns)
        for msg in self.receive(0.0):
            if msg.topic in self.stop_topics:
                self.arm.stop(f"{msg.topic} received")
            else:
                self.arm.act(np.asarray(msg.data, np.float64), now_s)
        if self.arm.check_watchdog(now_s):
            self.next_status_s = 0.0  # the status goes out now: the moment the watchdog acted is on record
        if self.command_topic in self.spec.publishes:
            self.publish(
                self.command_topic, self.profile.action_of(self.arm.targets).astype(np.float32), now_ns()
            )
        if now_s >= self.next_status_s:
            self.next_status_s = now_s + STATUS_PERIOD_S
            self.publish(self.status_topic, self._status(), capture_ns)

    def _check_remote_torque(self, now_s: float) -> None:
        """A remote controller that turned its torque off by itself (it lost our heartbeats, or its own
        safety did): reported once it has lasted half a second, never overridden (a person restarts)."""
        reported = getattr(self.arm.bus, "reported_torque", None)
        if reported is None or reported or not self.arm.torque:
            self.remote_off_since = None
            return
        if self.remote_off_since is None:
            self.remote_off_since = now_s
        elif now_s - self.remote_off_since > 0.5 and not self.remote_off_logged:
            self.remote_off_logged = True
            log.error("hardware: the controller turned its torque off by itself; its arm is stopped")

    def idle(self) -> None:
        service = getattr(self.arm.bus, "service", None)  # a remote controller stops without our heartbeats
        if service is not None:
            service()

    def _status(self) -> np.ndarray:
        s = self.arm.bus.stats
        values = {
            "transfers": s.transfers,
            "retries": s.retries,
            "failures": s.failures,
            "servo_errors": s.servo_errors,
            # a remote controller's own report where it gives one (it may stop its arm by itself)
            "torque": int(getattr(self.arm.bus, "reported_torque", self.arm.torque)),
            "stopped": int(self.arm.stopped is not None),
            **self.arm.stats,
        }
        return np.array([values[c] for c in STATUS_COLUMNS], np.float64)

    def disconnect(self) -> None:
        arm = getattr(self, "arm", None)
        if arm is not None:
            arm.disconnect()  # torque off first, then the port
            log.info("hardware: torque off, bus closed; %s, bus %s", arm.stats, arm.bus.stats)


NODE = HardwareNode
