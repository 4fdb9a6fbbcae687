"""Dynamixel X-series servos (XL430-W250, XL330-M288 and the others sharing their control table) over
Protocol 2.0, through the vendor SDK (`dynamixel-sdk`).

The SDK frames packets and waits for status packets; this module maps its result codes onto the bus's
contract (`Retry` for a missing or corrupt status packet, `BusError` for the rest), turns register bytes into
signed or unsigned integers, and reports the servo's own error field instead of dropping it.

Control table: https://emanual.robotis.com/docs/en/dxl/x/xl430-w250/ (XL330-M288 has the same addresses
for every register below: https://emanual.robotis.com/docs/en/dxl/x/xl330-m288/).
"""

import logging
from collections.abc import Callable, Sequence
from typing import TypeVar

import serial
from dynamixel_sdk import GroupSyncRead, GroupSyncWrite, PacketHandler, PortHandler
from dynamixel_sdk.robotis_def import COMM_RX_CORRUPT, COMM_RX_FAIL, COMM_RX_TIMEOUT, COMM_SUCCESS

from nodes.hardware.bus import BusError, MotorBus, Retry

log = logging.getLogger(__name__)

T = TypeVar("T")

ERRBIT_ALERT = 0x80  # status error byte: hardware error, see hardware_error_status; the instruction ran
ERRNUM_MASK = 0x7F  # status error byte: an error number; the instruction was NOT carried out


class _PortHandler(PortHandler):
    """The SDK's port, with the USB adapter's latency timer per port instead of the SDK's module constant.

    The SDK waits `2 * LATENCY_TIMER + 2 ms` (plus wire time) for a status packet before declaring it
    missing; with the FTDI default of 16 ms that is ~34 ms per missing reply.
    """

    def __init__(self, port_name: str, latency_timer_ms: float):
        super().__init__(port_name)
        self.latency_timer_ms = latency_timer_ms

    def setPacketTimeout(self, packet_length):  # the SDK calls it by this name
        self.packet_start_time = self.getCurrentTime()
        self.packet_timeout = self.tx_time_per_byte * packet_length + self.latency_timer_ms * 2.0 + 2.0


class DynamixelBus(MotorBus):
    """A Dynamixel Protocol 2.0 bus; see `MotorBus` for the contract.

    Args:
        port: the serial device (/dev/ttyUSB0, or an emulator's pty).
        baudrate: one of `BAUDRATES`; the servos' baud_rate register must match.
        ids: the servo ids on the bus, all pinged on connect.
        retries: repeats of a transfer whose status packet is missing or corrupt.
        latency_timer_ms: the USB-serial adapter's latency timer, which sets how long the SDK waits for a
            status packet. 16 is the FTDI default and safe for any adapter. For a faster timeout, lower the
            adapter's timer first (`echo 1 > /sys/bus/usb-serial/devices/ttyUSB0/latency_timer`) and pass
            1 here; passing 1 with the adapter at 16 would time out on replies that are merely buffered.
            A pty has no such timer.
    """

    PROTOCOL = "dynamixel-2.0"
    # name -> (address, size in bytes), from the XL430-W250 control table (e-Manual, link above).
    REGISTERS = {
        "model_number": (0, 2),
        "id": (7, 1),
        "baud_rate": (8, 1),
        "operating_mode": (11, 1),
        "max_position_limit": (48, 4),  # max before min in the table: 48, then 52
        "min_position_limit": (52, 4),
        "torque_enable": (64, 1),
        "led": (65, 1),
        "hardware_error_status": (70, 1),
        "position_p_gain": (84, 2),
        "goal_position": (116, 4),
        "moving": (122, 1),
        "present_load": (126, 2),
        "present_velocity": (128, 4),
        "present_position": (132, 4),
        "present_temperature": (146, 1),
    }
    # Two's complement registers. Positions are negative in the extended position modes; goal_position is
    # here too so that a value written reads back as itself.
    SIGNED = frozenset({"goal_position", "present_load", "present_velocity", "present_position"})
    # Rates both the X series and the SDK's port handler support.
    BAUDRATES = (9600, 57600, 115200, 1_000_000, 2_000_000, 3_000_000, 4_000_000)

    def __init__(
        self,
        port: str,
        baudrate: int,
        ids: Sequence[int],
        retries: int = 3,
        latency_timer_ms: float = 16.0,
    ):
        super().__init__(port, baudrate, ids, retries)
        if baudrate not in self.BAUDRATES:
            raise ValueError(f"`baudrate` must be one of {self.BAUDRATES}, got {baudrate}")
        if not latency_timer_ms > 0:
            raise ValueError(f"`latency_timer_ms` must be > 0, got {latency_timer_ms}")
        self.latency_timer_ms = latency_timer_ms
        self.model_numbers: dict[int, int] = {}  # filled by the pings of connect()
        self._packets = PacketHandler(2.0)
        self._port: _PortHandler | None = None
        self._names = {address: name for name, (address, _) in self.REGISTERS.items()}
        self._signed_addresses = {self.REGISTERS[name][0] for name in self.SIGNED}
        self._alerted: set[int] = set()  # servos whose hardware alert was already logged

    # ---- MotorBus ------------------------------------------------------------------------------------------
    def _open(self) -> None:
        port = _PortHandler(self.port, self.latency_timer_ms)
        try:
            opened = port.setBaudRate(self.baudrate)  # opens the port
        except (serial.SerialException, OSError) as exc:
            raise BusError(f"cannot open Dynamixel bus port {self.port!r}: {exc}") from None
        if not opened:
            raise BusError(f"cannot open Dynamixel bus port {self.port!r} at {self.baudrate} baud")
        self._port = port
        self._alerted.clear()

    def _close(self) -> None:
        port, self._port = self._port, None
        if port is None or not port.is_open:
            return
        try:
            port.ser.flush()  # the torque-off sync write has no reply: wait until it has left the port
        except (serial.SerialException, OSError) as exc:
            log.warning("bus %s: draining the port before closing failed: %s", self.port, exc)
        try:
            port.closePort()
        except (serial.SerialException, OSError) as exc:
            log.warning("bus %s: closing the port failed: %s", self.port, exc)

    def _ping(self, servo: int) -> int:
        what = f"ping of servo {servo}"
        model, result, error = self._sdk(what, lambda port: self._packets.ping(port, servo))
        self._check_result(result, what)
        self._check_status(servo, error, what)
        self.model_numbers[servo] = model
        return model

    def _read(self, servo: int, address: int, size: int) -> int:
        # readTxRx rather than read{1,2,4}ByteTxRx: one path for every size, and a status packet without its
        # data (a refused read) becomes a BusError here instead of an IndexError inside the SDK.
        what = f"read {self._name(address)} of servo {servo}"
        data, result, error = self._sdk(what, lambda port: self._packets.readTxRx(port, servo, address, size))
        self._check_result(result, what)
        self._check_status(servo, error, what)
        return self._decode(data, address, size, what)

    def _write(self, servo: int, address: int, size: int, value: int) -> None:
        what = f"write {self._name(address)} of servo {servo}"
        data = list(self._encode(value, address, size))
        result, error = self._sdk(
            what, lambda port: self._packets.writeTxRx(port, servo, address, size, data)
        )
        self._check_result(result, what)
        self._check_status(servo, error, what)

    def _sync_read(self, servos: Sequence[int], address: int, size: int) -> dict[int, int]:
        if len(set(servos)) != len(servos):
            raise ValueError(f"sync_read needs distinct servo ids, got {list(servos)}")
        if not servos:
            return {}
        name = self._name(address)
        group = GroupSyncRead(self._port, self._packets, address, size)
        for servo in servos:
            group.addParam(servo)
        self._check_result(self._sdk(f"sync_read {name}", lambda port: group.txPacket()), f"sync_read {name}")
        # Each servo's status packet, in the order the instruction lists them. This is the loop of
        # GroupSyncRead.rxPacket, which drops every packet's error byte: an overload during the control loop's
        # sync_read would pass unseen.
        values = {}
        for servo in servos:
            what = f"sync_read {name} of servo {servo}"
            data, result, error = self._sdk(what, lambda port, s=servo: self._packets.readRx(port, s, size))
            self._check_result(result, what)
            self._check_status(servo, error, what)
            values[servo] = self._decode(data, address, size, what)
        return values

    def _sync_write(self, values: dict[int, int], address: int, size: int) -> None:
        if not values:
            return
        what = f"sync_write {self._name(address)}"
        group = GroupSyncWrite(self._port, self._packets, address, size)
        for servo, value in values.items():
            group.addParam(servo, list(self._encode(value, address, size)))
        self._check_result(self._sdk(what, lambda port: group.txPacket()), what)

    # ---- helpers -------------------------------------------------------------------------------------------
    def _name(self, address: int) -> str:
        return self._names.get(address, f"address {address}")

    def _sdk(self, what: str, call: Callable[[_PortHandler], T]) -> T:
        """`call(port)`, with an unplugged adapter (an OSError in pyserial) turned into a BusError."""
        port = self._port
        if port is None:
            raise BusError(f"{what}: the port {self.port} is not open")
        try:
            return call(port)
        except (serial.SerialException, OSError) as exc:
            port.is_using = False  # the SDK sets it on transmit and clears it only when a receive completes
            raise BusError(f"{what} on {self.port}: {exc} (adapter unplugged?)") from None

    def _check_result(self, result: int, what: str) -> None:
        """The SDK's communication result: `Retry` for a missing or corrupt status packet, else BusError."""
        if result == COMM_SUCCESS:
            return
        if result in (COMM_RX_TIMEOUT, COMM_RX_FAIL):
            kind, detail = "no_reply", f"no status packet for {what}"
        elif result == COMM_RX_CORRUPT:
            kind, detail = "corrupt", f"corrupt status packet for {what}"
        else:
            raise BusError(f"{what} on {self.port}: {self._packets.getTxRxResult(result)}")
        # A late or partial packet left in the receive buffer must not be taken for the retry's reply. (The
        # SDK clears it again before transmitting; clearing here does not depend on that.)
        if self._port is not None:
            self._port.clearPort()
        raise Retry(kind, detail)

    def _check_status(self, servo: int, error: int, what: str) -> None:
        """The status packet's error byte. An error number means the servo refused the instruction: BusError.
        The alert bit alone means a hardware error (overload, overheating...) while the instruction ran: the
        value is valid, so it is counted and logged once per servo, not raised."""
        if not error:
            return
        self.stats.servo_errors += 1
        if error & ERRNUM_MASK:
            reason = self._packets.getRxPacketError(error & ERRNUM_MASK)
            raise BusError(
                f"{what} on {self.port}: refused by the servo: {reason} (error byte 0x{error:02x})"
            )
        if servo not in self._alerted:
            self._alerted.add(servo)
            log.warning(
                "bus %s: servo %d reports a hardware error (alert bit in its status packet); read "
                "hardware_error_status for the cause. A shut-down servo keeps torque off until rebooted. "
                "Later alerts from it are counted in stats.servo_errors, not logged.",
                self.port,
                servo,
            )

    def _decode(self, data: list[int], address: int, size: int, what: str) -> int:
        if len(data) != size:
            raise BusError(f"{what} on {self.port}: expected {size} data bytes, got {len(data)}")
        return int.from_bytes(bytes(data), "little", signed=address in self._signed_addresses)

    def _encode(self, value: int, address: int, size: int) -> bytes:
        """Little-endian register bytes; a signed register takes two's complement, and a value that does not
        fit the register is refused rather than wrapped."""
        signed = address in self._signed_addresses
        bits = 8 * size
        low, high = (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if signed else (0, (1 << bits) - 1)
        if not low <= value <= high:
            raise ValueError(f"{self._name(address)} must be between {low} and {high}, got {value}")
        data = value.to_bytes(size, "little", signed=signed)
        if b"\xff\xff\xfd" in data:
            # dynamixel-sdk 4.1 Protocol2PacketHandler.txPacket discards the stuffed copy addStuffing builds
            # and sends these bytes as they are: a servo would read a packet header inside the packet.
            raise ValueError(
                f"{self._name(address)}: {value} encodes as {data.hex(' ')}, which the SDK sends without "
                "Protocol 2.0 byte stuffing; refusing rather than sending a packet the servo may misframe"
            )
        return data
