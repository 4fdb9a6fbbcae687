"""Camera reads real video through OpenCV: order, colour, size, pacing, looping, frozen and stalled input."""

import sys
import time
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # `import fakes` under any --import-mode

from fakes.video import Y4mPipe, counter_frames, decode_counter, solid_frames, write_video  # noqa: E402

from nodes.camera_device import Camera, CameraConfig  # noqa: E402
from nodes.device import DeviceError, DeviceNotConnectedError  # noqa: E402


def read_n(camera: Camera, n: int, timeout_s: float = 1.0) -> list[tuple[np.ndarray, int]]:
    out = []
    for _ in range(n):
        item = camera.read(timeout_s)
        assert item is not None, (
            f"no frame within {timeout_s} s after {len(out)} frames; stats {camera.stats}"
        )
        out.append(item)
    return out


@pytest.fixture
def counter_video(tmp_path):
    return write_video(tmp_path / "counter.mp4", counter_frames(40))


def test_frames_in_order_rgb_uint8(counter_video):
    """The 40 frames arrive in file order as (48, 64, 3) uint8 RGB showing their index, each at most once.

    The camera hands over the newest frame: one the reader was too slow to take is replaced and counted as
    dropped, so received + dropped == 40 (none dropped unless the machine stalls the reader for > 10 ms).
    """
    with Camera(CameraConfig(counter_video, fps=100, loop=False)) as cam:
        frames = []
        while (item := cam.read(1.0)) is not None:
            frames.append(item)
        assert cam.ended
        stats = cam.stats
    assert all(f.shape == (48, 64, 3) and f.dtype == np.uint8 for f, _ in frames)
    index = np.array([decode_counter(frame) for frame, _ in frames])
    assert np.all(np.diff(index) > 0) and index[-1] == 39, index
    assert stats["frames"] == 40 and len(frames) + stats["dropped"] == 40 and len(frames) >= 30


def test_colour_order_is_rgb(tmp_path):
    """A pure red frame comes back with red in channel 0 (OpenCV's BGR converted), not in channel 2."""
    path = write_video(tmp_path / "red.mp4", solid_frames(5, (255, 0, 0)))
    with Camera(CameraConfig(path, fps=100)) as cam:
        frame, _ = read_n(cam, 1)[0]
    red, green, blue = (frame[..., c].mean() for c in range(3))
    assert red > 200 and green < 40 and blue < 40, (red, green, blue)


def test_resize_and_spec(counter_video):
    """width/height resize every frame; `spec` states that shape up front."""
    cfg = CameraConfig(counter_video, width=32, height=24, fps=100)
    cam = Camera(cfg)
    assert cam.spec.shape == (24, 32, 3) and cam.spec.dtype == "uint8" and cam.spec.rate_hz == 100
    with cam:
        frames = read_n(cam, 3)
    assert all(f.shape == (24, 32, 3) for f, _ in frames)
    index = [decode_counter(f) for f, _ in frames]
    # The picture is scaled, not cropped: the index stripes still read back (a frame may have been dropped).
    assert index == sorted(set(index)) and index[-1] < 40, index


def test_native_size_spec_known_after_connect(counter_video):
    """Without width/height the native size is unknown before connect (error) and the file's after."""
    cam = Camera(CameraConfig(counter_video))
    with pytest.raises(DeviceNotConnectedError):
        _ = cam.spec
    with cam:
        assert cam.spec.shape == (48, 64, 3)


def test_file_is_paced_to_fps(counter_video):
    """A file plays like a live camera: capture_ns strictly increases, spaced ~1/fps (loose bounds)."""
    fps = 50
    start = time.monotonic_ns()
    with Camera(CameraConfig(counter_video, fps=fps)) as cam:
        stamps = [t for _, t in read_n(cam, 20)]
        end = time.monotonic_ns()
    gaps = np.diff(stamps) / 1e9
    assert np.all(gaps > 0)
    assert start <= stamps[0] and stamps[-1] <= end  # stamped on the monotonic clock, at capture
    assert 0.7 / fps < gaps.mean() < 2.0 / fps, gaps  # read as fast as possible, yet held to the frame rate


def test_loop_restarts_file(tmp_path):
    """With loop=True frame 0 follows the last frame and `loops` counts the rewinds."""
    path = write_video(tmp_path / "short.mp4", counter_frames(8))
    with Camera(CameraConfig(path, fps=100, loop=True)) as cam:
        index = np.array([decode_counter(f) for f, _ in read_n(cam, 20)])
        loops = cam.stats["loops"]
    assert set(index) <= set(range(8)), index
    steps = np.diff(index)
    wraps = np.nonzero(steps < 0)[0]
    # 20 frames span at least 2.5 passes; a frame dropped by a stalled reader only skips ahead.
    assert len(wraps) >= 2 and loops >= len(wraps)
    assert all(index[w] >= 5 and index[w + 1] <= 2 for w in wraps)  # wraps from the end to the start
    assert np.all(np.delete(steps, wraps) > 0)


def test_frozen_source_reconnects_with_backoff(tmp_path):
    """Identical frames trip frozen detection after `frozen_after` of them; each event reopens the source.

    Per open at most frozen_after - 1 frames are handed out (the N-th identical one proves the freeze), and
    the reconnect delay doubles because the image never changes (0.02 + 0.04 + 0.08 + ... s).
    """
    path = write_video(tmp_path / "frozen.mp4", solid_frames(40, (90, 90, 90)))
    cfg = CameraConfig(path, fps=200, frozen_after=5, reconnect_initial_s=0.02, reconnect_max_s=1.0)
    with Camera(cfg) as cam:
        deadline = time.monotonic() + 0.6
        while time.monotonic() < deadline:
            cam.read(0.05)
        stats = cam.stats
    assert stats["frozen_events"] >= 2
    assert stats["reconnects"] >= 2 and stats["reconnects"] >= stats["frozen_events"] - 1
    assert stats["frames"] <= (stats["frozen_events"] + 1) * (cfg.frozen_after - 1)
    # Without backoff 0.6 s would hold ~25 freeze/reopen cycles of 5 frames at 200 fps; doubling allows <= 6.
    assert stats["frozen_events"] <= 6


def test_changing_video_is_not_frozen(counter_video):
    """A video whose frames change never counts as frozen, even with a short `frozen_after`."""
    with Camera(CameraConfig(counter_video, fps=200, frozen_after=2)) as cam:
        read_n(cam, 30)
        assert cam.stats["frozen_events"] == 0 and cam.stats["reconnects"] == 0


def test_live_stall_and_end_of_stream_reconnect(tmp_path):
    """A live source (a pipe) that pauses counts a stall; one that ends reopens and delivers the next session.

    Session 0 streams 10 frames, stops writing for 0.5 s (> stall_timeout_s), streams 10 more and closes;
    session 1 then streams until the end. During the pause `read` returns None instead of repeating a frame.
    """
    pipe = Y4mPipe(
        tmp_path / "cam.y4m", fps=50, sessions=2, frames_per_session=20, pause_after=10, pause_s=0.5
    )
    cfg = CameraConfig(str(pipe.path), fps=50, stall_timeout_s=0.2, reconnect_initial_s=0.05)
    levels, stamps = [], []
    try:
        with Camera(cfg) as cam:
            deadline = time.monotonic() + 1.6
            while time.monotonic() < deadline:
                item = cam.read(0.1)
                if item is not None:
                    levels.append(int(item[0].mean()))
                    stamps.append(item[1])
            stats = cam.stats
    finally:
        pipe.close()
    session = [0 if level < 120 else 1 for level in levels]
    assert session[:5] == [0] * 5 and session[-5:] == [1] * 5 and session == sorted(session)
    assert max(np.diff(stamps)) > 0.4e9  # the pause shows as a gap, not as repeated frames
    assert stats["stalls"] >= 2  # the pause, then the end of session 0
    assert stats["read_failures"] >= 1 and stats["reconnects"] >= 1


def test_missing_file_fails_at_connect(tmp_path):
    """A file that does not exist raises DeviceError at connect, naming the path."""
    path = tmp_path / "nope.mp4"
    cam = Camera(CameraConfig(str(path)))
    with pytest.raises(DeviceError, match="nope.mp4"):
        cam.connect()
    assert not cam.is_connected


def test_unreadable_file_fails_at_connect(tmp_path):
    """A file OpenCV cannot decode raises DeviceError at connect with a hint about backends."""
    path = tmp_path / "junk.mp4"
    path.write_bytes(b"not a video" * 100)
    with pytest.raises(DeviceError, match="junk.mp4.*backend"):
        Camera(CameraConfig(path)).connect()


def test_read_requires_connect(counter_video):
    """read() before connect() and after disconnect() raises DeviceNotConnectedError."""
    cam = Camera(CameraConfig(counter_video))
    with pytest.raises(DeviceNotConnectedError):
        cam.read(0.1)
    with cam:
        assert cam.read(1.0) is not None
    with pytest.raises(DeviceNotConnectedError):
        cam.read(0.1)


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"fps": -1}, "`fps` must be > 0, got -1"),
        ({"width": 32}, "`width` and `height`"),
        ({"width": 0, "height": 24}, "`width`"),
        ({"stall_timeout_s": 0.01}, "`stall_timeout_s`"),
        ({"frozen_after": 1}, "`frozen_after`"),
        ({"reconnect_initial_s": 0}, "`reconnect_initial_s`"),
        ({"reconnect_max_s": 0.01}, "`reconnect_max_s`"),
        ({"source": -1}, "`source`"),
        ({"source": ""}, "`source`"),
    ],
)
def test_invalid_config_names_the_field(kwargs, field):
    """Each invalid setting raises ValueError whose message names the field."""
    with pytest.raises(ValueError, match=field.replace("(", r"\(")):
        CameraConfig(**kwargs)


def test_stream_url_is_read_live(counter_video):
    """A URL goes through OpenCV's network demuxer like any IP camera's stream: here an HTTP server on
    loopback serves the counter video, and its frames arrive in order."""
    import functools
    import http.server
    import threading

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    handler = functools.partial(Quiet, directory=str(counter_video.parent))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/{counter_video.name}"
    try:
        with Camera(CameraConfig(url, stall_timeout_s=5.0)) as cam:
            frames = read_n(cam, 10, timeout_s=5.0)
    finally:
        server.shutdown()
    index = [decode_counter(frame) for frame, _ in frames]
    assert np.all(np.diff(index) > 0), index
