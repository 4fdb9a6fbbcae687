"""A camera (device index, video file, named pipe or stream URL) read through OpenCV `cv2.VideoCapture`.

One capture thread owns the `VideoCapture`: it grabs, stamps, converts and hands over the newest frame, and it
detects and repairs the two ways a camera fails silently:

- stalled: `grab()` fails, or no frame came for `stall_timeout_s`. A failed grab reopens the capture with
  exponential backoff; a grab that blocks and then succeeds is only counted (it recovered by itself).
- frozen: `frozen_after` consecutive identical frames. A live sensor has read noise, so bit-identical frames
  mean the driver is re-sending a stale buffer; the capture is reopened.

`read()` never blocks longer than its timeout even when the driver blocks inside `grab()`.

A regular file is paced to `fps` (a file has no clock of its own) and by default loops, so a recording can
stand in for a live camera. Device indices, device nodes (/dev/video0), named pipes and URLs are live: the
source sets the pace.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from nodes.device import DeviceError, DeviceNotConnectedError, Sensor, StreamSpec, check_backoff

log = logging.getLogger(__name__)

# Frozen-frame check compares every 8th pixel in each direction: 1/64 of the frame (a 640x480 frame costs a
# 4.8 kB compare) and still covers the whole image, so a partly updated frame is not taken for frozen.
_FROZEN_STRIDE = 8


class _RateLimiter:
    """Lets one log line per key through every `interval_s`; counts what it held back."""

    def __init__(self, interval_s: float = 5.0):
        self._interval_ns = int(interval_s * 1e9)
        self._last: dict[str, int] = {}
        self._held: dict[str, int] = {}

    def allow(self, key: str) -> tuple[bool, int]:
        """(whether to log now, how many lines of this key were held back since the last one)."""
        now = time.monotonic_ns()
        last = self._last.get(key)
        if last is not None and now - last < self._interval_ns:
            self._held[key] = self._held.get(key, 0) + 1
            return False, 0
        self._last[key] = now
        return True, self._held.pop(key, 0)


@dataclass
class CameraConfig:
    source: int | str | Path = 0
    """Device index (0 = first camera), a device node or video file path, or a stream URL (rtsp://...)."""
    width: int | None = None
    """Resize frames to this width (with `height`); None keeps the native size."""
    height: int | None = None
    """Resize frames to this height (with `width`); None keeps the native size."""
    fps: float = 30.0
    """Nominal frame rate: the pace a file is read at, and the rate requested from a device."""
    loop: bool = True
    """Files only: restart at the end, so a recording can stand in for a camera."""
    stall_timeout_s: float = 2.0
    """No new frame for this long counts as a stall."""
    frozen_after: int = 30
    """This many identical consecutive frames mean a frozen source (reopened); 0 disables the check."""
    reconnect_initial_s: float = 0.1
    """First reconnect delay; doubles after each failed or short-lived reconnect."""
    reconnect_max_s: float = 5.0
    """Longest reconnect delay."""
    api_preference: int = cv2.CAP_ANY
    """OpenCV backend (cv2.CAP_V4L2, cv2.CAP_FFMPEG, ...); CAP_ANY lets OpenCV choose."""

    def __post_init__(self):
        if isinstance(self.source, Path):
            self.source = str(self.source)
        if isinstance(self.source, bool) or not isinstance(self.source, int | str):
            raise ValueError(f"`source` must be a device index, path or URL, got {self.source!r}")
        if isinstance(self.source, int) and self.source < 0:
            raise ValueError(f"`source` must be a device index >= 0, got {self.source}")
        if isinstance(self.source, str) and not self.source:
            raise ValueError("`source` must be a device index, path or URL, got ''")
        if (self.width is None) != (self.height is None):
            raise ValueError(f"`width` and `height` must be set together, got {self.width} and {self.height}")
        for name in ("width", "height"):
            value = getattr(self, name)
            if value is not None and not (isinstance(value, int) and value > 0):
                raise ValueError(f"`{name}` must be an int > 0 or None, got {value!r}")
        if not self.fps > 0:
            raise ValueError(f"`fps` must be > 0, got {self.fps}")
        if not self.stall_timeout_s > 1.0 / self.fps:
            raise ValueError(
                f"`stall_timeout_s` must exceed one frame period (1/fps = {1.0 / self.fps:.3g} s), "
                f"got {self.stall_timeout_s}"
            )
        if not (isinstance(self.frozen_after, int) and (self.frozen_after == 0 or self.frozen_after >= 2)):
            raise ValueError(f"`frozen_after` must be 0 (off) or an int >= 2, got {self.frozen_after!r}")
        check_backoff(
            "reconnect_initial_s", self.reconnect_initial_s, "reconnect_max_s", self.reconnect_max_s
        )

    @property
    def is_file(self) -> bool:
        """A regular file: paced to `fps`, looped. Device nodes and named pipes are live sources."""
        return isinstance(self.source, str) and "://" not in self.source and os.path.isfile(self.source)


class Camera(Sensor):
    """RGB uint8 frames (H, W, 3) stamped with `time.monotonic_ns()` right after `grab()` returned.

    `stats` counts `frames` (handed over), `dropped` (replaced before anyone read them), `stalls`,
    `frozen_events`, `reconnects` (successful reopens), `reconnect_failures`, `read_failures`, `loops`.
    """

    name = "camera"

    def __init__(self, config: CameraConfig | None = None):
        super().__init__()
        self.config = config or CameraConfig()
        self._native_size: tuple[int, int] | None = None  # (width, height) reported at connect
        self._cond = threading.Condition()
        self._pending: tuple[np.ndarray, int] | None = None
        self._ended = False
        self._error: str | None = None  # set when the capture thread died
        self._is_file = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._limiter = _RateLimiter()
        self._stats = dict.fromkeys(
            (
                "frames",
                "dropped",
                "stalls",
                "frozen_events",
                "reconnects",
                "reconnect_failures",
                "read_failures",
                "loops",
            ),
            0,
        )

    @property
    def spec(self) -> StreamSpec:
        if self.config.width is not None:
            width, height = self.config.width, self.config.height
        elif self._native_size is not None:
            width, height = self._native_size
        else:
            raise DeviceNotConnectedError(
                f"{self.name}: the native frame size is known after connect(); set width and height to fix it"
            )
        return StreamSpec(kind="image", shape=(height, width, 3), dtype="uint8", rate_hz=self.config.fps)

    @property
    def stats(self) -> dict[str, int]:
        """A snapshot of the counters."""
        return dict(self._stats)

    @property
    def ended(self) -> bool:
        """A file source with `loop=False` has delivered its last frame."""
        return self._ended

    def _connect(self) -> None:
        self._is_file = self.config.is_file
        cap = self._open()
        if cap is None:
            raise DeviceError(self._open_hint())
        width = int(cap.get(cv2.CAP_PROP_FRAME_WIDTH))
        height = int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT))
        self._native_size = (width, height) if width > 0 and height > 0 else None
        # A fresh event per connection: a thread of an earlier connection still stuck in the driver keeps its
        # own (set) event and exits without publishing when its grab returns.
        self._stop = threading.Event()
        self._ended = False
        self._error = None
        self._pending = None
        self._thread = threading.Thread(
            target=self._run, args=(cap, self._stop), name=f"camera:{self.config.source}", daemon=True
        )
        self._thread.start()

    def _disconnect(self) -> None:
        self._stop.set()
        with self._cond:
            self._cond.notify_all()
        if self._thread is not None:
            # A driver blocked inside grab() cannot be interrupted; the thread exits (and releases the
            # capture) when the grab returns.
            self._thread.join(timeout=max(2.0, self.config.stall_timeout_s))
            if self._thread.is_alive():
                log.warning(
                    "%s: capture thread still blocked in the driver; it exits when grab() returns", self
                )
            self._thread = None
        self._pending = None

    def _read(self, timeout_s: float) -> tuple[np.ndarray, int] | None:
        deadline = time.monotonic() + timeout_s
        with self._cond:
            while self._pending is None:
                if self._error is not None:
                    raise DeviceError(f"{self}: capture thread failed: {self._error}")
                remaining = deadline - time.monotonic()
                if self._ended or remaining <= 0:
                    return None
                self._cond.wait(remaining)
            item, self._pending = self._pending, None
        return item

    def __repr__(self) -> str:
        return f"Camera({self.config.source!r})"

    # --- capture thread -------------------------------------------------------------------------------

    def _open(self) -> cv2.VideoCapture | None:
        """An opened capture, or None."""
        cfg = self.config
        if isinstance(cfg.source, str) and "://" not in cfg.source and not os.path.exists(cfg.source):
            return None  # OpenCV would only print a warning to stderr
        cap = cv2.VideoCapture(cfg.source, cfg.api_preference)
        if not cap.isOpened():
            cap.release()
            return None
        if not self._is_file:
            # Requests only: a driver may ignore them (frames are resized below anyway). A 1-frame driver
            # queue keeps the newest frame instead of a backlog (V4L2 honours it; others ignore it).
            cap.set(cv2.CAP_PROP_FPS, cfg.fps)
            cap.set(cv2.CAP_PROP_BUFFERSIZE, 1)
            if cfg.width is not None:
                cap.set(cv2.CAP_PROP_FRAME_WIDTH, cfg.width)
                cap.set(cv2.CAP_PROP_FRAME_HEIGHT, cfg.height)
        return cap

    def _open_hint(self) -> str:
        src = self.config.source
        if isinstance(src, int):
            return (
                f"cannot open camera index {src}: check that /dev/video{src} exists (ls /dev/video*), "
                "that this user may read it (group 'video') and that no other process holds it"
            )
        if "://" in src:
            return f"cannot open stream {src}: check the URL and that the server is reachable"
        if not os.path.exists(src):
            return f"cannot open video file {src}: no such file (check the path; relative to {os.getcwd()})"
        return (
            f"cannot open video source {src}: OpenCV has no backend that reads it; check the codec and "
            "container ('Video I/O' in cv2.getBuildInformation() lists the backends)"
        )

    def _warn(self, key: str, msg: str, *args) -> None:
        ok, held = self._limiter.allow(key)
        if ok:
            log.warning(
                "%s: " + msg + (f" ({held} similar messages suppressed)" if held else ""), self, *args
            )

    def _publish(self, frame: np.ndarray, capture_ns: int) -> None:
        with self._cond:
            if self._pending is not None:
                self._stats["dropped"] += 1
            self._pending = (frame, capture_ns)
            self._stats["frames"] += 1
            self._cond.notify_all()

    def _convert(self, bgr: np.ndarray) -> np.ndarray:
        cfg = self.config
        if cfg.width is not None and (bgr.shape[1], bgr.shape[0]) != (cfg.width, cfg.height):
            # INTER_AREA averages the source pixels under each output pixel: no aliasing when shrinking
            # (OpenCV docs, InterpolationFlags).
            bgr = cv2.resize(bgr, (cfg.width, cfg.height), interpolation=cv2.INTER_AREA)
        if bgr.ndim == 2:
            return cv2.cvtColor(bgr, cv2.COLOR_GRAY2RGB)
        return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)  # OpenCV decodes to BGR

    def _run(self, cap: cv2.VideoCapture | None, stop: threading.Event) -> None:
        cfg = self.config
        period_ns = int(1e9 / cfg.fps)
        stall_ns = int(cfg.stall_timeout_s * 1e9)
        backoff = cfg.reconnect_initial_s
        last_frame_ns = next_due_ns = time.monotonic_ns()
        previous: np.ndarray | None = None  # strided subsample of the last frame
        identical = 0
        rewound = False  # no frame since the last rewind: a file that yields nothing must not spin
        try:
            while not stop.is_set():
                if cap is None:
                    if stop.wait(backoff):
                        break
                    cap = self._open()
                    if cap is None:
                        self._stats["reconnect_failures"] += 1
                        self._warn(
                            "reconnect",
                            "reconnect failed; next try in %.2g s",
                            min(2 * backoff, cfg.reconnect_max_s),
                        )
                        backoff = min(2 * backoff, cfg.reconnect_max_s)
                        continue
                    self._stats["reconnects"] += 1
                    # Stays doubled until the source shows a changing frame, so a source that freezes again
                    # right after each reopen is retried ever more slowly.
                    backoff = min(2 * backoff, cfg.reconnect_max_s)
                    last_frame_ns = next_due_ns = time.monotonic_ns()
                    previous, identical = None, 0
                    continue

                if self._is_file:
                    wait_ns = next_due_ns - time.monotonic_ns()
                    if wait_ns > 0 and stop.wait(wait_ns / 1e9):
                        break
                ok = cap.grab()
                capture_ns = time.monotonic_ns()  # the moment the frame is available to us
                if stop.is_set():
                    break  # disconnected (perhaps long ago, if the grab blocked): touch nothing shared
                if self._is_file:
                    # Late by more than a period (slow decode, loaded machine): restart the schedule from
                    # now rather than bursting frames to catch up.
                    next_due_ns = max(next_due_ns + period_ns, capture_ns)

                if not ok:
                    if self._is_file and not rewound:
                        if not cfg.loop:
                            log.info("%s: end of file", self)
                            with self._cond:
                                self._ended = True
                                self._cond.notify_all()
                            break
                        self._stats["loops"] += 1
                        rewound = True
                        if not cap.set(cv2.CAP_PROP_POS_FRAMES, 0):
                            cap.release()
                            cap = None  # cannot seek: reopen instead
                        continue
                    rewound = False
                    self._stats["read_failures"] += 1
                    self._stats["stalls"] += 1
                    self._warn("stall", "grab() failed; reconnecting in %.2g s", backoff)
                    cap.release()
                    cap = None
                    continue

                if capture_ns - last_frame_ns > stall_ns:
                    self._stats["stalls"] += 1
                    self._warn(
                        "stall",
                        "no frame for %.2f s (driver blocked in grab)",
                        (capture_ns - last_frame_ns) / 1e9,
                    )
                last_frame_ns = capture_ns
                rewound = False

                ok, bgr = cap.retrieve()
                if not ok or bgr is None:
                    self._stats["read_failures"] += 1
                    self._warn("retrieve", "retrieve() failed after a successful grab()")
                    continue

                if cfg.frozen_after:
                    sample = bgr[::_FROZEN_STRIDE, ::_FROZEN_STRIDE]
                    if previous is not None and np.array_equal(sample, previous):
                        identical += 1
                    else:
                        if previous is not None:
                            backoff = cfg.reconnect_initial_s  # the source is alive: a changing image
                        identical = 1
                    previous = sample.copy()
                    if identical >= cfg.frozen_after:
                        self._stats["frozen_events"] += 1
                        self._warn("frozen", "%d identical frames: source frozen; reconnecting", identical)
                        cap.release()
                        cap = None
                        continue
                else:
                    backoff = cfg.reconnect_initial_s

                self._publish(self._convert(bgr), capture_ns)
        except Exception as exc:  # noqa: BLE001  (reported to the reader as DeviceError)
            log.exception("%s: capture thread failed", self)
            if not stop.is_set():
                with self._cond:
                    self._error = repr(exc)
                    self._cond.notify_all()
        finally:
            if cap is not None:
                cap.release()
