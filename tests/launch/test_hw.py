"""`launch.hw` against the servo emulators: the whole graph for 10 s (camera and microphone from files, the
brain planning, the arm following through the real driver), bad input refused before anything starts, and
`launch.bench hardware` writing the keys the issue names."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from runtime.benchmarks.hardware import _sources

ROOT = Path(__file__).resolve().parents[2]


def run(*args: str, timeout: int = 200) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout
    )


@pytest.fixture(scope="module")
def sources(tmp_path_factory):
    """A video of the simulated scene and a WAV, as the camera and the microphone."""
    return _sources(tmp_path_factory.mktemp("sources"))


@pytest.mark.timeout(240)
@pytest.mark.parametrize("robot", ["koch-v1.1", "zmq-bridge"])
def test_launch_hw_runs_the_graph_on_the_emulated_arm_for_10_s(sources, tmp_path, robot):
    """Camera, microphone, arm, goal and brain run 10 s: the arm's joints stream near 100 Hz, the brain ticks
    at the camera's rate and acts at 10 Hz, frame-to-action latency is measured, and on exit the arm's
    torque goes off. On Dynamixel servos (a pseudo-terminal), and on a remote controller over our wire
    format (ZeroMQ sockets)."""
    camera, mic = sources
    status, logs = tmp_path / "status.json", tmp_path / "logs"
    proc = run(
        "launch.hw", "--profile", robot, "--port", "emulator", "--camera", camera, "--mic", mic,
        "--seconds", "10", "--status-file", str(status), "--logs", str(logs),
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    figures = json.loads(status.read_text())
    streams = figures["streams"]
    assert streams["arm/joint"]["rate_hz"] > 50, streams["arm/joint"]
    assert streams["brain/action"]["rate_hz"] > 5, streams["brain/action"]
    assert figures["ticks"] > 90 and figures["e2e_p50_ms"] > 0  # 30 a second once the model is loaded
    assert 0 <= figures["deadline_misses"] <= figures["ticks"]  # judged against the camera's period
    arm = figures["arm"]  # the dashboard's arm line before the nodes stopped (a controller's own torque)
    assert arm["torque"] == 1 and arm["stopped"] == 0 and arm["actions"] > 0 and arm["failures"] == 0, arm
    arm_log = (logs / "arm.log").read_text()
    assert f"hardware: {robot} on" in arm_log and "torque on" in arm_log
    assert "turned its torque off by itself" not in arm_log  # a remote controller kept hearing us
    assert "torque off, bus closed" in arm_log and "'actions': 0" not in arm_log


@pytest.mark.parametrize(
    "args, message",
    [
        (["--profile", "koch-v1.1", "--port", "/dev/ttyNOPE0"], "/dev/ttyNOPE0 does not exist"),
        (["--profile", "ur5"], "unknown robot 'ur5'"),
        (["--profile", "sim-arm"], "runs with launch.sim"),
        (["--profile", "so100", "--port", "emulator", "--camera", "x.mp4"], "cannot be opened"),
        (["--profile", "zmq-bridge", "--port", "ipc:///tmp/hamrt-nobody"], "no controller answers at"),
    ],
)
def test_bad_input_is_refused_before_anything_starts(args, message):
    """A port that does not exist, an unknown robot, a robot with no bus launch.hw drives, a camera that
    cannot be opened, a remote controller that is not there: exit code 2 and a message naming it."""
    proc = run("launch.hw", *args, timeout=60)
    assert proc.returncode == 2 and message in proc.stderr, proc.stderr[-2000:]


@pytest.mark.timeout(300)
def test_bench_hardware_writes_the_issue_keys(sources, tmp_path):
    """`launch.bench hardware --port emulator`, shortened: bus round trips, the graph's e2e latency and the
    watchdog after the brain is killed, with the issue's targets."""
    camera, mic = sources
    out = tmp_path / "hw.json"
    proc = run(
        "launch.bench", "hardware", "--profile", "koch-v1.1", "--port", "emulator", "--camera", camera,
        "--mic", mic, "--roundtrips", "200", "--seconds", "5", "--warmup-s", "6", "--json", str(out),
        timeout=280,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    data = json.loads(out.read_text())
    results = data["results"]
    for key in (
        "bus_roundtrip_p50_ms",
        "bus_roundtrip_p99_ms",
        "e2e_p99_ms",
        "watchdog_ms",
        "watchdog_stop_ms",
    ):
        assert results[key] > 0, key
    assert results["watchdog_ms"] == 250 and results["watchdog_stop_ms"] < 5000
    assert data["targets"]["watchdog_stop_ms"] == {"op": "<=", "value": 500.0}
