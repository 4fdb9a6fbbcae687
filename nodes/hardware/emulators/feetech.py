"""Feetech STS3215 servos emulated at the byte level on a pseudo-terminal, for tests and demos without an arm.

The driver under test (nodes/hardware/feetech.py, through pyserial and Feetech's SDK) opens `emulator.port`
as it would open /dev/ttyUSB0. The emulator parses its instruction packets with its own framing and checksum
code (it deliberately shares nothing with the SDK, so a framing bug in one is caught by the other) and
answers PING, READ, WRITE, SYNC READ and SYNC WRITE like a chain of STS3215s.

Each servo is a memory table (little-endian, sign-magnitude for directional registers, as on the servo) and
a first-order motor computed on demand from elapsed time: with torque on, the position approaches the goal
(clamped to the limit registers) with time constant `tau_s`, at most `max_speed_rad_s`. Only position mode
(operating_mode 0) is emulated; in other modes, with torque off, or while a fault is set, the motor holds
still. EEPROM lock (register 55) is stored but not enforced.

Faults, for the driver's retry and error paths: `set_fault(servo, "overload", True)` sets that bit in the
servo's status byte and error field and stops its motor; `faults` holds per-status-packet probabilities of a
corrupt or missing reply and a fixed reply delay; `corrupt_next(n)` / `drop_next(n)` hit the next n status
packets deterministically.

    with FeetechEmulator(ids=[1, 2, 3, 4, 5, 6]) as emu, FeetechBus(emu.port, 1_000_000, emu.ids) as bus:
        bus.enable_torque()
        bus.sync_write("goal_position", {1: 1024})
"""

import logging
import math
import random
import threading
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass

from nodes.hardware.emulators.pty_serial import PtySerial

log = logging.getLogger(__name__)

# Protocol constants (Feetech SCS/STS protocol manual; the same values as Dynamixel Protocol 1.0).
HEADER = b"\xff\xff"
BROADCAST_ID = 0xFE
PING, READ, WRITE, SYNC_READ, SYNC_WRITE = 0x01, 0x02, 0x03, 0x82, 0x83
INSTRUCTION_NAMES = {
    PING: "ping",
    READ: "read",
    WRITE: "write",
    SYNC_READ: "sync_read",
    SYNC_WRITE: "sync_write",
}

STS3215_MODEL_NUMBER = 777  # LeRobot MODEL_NUMBER_TABLE["sts3215"]
TICKS_PER_TURN = 4096
MEMORY_SIZE = 256  # the STS table ends near address 86; the rest reads as zeros

# Register addresses used by the emulation (Feetech STS3215 memory table).
MODEL_NUMBER, ID, BAUD_RATE, MIN_LIMIT, MAX_LIMIT = 3, 5, 6, 9, 11
OPERATING_MODE, TORQUE_ENABLE, GOAL_POSITION = 33, 40, 42
PRESENT_POSITION, PRESENT_VELOCITY, PRESENT_LOAD = 56, 58, 60
PRESENT_VOLTAGE, PRESENT_TEMPERATURE, STATUS, MOVING = 62, 63, 65, 66
WRITABLE = range(ID, PRESENT_POSITION)  # 0..4 are version/model (read-only), 56.. are measurements

FAULT_BITS = {"voltage": 0x01, "angle_sensor": 0x02, "overheat": 0x04, "overcurrent": 0x08, "overload": 0x20}


# ---- wire format -------------------------------------------------------------------------------------------
def checksum(body: bytes) -> int:
    """~(sum of id, length, instruction/error and params) & 0xFF."""
    return ~sum(body) & 0xFF


def encode_packet(servo: int, code: int, params: bytes = b"") -> bytes:
    """An instruction packet (`code` = instruction) or a status packet (`code` = error byte)."""
    body = bytes((servo, len(params) + 2, code)) + bytes(params)
    return HEADER + body + bytes((checksum(body),))


@dataclass(frozen=True)
class Packet:
    servo: int
    code: int  # instruction, or error byte in a status packet
    params: bytes


def decode_packets(buffer: bytearray) -> tuple[list[Packet], int]:
    """Complete packets at the front of `buffer` and how many packets failed their checksum. Consumes what
    it parsed; leaves a trailing partial packet in place. Garbage and bad packets are skipped the way a
    servo does it: drop one byte and hunt for the next header."""
    packets, bad = [], 0
    while True:
        start = buffer.find(HEADER)
        if start < 0:
            del buffer[: max(len(buffer) - 1, 0)]  # keep a trailing 0xFF: it may start a header
            return packets, bad
        del buffer[:start]
        if len(buffer) >= 3 and buffer[2] == 0xFF:  # FF FF FF: the first FF was noise
            del buffer[:1]
            continue
        if len(buffer) < 4:
            return packets, bad
        total = buffer[3] + 4
        if buffer[3] < 2:
            del buffer[:1]
            bad += 1
            continue
        if len(buffer) < total:
            return packets, bad
        body = bytes(buffer[2 : total - 1])
        if checksum(body) != buffer[total - 1]:
            del buffer[:1]
            bad += 1
            continue
        packets.append(Packet(body[0], body[2], body[3:]))
        del buffer[:total]


def _to_sign_magnitude(value: int, sign_bit: int = 15) -> int:
    return (-value) | (1 << sign_bit) if value < 0 else value


def _from_sign_magnitude(raw: int, sign_bit: int = 15) -> int:
    return -(raw & ((1 << sign_bit) - 1)) if raw & (1 << sign_bit) else raw


# ---- servos ------------------------------------------------------------------------------------------------
@dataclass
class FaultRates:
    """Per-status-packet fault injection, drawn independently for every reply."""

    corrupt: float = 0.0  # probability that a reply's checksum is wrong
    no_reply: float = 0.0  # probability that a reply is never sent
    slow_reply_ms: float = 0.0  # delay before every reply (a slow servo or a long return-delay setting)


class _Servo:
    def __init__(self, servo_id: int, now: float):
        self.memory = bytearray(MEMORY_SIZE)
        self.position = 2048.0  # ticks; the motor state behind present_position
        self.velocity = 0.0  # ticks/s
        self.updated = now
        self.faults = 0  # status bits
        self.put(MODEL_NUMBER, 2, STS3215_MODEL_NUMBER)
        self.put(ID, 1, servo_id)
        self.put(BAUD_RATE, 1, 0)  # 1 Mbps
        self.put(MIN_LIMIT, 2, 0)
        self.put(MAX_LIMIT, 2, TICKS_PER_TURN - 1)
        self.put(GOAL_POSITION, 2, 2048)
        self.put(PRESENT_VOLTAGE, 1, 120)  # 12.0 V
        self.put(PRESENT_TEMPERATURE, 1, 30)
        self._publish()

    def put(self, address: int, size: int, value: int) -> None:
        self.memory[address : address + size] = value.to_bytes(size, "little")

    def get(self, address: int, size: int) -> int:
        return int.from_bytes(self.memory[address : address + size], "little")

    def advance(self, now: float, tau_s: float, max_speed: float) -> None:
        """Integrates the first-order motor from the last update to `now` (exactly, not by Euler steps)."""
        dt, self.updated = max(now - self.updated, 0.0), now
        if self.get(TORQUE_ENABLE, 1) != 1 or self.get(OPERATING_MODE, 1) != 0 or self.faults:
            self.velocity = 0.0
        else:
            low, high = self.get(MIN_LIMIT, 2), self.get(MAX_LIMIT, 2)
            target = min(max(_from_sign_magnitude(self.get(GOAL_POSITION, 2)), low), high)
            error = target - self.position
            direction, distance = math.copysign(1.0, error), abs(error)
            saturated = distance - max_speed * tau_s  # beyond this distance the speed cap binds
            if saturated > 0 and dt * max_speed <= saturated:
                distance -= dt * max_speed
                self.velocity = direction * max_speed
            else:
                if saturated > 0:
                    dt -= saturated / max_speed
                    distance = max_speed * tau_s
                distance *= math.exp(-dt / tau_s)
                self.velocity = direction * distance / tau_s
            self.position = target - direction * distance
        self._publish()

    def _publish(self) -> None:
        self.put(PRESENT_POSITION, 2, _to_sign_magnitude(round(self.position)))
        self.put(PRESENT_VELOCITY, 2, _to_sign_magnitude(round(self.velocity)))
        self.put(PRESENT_LOAD, 2, 0)
        self.put(STATUS, 1, self.faults)
        self.put(MOVING, 1, int(abs(self.velocity) >= 1.0))


class FeetechEmulator:
    """`ids` STS3215 servos on one pty (`.port`), answering from a reader thread once `start()`ed.

    `tau_s`: motor time constant; `max_speed_rad_s`: speed cap (6 rad/s = 57 rpm, the order of an STS3215's
    no-load speed); `faults`: reply-fault probabilities (`FaultRates`), drawn from a generator seeded with
    `seed`. Counters: `served` (instruction packets by name), `replies`, `dropped`, `corrupted`,
    `bad_packets`. Every public method is thread-safe; the pty path works from other processes too.
    """

    def __init__(
        self,
        ids: Iterable[int],
        tau_s: float = 0.05,
        max_speed_rad_s: float = 6.0,
        faults: FaultRates | None = None,
        seed: int = 0,
    ):
        ids = list(ids)
        if not ids or len(set(ids)) != len(ids) or not all(0 <= i <= 252 for i in ids):
            raise ValueError(f"`ids` must be distinct servo ids in 0..252, got {ids}")
        if tau_s <= 0:
            raise ValueError(f"`tau_s` must be > 0, got {tau_s}")
        if max_speed_rad_s <= 0:
            raise ValueError(f"`max_speed_rad_s` must be > 0, got {max_speed_rad_s}")
        self.tau_s = tau_s
        self.max_speed = max_speed_rad_s * TICKS_PER_TURN / (2 * math.pi)  # ticks/s
        self.faults = faults or FaultRates()
        self.served: Counter[str] = Counter()  # intact instruction packets received, by instruction name
        self.replies = 0  # status packets sent (corrupt ones included)
        self.dropped = 0  # status packets withheld (drop_next or faults.no_reply)
        self.corrupted = 0  # status packets sent with a bad checksum
        self.bad_packets = 0  # instruction packets that failed their checksum (ignored, as a servo does)
        self._lock = threading.Lock()
        self._rng = random.Random(seed)
        self._corrupt_next = self._drop_next = 0
        now = time.monotonic()
        self._servos = {i: _Servo(i, now) for i in ids}
        self._rx = bytearray()
        self._pty = PtySerial(self._on_bytes, name="feetech-emulator")
        self.port = self._pty.port

    @property
    def ids(self) -> list[int]:
        with self._lock:
            return list(self._servos)

    # ---- lifecycle -----------------------------------------------------------------------------------------
    def start(self) -> "FeetechEmulator":
        self._pty.start()
        return self

    def close(self) -> None:
        self._pty.close()

    def __enter__(self) -> "FeetechEmulator":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()

    # ---- faults and inspection -----------------------------------------------------------------------------
    def set_fault(self, servo: int, fault: str, active: bool = True) -> None:
        """Sets or clears a status bit (`FAULT_BITS`); while any is set the servo's motor holds still."""
        if fault not in FAULT_BITS:
            raise ValueError(f"`fault` must be one of {sorted(FAULT_BITS)}, got {fault!r}")
        with self._lock:
            state = self._servo(servo)
            state.advance(time.monotonic(), self.tau_s, self.max_speed)  # it moved until now
            state.faults = state.faults | FAULT_BITS[fault] if active else state.faults & ~FAULT_BITS[fault]
            state.advance(time.monotonic(), self.tau_s, self.max_speed)

    def corrupt_next(self, n: int = 1) -> None:
        """The next `n` status packets go out with a wrong checksum."""
        with self._lock:
            self._corrupt_next += n

    def drop_next(self, n: int = 1) -> None:
        """The next `n` status packets are never sent."""
        with self._lock:
            self._drop_next += n

    def move_by_hand(self, servo: int, ticks: int) -> None:
        """A person turns the joint to `ticks` (calibrating); with torque on, it pulls back to its goal."""
        with self._lock:
            state = self._servo(servo)
            state.advance(time.monotonic(), self.tau_s, self.max_speed)
            state.position, state.velocity = float(ticks), 0.0
            state._publish()

    def position(self, servo: int) -> int:
        """Present position in ticks, now."""
        with self._lock:
            state = self._servo(servo)
            state.advance(time.monotonic(), self.tau_s, self.max_speed)
            return round(state.position)

    def torque(self, servo: int) -> bool:
        with self._lock:
            return self._servo(servo).get(TORQUE_ENABLE, 1) == 1

    def goal(self, servo: int) -> int:
        with self._lock:
            return _from_sign_magnitude(self._servo(servo).get(GOAL_POSITION, 2))

    def register(self, servo: int, address: int, size: int) -> int:
        """Raw register bytes as an unsigned little-endian int (sign-magnitude left encoded)."""
        with self._lock:
            state = self._servo(servo)
            state.advance(time.monotonic(), self.tau_s, self.max_speed)
            return state.get(address, size)

    def _servo(self, servo: int) -> _Servo:
        if servo not in self._servos:
            raise KeyError(f"no servo {servo} on this emulator; it has {sorted(self._servos)}")
        return self._servos[servo]

    # ---- protocol ------------------------------------------------------------------------------------------
    def _on_bytes(self, chunk: bytes) -> None:
        """Runs on the pty's reader thread."""
        self._rx += chunk
        packets, bad = decode_packets(self._rx)
        with self._lock:
            self.bad_packets += bad
        for packet in packets:
            with self._lock:
                self.served[INSTRUCTION_NAMES.get(packet.code, "other")] += 1
                replies = self._execute(packet, time.monotonic())
            if replies:
                self._pty.write(self._deliver(replies))

    def _execute(self, packet: Packet, now: float) -> list[tuple[int, bytes]]:
        """Applies one instruction; returns the (servo, data) status packets it triggers, in bus order."""
        servo, params = packet.servo, packet.params
        if packet.code == PING:
            return [(servo, b"")] if servo in self._servos else []
        if packet.code == READ and len(params) == 2:
            return [(servo, self._read(servo, params[0], params[1], now))] if servo in self._servos else []
        if packet.code == WRITE and len(params) >= 2:
            targets = list(self._servos) if servo == BROADCAST_ID else [servo]
            for target in targets:
                self._write(target, params[0], params[1:], now)
            return [(servo, b"")] if servo in self._servos else []
        if packet.code == SYNC_READ and servo == BROADCAST_ID and len(params) >= 2:
            address, size = params[0], params[1]
            return [(s, self._read(s, address, size, now)) for s in params[2:] if s in self._servos]
        if packet.code == SYNC_WRITE and servo == BROADCAST_ID and len(params) >= 2:
            address, size = params[0], params[1]
            for at in range(2, len(params) - size, size + 1):
                self._write(params[at], address, params[at + 1 : at + 1 + size], now)
            return []
        log.debug("emulator: ignoring instruction 0x%02x for servo %d", packet.code, servo)
        return []

    def _read(self, servo: int, address: int, size: int, now: float) -> bytes:
        state = self._servos[servo]
        state.advance(now, self.tau_s, self.max_speed)
        return bytes(state.memory[address : address + size]).ljust(size, b"\0")

    def _write(self, servo: int, address: int, data: bytes, now: float) -> None:
        state = self._servos.get(servo)
        if state is None:
            return
        state.advance(now, self.tau_s, self.max_speed)  # the old goal and torque governed the time until now
        for offset, byte in enumerate(data):
            if address + offset in WRITABLE:
                state.memory[address + offset] = byte
        new_id = state.get(ID, 1)
        if new_id != servo and new_id not in self._servos and new_id <= 252:
            self._servos[new_id] = self._servos.pop(servo)  # the servo answers to its new id from now on
        elif new_id != servo:
            state.put(ID, 1, servo)  # an id taken by another servo would split the bus; refuse it

    def _deliver(self, replies: list[tuple[int, bytes]]) -> bytes:
        """The bytes that reach the wire for these status packets, after delays, drops and corruption."""
        with self._lock:
            delay_s = self.faults.slow_reply_ms / 1000.0
            wire = bytearray()
            for servo, data in replies:
                if self._drop_next or self._rng.random() < self.faults.no_reply:
                    self._drop_next = max(self._drop_next - 1, 0)
                    self.dropped += 1
                    continue
                error = self._servos[servo].faults if servo in self._servos else 0  # id just rewritten
                packet = bytearray(encode_packet(servo, error, data))
                if self._corrupt_next or self._rng.random() < self.faults.corrupt:
                    self._corrupt_next = max(self._corrupt_next - 1, 0)
                    self.corrupted += 1
                    packet[-1] ^= 0xFF
                self.replies += 1
                wire += packet
        if delay_s > 0:
            time.sleep(delay_s)
        return bytes(wire)
