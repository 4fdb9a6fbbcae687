"""The Feetech STS bus (STS3215, the SO-100 arm's servos) over Feetech's packaged Python SDK.

The wire format is Feetech's SCS/STS protocol, a copy of Dynamixel Protocol 1.0: `FF FF id length
instruction params checksum`, checksum = ~(id + length + instruction + params) & 0xFF; the status packet
carries an error byte where the instruction was. Multi-byte registers are little-endian on STS (the older
SCS series is big-endian).

We use the packaged SDK (`feetech-servo-sdk`, module `scservo_sdk`) for framing, checksums, header
resynchronisation and timeouts, but none of its value codecs, and we work around five of its defects:

- Byte order is a module-global (`SCS_END`, set as a side effect of `PacketHandler(protocol_end)`), so two
  buses of different series in one process would flip each other's endianness. We instantiate the packet
  handler without touching that global and pack/unpack register bytes ourselves (little-endian).
- `GroupSyncRead.rxPacket` discards every status packet's error byte and never checks the reply length, so
  we send the sync read with `GroupSyncRead` and collect the replies ourselves with `readRx`.
- `PortHandler.clearPort` (called before every instruction packet) only drains *output*; stale input left by
  a late or corrupt reply would then be read as the next reply. Ours discards pending input instead.
- The USB latency timer that sizes every timeout is a module constant (`port_handler.LATENCY_TIMER`, 16 ms);
  ours is a per-bus constructor argument.
- While waiting for a reply it spins on a non-blocking read: a full core for the whole wait, which on a real
  USB adapter lasts up to a latency-timer period per reply (16 ms by default). Ours sleeps in select() until
  the first byte or the timeout. Its price is one wake-up: on the pty emulator (6 servos, sync write + sync
  read back to back, 4 alternating runs of 500, 2-vCPU machine) p50 0.53-0.66 ms vs 0.39-0.53 ms spinning
  when idle, at 55-60 % of a core instead of 97 %; with other processes busy, p99 0.9-4.5 ms vs 4.9-7.8 ms.

STS registers that carry a direction use sign-magnitude, not two's complement: one bit (bit 15 for positions
and speeds, bit 10 for load) is the sign and the bits below it the magnitude. `read`/`write` return and take
plain signed ints for those registers.
"""

import logging
import select
from collections.abc import Sequence

import scservo_sdk as scs
from scservo_sdk.protocol_packet_handler import protocol_packet_handler

from nodes.hardware.bus import BusError, MotorBus, Retry

log = logging.getLogger(__name__)

# Bauds the SDK's PortHandler can open (anything else makes `setBaudRate` return False).
SUPPORTED_BAUDRATES = (4800, 9600, 14400, 19200, 38400, 57600, 115200, 128000, 250000, 500000, 1000000)

# Feetech STS3215 memory table (Feetech "STS3215 memory table" / SMS_STS.h of Feetech's SCServo library, the
# table LeRobot's lerobot/motors/feetech/tables.py STS_SMS_SERIES_CONTROL_TABLE copies): (address, bytes).
STS3215_REGISTERS: dict[str, tuple[int, int]] = {
    "model_number": (3, 2),  # read-only; 777 on an STS3215
    "id": (5, 1),
    "baud_rate": (6, 1),  # 0 = 1 Mbps, 1 = 500 k, 2 = 250 k, 3 = 128 k, 4 = 115200, ...
    "min_position_limit": (9, 2),
    "max_position_limit": (11, 2),
    "operating_mode": (33, 1),  # 0 position, 1 wheel (speed), 2 PWM, 3 step
    "torque_enable": (40, 1),
    "acceleration": (41, 1),
    "goal_position": (42, 2),
    "goal_speed": (46, 2),
    "lock": (55, 1),  # 0 unlocks EEPROM writes (id, baud, limits); 1 locks them again
    "present_position": (56, 2),
    "present_velocity": (58, 2),  # steps/s
    "present_load": (60, 2),  # 0.1 % of the drive duty cycle
    "present_voltage": (62, 1),  # 0.1 V
    "present_temperature": (63, 1),  # deg C
    "status": (65, 1),  # the same fault bits as a status packet's error byte
    "moving": (66, 1),
}

# Sign bit of each sign-magnitude register, by address (the bus hands `_read`/`_write` addresses, not names).
# Bit 15 for positions and speeds, bit 10 for load: Feetech SCServo SMS_STS.cpp (ReadPos, ReadSpeed, ReadLoad,
# WriteSpe) and LeRobot's STS_SMS_SERIES_ENCODINGS_TABLE ("Present_Load": 10, the rest 15).
STS3215_SIGN_BITS: dict[int, int] = {42: 15, 46: 15, 56: 15, 58: 15, 60: 10}

# Status-packet error bits (scservo_sdk ERRBIT_*; Feetech protocol manual), for log messages.
SERVO_ERROR_BITS = {
    0x01: "input voltage",
    0x02: "angle sensor",
    0x04: "overheat",
    0x08: "overcurrent",
    0x20: "overload",
}

_NO_REPLY = (scs.COMM_RX_TIMEOUT, scs.COMM_RX_FAIL)


def encode_sign_magnitude(value: int, sign_bit: int) -> int:
    """`value` as STS sign-magnitude: |value| in the bits below `sign_bit`, `sign_bit` set when negative."""
    magnitude = abs(value)
    if magnitude >= 1 << sign_bit:
        raise ValueError(f"|value| must be below {1 << sign_bit} for a sign bit at {sign_bit}, got {value}")
    return magnitude | (1 << sign_bit) if value < 0 else magnitude


def decode_sign_magnitude(raw: int, sign_bit: int) -> int:
    magnitude = raw & ((1 << sign_bit) - 1)
    return -magnitude if raw & (1 << sign_bit) else magnitude


def describe_servo_error(error: int) -> str:
    names = [name for bit, name in SERVO_ERROR_BITS.items() if error & bit]
    return ", ".join(names) if names else f"unknown error bits 0x{error:02x}"


class _PortHandler(scs.PortHandler):
    """The SDK's port with a per-bus latency timer and a `clearPort` that discards stale input."""

    def __init__(self, port_name: str, latency_timer_ms: float):
        super().__init__(port_name)
        self.latency_timer_ms = latency_timer_ms

    def clearPort(self) -> None:  # noqa: N802 (the SDK's name)
        # Called by the SDK right before it writes each instruction packet. On this half-duplex bus every
        # byte waiting at that moment is stale (a late reply to an earlier, timed-out request, or the rest of
        # a sync read abandoned on a corrupt packet); left there it would be read as the new reply.
        self.ser.reset_input_buffer()

    def readPort(self, length: int) -> bytes:  # noqa: N802 (the SDK's name)
        # The SDK polls a non-blocking port in a tight loop until a reply or its timeout: a whole core spent
        # spinning, which on a small machine delays the processes it waits for. Sleep in select() until a byte
        # arrives or the packet timeout ends instead; the SDK's own timeout logic then runs unchanged.
        if not self.ser.in_waiting:
            remaining_s = (self.packet_timeout - self.getTimeSinceStart()) / 1000.0
            if remaining_s > 0:
                select.select([self.ser.fileno()], [], [], remaining_s)
        return self.ser.read(length)

    def setPacketTimeout(self, packet_length: int) -> None:  # noqa: N802 (the SDK's name)
        # The SDK's formula: transmission time + two USB latency-timer periods + 2 ms of servo turnaround.
        self.packet_start_time = self.getCurrentTime()
        self.packet_timeout = self.tx_time_per_byte * packet_length + 2.0 * self.latency_timer_ms + 2.0


class FeetechBus(MotorBus):
    """Feetech STS3215 servos on one serial port (see the module docstring for the SDK's role).

    `latency_timer_ms` is the USB-serial adapter's latency timer, which sizes every reply timeout (twice it,
    plus 2 ms); set it to what the adapter is configured for (1 ms on a tuned FTDI/CH340 setup).
    """

    PROTOCOL = "feetech-sts"
    REGISTERS = STS3215_REGISTERS
    SIGN_BITS = STS3215_SIGN_BITS

    def __init__(
        self,
        port: str,
        baudrate: int,
        ids: Sequence[int],
        retries: int = 3,
        latency_timer_ms: float = 16.0,  # the SDK's default: FTDI adapters ship with a 16 ms latency timer
    ):
        super().__init__(port, baudrate, ids, retries)
        if baudrate not in SUPPORTED_BAUDRATES:
            raise ValueError(f"`baudrate` must be one of {SUPPORTED_BAUDRATES}, got {baudrate}")
        if latency_timer_ms < 0:
            raise ValueError(f"`latency_timer_ms` must be >= 0, got {latency_timer_ms}")
        self.latency_timer_ms = latency_timer_ms
        self._port: _PortHandler | None = None
        # Not scs.PacketHandler(0): that would set the SDK's process-wide byte-order global as a side effect.
        self._packets = protocol_packet_handler()
        self._register_at = {address: name for name, (address, _) in self.REGISTERS.items()}
        self._reported_errors: dict[int, int] = {}  # servo -> last error byte logged

    # ---- port ----------------------------------------------------------------------------------------------
    def _open(self) -> None:
        port = _PortHandler(self.port, self.latency_timer_ms)
        try:
            opened = port.setBaudRate(self.baudrate)
        except OSError as exc:  # serial.SerialException is an OSError
            raise BusError(f"cannot open serial port {self.port}: {exc}") from None
        if not opened:
            raise BusError(f"cannot open serial port {self.port} at {self.baudrate} baud")
        self._port = port
        self._reported_errors.clear()

    def _close(self) -> None:
        if self._port is not None:
            port, self._port = self._port, None
            if port.is_open:
                port.closePort()

    # ---- transfers -----------------------------------------------------------------------------------------
    def _ping(self, servo: int) -> int:
        packet = [0xFF, 0xFF, servo, 2, scs.INST_PING, 0]  # header, id, length, instruction, checksum slot
        _, result, error = self._sdk(lambda: self._packets.txRxPacket(self._port, packet))
        self._check_result(result, servo)
        self._note_servo_error(servo, error)
        # Not the SDK's ping(), which also reads the model number but decodes it with the byte-order global.
        return self._read(servo, *self.REGISTERS["model_number"])

    def _read(self, servo: int, address: int, size: int) -> int:
        data, result, error = self._sdk(lambda: self._packets.readTxRx(self._port, servo, address, size))
        self._check_result(result, servo)
        self._note_servo_error(servo, error)
        return self._decode(servo, address, size, data)

    def _write(self, servo: int, address: int, size: int, value: int) -> None:
        data = self._encode(address, size, value)
        result, error = self._sdk(lambda: self._packets.writeTxRx(self._port, servo, address, size, data))
        self._check_result(result, servo)
        self._note_servo_error(servo, error)

    def _sync_read(self, servos: Sequence[int], address: int, size: int) -> dict[int, int]:
        group = scs.GroupSyncRead(self._port, self._packets, address, size)
        for servo in servos:
            group.addParam(servo)
        self._check_result(self._sdk(group.txPacket), None)
        values = {}
        for servo in servos:  # the servos answer in the order they were listed
            data, result, error = self._sdk(lambda s=servo: self._packets.readRx(self._port, s, size))
            self._check_result(result, servo)
            self._note_servo_error(servo, error)
            values[servo] = self._decode(servo, address, size, data)
        return values

    def _sync_write(self, values: dict[int, int], address: int, size: int) -> None:
        group = scs.GroupSyncWrite(self._port, self._packets, address, size)
        for servo, value in values.items():
            group.addParam(servo, self._encode(address, size, value))
        self._check_result(self._sdk(group.txPacket), None)

    # ---- helpers -------------------------------------------------------------------------------------------
    def _sdk(self, call):
        """`call()` into the SDK; an OS-level serial failure (adapter unplugged) becomes a BusError."""
        try:
            return call()
        except OSError as exc:
            self._port.is_using = False  # the SDK's busy flag would otherwise refuse every later transfer
            raise BusError(f"serial I/O on {self.port} failed: {exc}") from None

    def _check_result(self, result: int, servo: int | None) -> None:
        if result == scs.COMM_SUCCESS:
            return
        who = "sync instruction" if servo is None else f"servo {servo}"
        text = f"{who}: {self._packets.getTxRxResult(result)}"
        if result in _NO_REPLY:
            raise Retry("no_reply", text)
        if result == scs.COMM_RX_CORRUPT:
            raise Retry("corrupt", text)
        raise BusError(f"{text} (SDK result {result}) on {self.port}")

    def _note_servo_error(self, servo: int, error: int) -> None:
        """A set error byte is counted, and logged once per servo and kind: the reply is still good data."""
        if not error:
            return
        self.stats.servo_errors += 1
        if self._reported_errors.get(servo) != error:
            self._reported_errors[servo] = error
            problem = describe_servo_error(error)
            log.warning("bus %s: servo %d reports %s (error byte 0x%02x)", self.port, servo, problem, error)

    def _decode(self, servo: int, address: int, size: int, data: list[int]) -> int:
        if len(data) != size:  # the SDK hands back whatever the status packet held
            raise Retry(
                "corrupt", f"servo {servo}: status packet has {len(data)} data bytes, expected {size}"
            )
        raw = int.from_bytes(bytes(data), "little")
        sign_bit = self.SIGN_BITS.get(address)
        return raw if sign_bit is None else decode_sign_magnitude(raw, sign_bit)

    def _encode(self, address: int, size: int, value: int) -> list[int]:
        name = self._register_at.get(address, f"address {address}")
        sign_bit = self.SIGN_BITS.get(address)
        if sign_bit is not None:
            try:
                value = encode_sign_magnitude(value, sign_bit)
            except ValueError as exc:
                raise ValueError(f"{name}: {exc}") from None
        elif not 0 <= value < 1 << (8 * size):
            raise ValueError(f"{name} must be between 0 and {(1 << (8 * size)) - 1}, got {value}")
        return list(value.to_bytes(size, "little"))
