"""Real video sources for camera tests: small MP4 files written with OpenCV, a live Y4M stream in a pipe."""

from __future__ import annotations

import errno
import os
import threading
import time
from collections.abc import Iterable
from pathlib import Path

import cv2
import numpy as np

COUNTER_BITS = 8  # frame index as 8 vertical stripes, most significant bit on the left
_DARK, _BRIGHT = 32, 224  # inside the 16..235 video range, far apart: lossy coding cannot flip a bit


def counter_frames(n: int, width: int = 64, height: int = 48) -> list[np.ndarray]:
    """n RGB frames showing their index in binary as vertical stripes (bright = 1), read by `decode_counter`.

    Stripes 8 px wide at 64 px line up with the 8x8 blocks of MPEG-4 coding, so edges stay sharp.
    """
    frames = []
    stripe = width // COUNTER_BITS
    for i in range(n):
        frame = np.full((height, width, 3), _DARK, np.uint8)
        for bit in range(COUNTER_BITS):
            if i >> (COUNTER_BITS - 1 - bit) & 1:
                frame[:, bit * stripe : (bit + 1) * stripe] = _BRIGHT
        frames.append(frame)
    return frames


def decode_counter(frame: np.ndarray) -> int:
    """The index shown by a `counter_frames` frame (at any width that is a multiple of 8 stripes' worth)."""
    stripe = frame.shape[1] // COUNTER_BITS
    value = 0
    for bit in range(COUNTER_BITS):
        middle = frame[:, bit * stripe + stripe // 4 : (bit + 1) * stripe - stripe // 4]
        value = value << 1 | int(middle.mean() > (_DARK + _BRIGHT) / 2)
    return value


def solid_frames(n: int, rgb: tuple[int, int, int], width: int = 64, height: int = 48) -> list[np.ndarray]:
    """n identical frames of one colour (RGB order)."""
    return [np.full((height, width, 3), rgb, np.uint8) for _ in range(n)]


def write_video(path: Path, frames: Iterable[np.ndarray], fps: float = 30.0) -> Path:
    """Write RGB frames to an MP4 (mp4v) file with OpenCV's VideoWriter; returns the path."""
    frames = list(frames)
    height, width = frames[0].shape[:2]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (width, height))
    if not writer.isOpened():
        raise RuntimeError(f"OpenCV cannot write {path} (no mp4v encoder in this build?)")
    for frame in frames:
        writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    writer.release()
    return path


class Y4mPipe:
    """A live camera stand-in: a thread writes a YUV4MPEG2 stream into a named pipe in real time.

    Each session opens the pipe (blocking until a reader opens it), writes a header, then grey frames whose
    level is `level(session, i)`, `frames_per_session` of them at `fps`; after `pause_after` frames of the
    first session it stops writing for `pause_s` (a stalled camera). The last session streams until `close()`.
    YUV4MPEG2 format: https://wiki.multimedia.cx/index.php/YUV4MPEG2
    """

    def __init__(
        self,
        path: Path,
        fps: float = 50.0,
        sessions: int = 2,
        frames_per_session: int = 20,
        pause_after: int | None = None,
        pause_s: float = 0.0,
        width: int = 64,
        height: int = 48,
    ):
        self.path = Path(path)
        os.mkfifo(self.path)
        self.fps, self.sessions, self.frames_per_session = fps, sessions, frames_per_session
        self.pause_after, self.pause_s = pause_after, pause_s
        self.width, self.height = width, height
        self.sessions_started = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="y4m-pipe", daemon=True)
        self._thread.start()

    @staticmethod
    def level(session: int, i: int) -> int:
        """Grey level of frame i of a session: sessions use disjoint ranges (40.. and 140..)."""
        return 40 + 100 * session + (i % 20) * 4

    def _frame(self, level: int) -> bytes:
        y = np.full(self.width * self.height, level, np.uint8)
        uv = np.full((self.width // 2) * (self.height // 2), 128, np.uint8)  # 4:2:0 neutral chroma
        return b"FRAME\n" + y.tobytes() + uv.tobytes() + uv.tobytes()

    def _run(self) -> None:
        header = f"YUV4MPEG2 W{self.width} H{self.height} F{int(self.fps)}:1 Ip A1:1 C420jpeg\n".encode()
        for session in range(self.sessions):
            last = session == self.sessions - 1
            try:
                with open(self.path, "wb", buffering=0) as pipe:
                    self.sessions_started += 1
                    pipe.write(header)
                    start, i = time.monotonic(), 0
                    while not self._stop.is_set() and (last or i < self.frames_per_session):
                        if session == 0 and i == self.pause_after:
                            if self._stop.wait(self.pause_s):
                                return
                            start += self.pause_s
                        pipe.write(self._frame(self.level(session, i)))
                        i += 1
                        delay = start + i / self.fps - time.monotonic()
                        if delay > 0:
                            self._stop.wait(delay)
            except BrokenPipeError:
                pass  # the reader closed the pipe: next session
            if self._stop.is_set():
                return
            self._wait_reader_gone()

    def _wait_reader_gone(self) -> None:
        # Reopening while the reader still holds the pipe would splice the next session's header into the
        # old stream instead of ending it; wait until the reader has seen the end and closed its side.
        while not self._stop.is_set():
            try:
                os.close(os.open(self.path, os.O_WRONLY | os.O_NONBLOCK))
            except OSError as exc:
                if exc.errno == errno.ENXIO:  # no reader (fifo(7))
                    return
                raise
            self._stop.wait(0.01)

    def close(self) -> None:
        """Stop writing; the reader then sees the end of the stream."""
        self._stop.set()
        try:
            # A writer blocked in open() waits for a reader: be one for a moment so it wakes up and exits.
            os.close(os.open(self.path, os.O_RDONLY | os.O_NONBLOCK))
        except OSError:
            pass
        self._thread.join(timeout=2.0)
