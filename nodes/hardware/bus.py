"""The servo bus a real arm hangs on: one base class, one subclass per vendor protocol.

`MotorBus` owns a serial port and the servos on it, named by id. Registers are named by the subclass's
control table (`REGISTERS`: name -> (address, size in bytes), from the servo's datasheet), so code above the
bus speaks of `goal_position`, not of address 116. Values are register units (position ticks, 0..4095 per
turn on both shipped servos), signed where the register is (each driver decodes its protocol's encoding);
turning them into radians is the calibration's job (nodes/hardware/calibration.py), not the bus's.

Every transfer is retried a bounded number of times when its status packet is missing or corrupt
(`retries`), and counted in `stats`: a bus that needs retries is reported, never silently slow. A transfer
that still fails raises `BusError` naming the servo id and the register.

Torque is never enabled by `connect`; `disconnect` (also on `with` exit) disables it before closing, and
so does the hardware node on every exit path.

    with DynamixelBus("/dev/ttyUSB0", 1_000_000, ids=[1, 2, 3, 4, 5, 6]) as bus:
        bus.sync_write("goal_position", {1: 2048, 2: 2048})
        positions = bus.sync_read("present_position")   # {id: ticks}
"""

import logging
import threading
from abc import ABC, abstractmethod
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

log = logging.getLogger(__name__)


class BusError(RuntimeError):
    """A transfer that failed after its retries, a servo that does not answer, a port that cannot open."""


class NotConnectedError(BusError):
    def __init__(self, what: str):
        super().__init__(f"{what}: the bus is not connected; call connect() first")


@dataclass
class BusStats:
    transfers: int = 0
    retries: int = 0  # transfers repeated after a missing or corrupt status packet
    failures: int = 0  # transfers that failed after every retry
    corrupt: int = 0  # status packets with a bad checksum or header
    no_reply: int = 0  # status packets that never came (timeout)
    servo_errors: int = 0  # status packets whose error field was set (overload, overheating, ...)


class MotorBus(ABC):
    REGISTERS: dict[str, tuple[int, int]] = {}  # name -> (address, size in bytes); the datasheet's table
    PROTOCOL = ""

    def __init__(self, port: str, baudrate: int, ids: Sequence[int], retries: int = 3):
        if not ids or len(set(ids)) != len(ids) or not all(0 <= i <= 252 for i in ids):
            raise ValueError(f"`ids` must be distinct servo ids in 0..252, got {list(ids)}")
        if retries < 0:
            raise ValueError(f"`retries` must be >= 0, got {retries}")
        self.port, self.baudrate, self.ids, self.retries = port, baudrate, list(ids), retries
        self.stats = BusStats()
        self._connected = False
        self._lock = threading.RLock()  # one transfer on the wire at a time, whichever thread asks

    # ---- what a protocol implements ----------------------------------------------------------------------
    @abstractmethod
    def _open(self) -> None:
        """Open the port at the baud rate; BusError naming the port if it cannot."""

    @abstractmethod
    def _close(self) -> None: ...

    @abstractmethod
    def _ping(self, servo: int) -> int:
        """One ping: the servo's model number. Raises `Retry` on a missing or corrupt reply."""

    @abstractmethod
    def _read(self, servo: int, address: int, size: int) -> int: ...

    @abstractmethod
    def _write(self, servo: int, address: int, size: int, value: int) -> None: ...

    @abstractmethod
    def _sync_read(self, servos: Sequence[int], address: int, size: int) -> dict[int, int]: ...

    @abstractmethod
    def _sync_write(self, values: dict[int, int], address: int, size: int) -> None:
        """Sync write has no status packet (a broadcast): it cannot be retried on a missing reply."""

    # ---- the bus -------------------------------------------------------------------------------------------
    @property
    def is_connected(self) -> bool:
        return self._connected

    def connect(self) -> None:
        """Opens the port and pings every servo; BusError naming the first id that does not answer (the port
        is closed again, and no torque was enabled)."""
        if self._connected:
            return
        self._open()
        try:
            for servo in self.ids:
                try:
                    self._transfer(f"ping servo {servo}", lambda s=servo: self._ping(s))
                except BusError as exc:
                    raise BusError(f"servo id {servo} on {self.port} does not answer: {exc}") from None
        except BaseException:
            self._close()
            raise
        self._connected = True

    def disconnect(self) -> None:
        """Torque off on every servo, confirmed, then close the port. A sync write has no reply, so each
        servo's torque is read back and written again one by one where it is still on; a servo that cannot
        be confirmed is logged as an error (the port closes regardless)."""
        if not self._connected:
            return
        try:
            self.disable_torque()
            for servo in self.ids:
                try:
                    if self.read("torque_enable", servo):
                        self.write("torque_enable", servo, 0)
                except BusError as exc:
                    log.error("bus %s: torque-off of servo %d not confirmed: %s", self.port, servo, exc)
        except BusError as exc:
            log.error("bus %s: torque-off on disconnect failed: %s", self.port, exc)
        finally:
            self._close()
            self._connected = False

    def __enter__(self):
        self.connect()
        return self

    def __exit__(self, *exc) -> None:
        self.disconnect()

    def ping(self, servo: int) -> int:
        self._check(f"ping {servo}")
        return self._transfer(f"ping servo {servo}", lambda: self._ping(servo))

    def read(self, name: str, servo: int) -> int:
        address, size = self._register(name)
        self._check(f"read {name}")
        return self._transfer(f"read {name} of servo {servo}", lambda: self._read(servo, address, size))

    def write(self, name: str, servo: int, value: int) -> None:
        address, size = self._register(name)
        self._check(f"write {name}")
        self._transfer(
            f"write {name} of servo {servo}", lambda: self._write(servo, address, size, int(value))
        )

    def sync_read(self, name: str, servos: Iterable[int] | None = None) -> dict[int, int]:
        address, size = self._register(name)
        self._check(f"sync_read {name}")
        servos = list(self.ids if servos is None else servos)
        return self._transfer(
            f"sync_read {name} of servos {servos}", lambda: self._sync_read(servos, address, size)
        )

    def sync_write(self, name: str, values: dict[int, int]) -> None:
        address, size = self._register(name)
        self._check(f"sync_write {name}")
        values = {int(k): int(v) for k, v in values.items()}
        self._transfer(f"sync_write {name}", lambda: self._sync_write(values, address, size))

    def enable_torque(self, servos: Iterable[int] | None = None) -> None:
        self.sync_write("torque_enable", {s: 1 for s in (self.ids if servos is None else servos)})

    def disable_torque(self, servos: Iterable[int] | None = None) -> None:
        self.sync_write("torque_enable", {s: 0 for s in (self.ids if servos is None else servos)})

    # ---- helpers -------------------------------------------------------------------------------------------
    def _register(self, name: str) -> tuple[int, int]:
        if name not in self.REGISTERS:
            raise KeyError(f"{type(self).__name__} has no register {name!r}; it has {sorted(self.REGISTERS)}")
        return self.REGISTERS[name]

    def _check(self, what: str) -> None:
        if not self._connected:
            raise NotConnectedError(what)

    def _transfer(self, what: str, call):
        """`call()` with up to `retries` repeats on a missing or corrupt status packet; BusError after."""
        with self._lock:
            try:
                return self._attempts(what, call)
            except BusError:
                self.stats.failures += 1  # retries spent, a refusal, an unplugged adapter: all count
                raise

    def _attempts(self, what: str, call):
        self.stats.transfers += 1
        for attempt in range(self.retries + 1):
            try:
                return call()
            except Retry as exc:
                if exc.kind == "corrupt":
                    self.stats.corrupt += 1
                else:
                    self.stats.no_reply += 1
                if attempt < self.retries:
                    self.stats.retries += 1
                    continue
                raise BusError(f"{what} on {self.port}: {exc} (after {self.retries} retries)") from None


class Retry(Exception):
    """A transfer worth repeating: its status packet was missing (`kind="no_reply"`) or corrupt."""

    def __init__(self, kind: str, detail: str):
        super().__init__(detail)
        self.kind = kind
