"""Dynamixel X-series servos on a pseudo-terminal, speaking Protocol 2.0 byte for byte.

`DynamixelEmulator` stands in for a chain of XL430-W250 servos behind a USB-serial adapter: the driver under
test (nodes/hardware/dynamixel.py, through the vendor SDK and pyserial) opens `emulator.port` as it would open
/dev/ttyUSB0, and every instruction packet it sends is parsed and answered here. The codec (CRC-16, byte
stuffing, packet framing) is written from the e-Manual, independently of the SDK, so that a test comparing the
two checks something.

    with DynamixelEmulator(ids=[1, 2, 3]) as emulator:
        with DynamixelBus(emulator.port, 1_000_000, ids=[1, 2, 3]) as bus:
            bus.enable_torque()
            bus.sync_write("goal_position", {1: 1000, 2: 3000, 3: 2048})

Packets, CRC and stuffing: https://emanual.robotis.com/docs/en/dxl/protocol2/
Control table and defaults: https://emanual.robotis.com/docs/en/dxl/x/xl430-w250/

The motor is a first-order lag toward the (limit-clamped) goal with a speed cap, integrated exactly from the
time elapsed since the servo was last touched: there is no simulation thread, and the trajectory does not
depend on how often it is read. No gravity, no load: with torque off the horn stays where it is.

The pty path works from any process: a test can run the emulator and hand `emulator.port` to a hardware node
started as a subprocess.
"""

import logging
import math
import random
import threading
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

from nodes.hardware.emulators.pty_serial import PtySerial

log = logging.getLogger(__name__)

# ---- Protocol 2.0 (e-Manual "Protocol 2.0") ----------------------------------------------------------------
HEADER = b"\xff\xff\xfd\x00"  # FF FF FD is the header proper; 00 is the reserved byte
BROADCAST_ID = 0xFE
MAX_LENGTH = 1024  # the SDK's RXPACKET_MAX_LEN; a longer length field is a misread header, not a packet
INST_PING, INST_READ, INST_WRITE = 0x01, 0x02, 0x03
INST_SYNC_READ, INST_SYNC_WRITE, INST_STATUS = 0x82, 0x83, 0x55
INSTRUCTION_NAMES = {
    INST_PING: "ping",
    INST_READ: "read",
    INST_WRITE: "write",
    INST_SYNC_READ: "sync_read",
    INST_SYNC_WRITE: "sync_write",
}
ERRBIT_ALERT = 0x80  # status error byte: "the device has a problem, see Hardware Error Status (70)"
ERRNUM_INSTRUCTION = 0x02
ERRNUM_CRC = 0x03
ERRNUM_DATA_LENGTH = 0x05
ERRNUM_ACCESS = 0x07


def _make_crc_table() -> tuple[int, ...]:
    """CRC-16 with polynomial 0x8005 (x^16 + x^15 + x^2 + 1), MSB first, no reflection, as the e-Manual's
    `update_crc`; the table is computed here rather than pasted."""
    table = []
    for byte in range(256):
        crc = byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x8005) if crc & 0x8000 else crc << 1
        table.append(crc & 0xFFFF)
    return tuple(table)


_CRC_TABLE = _make_crc_table()


def crc16(data: bytes, crc: int = 0) -> int:
    """The Protocol 2.0 packet CRC over `data` (header through last parameter, after stuffing)."""
    for byte in data:
        crc = ((crc << 8) ^ _CRC_TABLE[((crc >> 8) ^ byte) & 0xFF]) & 0xFFFF
    return crc


def stuff(body: bytes) -> bytes:
    """Byte stuffing: FF FF FD inside instruction/error/parameters becomes FF FF FD FD, so that no header can
    appear inside a packet."""
    if b"\xff\xff\xfd" not in body:  # the common case, without a Python loop
        return bytes(body)
    out = bytearray()
    for i, byte in enumerate(body):
        out.append(byte)
        if byte == 0xFD and i >= 2 and body[i - 1] == 0xFF and body[i - 2] == 0xFF:
            out.append(0xFD)
    return bytes(out)


def unstuff(body: bytes) -> bytes:
    """The inverse of `stuff`: drops the FD that follows each FF FF FD."""
    if b"\xff\xff\xfd\xfd" not in body:
        return bytes(body)
    out = bytearray()
    i = 0
    while i < len(body):
        out.append(body[i])
        stuffed = out[-3:] == b"\xff\xff\xfd" and i + 1 < len(body) and body[i + 1] == 0xFD
        i += 2 if stuffed else 1
    return bytes(out)


def encode_packet(servo_id: int, body: bytes) -> bytes:
    """A whole packet: header, id, length, stuffed `body` (instruction [+ error] + parameters), CRC."""
    stuffed = stuff(body)
    head = HEADER + bytes([servo_id]) + (len(stuffed) + 2).to_bytes(2, "little") + stuffed
    return head + crc16(head).to_bytes(2, "little")


class Packet(NamedTuple):
    servo_id: int
    body: bytes  # instruction (or 0x55 + error) and parameters, unstuffed
    crc_ok: bool


class PacketDecoder:
    """Splits a byte stream into packets: finds headers, waits for the length the header announces, checks
    the CRC. Garbage between packets is skipped; a packet with a bad CRC is reported once (`crc_ok=False`),
    then the search resumes one byte further, so a corrupt length field cannot swallow the next packet."""

    def __init__(self):
        self._buffer = bytearray()

    def feed(self, data: bytes) -> list[Packet]:
        self._buffer += data
        packets = []
        buf = self._buffer
        while True:
            start = buf.find(HEADER[:3])
            if start < 0:
                del buf[: max(0, len(buf) - 2)]  # keep a possible partial header
                break
            del buf[:start]
            if len(buf) < 7:
                break
            length = buf[5] | buf[6] << 8
            if buf[3] != 0x00 or not 3 <= length <= MAX_LENGTH:  # FF FF FD FD: stuffed data, not a header
                del buf[0]
                continue
            total = 7 + length
            if len(buf) < total:
                break
            raw = bytes(buf[:total])
            if crc16(raw[:-2]) == int.from_bytes(raw[-2:], "little"):
                packets.append(Packet(raw[4], unstuff(raw[7:-2]), True))
                del buf[:total]
            else:
                packets.append(Packet(raw[4], b"", False))
                del buf[0]
        return packets


# ---- XL430-W250 control table (e-Manual, Protocol 2.0 firmware) --------------------------------------------
MODEL_XL430_W250 = 1060
TABLE_SIZE = 147  # through Present Temperature (146, 1 byte); indirect addresses are not emulated
TICKS_PER_TURN = 4096
VELOCITY_UNIT_RPM = 0.229  # Present Velocity (128) unit
EXTENDED_RANGE_TICKS = 1_048_575  # goal range in extended position mode (+-256 turns)
HW_ERROR_OVERLOAD = 0x20  # Hardware Error Status (70) bit 5
MODE_POSITION, MODE_EXTENDED_POSITION, MODE_CURRENT_BASED_POSITION = 3, 4, 5

# name: (address, size, default). Only what the emulator reads or a driver may ask for.
_TABLE = {
    "model_number": (0, 2, MODEL_XL430_W250),
    "firmware_version": (6, 1, 46),
    "id": (7, 1, 1),
    "baud_rate": (8, 1, 3),  # 3 = 1 Mbps; the factory default is 1 (57600), arms are set to 1 Mbps
    "return_delay_time": (9, 1, 0),  # factory 250 (500 us); 0 on a tuned arm, and a pty has no wire delay
    "drive_mode": (10, 1, 0),
    "operating_mode": (11, 1, MODE_POSITION),
    "secondary_id": (12, 1, 255),
    "protocol_type": (13, 1, 2),
    "homing_offset": (20, 4, 0),
    "moving_threshold": (24, 4, 10),  # units of 0.229 rpm
    "temperature_limit": (31, 1, 72),
    "max_voltage_limit": (32, 2, 140),
    "min_voltage_limit": (34, 2, 60),
    "pwm_limit": (36, 2, 885),
    "velocity_limit": (44, 4, 265),
    "max_position_limit": (48, 4, TICKS_PER_TURN - 1),
    "min_position_limit": (52, 4, 0),
    "shutdown": (63, 1, 0x34),  # shut down on overload, electrical shock, overheating
    "torque_enable": (64, 1, 0),
    "led": (65, 1, 0),
    "status_return_level": (68, 1, 2),
    "hardware_error_status": (70, 1, 0),
    "velocity_i_gain": (76, 2, 1000),
    "velocity_p_gain": (78, 2, 100),
    "position_d_gain": (80, 2, 4000),
    "position_i_gain": (82, 2, 0),
    "position_p_gain": (84, 2, 640),
    "goal_pwm": (100, 2, 885),
    "goal_velocity": (104, 4, 0),
    "profile_acceleration": (108, 4, 0),
    "profile_velocity": (112, 4, 0),
    "goal_position": (116, 4, 2048),
    "realtime_tick": (120, 2, 0),
    "moving": (122, 1, 0),
    "moving_status": (123, 1, 0),
    "present_pwm": (124, 2, 0),
    "present_load": (126, 2, 0),  # no load is modelled: always 0
    "present_velocity": (128, 4, 0),
    "present_position": (132, 4, 2048),
    "velocity_trajectory": (136, 4, 0),
    "position_trajectory": (140, 4, 0),
    "present_input_voltage": (144, 2, 111),  # 11.1 V, the XL430's recommended supply
    "present_temperature": (146, 1, 30),
}
_EEPROM_END = 64  # EEPROM (0..63) can only be written with torque off
# Read-only: model number/info/firmware (0..6), hardware error status (70), everything from 120 on.
_READ_ONLY = frozenset([*range(0, 7), 70, *range(120, TABLE_SIZE)])
_ID_ADDRESS, _TORQUE_ADDRESS = _TABLE["id"][0], _TABLE["torque_enable"][0]


@dataclass
class Faults:
    """Bus faults applied to each status packet, independently (probabilities in 0..1)."""

    corrupt: float = 0.0  # one CRC byte flipped: the driver sees a corrupt status packet
    no_reply: float = 0.0  # the status packet is never sent: the driver times out
    slow_reply_ms: float = 0.0  # every reply is delayed this long (a servo with a long return delay)


class _Servo:
    """One servo: its control table and the continuous state behind the present_* registers."""

    def __init__(self, servo_id: int, now: float):
        self.table = bytearray(TABLE_SIZE)
        for address, size, default in _TABLE.values():
            self.put(address, size, default)
        self.put(_ID_ADDRESS, 1, servo_id)
        self.position = float(self.get(*_TABLE["present_position"][:2], signed=True))  # ticks
        self.velocity = 0.0  # ticks/s
        self.updated = now
        self.overload = False

    def get(self, address: int, size: int, signed: bool = False) -> int:
        return int.from_bytes(self.table[address : address + size], "little", signed=signed)

    def put(self, address: int, size: int, value: int) -> None:
        self.table[address : address + size] = (value % (1 << (8 * size))).to_bytes(size, "little")

    def reg(self, name: str, signed: bool = False) -> int:
        address, size, _ = _TABLE[name]
        return self.get(address, size, signed)

    def set_reg(self, name: str, value: int) -> None:
        address, size, _ = _TABLE[name]
        self.put(address, size, value)

    @property
    def error_byte(self) -> int:
        return ERRBIT_ALERT if self.reg("hardware_error_status") else 0


class DynamixelEmulator:
    """XL430-W250 servos (model 1060) with the given ids on one pseudo-terminal bus.

    Answers PING (also broadcast), READ, WRITE, SYNC READ (one status packet per addressed servo, in the
    order the instruction lists them) and SYNC WRITE (no reply). A write the real servo refuses is refused
    with its error number: EEPROM (addresses < 64) while torque is on, read-only registers, addresses past
    the table, and changing the id (not emulated).

    Faults: `faults` (probabilities per status packet, and a delay), `corrupt_next(n)` / `drop_next(n)` for
    the next n status packets, and `set_fault(servo, "overload", True)`, which shuts the servo down as an
    XL430 does: Hardware Error Status bit 5 set, the alert bit (0x80) in every status packet, torque off and
    refused until the fault is cleared. `served` counts instruction packets by type; `injected` counts the
    faults applied.

    Args:
        ids: servo ids on the bus (0..252, distinct).
        tau_s: time constant of the first-order position response.
        max_speed_rad_s: speed cap of the horn (the XL430-W250's no-load speed is about 6.1 rad/s at 12 V).
        seed: seeds the random faults, for reproducible runs.
    """

    def __init__(
        self,
        ids: Sequence[int],
        tau_s: float = 0.05,
        max_speed_rad_s: float = 6.0,
        seed: int | None = None,
    ):
        ids = list(ids)
        if not ids or len(set(ids)) != len(ids) or not all(0 <= i <= 252 for i in ids):
            raise ValueError(f"`ids` must be distinct servo ids in 0..252, got {ids}")
        if not tau_s > 0:
            raise ValueError(f"`tau_s` must be > 0, got {tau_s}")
        if not max_speed_rad_s > 0:
            raise ValueError(f"`max_speed_rad_s` must be > 0, got {max_speed_rad_s}")
        self.ids, self.tau_s = ids, tau_s
        self._max_speed_ticks = max_speed_rad_s * TICKS_PER_TURN / (2 * math.pi)  # ticks/s
        self.faults = Faults()
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        now = time.monotonic()
        self._servos = {servo: _Servo(servo, now) for servo in ids}
        self._corrupt_next = self._drop_next = 0
        self._served: Counter[str] = Counter()
        self._injected: Counter[str] = Counter()
        self._decoder = PacketDecoder()
        self._pty = PtySerial(self._on_bytes, name="dynamixel-emulator")
        self.port = self._pty.port  # the pty slave path: hand it to the driver

    # ---- lifecycle -----------------------------------------------------------------------------------------
    def start(self) -> "DynamixelEmulator":
        self._pty.start()
        return self

    def close(self) -> None:
        self._pty.close()

    def __enter__(self) -> "DynamixelEmulator":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()

    # ---- fault injection -----------------------------------------------------------------------------------
    def corrupt_next(self, n: int) -> None:
        """Flips a CRC byte in each of the next `n` status packets."""
        with self._lock:
            self._corrupt_next = n

    def drop_next(self, n: int) -> None:
        """Withholds the next `n` status packets."""
        with self._lock:
            self._drop_next = n

    def set_fault(self, servo: int, fault: str, active: bool) -> None:
        """`fault="overload"`: the shutdown an XL430 performs after a persistent overload (or its clearing,
        which on a real servo takes a REBOOT)."""
        if fault != "overload":
            raise ValueError(f"`fault` must be 'overload', got {fault!r}")
        with self._lock:
            state = self._servo(servo)
            self._advance(state, time.monotonic())  # the motion up to now happened before the shutdown
            state.overload = active
            errors = state.reg("hardware_error_status")
            state.set_reg(
                "hardware_error_status", errors | HW_ERROR_OVERLOAD if active else errors & ~HW_ERROR_OVERLOAD
            )
            if active:
                state.set_reg("torque_enable", 0)

    def move_by_hand(self, servo: int, ticks: int) -> None:
        """A person turns the joint to `ticks` (calibrating); with torque on, it pulls back to its goal."""
        with self._lock:
            state = self._servo(servo)
            self._advance(state, time.monotonic())
            state.position, state.velocity = float(ticks), 0.0
            state.set_reg("present_position", int(ticks))

    # ---- what tests read -----------------------------------------------------------------------------------
    def position(self, servo: int) -> int:
        """Present position in ticks, after the dynamics up to now."""
        with self._lock:
            state = self._servo(servo)
            self._advance(state, time.monotonic())
            return state.reg("present_position", signed=True)

    def torque(self, servo: int) -> bool:
        with self._lock:
            return bool(self._servo(servo).reg("torque_enable"))

    def goal(self, servo: int) -> int:
        with self._lock:
            return self._servo(servo).reg("goal_position", signed=True)

    @property
    def served(self) -> dict[str, int]:
        """Instruction packets handled, by type ("ping", "read", ..., "bad_crc", "unknown")."""
        with self._lock:
            return dict(self._served)

    @property
    def injected(self) -> dict[str, int]:
        """Faults applied to status packets ("corrupt", "no_reply")."""
        with self._lock:
            return dict(self._injected)

    # ---- the bus -------------------------------------------------------------------------------------------
    def _servo(self, servo: int) -> _Servo:
        if servo not in self._servos:
            raise KeyError(f"no servo {servo} on this emulator; it has {self.ids}")
        return self._servos[servo]

    def _on_bytes(self, data: bytes) -> None:
        """Reader thread: answers each complete instruction packet in the order received."""
        for packet in self._decoder.feed(data):
            with self._lock:
                replies = self._answer(packet)
                wire = self._to_wire(replies)
            if wire:
                if self.faults.slow_reply_ms > 0:
                    time.sleep(self.faults.slow_reply_ms / 1000)
                self._pty.write(wire)

    def _to_wire(self, replies: list[tuple[int, int, bytes]]) -> bytes:
        """Status packets with the injected faults applied (called under the lock)."""
        wire = bytearray()
        for servo_id, error, params in replies:
            if self._drop_next > 0 or self._chance(self.faults.no_reply):
                self._drop_next = max(0, self._drop_next - 1)
                self._injected["no_reply"] += 1
                continue
            packet = bytearray(encode_packet(servo_id, bytes([INST_STATUS, error]) + params))
            if self._corrupt_next > 0 or self._chance(self.faults.corrupt):
                self._corrupt_next = max(0, self._corrupt_next - 1)
                self._injected["corrupt"] += 1
                packet[-1] ^= 0xFF
            wire += packet
        return bytes(wire)

    def _chance(self, probability: float) -> bool:
        return probability > 0 and self._rng.random() < probability

    def _answer(self, packet: Packet) -> list[tuple[int, int, bytes]]:
        """The status packets (id, error, params) an instruction packet gets, in bus order."""
        mine = packet.servo_id in self._servos
        if not packet.crc_ok:
            self._served["bad_crc"] += 1
            return [(packet.servo_id, ERRNUM_CRC, b"")] if mine else []
        if not mine and packet.servo_id != BROADCAST_ID:
            return []  # another device's packet: a real servo stays silent
        instruction, params = packet.body[0], packet.body[1:]
        self._served[INSTRUCTION_NAMES.get(instruction, "unknown")] += 1
        now = time.monotonic()
        if instruction == INST_PING:
            ids = sorted(self._servos) if packet.servo_id == BROADCAST_ID else [packet.servo_id]
            return [self._ping(servo) for servo in ids]
        if instruction == INST_SYNC_READ or instruction == INST_SYNC_WRITE:
            if packet.servo_id != BROADCAST_ID or len(params) < 4:
                return []
            address, size = int.from_bytes(params[0:2], "little"), int.from_bytes(params[2:4], "little")
            if instruction == INST_SYNC_READ:
                return [
                    self._read(servo, address, size, now) for servo in params[4:] if servo in self._servos
                ]
            for offset in range(4, len(params) - size, size + 1):
                servo = params[offset]
                if servo in self._servos:
                    self._write(servo, address, params[offset + 1 : offset + 1 + size], now)
            return []
        if instruction == INST_READ and len(params) == 4 and mine:
            address, size = int.from_bytes(params[0:2], "little"), int.from_bytes(params[2:4], "little")
            return [self._read(packet.servo_id, address, size, now)]
        if instruction == INST_WRITE and len(params) >= 3:
            address = int.from_bytes(params[0:2], "little")
            servos = sorted(self._servos) if packet.servo_id == BROADCAST_ID else [packet.servo_id]
            errors = [self._write(servo, address, params[2:], now) for servo in servos]
            return [] if packet.servo_id == BROADCAST_ID else [(packet.servo_id, errors[0], b"")]
        if instruction in (INST_READ, INST_WRITE):
            return [(packet.servo_id, ERRNUM_DATA_LENGTH, b"")] if mine else []
        return [(packet.servo_id, ERRNUM_INSTRUCTION, b"")] if mine else []

    def _ping(self, servo: int) -> tuple[int, int, bytes]:
        state = self._servos[servo]
        return servo, state.error_byte, bytes(state.table[0:2]) + bytes(state.table[6:7])

    def _read(self, servo: int, address: int, size: int, now: float) -> tuple[int, int, bytes]:
        state = self._servos[servo]
        if size < 1 or address + size > TABLE_SIZE:
            return servo, state.error_byte | ERRNUM_ACCESS, b""
        self._advance(state, now)
        return servo, state.error_byte, bytes(state.table[address : address + size])

    def _write(self, servo: int, address: int, data: bytes, now: float) -> int:
        """Applies a write; the status error byte (the error number when refused)."""
        state = self._servos[servo]
        span = range(address, address + len(data))
        refused = (
            address + len(data) > TABLE_SIZE
            or any(a in _READ_ONLY for a in span)
            or (address < _EEPROM_END and state.reg("torque_enable"))
            or (_ID_ADDRESS in span and data[_ID_ADDRESS - address] != servo)  # re-addressing: not emulated
        )
        if refused:
            return state.error_byte | ERRNUM_ACCESS
        self._advance(state, now)  # the old goal and torque held until this instant
        state.table[address : address + len(data)] = data
        if state.overload and _TORQUE_ADDRESS in span:
            state.set_reg("torque_enable", 0)  # after a shutdown, torque stays off until a reboot
        return state.error_byte

    def _advance(self, state: _Servo, now: float) -> None:
        """Moves the motor from `state.updated` to `now` and refreshes the present_* registers.

        First-order lag toward the clamped goal, err(t) = err0 * exp(-t / tau), except that the speed
        err / tau is capped at the motor's maximum: while |err| > v_max * tau the horn moves at v_max, then
        the exponential takes over. Both pieces are solved in closed form, so the result is exact for any
        step and independent of how often the servo is polled.
        """
        dt = now - state.updated
        state.updated = now
        mode = state.reg("operating_mode")
        follows = (
            state.reg("torque_enable") == 1
            and not state.overload
            and mode in (MODE_POSITION, MODE_EXTENDED_POSITION, MODE_CURRENT_BASED_POSITION)
        )
        if dt > 0 and follows:
            goal = state.reg("goal_position", signed=True)
            if mode == MODE_POSITION:
                low, high = state.reg("min_position_limit"), state.reg("max_position_limit")
            else:  # the position limits do not apply in the extended modes
                low, high = -EXTENDED_RANGE_TICKS, EXTENDED_RANGE_TICKS
            target = min(max(goal, low), high)
            error = target - state.position
            direction = 1.0 if error >= 0 else -1.0
            v_max, tau = self._max_speed_ticks, self.tau_s
            saturated_for = (abs(error) - v_max * tau) / v_max  # time spent at the speed cap
            if dt <= saturated_for:
                state.position += direction * v_max * dt
                state.velocity = direction * v_max
            else:
                if saturated_for > 0:
                    dt -= saturated_for
                    error = direction * v_max * tau
                error *= math.exp(-dt / tau)
                state.position = target - error
                state.velocity = error / tau
        elif not follows:
            state.velocity = 0.0
        velocity_units = round(state.velocity * 60.0 / TICKS_PER_TURN / VELOCITY_UNIT_RPM)
        state.set_reg("present_position", round(state.position))
        state.set_reg("present_velocity", velocity_units)
        state.set_reg("moving", int(abs(velocity_units) > state.reg("moving_threshold")))
        state.set_reg("realtime_tick", int(now * 1000) % 32768)  # ms, wrapping at 32767 as the e-Manual says
