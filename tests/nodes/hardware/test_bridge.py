"""An arm with its own controller on our wire format (nodes/hardware/bridge.py), against the remote arm
emulator over real ZeroMQ sockets: the arm under actions, torque on and off, a controller that is not there
or goes silent, and the controller's own stop when the runtime's heartbeats stop."""

import time

import numpy as np
import pytest

from nodes.hardware.arm import Arm
from nodes.hardware.bridge import ZmqBus
from nodes.hardware.bus import BusError
from nodes.hardware.emulators import start_emulator
from nodes.hardware.node import make_bus
from runtime.profiles import load_robot

PROFILE = load_robot("zmq-bridge")


def _eventually(condition, timeout_s: float = 2.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


@pytest.fixture
def controller():
    emulator = start_emulator(PROFILE)
    yield emulator
    emulator.close()


def test_the_arm_follows_safe_actions_and_torque_goes_off_on_disconnect(controller):
    """Connecting reads where the controller's joints are and sets the targets there before torque goes on;
    actions move the joints (through the safety filter's step limit); disconnect turns the torque off, and
    the controller reports it off."""
    arm = Arm(PROFILE, make_bus(PROFILE, controller.port, command_port=controller.command_port))
    arm.connect()
    assert _eventually(lambda: controller.torque)
    np.testing.assert_allclose(arm.read(), PROFILE.home(), atol=2e-3)  # 4096 ticks a turn: 1.5 mrad
    start = arm.read().copy()
    action = np.zeros(5)
    action[0] = 0.5  # the first joint's channel: toward 0.5 rad, 0.2 rad per action at most
    for t in range(6):  # as the node does: a read (the filter's measured position), then the action
        arm.read()
        arm.act(action, t * 0.1)
        time.sleep(0.1)
    assert _eventually(lambda: abs(arm.read()[0] - 0.5) < 5e-3), arm.read()
    np.testing.assert_allclose(arm.read()[1:4], start[1:4], atol=2e-3)
    assert arm.stats["actions"] == 6 and arm.bus.stats.failures == 0
    arm.disconnect()
    assert _eventually(lambda: not controller.torque)


def test_a_nan_action_is_a_protective_stop_the_controller_never_sees(controller):
    """A NaN action stops the arm where it is (the safety filter's hold): the controller gets that finite
    hold, never the NaN, and every later action is refused."""
    arm = Arm(PROFILE, make_bus(PROFILE, controller.port, command_port=controller.command_port))
    arm.connect()
    arm.act(np.array([np.nan, 0, 0, 0, 0]), 0.0)
    assert arm.stopped is not None
    held = arm.targets.copy()
    assert _eventually(lambda: np.allclose(controller.targets, held, atol=2e-3)), (controller.targets, held)
    arm.act(np.array([0.5, 0, 0, 0, 0]), 0.1)
    time.sleep(0.1)
    np.testing.assert_allclose(controller.targets, held, atol=2e-3)
    assert arm.stats["refused"] == 2 and np.isfinite(controller.targets).all()
    arm.disconnect()


def test_no_controller_is_refused_naming_its_endpoint(tmp_path):
    bus = ZmqBus(f"ipc://{tmp_path}/nobody", f"ipc://{tmp_path}/ours", [0, 1, 2])
    t0 = time.monotonic()
    with pytest.raises(BusError, match=f"no controller answers at ipc://{tmp_path}/nobody"):
        bus.connect()
    assert time.monotonic() - t0 < 5 and not bus.is_connected


def test_a_silent_controller_fails_reads_after_retries(controller):
    """A controller that stops publishing its state: each read waits, is retried, then fails as a bus error
    (the hardware node counts ten in a row, then ends and turns torque off)."""
    bus = make_bus(PROFILE, controller.port, command_port=controller.command_port)
    bus.connect()
    bus.sync_read("present_position")
    controller.silenced = True
    time.sleep(0.2)
    with pytest.raises(BusError, match="no bridge/state"):
        bus.sync_read("present_position")
    assert bus.stats.retries == bus.retries and bus.stats.failures == 1
    controller.silenced = False
    assert _eventually(lambda: len(bus.sync_read("present_position")) == len(PROFILE.joints))
    bus.disconnect()


def test_the_controller_stops_its_arm_when_the_runtime_goes_silent(controller):
    """The runtime's side dies without a word (no torque off sent): the controller sees its heartbeats stop
    and turns its own torque off within a second."""
    bus = make_bus(PROFILE, controller.port, command_port=controller.command_port)
    bus.connect()
    bus.enable_torque()
    assert _eventually(lambda: controller.torque)
    bus._close()  # the process gone: sockets closed, nothing said
    t0 = time.monotonic()
    assert _eventually(lambda: not controller.torque, 2.0)
    assert time.monotonic() - t0 < 1.5 and controller.stops == 1


def test_a_controller_that_stopped_by_itself_is_reported_not_overridden(controller):
    """Our side silent for a second (no reads, no heartbeats): the controller stops its arm. The bus then
    reports the controller's torque as off and never turns it back on by itself."""
    bus = make_bus(PROFILE, controller.port, command_port=controller.command_port)
    bus.connect()
    bus.enable_torque()
    assert _eventually(lambda: bus.sync_read("present_position") and bus.reported_torque)
    time.sleep(1.0)
    assert not controller.torque and controller.stops == 1
    for _ in range(20):
        bus.sync_read("present_position")
    assert bus.reported_torque is False and not controller.torque
    bus.disconnect()


def test_torque_is_one_switch_for_the_arm(controller):
    bus = make_bus(PROFILE, controller.port, command_port=controller.command_port)
    bus.connect()
    with pytest.raises(BusError, match="one switch for the whole arm"):
        bus.write("torque_enable", 0, 1)
    bus.disconnect()
