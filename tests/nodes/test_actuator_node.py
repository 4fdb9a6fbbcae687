"""The actuator node as a real process: safe forwarding, NaN refusal, clamping, watchdog hold, protective
stop."""

import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

from runtime.graph import load_graph
from runtime.transport import Publisher, Subscriber

ROOT = Path(__file__).resolve().parents[2]


def _commands(sub: Subscriber, seconds: float) -> list[np.ndarray]:
    out, end = [], time.monotonic() + seconds
    while time.monotonic() < end:
        out += [np.array(m.data) for m in sub.poll(0.05) if m.topic == "actuator/command"]
    return out


@pytest.mark.timeout(60)
def test_actuator_forwards_safe_actions_refuses_nan_and_holds_on_watchdog(tmp_path):
    """A valid action is forwarded as is, an out-of-range one clamped, a NaN one refused (the last safe
    command stays), and when actions stop for watchdog_s the node says so and keeps holding the last safe
    command."""
    raw = yaml.safe_load(open(load_graph("sim").source))
    raw["nodes"]["actuator"]["params"]["watchdog_s"] = 0.3
    graph_file = tmp_path / "g.yaml"
    graph_file.write_text(yaml.safe_dump(raw))
    graph = load_graph(graph_file)
    run_dir = Path(tmp_path)
    expert = Publisher(graph.nodes["expert"].endpoint(run_dir), "expert")
    brain = Publisher(graph.nodes["brain"].endpoint(run_dir), "brain")  # the protective stop's sender
    log_file = open(tmp_path / "actuator.log", "wb")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "nodes",
            "--graph",
            str(graph_file),
            "--node",
            "actuator",
            "--run-dir",
            str(run_dir),
        ],
        cwd=ROOT,
        stdout=log_file,
        stderr=subprocess.STDOUT,
    )
    sub = Subscriber([graph.nodes["actuator"].endpoint(run_dir)], {"actuator/command": "latest"}, name="test")
    try:
        deadline = time.monotonic() + 20
        while not sub.wait_ready(0.1) and time.monotonic() < deadline:
            expert.service()
            brain.service()
        end = time.monotonic() + 2  # let the actuator's own handshakes with "expert" and "brain" complete
        while time.monotonic() < end:
            expert.service()
            brain.service()
            time.sleep(0.01)
        good = np.array([0.1, 0.5, 1.0, 0.9, -1.0], np.float32)
        expert.publish("expert/action", "action", good, time.monotonic_ns())
        np.testing.assert_allclose(_commands(sub, 0.2)[-1], good)

        too_far = np.array([9.0, 0.5, 1.0, 0.9, 5.0], np.float32)
        expert.publish("expert/action", "action", too_far, time.monotonic_ns())
        last = _commands(sub, 0.2)[-1]
        assert last[0] == pytest.approx(2.6) and last[4] == pytest.approx(1.0)  # yaw and gripper limits

        expert.publish(
            "expert/action", "action", np.array([np.nan, 0, 0, 0, 0], np.float32), time.monotonic_ns()
        )
        held = _commands(sub, 0.6)  # also crosses the 0.3 s watchdog
        assert held and all(np.isfinite(c).all() for c in held)
        np.testing.assert_allclose(held[-1], last)

        brain.publish("brain/stop", "state", np.ones(1, np.float32), time.monotonic_ns())
        time.sleep(0.2)
        expert.publish("expert/action", "action", good, time.monotonic_ns())  # refused: stopped
        stopped = _commands(sub, 0.3)
        assert stopped and all(np.allclose(c, last) for c in stopped)
    finally:
        sub.close()
        expert.close()
        brain.close()
        proc.terminate()
        proc.wait(5)
        log_file.close()
    text = (tmp_path / "actuator.log").read_text()
    assert "refused a non-finite action" in text
    assert "holding the last safe command" in text
    assert "'clamped': 1" in text and "'rejected_nonfinite': 1" in text
    assert "protective stop from brain/stop" in text and "'refused_stopped': 1" in text
