"""Smoke tests: `python -m launch.sim` in a subprocess, as a user runs it."""

import subprocess
import sys
from pathlib import Path

import cv2
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[2]


def run_sim(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "launch.sim", *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout
    )


def test_sim_runs_the_expert_and_writes_mp4(tmp_path):
    """`--seconds` bounds the run; the MP4 holds one frame per control step; the summary table is printed."""
    video = tmp_path / "run.mp4"
    proc = run_sim("--env", "manipulation", "--seconds", "3", "--speed", "0", "--save-video", str(video))
    assert proc.returncode == 0, proc.stderr
    assert "Manipulation-Push-v0" in proc.stderr and "env_step" in proc.stderr
    cap = cv2.VideoCapture(str(video))
    frames = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
    ok, frame = cap.read()
    assert ok and frame.shape == (256, 256, 3)  # 64x64 camera, enlarged 4x
    assert frames >= 10


def test_sim_reach_task_writes_gif(tmp_path):
    """`--task reach` selects the reach env; a .gif path writes an animated GIF of the camera stream."""
    video = tmp_path / "run.gif"
    proc = run_sim(
        "--task", "reach", "--seconds", "2", "--speed", "0", "--save-video", str(video), "--video-scale", "1"
    )
    assert proc.returncode == 0, proc.stderr
    assert "Manipulation-Reach-v0" in proc.stderr
    gif = Image.open(video)
    assert gif.size == (64, 64) and gif.n_frames >= 5


def test_sim_runs_any_gymnasium_env():
    """`--env gym:Pusher-v5` runs with random actions and reports audio as absent."""
    proc = run_sim("--env", "gym:Pusher-v5", "--seconds", "2", "--speed", "0")
    assert proc.returncode == 0, proc.stderr
    assert "audio absent" in proc.stderr.replace("\n", " ")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--env", "kitchen"], "valid: 'manipulation'"),
        (["--env", "gym:NoSuchEnv-v9"], "unknown Gymnasium env id"),
        (["--task", "pick"], "reach"),
        (["--save-video", "out.avi"], ".mp4"),
        (["--seconds", "-1"], "`seconds` must be > 0"),
    ],
)
def test_sim_refuses_bad_input_before_starting(args, message):
    """Bad flags exit with status 2 and a message naming the problem and the valid choices."""
    proc = run_sim(*args, timeout=60)
    assert proc.returncode == 2
    assert message in proc.stderr
