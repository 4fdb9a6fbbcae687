"""Smoke tests: `python -m launch.sim` in a subprocess, as a user runs it: a graph of real processes."""

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]


def run_sim(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "launch.sim", *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout
    )


def _children(pid: int) -> set[int]:
    """Every live descendant of `pid` (from /proc)."""
    parents: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            parents.setdefault(ppid, []).append(int(entry))
    out, todo = set(), [pid]
    while todo:
        for child in parents.get(todo.pop(), []):
            out.add(child)
            todo.append(child)
    return out


@pytest.mark.timeout(120)
def test_sim_graph_runs_streams_at_native_rates_and_writes_video(tmp_path):
    """`--env manipulation --seconds N` runs sim, expert and actuator as processes; the dashboard shows every
    stream near its nominal rate with no gaps, the camera stream is saved to MP4, and `--status-file` holds
    the same figures as JSON, adaptation included; at exit a summary of the brain's latency per stage."""
    video, status = tmp_path / "run.mp4", tmp_path / "status.json"
    proc = run_sim(
        "--env", "manipulation", "--seconds", "8", "--save-video", str(video),
        "--logs", str(tmp_path / "logs"), "--status-file", str(status),
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    rows = {line.split("│")[1].strip(): line for line in proc.stderr.splitlines() if line.count("│") >= 7}
    for topic, nominal in (
        ("sim/camera", 30),
        ("sim/audio", 100),
        ("sim/joint", 100),
        ("expert/action", 10),
        ("actuator/command", 100),
    ):
        cells = [c.strip() for c in rows[topic].split("│")]
        assert abs(float(cells[3]) - nominal) <= 0.1 * nominal, rows[topic]
        assert cells[6] == "0", rows[topic]  # no sequence gaps
    assert {"sim.log", "expert.log", "actuator.log"} <= {p.name for p in (tmp_path / "logs").iterdir()}
    # the brain runs the shipped world-model checkpoint on every tick and the dashboard reports it
    text = " ".join(proc.stderr.split())  # the dashboard wraps long lines
    assert "World model: step p50" in text, proc.stderr[-2000:]
    line = text[text.rindex("World model: step p50") :][:300]
    step_p50 = float(line.split("step p50 ")[1].split(" ms")[0])
    assert 0 < step_p50 < 30, line
    assert "ticks refused 0" in line, line
    figures = json.loads(status.read_text())
    for topic, nominal in (("sim/camera", 30), ("sim/joint", 100), ("expert/action", 10)):
        stream = figures["streams"][topic]
        assert abs(stream["rate_hz"] - nominal) <= 0.1 * nominal and stream["stale"] is False, stream
        assert 0 < stream["latency_p50_ms"] < 100, stream
    assert figures["streams"]["sim/episode"]["stale"] is None  # an event stream is quiet by nature
    # The brain's start (torch, the checkpoint, compiled kernels) takes seconds of the 8 on a loaded machine,
    # so the count is not the test: the brain ticking near the camera's rate once it runs is. (Its ticks carry
    # their frame's capture time, so a learner round finishing at exit can age the last one past 0.25 s.)
    brain = figures["streams"]["brain/tick"]
    assert brain["rate_hz"] > 20, brain
    assert figures["ticks"] > 30 and figures["memory_entries"] > 0 and figures["locked"] is False
    assert {"e2e_p50_ms", "e2e_p99_ms", "episodes", "successes"} <= set(figures)
    # the exit summary: the brain's latency per stage and the ticks over one camera period
    assert "Run summary" in text and "capture -> belief" in text and "deadline misses" in text, text[-3000:]
    assert 0 <= figures["deadline_misses"] <= figures["ticks"]
    cap = cv2.VideoCapture(str(video))
    assert int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) >= 100  # ~30 fps for most of the 8 s
    ok, frame = cap.read()
    assert ok and frame.shape == (256, 256, 3)


@pytest.mark.timeout(180)
def test_mpc_policy_closes_the_loop_through_the_brain(tmp_path):
    """`--policy mpc`: no expert runs; the brain plans on its belief and publishes `brain/action` at the
    control rate, the actuator turns it into commands at 100 Hz, and the brain aligns those commands into
    its ticks. The brain's log counts its plans and their times. The video shows the plan's predicted
    end-effector path over the camera; the Rerun recording holds the frames, the paths and the latencies."""
    status, video, viz = tmp_path / "status.json", tmp_path / "plan.mp4", tmp_path / "run.rrd"
    proc = run_sim(
        "--policy", "mpc", "--task", "reach", "--seconds", "20", "--logs", str(tmp_path / "logs"),
        "--status-file", str(status), "--save-video", str(video), "--viz", "rerun", "--viz-file", str(viz),
        timeout=170,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    figures = json.loads(status.read_text())
    assert "expert/action" not in figures["streams"]
    action, command = figures["streams"]["brain/action"], figures["streams"]["actuator/command"]
    # the loop closes: actions flow (10 Hz nominal, fewer when plans run long on a loaded 2-core machine;
    # 4.9 Hz was seen in a full run), and are not checked for `stale` at exit (they carry their tick's
    # capture time). Plan timing is the control benchmark's job, not this test's.
    assert action["rate_hz"] >= 2, action
    # the actuator republishes at its own 100 Hz, not at the brain's 10: 84.8 Hz was seen once in a full
    # fresh-clone run (its 10 ms period misses when the planner holds both cores), so the bound is loose below
    assert 70 <= command["rate_hz"] <= 110, command
    assert figures["ticks"] > 100
    log = (tmp_path / "logs" / "brain.log").read_text()
    found = re.search(r"brain: (\d+) plans, p50", log)
    assert found and int(found[1]) > 30, log[-2000:]
    # each action is timed from the capture of its frame (brain/latency), and the summary shows the stages
    assert 0 < figures["e2e_p50_ms"] <= figures["e2e_p99_ms"], figures
    assert "capture -> action" in proc.stdout + proc.stderr and "transport" in proc.stdout + proc.stderr
    # the overlay: amber (the plan's colour) on frames once plans come in; the sim's scene has none
    capture, amber = cv2.VideoCapture(str(video)), []
    while True:
        ok, bgr = capture.read()
        if not ok:
            break
        b, g, r = (bgr[..., k].astype(int) for k in range(3))
        amber.append(int(((r > 200) & (g > 150) & (g < 230) & (b < 80)).sum()))
    capture.release()
    assert len(amber) > 100 and amber[0] == 0 and np.mean(np.array(amber[-60:]) > 0) > 0.8, amber[-60:]
    from runtime.viz import RerunLog

    entities = RerunLog.entities(viz)
    expected = {"/camera/image", "/world/ee/predicted", "/latency/frame_to_action_ms", "/model/energy"}
    assert expected <= entities, entities


@pytest.mark.timeout(120)
def test_random_policy_walks_the_joint_targets(tmp_path):
    """`--policy random`: the expert node publishes a random walk of joint targets at its 10 Hz."""
    status = tmp_path / "status.json"
    proc = run_sim("--policy", "random", "--seconds", "6", "--status-file", str(status))
    assert proc.returncode == 0, proc.stderr
    action = json.loads(status.read_text())["streams"]["expert/action"]
    assert abs(action["rate_hz"] - 10) <= 1 and action["stale"] is False, action


@pytest.mark.timeout(120)
def test_sim_runs_any_gymnasium_env():
    """`--env gym:Pusher-v5` runs the sim_gym graph: camera and joint streams, and says there is no audio."""
    proc = run_sim("--env", "gym:Pusher-v5", "--seconds", "5")
    assert proc.returncode == 0, proc.stderr
    assert "no audio" in proc.stderr
    assert "sim/camera" in proc.stderr and "sim/audio" not in proc.stderr


@pytest.mark.timeout(60)
def test_ctrl_c_stops_every_node_within_2_s_leaving_no_orphans():
    """SIGINT to launch.sim stops every node process within 2 s; none outlives it."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "launch.sim"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 30
        while len(_children(proc.pid)) < 4 and time.monotonic() < deadline:
            time.sleep(0.2)
        nodes = _children(proc.pid)
        assert len(nodes) >= 4, "the graph's four nodes never started"
        time.sleep(3)  # running, not just starting
        t0 = time.monotonic()
        proc.send_signal(signal.SIGINT)
        try:  # communicate, not wait: the launcher's output pipes are drained while it stops
            _, err = proc.communicate(timeout=10)
        except subprocess.TimeoutExpired as exc:
            proc.kill()
            _, err = proc.communicate()
            message = f"launch.sim running 10 s after SIGINT; its stderr ends:\n{err[-3000:]}"
            raise AssertionError(message) from exc
        assert time.monotonic() - t0 < 2.0 + 1.0, err[-3000:]  # 2 s for the nodes, plus the launcher's exit
        assert "stopped 4 nodes in" in err
        stopped_in = float(err.split("stopped 4 nodes in")[1].split("s")[0])
        assert stopped_in <= 2.0
        time.sleep(0.2)
        assert not [pid for pid in nodes if os.path.exists(f"/proc/{pid}")], "orphan node processes"
    finally:
        if proc.poll() is None:
            proc.kill()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--env", "kitchen"], "valid: 'manipulation'"),
        (["--env", "gym:NoSuchEnv-v9"], "unknown Gymnasium env id"),
        (["--task", "pick"], "reach"),
        (["--save-video", "out.avi"], ".mp4"),
        (["--seconds", "-1"], "`seconds` must be > 0"),
        (["--graph", "no_such_graph"], "no such graph file"),
        (["--env", "gym:Pusher-v5", "--policy", "mpc"], "drives the manipulation arm"),
        (["--shift", "flip"], "NAME@SECONDS"),
        (["--shift", "wobble@3"], "one of flip, mass, friction, gain"),
        (["--env", "gym:Pusher-v5", "--shift", "mass@1"], "gym envs have none"),
        (["--record", "/no/such/dir/run.mcap"], "`--record`"),
        (["--viz-file", "run.rrd"], "`--viz-file` is a .rrd file for `--viz rerun`"),
        (["--viz", "rerun", "--viz-file", "run.txt"], "`--viz-file` is a .rrd file"),
        (["--viz", "matplotlib"], "rerun"),
    ],
)
def test_sim_refuses_bad_input_before_starting(args, message):
    """Bad flags exit with status 2 and a message naming the problem and the valid choices; nothing starts."""
    proc = run_sim(*args, timeout=60)
    assert proc.returncode == 2
    assert message in proc.stderr


def test_bad_vsync_config_is_refused_before_anything_starts(tmp_path):
    """A brain whose V-sync config has a zero rate is refused by launch.sim with a message naming the field,
    and no node process starts."""
    import yaml

    raw = yaml.safe_load((ROOT / "launch" / "graphs" / "sim.yaml").read_text())
    raw["nodes"]["brain"]["params"]["vsync"]["streams"]["sim/camera"]["nominal_hz"] = 0
    graph = tmp_path / "bad.yaml"
    graph.write_text(yaml.safe_dump(raw, sort_keys=False))
    proc = run_sim("--graph", str(graph), "--seconds", "5", timeout=60)
    assert proc.returncode == 2
    assert "streams[sim/camera].nominal_hz" in proc.stderr
    assert "stopped" not in proc.stderr


@pytest.mark.timeout(150)
def test_record_and_a_live_shift(tmp_path):
    """`--record run.mcap --shift flip@2`: the recorder runs beside the graph and finishes a file that holds
    every sensor stream and the brain's ticks; the sim reverses the shoulder's command at 2 s of simulated
    time and says so in its log."""
    from runtime.record import recording_summary

    out = tmp_path / "run.mcap"
    proc = run_sim(
        "--seconds", "8", "--record", str(out), "--shift", "flip@2", "--logs", str(tmp_path / "logs"),
        timeout=140,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = recording_summary(out)
    assert summary is not None, (tmp_path / "logs" / "recorder.log").read_text()[-2000:]
    assert {"sim/camera", "sim/audio", "sim/joint", "expert/action", "brain/tick"} <= set(summary.topics)
    assert summary.topics["sim/camera"] > 60  # more than 2 s of frames at 30 Hz
    assert f"recorded {summary.messages:,} messages" in proc.stderr
    assert "dynamics shift 'flip' applied at 2.00 s" in (tmp_path / "logs" / "sim.log").read_text()


def _sensor_fakes(tmp_path: Path):
    """A 3 s looping video file for the camera, and a file-backed ALSA capture device (`testmic`, fed at
    16 kHz through a named pipe) for the microphone: the real camera and PortAudio code runs on both."""
    sys.path.insert(0, str(ROOT / "tests"))
    from fakes.alsa import PCM_NAME, PacedFifoWriter, write_asoundrc
    from fakes.video import counter_frames, write_video

    video = write_video(tmp_path / "camera.mp4", counter_frames(90, 64, 48), fps=30)
    writer = PacedFifoWriter(tmp_path / "mic.fifo", rate=16000, block=160)  # before PortAudio opens it
    write_asoundrc(tmp_path, writer.path, rate=16000)
    return video, PCM_NAME, writer, {**os.environ, "HOME": str(tmp_path)}


@pytest.mark.timeout(200)
def test_live_camera_and_microphone_join_the_graph(tmp_path):
    """`--camera video.mp4 --mic testmic` for 20 s: both sensors run as their own nodes at their native rates,
    the brain synchronizes them into its ticks with the sim's streams and encodes them (`brain/extra`),
    every stream is live in the status file at exit, and every process stops cleanly."""
    video, mic, writer, env = _sensor_fakes(tmp_path)
    status, logs, scratch = tmp_path / "status.json", tmp_path / "logs", tmp_path / "tmp"
    scratch.mkdir()
    env["TMPDIR"] = str(scratch)  # where the graph with the sensors merged in is written
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "launch.sim", "--seconds", "20", "--camera", str(video), "--mic", mic,
             "--status-file", str(status), "--logs", str(logs)],
            cwd=ROOT, capture_output=True, text=True, timeout=180, env=env,
        )  # fmt: skip
    finally:
        writer.close()
    assert proc.returncode == 0, proc.stderr[-3000:]
    streams = json.loads(status.read_text())["streams"]
    # six processes share two cores here: a fresh-clone run measured the file camera at 26.4 Hz once; 20 %
    # still tells its native 30 Hz from the sim's 100 Hz streams or a stalled camera
    assert abs(streams["camera/image"]["rate_hz"] - 30) <= 6, streams["camera/image"]
    assert abs(streams["mic/audio"]["rate_hz"] - 100) <= 10, streams["mic/audio"]
    assert streams["brain/extra"]["rate_hz"] > 20, streams["brain/extra"]
    live = {t: s for t, s in streams.items() if s["stale"] is not None}
    assert not [t for t, s in live.items() if s["stale"]], live
    brain = (logs / "brain.log").read_text()
    for topic, rate in (("camera/image", "30"), ("mic/audio", "100")):
        assert re.search(rf"brain: {re.escape(topic)} \d+\.\d+ Hz \(nominal {rate}\)", brain), brain[-2000:]
    assert "stopped 6 nodes" in proc.stderr
    assert not list(scratch.glob("hamrt-graph-*")), "the merged graph's directory was left behind"


@pytest.mark.timeout(120)
def test_a_device_that_cannot_be_opened_stops_the_start_unless_optional(tmp_path):
    """`--camera` naming a file that does not exist: exit 2 with the source named, nothing started; with
    `--optional-devices` the graph runs without it and says so."""
    missing = tmp_path / "no_such_camera.mp4"
    proc = run_sim("--camera", str(missing), "--seconds", "3", timeout=60)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert f"`--camera {missing}` cannot be opened" in proc.stderr and "--optional-devices" in proc.stderr
    assert "stopped" not in proc.stderr
    status = tmp_path / "status.json"
    proc = run_sim(
        "--camera", str(missing), "--optional-devices", "--seconds", "4", "--status-file", str(status)
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "running without it" in proc.stderr
    assert "camera/image" not in json.loads(status.read_text())["streams"]


@pytest.mark.timeout(150)
def test_actor_policy_drives_the_arm_through_the_brain(tmp_path):
    """`--policy actor`: the planning graph with the distilled actor choosing each step; actions flow at the
    control rate and each is timed from its frame."""
    status = tmp_path / "status.json"
    proc = run_sim(
        "--policy", "actor", "--task", "reach", "--seconds", "10", "--logs", str(tmp_path / "logs"),
        "--status-file", str(status), timeout=140,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    figures = json.loads(status.read_text())
    assert figures["streams"]["brain/action"]["rate_hz"] >= 5, figures["streams"]["brain/action"]
    assert 0 < figures["e2e_p50_ms"] <= figures["e2e_p99_ms"]
    log = (tmp_path / "logs" / "brain.log").read_text()
    assert re.search(r"brain: \d+ plans, p50 .*search ahead 0 iterations", log), log[-2000:]
