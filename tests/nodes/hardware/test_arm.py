"""The arm under the brain's actions (nodes/hardware/arm.py), against the servo emulators through the real
drivers: limits that hold whatever the actions, protective stops, the watchdog, torque off."""

import time

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nodes.hardware.arm import Arm
from nodes.hardware.emulators import DynamixelEmulator, FeetechEmulator
from nodes.hardware.node import make_bus
from runtime.profiles import load_robot

ROBOTS = {"koch-v1.1": DynamixelEmulator, "so100": FeetechEmulator}


@pytest.fixture(scope="module", params=sorted(ROBOTS))
def rig(request):
    """A robot profile and its emulator, the servos fast (tau 10 ms) so a test sees them arrive."""
    profile = load_robot(request.param)
    emulator = ROBOTS[request.param]([j.id for j in profile.joints], tau_s=0.01, max_speed_rad_s=20.0)
    emulator.start()
    yield profile, emulator
    emulator.close()


def _arm(profile, emulator) -> Arm:
    arm = Arm(profile, make_bus(profile, emulator.port))
    arm.connect()
    return arm


def _eventually(condition, timeout_s: float = 1.0) -> bool:
    """Sync writes have no reply: the emulator applies them a moment after the driver returns."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.005)
    return True


def _tick_limits(profile, arm) -> tuple[dict, dict]:
    lo, hi = arm.calibration.to_ticks(arm.low), arm.calibration.to_ticks(arm.high)
    return {s: min(lo[s], hi[s]) for s in lo}, {s: max(lo[s], hi[s]) for s in lo}


values = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.floats(-1e6, 1e6),
    st.floats(-3.0, 3.0),
)
actions = st.lists(st.lists(values, min_size=5, max_size=5), min_size=1, max_size=6)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(sequence=actions)
def test_no_emulated_position_ever_leaves_the_limits(rig, sequence):
    """Random, huge, infinite and NaN actions, in any order: every servo's emulated position stays within the
    profile's limits (in ticks through the calibration), and after a non-finite action the arm is stopped
    and refuses the rest."""
    profile, emulator = rig
    arm = _arm(profile, emulator)
    low, high = _tick_limits(profile, arm)
    try:
        for raw in sequence:
            action = np.array(raw, np.float64)
            arm.act(action, time.monotonic())
            if not np.all(np.isfinite(action)):
                assert arm.stopped is not None
            for _ in range(3):
                time.sleep(0.01)
                for j in profile.joints:
                    assert low[j.id] - 1 <= emulator.position(j.id) <= high[j.id] + 1, (j.name, raw)
            arm.read()
    finally:
        arm.disconnect()


def test_connect_sets_goals_where_the_joints_are_then_torque_on(rig):
    """Connecting moves nothing: the goals equal the present positions before torque goes on."""
    profile, emulator = rig
    arm = _arm(profile, emulator)
    try:
        assert _eventually(lambda: all(emulator.torque(j.id) for j in profile.joints))
        for j in profile.joints:
            assert abs(emulator.goal(j.id) - emulator.position(j.id)) <= 1
    finally:
        arm.disconnect()
    assert _eventually(lambda: not any(emulator.torque(j.id) for j in profile.joints))  # torque off


def test_a_far_target_is_approached_in_bounded_steps(rig):
    """A target 1 rad away on the first joint moves it by at most max_relative_target per action."""
    profile, emulator = rig
    arm = _arm(profile, emulator)
    try:
        start = arm.read()[0]
        applied = arm.act(np.array([start + 1.0, 0, 0, 0, -1.0]), time.monotonic())
        step = profile.max_relative_target_rad
        assert abs(applied[0] - start) <= step + 1e-9 and arm.stopped is None
    finally:
        arm.disconnect()


@pytest.mark.parametrize("on_watchdog", ["hold", "torque_off"])
def test_the_watchdog_holds_or_goes_limp_and_actions_resume(rig, tmp_path, on_watchdog):
    """No action for watchdog_ms: with `hold` torque stays on and the goals stay put; with `torque_off`
    torque goes off. The next action resumes control, from where the arm is."""
    profile, emulator = rig
    text = (
        open(profile_path(profile)).read().replace('on_watchdog = "hold"', f'on_watchdog = "{on_watchdog}"')
    )
    variant = tmp_path / "variant.toml"
    variant.write_text(text.replace(f'name = "{profile.name}"', 'name = "variant"'))
    robot = load_robot(variant)
    arm = Arm(robot, make_bus(robot, emulator.port))
    arm.connect()
    try:
        t0 = time.monotonic()
        arm.act(np.zeros(5), t0)
        assert not arm.check_watchdog(t0 + arm.watchdog_s * 0.9)
        assert arm.check_watchdog(t0 + arm.watchdog_s * 1.1)
        torque = lambda: [emulator.torque(j.id) for j in robot.joints]  # noqa: E731
        if on_watchdog == "hold":
            time.sleep(0.05)
            assert all(torque())
        else:
            assert _eventually(lambda: not any(torque()))
        arm.read()
        arm.act(np.zeros(5), time.monotonic())
        assert _eventually(lambda: all(torque())) and arm.stats["watchdog_trips"] == 1
    finally:
        arm.disconnect()


def profile_path(profile):
    from runtime.profiles import ROBOTS_DIR

    return ROBOTS_DIR / f"{profile.name}.toml"
