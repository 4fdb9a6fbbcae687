"""`launch.calibrate`: zeros and ranges recorded from an arm moved by hand (the emulator's joints turned
while torque is off), written atomically, loaded by the hardware node; bad input refused."""

import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from rich.console import Console

from launch.calibrate import calibrate
from nodes.hardware.calibration import Calibration, CalibrationError
from nodes.hardware.emulators import DynamixelEmulator
from nodes.hardware.node import make_bus
from runtime.profiles import load_robot

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.timeout(60)
def test_calibration_records_home_and_the_ranges_moved_by_hand(tmp_path):
    """Home is the pose at start; each joint's range is what a hand swept it through; torque stays off; the
    file round-trips and its limits narrow the profile's to the swept range."""
    profile = load_robot("koch-v1.1")
    ids = [j.id for j in profile.joints]
    with DynamixelEmulator(ids) as emulator:
        for k, servo in enumerate(ids):
            emulator.move_by_hand(servo, 2000 + 10 * k)  # home, a little off centre
        sweeps = {servo: (1700 + 10 * k, 2400 - 10 * k) for k, servo in enumerate(ids)}

        def hand():
            time.sleep(0.3)
            for servo, (low, high) in sweeps.items():
                for ticks in (low, high, 2000):
                    emulator.move_by_hand(servo, ticks)
                    time.sleep(0.05)

        mover = threading.Thread(target=hand)
        mover.start()
        with make_bus(profile, emulator.port) as bus:
            result = calibrate(
                bus, profile, Console(file=open("/dev/null", "w")), home_now=True, record_s=1.5
            )
        mover.join()
        assert not any(emulator.torque(s) for s in ids)
    for k, joint in enumerate(profile.joints):
        c = result.joints[joint.name]
        assert c.zero_ticks == 2000 + 10 * k and (c.min_ticks, c.max_ticks) == sweeps[joint.id]
    path = tmp_path / "koch.json"
    result.save(path)
    loaded = Calibration.load(path, profile)
    assert loaded == result
    low, high = loaded.limits(profile)
    p_low, p_high = profile.limits()
    assert np.all(low >= p_low) and np.all(high <= p_high) and np.all(low < high)


def test_a_calibration_for_another_robot_or_other_ids_is_refused(tmp_path):
    """A file made for the SO-100 does not load for the Koch; a changed servo id is refused by name."""
    koch, so100 = load_robot("koch-v1.1"), load_robot("so100")
    path = tmp_path / "so100.json"
    Calibration.from_profile(so100).save(path)
    with pytest.raises(CalibrationError, match="robot 'so100', not 'koch-v1.1'"):
        Calibration.load(path, koch)
    path.write_text(path.read_text().replace('"id": 6', '"id": 9'))
    with pytest.raises(CalibrationError, match="gripper.*id 9"):
        Calibration.load(path, so100)


@pytest.mark.timeout(60)
def test_the_command_refuses_joints_that_never_moved_and_writes_nothing(tmp_path):
    """On the emulator nothing turns the joints: the run ends naming them, exit code 2, no file."""
    out = tmp_path / "cal.json"
    proc = subprocess.run(
        [sys.executable, "-m", "launch.calibrate", "--profile", "koch-v1.1", "--port", "emulator"]
        + ["--home-now", "--record-s", "0.5", "--out", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2 and "hardly moved" in proc.stdout + proc.stderr
    assert not out.exists()
