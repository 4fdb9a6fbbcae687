"""A pseudo-terminal standing in for a USB-serial adapter, so an emulated servo bus speaks real bytes.

The driver under test opens `port` (the pty's slave side, e.g. /dev/pts/7) exactly as it would open
/dev/ttyUSB0, through pyserial and the vendor SDK; the emulator sees every byte the driver writes on the
master side and answers there. Nothing about the driver is faked. The slave path works across processes.
"""

import logging
import os
import select
import threading
import tty
from collections.abc import Callable

log = logging.getLogger(__name__)


class PtySerial:
    """A pty pair with a reader thread on the master side: `on_bytes(chunk)` is called with what the driver
    wrote, from that thread; `write()` sends bytes back to the driver."""

    def __init__(self, on_bytes: Callable[[bytes], None], name: str = "pty-serial"):
        self._on_bytes = on_bytes
        self._master_fd, self._slave_fd = os.openpty()
        # Raw mode: no echo, no line editing, no CR/LF translation; a servo bus is 8-bit binary.
        tty.setraw(self._slave_fd)
        # Held open for the emulator's lifetime: when the last slave fd closes, reads on the master fail with
        # EIO, and a driver that closes and reopens the port would find a dead bus.
        self.port = os.ttyname(self._slave_fd)
        self._wake_r, self._wake_w = os.pipe()
        self._thread = threading.Thread(target=self._serve, name=name, daemon=True)
        self._closed = False

    def start(self) -> None:
        self._thread.start()

    def write(self, data: bytes) -> None:
        """Sends `data` to the driver side (blocking until all of it is queued)."""
        view = memoryview(data)
        while view:
            view = view[os.write(self._master_fd, view) :]

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        os.write(self._wake_w, b"\0")
        if self._thread.is_alive():
            self._thread.join(timeout=2.0)
        for fd in (self._master_fd, self._slave_fd, self._wake_r, self._wake_w):
            os.close(fd)

    def __enter__(self) -> "PtySerial":
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _serve(self) -> None:
        while True:
            ready, _, _ = select.select([self._master_fd, self._wake_r], [], [])
            if self._wake_r in ready:
                return
            try:
                chunk = os.read(self._master_fd, 4096)
            except OSError as exc:  # the pty went away under us
                log.error("pty %s: read failed, emulator stops: %s", self.port, exc)
                return
            try:
                self._on_bytes(chunk)
            except Exception:  # an emulator bug must be loud, but must not silently stop the bus
                log.exception("pty %s: handler failed on %d bytes", self.port, len(chunk))
