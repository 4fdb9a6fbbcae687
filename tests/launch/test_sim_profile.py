"""`launch.sim --profile NAME` sets the sensors as the device profile says: the simulated camera's size and
rate, a live camera's size and rate, a microphone's rate and chunk; and refuses, before anything starts or
any export is made, what the brain's model could not take."""

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from launch.sim import SimConfig, discard_merged, prepare
from runtime.profiles import DEVICES_DIR

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests"))
from fakes.video import counter_frames, write_video  # noqa: E402
from fakes.wav import write_tone  # noqa: E402


def _profile(tmp_path: Path, name: str = "edge", **values) -> str:
    """The host profile on torch, with `key = value` lines replaced (values as TOML text)."""
    text = (DEVICES_DIR / "host-x86-2core.toml").read_text()
    values = {"engine": '"torch"', **values}
    for key, value in values.items():
        text, n = re.subn(rf"(?m)^{key} = .*$", f"{key} = {value}", text, count=1)
        assert n == 1, key
    path = tmp_path / f"{name}.toml"
    path.write_text(text)
    return str(path)


def test_a_profile_sets_every_camera_and_the_microphone(tmp_path):
    """A 20 Hz profile with 20 ms audio chunks: the sim renders at 20 Hz, the live camera is asked for 20 Hz
    at the profile's size, the microphone opens at its rate and chunk, and each node and topic declares the
    rate its sensor runs at (the brain's V-sync and the dashboard read them)."""
    profile = _profile(tmp_path, camera_hz="20", tick_hz="20", audio_chunk="320", frame_ms="50")
    video = write_video(tmp_path / "camera.mp4", counter_frames(30, 64, 48), fps=30)
    wav = write_tone(tmp_path / "mic.wav", seconds=1.0)
    graph, params = prepare(SimConfig(profile=profile, camera=str(video), mic=str(wav)))
    try:
        assert graph.topics["sim/camera"][1].rate_hz == 20
        assert params["sim"]["image_size"] == 64
        camera = graph.nodes["camera"]
        assert (camera.params["width"], camera.params["height"], camera.params["fps"]) == (64, 64, 20)
        assert camera.rate_hz == graph.topics["camera/image"][1].rate_hz == 20
        mic = graph.nodes["microphone"]
        assert (mic.params["sample_rate_hz"], mic.params["chunk_ms"]) == (16000, 20)
        assert mic.rate_hz == graph.topics["mic/audio"][1].rate_hz == 50
        assert params["brain"]["runtime"] == "torch" and params["brain"]["threads"] == 1
        streams = graph.nodes["brain"].params["vsync"]["streams"]
        assert {"sim/camera", "camera/image", "mic/audio"} <= set(streams)
        assert [graph.topics[t][1].rate_hz for t in ("brain/tick", "brain/model", "brain/extra")] == [20] * 3
    finally:
        discard_merged(graph)


def test_without_a_profile_the_sensors_keep_their_defaults(tmp_path):
    video = write_video(tmp_path / "camera.mp4", counter_frames(30, 64, 48), fps=30)
    graph, params = prepare(SimConfig(camera=str(video), image_size=64))
    try:
        assert graph.topics["sim/camera"][1].rate_hz == 30
        assert graph.nodes["camera"].params["fps"] == 30 and graph.topics["camera/image"][1].rate_hz == 30
        assert "microphone" not in graph.nodes
    finally:
        discard_merged(graph)


@pytest.mark.parametrize(
    ("values", "mic", "expected"),
    [
        ({"camera_width": "96"}, False, "the simulated camera renders square frames"),
        (
            {"engine": '"onnxruntime"', "camera_width": "48", "camera_height": "48"},
            False,
            "`sensors.camera_width` 48: the exported model takes 64x64 frames",
        ),
        ({"audio_rate_hz": "48000", "audio_chunk": "480"}, True, "`sensors.audio_rate_hz` 48000"),
        ({"audio_chunk": "100"}, True, "`audio_chunk` 100"),
        (
            {"camera_hz": "15", "tick_hz": "15", "frame_ms": "66.7"},
            False,
            "`sensors.camera_hz` 15: a tick of 66.7 ms is longer than the world model's stable step",
        ),
    ],
    ids=["non-square", "onnx-size", "audio-rate", "audio-chunk", "camera-too-slow"],
)
def test_what_the_model_cannot_take_is_refused_before_anything_starts(tmp_path, values, mic, expected):
    profile = _profile(tmp_path, **values)
    export_dir = tmp_path / "exports"
    rate = int(values.get("audio_rate_hz", 16000))
    wav = str(write_tone(tmp_path / "mic.wav", seconds=1.0, rate=rate)) if mic else None
    with pytest.raises(ValueError, match=re.escape(expected)):
        prepare(SimConfig(profile=profile, mic=wav, export_dir=export_dir))
    if "engine" in values:  # an onnxruntime profile: refused before its export was made
        assert not export_dir.exists()


@pytest.mark.timeout(120)
def test_a_20_hz_profile_runs_the_loop_at_20_hz(tmp_path):
    """`launch.sim --profile` with a 20 Hz camera for 12 s: the sim's camera and the brain's ticks run at
    20 Hz (the status file's measured rates), not the graph's 30."""
    profile = _profile(tmp_path, camera_hz="20", tick_hz="20", frame_ms="50")
    status = tmp_path / "status.json"
    proc = subprocess.run(
        [sys.executable, "-m", "launch.sim", "--profile", profile, "--seconds", "12",
         "--status-file", str(status), "--logs", str(tmp_path / "logs")],
        cwd=ROOT, capture_output=True, text=True, timeout=100,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    streams = json.loads(status.read_text())["streams"]
    assert abs(streams["sim/camera"]["rate_hz"] - 20) <= 2, streams["sim/camera"]
    assert streams["sim/camera"]["nominal_hz"] == 20
    assert abs(streams["brain/tick"]["rate_hz"] - 20) <= 2, streams["brain/tick"]


@pytest.mark.timeout(200)
def test_the_host_profile_plans_through_the_export(tmp_path):
    """`launch.sim --policy mpc --profile host-x86-2core` for 15 s: the export is made, the brain steps its
    belief, rolls its plans out (the memory's corrections included) and runs the actor prior in
    onnxruntime, none of the rollouts falls back to torch, and it acts."""
    logs, status = tmp_path / "logs", tmp_path / "status.json"
    proc = subprocess.run(
        [sys.executable, "-m", "launch.sim", "--policy", "mpc", "--task", "reach",
         "--profile", "host-x86-2core", "--export-dir", str(tmp_path / "exports"), "--seconds", "15",
         "--logs", str(logs), "--status-file", str(status)],
        cwd=ROOT, capture_output=True, text=True, timeout=180,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    brain = (logs / "brain.log").read_text()
    assert "belief in onnxruntime fp32" in brain
    assert "rollouts in onnxruntime fp32, the actor in onnxruntime fp32" in brain
    assert "brain: 0 rollouts fell back to torch" in brain
    figures = json.loads(status.read_text())
    assert figures["e2e_p50_ms"] is not None and figures["streams"]["brain/action"]["rate_hz"] > 5
