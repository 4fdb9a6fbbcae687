"""A WAV file for a microphone to play: the file-backed source `nodes.microphone_device` reads."""

import wave
from pathlib import Path

import numpy as np


def write_tone(path: Path, seconds: float = 2.0, rate: int = 16000, freq: float = 440.0) -> Path:
    """A sine tone at half scale, 16-bit mono PCM."""
    t = np.arange(int(seconds * rate)) / rate
    samples = (0.5 * np.sin(2 * np.pi * freq * t) * 32767).astype("<i2")
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(samples.tobytes())
    return path
