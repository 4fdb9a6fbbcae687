"""Robot profiles (firmware_profiles/robots/*.toml, runtime/profiles/robots.py)."""

import re

import numpy as np
import pytest

from runtime.profiles import ROBOTS_DIR, ProfileError, load_robot, robot_names
from runtime.profiles.robots import GRIPPER_CHANNEL

SHIPPED = ("koch-v1.1", "so100", "sim-arm", "zmq-bridge")


def test_every_shipped_robot_loads_and_names_its_file():
    """The four robots the issue names ship, load, and are called by their file's name."""
    assert set(SHIPPED) <= set(robot_names())
    for name in robot_names():
        robot = load_robot(name)
        assert robot.name == name and robot.joints


def test_every_value_in_a_shipped_robot_carries_a_reason():
    """Each `key = value` line has a trailing comment of a few words: why the value is what it is."""
    for path in ROBOTS_DIR.glob("*.toml"):
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if re.match(r"^\s*[a-z_]+\s*=", line):
                reason = line.split("#", 1)[1].strip() if "#" in line else ""
                assert len(reason.split()) >= 3, f"{path.name}:{number}: no reason for {line.strip()!r}"


def test_the_serial_arms_have_datasheet_references():
    """The Dynamixel and Feetech profiles cite the register tables their drivers follow."""
    assert "emanual.robotis.com" in (ROBOTS_DIR / "koch-v1.1.toml").read_text()
    assert "STS3215" in (ROBOTS_DIR / "so100.toml").read_text()


def test_the_sim_arm_profile_matches_the_simulated_arm():
    """sim-arm's limits are the MuJoCo arm's action limits, and its home the arm's home pose."""
    import envs
    from envs.manipulation_constants import HOME_ARM_QPOS

    env = envs.make("manipulation", action_mode="absolute", audio=False, observe_image=False)
    robot = load_robot("sim-arm")
    low, high = robot.limits()
    assert np.allclose(low, env.action_space.low) and np.allclose(high, env.action_space.high)
    assert np.allclose(robot.home()[:4], HOME_ARM_QPOS)
    env.close()


def test_joint_targets_map_the_brains_action_and_hold_the_rest():
    """Each joint takes its action channel; the gripper's [-1, 1] is scaled onto its range; a joint with no
    channel (the Koch wrist roll) keeps its held target."""
    robot = load_robot("koch-v1.1")
    held = np.full(6, 0.3)
    targets = robot.joint_targets(np.array([0.1, 0.2, -0.3, 0.4, 1.0]), held)
    assert np.allclose(targets[:4], [0.1, 0.2, -0.3, 0.4])
    assert targets[4] == 0.3  # wrist_roll: held
    gripper = robot.joints[5]
    assert gripper.action_index == GRIPPER_CHANNEL and targets[5] == pytest.approx(gripper.max_rad)


BROKEN = {
    "unknown key": ("watchdog_ms = 250", "watchdog_ms = 250\nturbo = true", "`turbo` is not a known field"),
    "bus type": ('type = "dynamixel-2.0"', 'type = "can"', "`bus.type` must be one of"),
    "baud rate": ("baudrate = 1000000", "baudrate = 9600", "`bus.baudrate` must be one of"),
    "watchdog too short": ("watchdog_ms = 250", "watchdog_ms = 5", "`watchdog_ms` must be between"),
    "on watchdog": ('on_watchdog = "hold"', 'on_watchdog = "panic"', "`on_watchdog` must be one of"),
    "direction": ("direction = 1  # positive", "direction = 2  # positive", "`joints[0].direction`"),
    "limits": ("min_rad = -1.57  # a quarter", "min_rad = 2.0  # a quarter", "`joints[0].min_rad` must be <"),
    "model": ('model = "xl430-w250"  # the base', 'model = "sts3215"  # the base', "`joints[0].model`"),
    "duplicate id": ("id = 2  # second", "id = 1  # second", "`joints.id` must be unique"),
    "missing key": ("max_relative_target_rad = 0.2", "", "`max_relative_target_rad` is missing"),
}


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_inconsistent_profiles_are_refused_naming_the_field(tmp_path, case):
    """A broken copy of koch-v1.1 is refused with a ProfileError naming the file and the field."""
    old, new, message = BROKEN[case]
    text = (ROBOTS_DIR / "koch-v1.1.toml").read_text()
    assert old in text, old
    path = tmp_path / "broken.toml"
    path.write_text(text.replace(old, new, 1))
    with pytest.raises(ProfileError, match=re.escape(message)) as err:
        load_robot(path)
    assert "broken.toml" in str(err.value)


def test_an_unknown_robot_is_refused_listing_the_known_ones():
    """Asking for a robot there is no file for names the ones there are."""
    with pytest.raises(ProfileError, match="unknown robot 'ur5'.*koch-v1.1"):
        load_robot("ur5")
