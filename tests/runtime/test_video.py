"""VideoWriter writes readable MP4 and GIF files and refuses paths it cannot write."""

import cv2
import numpy as np
import pytest
from PIL import Image

from runtime.video import VideoWriter


def _frames(n: int) -> list[np.ndarray]:
    frames = []
    for i in range(n):
        frame = np.zeros((16, 16, 3), np.uint8)
        frame[:, :, 0] = 20 * i  # red ramps up, so frame order is checkable
        frames.append(frame)
    return frames


def test_mp4_round_trip(tmp_path):
    """Every frame is written, enlarged by `scale`, colours in RGB order."""
    path = tmp_path / "v.mp4"
    with VideoWriter(path, fps=10, scale=2) as video:
        for frame in _frames(8):
            video.write(frame)
    cap = cv2.VideoCapture(str(path))
    assert int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == 8
    for _ in range(7):
        ok, bgr = cap.read()
    assert ok and bgr.shape == (32, 32, 3)
    assert bgr[..., 2].mean() > 100 and bgr[..., 0].mean() < 30  # red stays red (RGB -> BGR handled)


def test_gif_round_trip(tmp_path):
    """GIF frames keep their order and timing."""
    path = tmp_path / "v.gif"
    with VideoWriter(path, fps=10, scale=1) as video:
        for frame in _frames(5):
            video.write(frame)
    gif = Image.open(path)
    assert gif.n_frames == 5 and gif.info["duration"] == 100
    gif.seek(4)
    assert np.asarray(gif.convert("RGB"))[0, 0, 0] == pytest.approx(80, abs=4)


@pytest.mark.parametrize("name", ["v.avi", "missing_dir/v.mp4"])
def test_refuses_unwritable_paths(tmp_path, name):
    """Wrong suffix or missing directory is refused up front, not after a long run."""
    with pytest.raises(ValueError):
        VideoWriter(tmp_path / name, fps=10)
