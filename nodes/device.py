"""Base classes for devices: one per hardware role, the same connect/disconnect shape for all of them."""

from abc import ABC, abstractmethod
from dataclasses import dataclass

import numpy as np


def check_backoff(initial_name: str, initial_s: float, max_name: str, max_s: float) -> None:
    """Validate a reconnect/restart backoff pair (initial delay, ceiling), naming the fields."""
    if not initial_s > 0:
        raise ValueError(f"`{initial_name}` must be > 0, got {initial_s}")
    if not max_s >= initial_s:
        raise ValueError(f"`{max_name}` must be >= {initial_name} ({initial_s}), got {max_s}")


class DeviceNotConnectedError(RuntimeError):
    """A device was used before `connect()` or after `disconnect()`."""


class DeviceError(RuntimeError):
    """A device failed in a way its node should report (and may recover from by reconnecting)."""


@dataclass(frozen=True)
class StreamSpec:
    """What a sensor produces: one array per sample."""

    kind: str  # image, audio, joint, action, ...
    shape: tuple[int, ...]
    dtype: str
    rate_hz: float


class Sensor(ABC):
    """A source of timestamped arrays. Subclasses implement `spec`, `_connect`, `_disconnect`, `_read`."""

    name = "sensor"

    def __init__(self):
        self._connected = False

    @property
    def is_connected(self) -> bool:
        return self._connected

    @property
    @abstractmethod
    def spec(self) -> StreamSpec:
        """What this sensor produces."""

    def connect(self) -> None:
        if not self._connected:
            self._connect()
            self._connected = True

    def disconnect(self) -> None:
        if self._connected:
            self._connected = False
            self._disconnect()

    def read(self, timeout_s: float) -> tuple[np.ndarray, int] | None:
        """The next sample and its capture time (ns, monotonic clock), or None if none came within timeout."""
        if not self._connected:
            raise DeviceNotConnectedError(f"{self.name}: call connect() before read()")
        return self._read(timeout_s)

    @abstractmethod
    def _connect(self) -> None: ...

    @abstractmethod
    def _disconnect(self) -> None: ...

    @abstractmethod
    def _read(self, timeout_s: float) -> tuple[np.ndarray, int] | None: ...

    def __enter__(self):
        self.connect()
        return self

    def __exit__(self, *exc):
        self.disconnect()
