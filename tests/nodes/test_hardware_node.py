"""The hardware node as a real process on an emulated servo bus (a pseudo-terminal), the brain a process of
its own: the watchdog after the brain is killed, torque off on exit, a missing servo refused."""

import signal
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

import pytest
import yaml

from nodes.hardware.emulators import DynamixelEmulator
from runtime.graph import load_graph
from runtime.profiles import ROBOTS_DIR, load_robot
from runtime.transport import Subscriber

ROOT = Path(__file__).resolve().parents[2]


def _variant(tmp_path: Path, on_watchdog: str) -> Path:
    text = (ROBOTS_DIR / "koch-v1.1.toml").read_text()
    text = text.replace('on_watchdog = "hold"', f'on_watchdog = "{on_watchdog}"')
    path = tmp_path / "koch-test.toml"
    path.write_text(text.replace('name = "koch-v1.1"', 'name = "koch-test"'))
    return path


def _graph(tmp_path: Path, robot: Path, port: str) -> Path:
    raw = {
        "name": "hwtest",
        "heartbeat_period_s": 0.2,
        "nodes": {
            "arm": {
                "module": "nodes.hardware.node",
                "rate_hz": 100,
                "params": {"robot": str(robot), "port": port, "calibration": "none"},
                "publishes": {
                    "arm/joint": {"kind": "joint", "rate_hz": 100, "policy": "latest"},
                    "arm/command": {"kind": "action", "rate_hz": 100, "policy": "latest"},
                    "arm/status": {"kind": "state", "rate_hz": 2, "policy": "latest"},
                },
                "subscribes": ["brain/action", "brain/stop"],
            },
            "brain": {  # tests/fakes/brain_actions.py binds its endpoint; never started from the graph
                "module": "nodes.brain",
                "rate_hz": 10,
                "publishes": {
                    "brain/action": {"kind": "action", "rate_hz": 10, "policy": "lossless"},
                    "brain/stop": {"kind": "state", "rate_hz": 0.1, "policy": "lossless"},
                },
            },
        },
    }
    path = tmp_path / "hw.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def _start_node(graph_file: Path, run_dir: Path, log: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "nodes",
            "--graph",
            str(graph_file),
            "--node",
            "arm",
            "--run-dir",
            str(run_dir),
        ],
        cwd=ROOT,
        stdout=open(log, "wb"),
        stderr=subprocess.STDOUT,
    )


def _wait(condition, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.002)
    return True


@pytest.mark.timeout(90)
@pytest.mark.parametrize("on_watchdog", ["torque_off", "hold"])
def test_the_watchdog_stops_the_motors_within_twice_watchdog_ms_after_the_brain_is_killed(
    tmp_path, on_watchdog
):
    """The brain (a process swinging the arm) is SIGKILLed: within 2 x watchdog_ms the watchdog fires and the
    emulated motors stop, torque off or settled on their last goals with torque on, as the profile says;
    SIGTERM to the node then turns torque off."""
    robot = _variant(tmp_path, on_watchdog)
    profile = load_robot(robot)
    ids = [j.id for j in profile.joints]
    with DynamixelEmulator(ids) as emulator:
        graph_file = _graph(tmp_path, robot, emulator.port)
        graph = load_graph(graph_file)
        brain = subprocess.Popen(
            [
                sys.executable,
                "tests/fakes/brain_actions.py",
                "--endpoint",
                graph.nodes["brain"].endpoint(tmp_path),
            ],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            text=True,
        )
        node = _start_node(graph_file, tmp_path, tmp_path / "arm.log")
        try:
            assert brain.stdout.readline().startswith("bound")
            sub = Subscriber([graph.nodes["arm"].endpoint(tmp_path)], {"arm/status": "latest"}, name="test")
            assert _wait(lambda: all(emulator.torque(i) for i in ids), 30), (tmp_path / "arm.log").read_text()
            moving = lambda: emulator.goal(1)  # noqa: E731
            first = moving()
            assert _wait(lambda: moving() != first, 10), "the arm never followed the brain"
            time.sleep(0.5)
            brain.send_signal(signal.SIGKILL)
            killed, killed_wall = time.monotonic(), time.time()
            limit_s = 2 * profile.watchdog_ms / 1e3
            log = tmp_path / "arm.log"
            assert _wait(lambda: "no action for" in log.read_text(), 5), log.read_text()[-2000:]
            line = next(x for x in log.read_text().splitlines() if "no action for" in x)
            fired = datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S,%f").timestamp() - killed_wall
            assert fired <= limit_s, f"the watchdog fired {fired * 1e3:.0f} ms after the kill"
            if on_watchdog == "torque_off":
                assert _wait(lambda: not any(emulator.torque(i) for i in ids), 5)
                stopped_s = time.monotonic() - killed
            else:  # holding: the motors settle on their last goals, torque on
                last, since = emulator.position(1), time.monotonic()
                while time.monotonic() - since < 0.2:  # unmoved for 0.2 s: stopped at `since`
                    time.sleep(0.002)
                    if abs(emulator.position(1) - last) > 1:
                        last, since = emulator.position(1), time.monotonic()
                stopped_s = since - killed
                assert all(emulator.torque(i) for i in ids)
            assert stopped_s <= limit_s, f"motors stopped {stopped_s * 1e3:.0f} ms after the kill"
            sub.close()
            node.send_signal(signal.SIGTERM)
            assert node.wait(10) == 0
            assert _wait(lambda: not any(emulator.torque(i) for i in ids), 2)  # torque off on exit
        finally:
            for proc in (brain, node):
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()


@pytest.mark.timeout(60)
def test_a_servo_that_does_not_answer_stops_the_node_with_no_torque(tmp_path):
    """A bus missing one of the profile's servo ids: the node exits with an error naming the id, and no
    servo ever had torque on."""
    robot = _variant(tmp_path, "hold")
    ids = [j.id for j in load_robot(robot).joints]
    with DynamixelEmulator(ids[:-1]) as emulator:  # the gripper (id 6) is not on the bus
        graph_file = _graph(tmp_path, robot, emulator.port)
        node = _start_node(graph_file, tmp_path, tmp_path / "arm.log")
        try:
            assert node.wait(30) != 0
        finally:
            if node.poll() is None:
                node.kill()
        log = (tmp_path / "arm.log").read_text()
        assert "servo id 6" in log, log[-2000:]
        assert not any(emulator.torque(i) for i in ids[:-1])
