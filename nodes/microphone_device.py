"""A microphone read through PortAudio (`sounddevice.InputStream`), or a WAV file played like one.

Live capture: PortAudio calls `_callback` on its audio thread with one block of `chunk_samples` frames. The
callback copies the block into a bounded queue and never blocks: when the queue is full the block is dropped
and counted (`dropped_chunks`), because a blocked audio thread makes the driver overrun and lose data anyway.
`read()` takes chunks from the queue.

Timestamps: `capture_ns` is the ADC time of the first sample of the chunk, on the `time.monotonic_ns()` clock.
PortAudio gives `inputBufferAdcTime` on its own stream clock (seconds, "the time when the first sample of the
input buffer was captured at the ADC input", PaStreamCallbackTimeInfo docs), together with `currentTime` on
the same clock; the callback maps it onto the monotonic clock with the offset between the two clocks taken at
that moment. Some host APIs report 0 for inputBufferAdcTime; then the chunk is dated one block duration before
the callback ran. These raw times jitter by up to a host buffer (measured on ALSA with PortAudio 19.6: +-10 ms
and not even monotonic, chunk to chunk), while the chunks of a stream are contiguous samples whose ADC times
are exactly one chunk apart. So `_AdcClock` counts samples and steers that count slowly towards the raw times:
no jitter, yet it follows clock drift and latency changes; lost samples (overflow, restart) re-anchor it.

Dead stream: a driver that stops calling back (device unplugged, stalled ALSA plugin) is found by `read()`:
no callback for `callback_timeout_s` closes the stream and opens a new one, retrying with exponential backoff
(`restarts`, `restart_failures`). The close runs on a helper thread: PortAudio's close waits for its audio
thread, which can be stuck inside the driver; `read()` keeps returning None meanwhile instead of hanging.

PortAudio lists devices once, when `sounddevice` is imported: a device plugged in later, or an ALSA config
(~/.asoundrc) written later, is only seen by a new process. `sounddevice` is therefore imported on first use,
not with this module.
"""

from __future__ import annotations

import functools
import logging
import queue
import threading
import time
import wave
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from nodes.device import DeviceError, Sensor, StreamSpec, check_backoff

log = logging.getLogger(__name__)

_INT16_SCALE = 32768.0  # full scale of signed 16-bit PCM: float = int16 / 2**15, in [-1, 1)


def _sounddevice():
    """The `sounddevice` module; imported late because its import initialises PortAudio (see module doc)."""
    try:
        import sounddevice
    except OSError as exc:  # sounddevice raises OSError when libportaudio is missing
        raise DeviceError(
            f"PortAudio is not available ({exc}); install it: apt-get install libportaudio2"
        ) from exc
    return sounddevice


def list_input_devices() -> list[str]:
    """Names of the PortAudio devices that have input channels."""
    return [d["name"] for d in _sounddevice().query_devices() if d["max_input_channels"] > 0]


@dataclass
class MicrophoneConfig:
    device: str | int | None = None
    """PortAudio device name (substring match) or index; None = the default input device."""
    file: str | Path | None = None
    """Play this WAV file (16-bit PCM) in real time instead of opening a device."""
    loop: bool = True
    """File only: restart at the end."""
    sample_rate_hz: int = 16000
    """Sample rate; 16 kHz is the usual rate for speech models."""
    channels: int = 1
    """Input channels; 1 gives chunks of shape (chunk_samples,), more give (chunk_samples, channels)."""
    chunk_ms: float = 10.0
    """Chunk length; 10 ms at 16 kHz = 160 samples. Must be a whole number of samples."""
    dtype: str = "float32"
    """Sample type of the chunks: float32 in [-1, 1) or int16."""
    latency: str | float = "low"
    """PortAudio suggested latency: 'low', 'high' or seconds."""
    callback_timeout_s: float = 0.5
    """No audio callback for this long while connected = dead stream, restarted."""
    queue_capacity: int = 100
    """Chunks buffered between the audio thread and read() (100 x 10 ms = 1 s); more are dropped."""
    restart_initial_s: float = 0.1
    """First delay between restart attempts; doubles after each failure."""
    restart_max_s: float = 5.0
    """Longest delay between restart attempts."""

    def __post_init__(self):
        if self.file is not None:
            self.file = Path(self.file)
            if self.device is not None:
                raise ValueError(f"`device` and `file` are exclusive, got device={self.device!r} and a file")
        if isinstance(self.device, bool) or not (self.device is None or isinstance(self.device, int | str)):
            raise ValueError(f"`device` must be a name, an index or None, got {self.device!r}")
        if isinstance(self.device, int) and self.device < 0:
            raise ValueError(f"`device` must be an index >= 0, got {self.device}")
        if not (isinstance(self.sample_rate_hz, int) and self.sample_rate_hz > 0):
            raise ValueError(f"`sample_rate_hz` must be an int > 0, got {self.sample_rate_hz!r}")
        if not (isinstance(self.channels, int) and self.channels >= 1):
            raise ValueError(f"`channels` must be an int >= 1, got {self.channels!r}")
        if not self.chunk_ms > 0:
            raise ValueError(f"`chunk_ms` must be > 0, got {self.chunk_ms}")
        samples = self.sample_rate_hz * self.chunk_ms / 1000
        if abs(samples - round(samples)) > 1e-6:
            raise ValueError(
                f"`chunk_ms` must be a whole number of samples at {self.sample_rate_hz} Hz, "
                f"got {self.chunk_ms} ms = {samples:g} samples"
            )
        if self.dtype not in ("float32", "int16"):
            raise ValueError(f"`dtype` must be 'float32' or 'int16', got {self.dtype!r}")
        if isinstance(self.latency, str):
            if self.latency not in ("low", "high"):
                raise ValueError(f"`latency` must be 'low', 'high' or seconds > 0, got {self.latency!r}")
        elif not self.latency > 0:
            raise ValueError(f"`latency` must be 'low', 'high' or seconds > 0, got {self.latency!r}")
        if not self.callback_timeout_s > self.chunk_ms / 1000:
            raise ValueError(
                f"`callback_timeout_s` must exceed one chunk ({self.chunk_ms} ms), "
                f"got {self.callback_timeout_s}"
            )
        if not (isinstance(self.queue_capacity, int) and self.queue_capacity >= 1):
            raise ValueError(f"`queue_capacity` must be an int >= 1, got {self.queue_capacity!r}")
        check_backoff("restart_initial_s", self.restart_initial_s, "restart_max_s", self.restart_max_s)

    @property
    def chunk_samples(self) -> int:
        return round(self.sample_rate_hz * self.chunk_ms / 1000)


class _AdcClock:
    """Smooth per-chunk ADC times: a sample count (one chunk apart) steered towards PortAudio's raw times.

    A first-order loop: each estimate moves `gain` of the way from the predicted time towards the raw time.
    gain <= chunk / (2 * reanchor) keeps each step above half a chunk, so the stamps strictly increase; a raw
    time further than `reanchor_ns` from the prediction, or a reported gap, restarts from the raw time (never
    before the predicted one: lost samples only make the next chunk later).
    """

    def __init__(self, chunk_ns: int, latency_s: float = 0.0):
        self.chunk_ns = chunk_ns
        # Jitter of the raw times is bounded by the host buffer, which is at most about the stream latency.
        self.reanchor_ns = max(8 * chunk_ns, int(2 * latency_s * 1e9))
        self.gain = min(1 / 32, chunk_ns / (2 * self.reanchor_ns))
        self._next_ns: int | None = None
        self.reanchors = 0

    def stamp(self, raw_ns: int, gap: bool = False) -> int:
        """The ADC time of this chunk's first sample; `gap`: samples were lost before it."""
        predicted = self._next_ns
        if predicted is None:
            estimate = raw_ns
        elif gap or abs(raw_ns - predicted) > self.reanchor_ns:
            estimate = max(raw_ns, predicted)
            self.reanchors += 1
        else:
            estimate = predicted + round((raw_ns - predicted) * self.gain)
        self._next_ns = estimate + self.chunk_ns
        return estimate


class Microphone(Sensor):
    """Chunks of audio, `(chunk_samples,)` for mono, stamped with the ADC time of their first sample (ns).

    `stats`: `chunks` (handed to read), `overflows` (PortAudio input overflow flags: the driver lost data),
    `dropped_chunks` (queue full, or a file source's reader fell behind by more than the queue),
    `dead_callbacks`, `restarts`, `restart_failures`.
    """

    name = "microphone"

    def __init__(self, config: MicrophoneConfig | None = None):
        super().__init__()
        self.config = config or MicrophoneConfig()
        cfg = self.config
        self._chunk_ns = cfg.chunk_samples * 1_000_000_000 // cfg.sample_rate_hz
        self._queue: queue.Queue[tuple[np.ndarray, int]] = queue.Queue(maxsize=cfg.queue_capacity)
        self._stats = dict.fromkeys(
            ("chunks", "overflows", "dropped_chunks", "dead_callbacks", "restarts", "restart_failures"), 0
        )
        # live stream state
        self._stream = None
        self._generation = 0  # callbacks of a stream that is being closed carry an old generation: ignored
        self._last_callback_ns = 0
        self._stream_started_ns = 0
        self._closer: threading.Thread | None = None
        self._clock = _AdcClock(self._chunk_ns)
        self._stream_gap = False  # the next callback starts a new stream: its first chunk follows a gap
        self._next_restart_ns = 0
        self._backoff_s = cfg.restart_initial_s
        # file source state
        self._wav: wave.Wave_read | None = None
        self._anchor_ns = 0  # capture time of the file's chunk 0
        self._index = 0  # next chunk to hand out
        self._ended = False

    @property
    def spec(self) -> StreamSpec:
        cfg = self.config
        shape = (cfg.chunk_samples,) if cfg.channels == 1 else (cfg.chunk_samples, cfg.channels)
        return StreamSpec(kind="audio", shape=shape, dtype=cfg.dtype, rate_hz=1000.0 / cfg.chunk_ms)

    @property
    def chunk_samples(self) -> int:
        return self.config.chunk_samples

    @property
    def stats(self) -> dict[str, int]:
        """A snapshot of the counters."""
        return dict(self._stats)

    @property
    def ended(self) -> bool:
        """A file source with `loop=False` has handed out its last chunk."""
        return self._ended

    def __repr__(self) -> str:
        src = self.config.file if self.config.file is not None else self.config.device
        return f"Microphone({str(src) if src is not None else 'default'!r})"

    def _connect(self) -> None:
        self._queue = queue.Queue(maxsize=self.config.queue_capacity)
        self._ended = False
        if self.config.file is not None:
            self._open_wav()
        else:
            self._backoff_s = self.config.restart_initial_s
            self._clock = _AdcClock(self._chunk_ns)
            self._start_stream()

    def _disconnect(self) -> None:
        if self._wav is not None:
            self._wav.close()
            self._wav = None
        self._generation += 1
        stream, self._stream = self._stream, None
        if stream is not None:
            self._close_in_background(stream)
        if self._closer is not None:
            self._closer.join(timeout=2.0)
            if self._closer.is_alive():
                log.warning(
                    "%s: audio stream still closing (driver blocked); left to finish on its own", self
                )
            self._closer = None

    def _read(self, timeout_s: float) -> tuple[np.ndarray, int] | None:
        if self.config.file is not None:
            return self._read_file(timeout_s)
        deadline = time.monotonic() + timeout_s
        # Wake at least this often to check the stream's health while waiting.
        poll_s = self.config.callback_timeout_s / 2
        while True:
            self._supervise()
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            try:
                item = self._queue.get(timeout=min(remaining, poll_s))
            except queue.Empty:
                continue
            self._stats["chunks"] += 1
            return item

    # --- live stream ----------------------------------------------------------------------------------

    def _start_stream(self) -> None:
        """Open and start a stream; DeviceError if PortAudio refuses."""
        sd = _sounddevice()
        cfg = self.config
        self._generation += 1
        try:
            stream = sd.InputStream(
                samplerate=cfg.sample_rate_hz,
                blocksize=cfg.chunk_samples,
                device=cfg.device,
                channels=cfg.channels,
                dtype=cfg.dtype,
                latency=cfg.latency,
                callback=functools.partial(self._callback, self._generation),
            )
        except (sd.PortAudioError, ValueError) as exc:  # ValueError: no device matches the name
            raise DeviceError(
                f"{self}: cannot open input device {cfg.device!r} at {cfg.sample_rate_hz} Hz, "
                f"{cfg.channels} ch: {exc}; input devices: {list_input_devices()}"
            ) from exc
        if self._clock.reanchor_ns < 2 * stream.latency * 1e9:
            self._clock = _AdcClock(self._chunk_ns, stream.latency)
        self._stream_gap = True
        self._stream_started_ns = self._last_callback_ns = time.monotonic_ns()
        try:
            stream.start()
        except sd.PortAudioError as exc:
            stream.close(ignore_errors=True)
            raise DeviceError(f"{self}: cannot start input stream: {exc}") from exc
        self._stream = stream

    def _callback(self, generation: int, indata: np.ndarray, frames: int, time_info, status) -> None:
        """PortAudio audio thread: copy the block out and return at once (never block, never raise)."""
        now_ns = time.monotonic_ns()
        if generation != self._generation:
            return
        self._last_callback_ns = now_ns
        if status.input_overflow:
            self._stats["overflows"] += 1
        adc_s, current_s = time_info.inputBufferAdcTime, time_info.currentTime
        if adc_s > 0 and current_s > 0:
            raw_ns = round(adc_s * 1e9) + (now_ns - round(current_s * 1e9))
        else:
            raw_ns = now_ns - frames * 1_000_000_000 // self.config.sample_rate_hz
        capture_ns = self._clock.stamp(raw_ns, gap=self._stream_gap or bool(status.input_overflow))
        self._stream_gap = False
        chunk = indata[:, 0].copy() if self.config.channels == 1 else indata.copy()
        try:
            self._queue.put_nowait((chunk, capture_ns))
        except queue.Full:
            self._stats["dropped_chunks"] += 1

    def _close_in_background(self, stream) -> None:
        def close():
            try:
                stream.abort(ignore_errors=True)
                stream.close(ignore_errors=True)
            except Exception:  # noqa: BLE001  (a failed close must not kill the restart loop)
                log.exception("%s: closing the audio stream failed", self)

        self._closer = threading.Thread(target=close, name="microphone-close", daemon=True)
        self._closer.start()

    def _supervise(self) -> None:
        """Detect a dead stream and drive its restart: close (in the background), then reopen with backoff."""
        now = time.monotonic_ns()
        cfg = self.config
        if self._stream is not None:
            if self._last_callback_ns > self._stream_started_ns:
                self._backoff_s = cfg.restart_initial_s  # this stream has delivered: it is healthy
            if now - self._last_callback_ns <= cfg.callback_timeout_s * 1e9:
                return
            self._stats["dead_callbacks"] += 1
            log.warning(
                "%s: no audio callback for %.2f s; restarting the stream",
                self,
                (now - self._last_callback_ns) / 1e9,
            )
            self._generation += 1
            stream, self._stream = self._stream, None
            self._close_in_background(stream)
            self._next_restart_ns = now
            return
        if self._closer is not None:
            if self._closer.is_alive():
                return  # PortAudio is still waiting for its audio thread; reopening now would race it
            self._closer = None
        if now < self._next_restart_ns:
            return
        try:
            self._start_stream()
        except DeviceError as exc:
            self._stats["restart_failures"] += 1
            log.warning("%s: restart failed (%s); next try in %.2g s", self, exc, self._backoff_s)
            self._next_restart_ns = now + int(self._backoff_s * 1e9)
            self._backoff_s = min(2 * self._backoff_s, cfg.restart_max_s)
            return
        self._stats["restarts"] += 1
        log.info("%s: stream restarted", self)

    # --- WAV file source ------------------------------------------------------------------------------

    def _open_wav(self) -> None:
        cfg = self.config
        path = cfg.file
        try:
            wav = wave.open(str(path), "rb")
        except FileNotFoundError as exc:
            raise DeviceError(f"{self}: WAV file {path} does not exist") from exc
        except (wave.Error, EOFError) as exc:
            raise DeviceError(f"{self}: {path} is not a readable WAV file: {exc}") from exc
        problem = None
        if wav.getsampwidth() != 2 or wav.getcomptype() != "NONE":
            problem = f"is {8 * wav.getsampwidth()}-bit {wav.getcomptype()}, not 16-bit PCM"
        elif wav.getframerate() != cfg.sample_rate_hz:
            problem = (
                f"is sampled at {wav.getframerate()} Hz but sample_rate_hz={cfg.sample_rate_hz}; "
                f"resample it (e.g. sox in.wav -r {cfg.sample_rate_hz} out.wav) "
                f"or set sample_rate_hz={wav.getframerate()}"
            )
        elif wav.getnchannels() != cfg.channels:
            problem = f"has {wav.getnchannels()} channels but channels={cfg.channels}"
        elif wav.getnframes() == 0:
            problem = "has no samples"
        if problem:
            wav.close()
            raise DeviceError(f"{self}: WAV file {path} {problem}")
        self._wav = wav
        self._index = 0
        self._anchor_ns = time.monotonic_ns()

    def _wav_frames(self, n: int) -> np.ndarray | None:
        """The next n frames as int16 (n, channels); loops or zero-pads at the end; None when it has ended."""
        parts, need = [], n
        while need > 0:
            data = np.frombuffer(self._wav.readframes(need), dtype="<i2").reshape(-1, self.config.channels)
            parts.append(data)
            need -= len(data)
            if need > 0:  # end of file
                if not self.config.loop:
                    if need == n:
                        return None
                    parts.append(np.zeros((need, self.config.channels), np.int16))
                    break
                self._wav.rewind()
        return np.concatenate(parts)

    def _read_file(self, timeout_s: float) -> tuple[np.ndarray, int] | None:
        cfg = self.config
        if self._ended:
            return None
        now = time.monotonic_ns()
        # A live queue holds at most queue_capacity chunks; a reader further behind loses the oldest.
        behind = (now - self._anchor_ns) // self._chunk_ns - self._index
        if behind > cfg.queue_capacity:
            skip = behind - cfg.queue_capacity
            self._stats["dropped_chunks"] += skip
            self._index += skip
            position, length = self._wav.tell() + skip * cfg.chunk_samples, self._wav.getnframes()
            if cfg.loop:
                position %= length
            elif position >= length:
                self._ended = True
                return None
            self._wav.setpos(position)
        # Chunk k covers [anchor + k*chunk, anchor + (k+1)*chunk): it exists once its last sample would have
        # been captured.
        ready_ns = self._anchor_ns + (self._index + 1) * self._chunk_ns
        wait_s = (ready_ns - now) / 1e9
        if wait_s > timeout_s:
            time.sleep(max(timeout_s, 0.0))
            return None
        if wait_s > 0:
            time.sleep(wait_s)
        frames = self._wav_frames(cfg.chunk_samples)
        if frames is None:
            self._ended = True
            return None
        capture_ns = self._anchor_ns + self._index * self._chunk_ns
        self._index += 1
        if cfg.channels == 1:
            frames = frames[:, 0]
        chunk = frames.astype(np.float32) / _INT16_SCALE if cfg.dtype == "float32" else frames.copy()
        self._stats["chunks"] += 1
        return chunk, capture_ns
