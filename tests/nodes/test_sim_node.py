"""The sim node as a real process: it applies the newest `actuator/command` to the MuJoCo arm (its joints go
where they are sent) and refuses a command of the wrong shape without stopping."""

import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from runtime.graph import load_graph
from runtime.transport import Publisher, Subscriber

ROOT = Path(__file__).resolve().parents[2]


def _joints(sub: Subscriber, seconds: float) -> np.ndarray:
    """The last `sim/joint` reading within `seconds` (its first 4 values: the arm's joint positions)."""
    last, end = None, time.monotonic() + seconds
    while time.monotonic() < end:
        for m in sub.poll(0.05):
            if m.topic == "sim/joint":
                last = np.array(m.data)
    assert last is not None, "no sim/joint reading"
    return last[:4]


@pytest.mark.timeout(90)
def test_sim_node_applies_commands_and_refuses_malformed_ones(tmp_path):
    graph = load_graph("sim")
    actuator = Publisher(graph.nodes["actuator"].endpoint(tmp_path), "actuator")
    log = open(tmp_path / "sim.log", "wb")
    cmd = [sys.executable, "-m", "nodes", "--graph", "sim", "--node", "sim", "--run-dir", str(tmp_path)]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
    sub = Subscriber([graph.nodes["sim"].endpoint(tmp_path)], {"sim/joint": "latest"}, name="test")
    try:
        deadline = time.monotonic() + 60  # the node imports MuJoCo and builds the scene first
        while not sub.wait_ready(0.1):
            actuator.service()
            assert time.monotonic() < deadline and proc.poll() is None, "sim node never became ready"
        while not sub.poll(0.1):  # the handshake is answered before the scene is built: wait for data
            actuator.service()
            assert time.monotonic() < deadline and proc.poll() is None, "sim node never published"
        start = _joints(sub, 0.5)

        def send(command: np.ndarray, seconds: float) -> None:
            end = time.monotonic() + seconds
            while time.monotonic() < end:  # at the actuator's 100 Hz, as the graph does
                actuator.service()
                actuator.publish("actuator/command", "action", command, time.monotonic_ns())
                time.sleep(0.01)

        target = np.array([0.5, 0.3, -0.4, 0.2, 0.0], np.float32)  # absolute joint targets, gripper
        send(target, 2.0)
        reached = _joints(sub, 0.3)
        assert np.abs(reached - target[:4]).max() < 0.1, (start, reached)
        assert np.abs(start - target[:4]).max() > 0.2  # it really moved there

        send(np.zeros(3, np.float32), 0.5)  # wrong shape: refused, the arm keeps its last targets
        assert proc.poll() is None
        np.testing.assert_allclose(_joints(sub, 0.3), reached, atol=0.05)
    finally:
        sub.close()
        proc.terminate()
        proc.wait(10)
        actuator.close()
        log.close()
    assert "rejected command" in (tmp_path / "sim.log").read_text()
