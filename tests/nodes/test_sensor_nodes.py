"""Camera and microphone nodes as real processes under the supervisor, fed by a video file and a WAV file."""

import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

from runtime.graph import load_graph
from runtime.supervisor import Supervisor
from runtime.transport import Subscriber

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # `import fakes` under any --import-mode
from fakes.video import counter_frames, write_video  # noqa: E402
from fakes.wav import write_tone  # noqa: E402


@pytest.mark.timeout(90)
def test_camera_and_microphone_nodes_stream_at_native_rates(tmp_path):
    """The camera node publishes the video's frames at 30 Hz (RGB, resized to 64x64) and the microphone node
    the WAV's 440 Hz tone in 160-sample chunks at 100 Hz, lossless, with capture timestamps 10 ms apart."""
    video = write_video(tmp_path / "cam.mp4", counter_frames(40, 64, 48), fps=30)
    wav = write_tone(tmp_path / "mic.wav")
    raw = yaml.safe_load(open(load_graph("sensors").source))
    raw["nodes"]["camera"]["params"] = {"source": str(video), "fps": 30, "width": 64, "height": 64}
    raw["nodes"]["microphone"]["params"] = {"file": str(wav)}
    graph_file = tmp_path / "sensors.yaml"
    graph_file.write_text(yaml.safe_dump(raw))
    graph = load_graph(graph_file)
    sup = Supervisor(graph, log_dir=tmp_path)
    sub = Subscriber(
        [
            graph.publisher_endpoint("camera/image", sup.run_dir),
            graph.publisher_endpoint("mic/audio", sup.run_dir),
        ],
        {"camera/image": "lossless", "mic/audio": "lossless", "mic/stats": "latest"},
        name="test",
    )
    try:
        sup.start()
        deadline = time.monotonic() + 30
        while not sub.wait_ready(0.2) and time.monotonic() < deadline:
            sup.watch()
        assert time.monotonic() < deadline, "sensor nodes never became ready"
        frames, chunks, stats = [], [], None
        end = time.monotonic() + 3.0
        while time.monotonic() < end:
            for msg in sub.poll(0.05):
                if msg.topic == "camera/image":
                    frames.append(msg)
                elif msg.topic == "mic/audio":
                    chunks.append(msg)
                else:
                    stats = msg.data
    finally:
        sub.close()
        sup.stop()
    assert frames and frames[0].data.shape == (64, 64, 3) and frames[0].data.dtype == np.uint8
    span = (frames[-1].capture_ns - frames[0].capture_ns) / 1e9
    assert (len(frames) - 1) / span == pytest.approx(30, rel=0.1)
    stamps = np.array([c.capture_ns for c in chunks])
    assert np.median(np.diff(stamps)) / 1e6 == pytest.approx(10, abs=0.5)
    assert sub.stats.topics["mic/audio"].gaps == 0
    audio = np.concatenate([c.data for c in chunks])
    spectrum = np.abs(np.fft.rfft(audio[:16000]))
    assert np.argmax(spectrum) * 16000 / 16000 == pytest.approx(440, abs=3)
    assert stats is not None and stats[0] > 0  # chunks counted and published
