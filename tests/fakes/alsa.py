"""A file-backed ALSA capture device ("virtual mic") for microphone tests on machines without a sound card.

alsa-lib's `file` PCM plugin can take its capture data from `infile` (raw samples) instead of its slave
(alsa-lib src/pcm/pcm_file.c, "virtual mic"). Three facts shape the config below, all found by experiment
with alsa-lib 1.2.8 and PortAudio 19.6 (see also the microphone tests):

1. The `file` plugin has no format of its own: it takes its slave's. The `null` slave accepts any format, so
   PortAudio would negotiate FLOAT_LE and the raw S16_LE bytes would be read as floats (garbage). An outer
   `plug` with a fixed slave format (S16_LE, rate, channels) makes ALSA convert S16_LE -> float for PortAudio.
2. `null` has no clock: its capture side polls /dev/full (always readable) and always reports a full buffer
   (pcm_null.c), so a plain file is captured as fast as the CPU allows (~9 M samples/s measured, not 16 k).
   Real-time pacing therefore comes from the data source: `infile` may be a named pipe that a writer fills
   at the sample rate (`PacedFifoWriter`); alsa-lib's blocking read() on it paces the stream.
3. alsa-lib opens `infile` when the PCM is opened, and PortAudio opens every device once while it
   initialises (at `import sounddevice`), so a pipe needs its writer running before that import, and the
   writer must reopen the pipe after each reader closes it.

After the end of a plain `infile`, read() returns 0 bytes and the plugin hands out whatever was in the
buffer before: stale data at full speed, not silence.
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import numpy as np

PCM_NAME = "testmic"

ASOUNDRC = """\
pcm.{name} {{
    type plug
    slave {{
        pcm {{
            type file
            slave.pcm "null"
            file "/dev/null"
            infile "{infile}"
            format "raw"
        }}
        format S16_LE
        rate {rate}
        channels {channels}
    }}
    hint {{ show on description "test mic" }}
}}
"""


def write_asoundrc(
    home: Path, infile: Path, rate: int = 16000, channels: int = 1, name: str = PCM_NAME
) -> Path:
    """Write `home/.asoundrc` defining capture PCM `name` that reads raw S16_LE samples from `infile`."""
    path = Path(home) / ".asoundrc"
    path.write_text(ASOUNDRC.format(name=name, infile=infile, rate=rate, channels=channels))
    return path


def ramp(start: int, n: int) -> np.ndarray:
    """Samples start..start+n-1 of a full-scale int16 sawtooth: sample k is (k mod 65536) - 32768.

    Every sample names its position (mod 65536), so order, gaps and exact values are checkable.
    """
    return (np.arange(start, start + n, dtype=np.int64) % 65536 - 32768).astype("<i2")


def ramp_position(samples: np.ndarray) -> np.ndarray:
    """Inverse of `ramp` for int16 values (or float32 values scaled by 32768): position mod 65536."""
    return (np.rint(np.asarray(samples, np.float64)).astype(np.int64) + 32768) % 65536


def write_raw_ramp(path: Path, n: int) -> Path:
    """A raw S16_LE mono file holding `ramp(0, n)`."""
    ramp(0, n).tofile(path)
    return path


class PacedFifoWriter:
    """Writes `ramp` samples into a named pipe at the sample rate, like an ADC filling a capture buffer.

    Blocks of `block` samples go out on an absolute schedule (no drift). When the reader closes the pipe the
    writer reopens it and waits for the next reader; the ramp position keeps counting. `pause()` stops the
    data (a device whose driver stops delivering); `resume()` restarts it.
    """

    def __init__(self, path: Path, rate: int = 16000, block: int = 160):
        self.path = Path(path)
        os.mkfifo(self.path)
        self.rate, self.block = rate, block
        self.position = 0
        self._paused = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="fifo-writer", daemon=True)
        self._thread.start()

    def pause(self) -> None:
        self._paused.set()

    def resume(self) -> None:
        self._paused.clear()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                with open(self.path, "wb", buffering=0) as pipe:
                    start, sent = time.monotonic(), 0
                    while not self._stop.is_set():
                        if self._paused.is_set():
                            self._stop.wait(0.005)
                            start, sent = time.monotonic(), 0
                            continue
                        pipe.write(ramp(self.position, self.block).tobytes())
                        self.position += self.block
                        sent += 1
                        delay = start + sent * self.block / self.rate - time.monotonic()
                        if delay > 0:
                            self._stop.wait(delay)
            except BrokenPipeError:
                continue  # the reader closed its end: wait for the next one

    def close(self) -> None:
        self._stop.set()
        try:
            # A writer blocked in open() waits for a reader: be one for a moment so it wakes up and exits.
            os.close(os.open(self.path, os.O_RDONLY | os.O_NONBLOCK))
        except OSError:
            pass
        self._thread.join(timeout=2.0)
