"""Write a camera stream to MP4 (OpenCV) or GIF (Pillow), frame by frame."""

from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from runtime.viz import draw_path

VIDEO_SUFFIXES = (".mp4", ".gif")


class VideoWriter:
    """Frames are RGB uint8 (H, W, 3); `scale` enlarges them (nearest neighbour) so 64x64 is watchable."""

    def __init__(self, path: str | Path, fps: float, scale: int = 4):
        self.path = Path(path)
        if self.path.suffix.lower() not in VIDEO_SUFFIXES:
            raise ValueError(f"video path must end in one of {VIDEO_SUFFIXES}, got {str(self.path)!r}")
        if not self.path.parent.exists():
            raise ValueError(f"video directory {str(self.path.parent)!r} does not exist")
        if not (fps > 0 and scale >= 1):
            raise ValueError(f"`fps` must be > 0 and `scale` >= 1, got fps={fps}, scale={scale}")
        self.fps, self.scale = fps, int(scale)
        self.frames_written = 0
        self._mp4: cv2.VideoWriter | None = None
        self._gif: list[Image.Image] = []

    def write(self, rgb: np.ndarray, paths=()) -> None:
        """`paths`: (pixels (N, 2) as (column, row) in `rgb`'s own coordinates, colour) drawn over the
        enlarged frame (runtime/viz.py), so a path on a 64x64 camera stays a thin line."""
        if self.scale > 1:
            rgb = np.repeat(np.repeat(rgb, self.scale, axis=0), self.scale, axis=1)
        for pixels, colour in paths:
            rgb = draw_path(
                rgb, (np.asarray(pixels, float) + 0.5) * self.scale - 0.5, colour, 1 + self.scale // 4
            )
        if self.path.suffix.lower() == ".gif":
            self._gif.append(Image.fromarray(rgb))
        else:
            if self._mp4 is None:
                h, w = rgb.shape[:2]
                self._mp4 = cv2.VideoWriter(str(self.path), cv2.VideoWriter_fourcc(*"mp4v"), self.fps, (w, h))
                if not self._mp4.isOpened():
                    raise RuntimeError(f"OpenCV could not open {self.path} for MP4 writing")
            self._mp4.write(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
        self.frames_written += 1

    def close(self) -> None:
        if self._mp4 is not None:
            self._mp4.release()
            self._mp4 = None
        if self._gif:
            self._gif[0].save(
                self.path, save_all=True, append_images=self._gif[1:], duration=round(1000 / self.fps), loop=0
            )
            self._gif = []

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
