"""The Dynamixel Protocol 2.0 driver, through the real vendor SDK and pyserial, against emulated XL430 servos
on a pseudo-terminal; and the emulator's packet codec against the SDK's."""

import logging
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from dynamixel_sdk.protocol2_packet_handler import Protocol2PacketHandler
from dynamixel_sdk.robotis_def import COMM_SUCCESS
from hypothesis import given, settings
from hypothesis import strategies as st

from nodes.hardware.bus import BusError, NotConnectedError
from nodes.hardware.dynamixel import DynamixelBus
from nodes.hardware.emulators import DynamixelEmulator
from nodes.hardware.emulators.dynamixel import (
    MODEL_XL430_W250,
    PacketDecoder,
    crc16,
    encode_packet,
    stuff,
    unstuff,
)

ROOT = Path(__file__).resolve().parents[3]
IDS = [1, 2, 3, 4, 5, 6]
BAUD = 1_000_000


@pytest.fixture
def emulator():
    with DynamixelEmulator(IDS, seed=0) as emulator:
        yield emulator


@pytest.fixture
def bus(emulator):
    with DynamixelBus(emulator.port, BAUD, IDS) as bus:
        yield bus


def _fds_open_on(path: str) -> int:
    """How many of this process's file descriptors point at `path`."""
    count = 0
    for fd in os.listdir("/proc/self/fd"):
        try:
            count += os.readlink(f"/proc/self/fd/{fd}") == path
        except OSError:
            pass
    return count


def _wait_until(condition, timeout_s: float = 2.0, period_s: float = 0.01) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(period_s)
    return condition()


# ---- connecting --------------------------------------------------------------------------------------------
def test_connect_pings_every_servo_and_enables_no_torque(emulator):
    """connect() pings each id once, learns each model number, and leaves torque off."""
    with DynamixelBus(emulator.port, BAUD, IDS) as bus:
        assert bus.is_connected
        assert emulator.served["ping"] == len(IDS)
        assert bus.model_numbers == {servo: MODEL_XL430_W250 for servo in IDS}
        assert not any(emulator.torque(servo) for servo in IDS)


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="counts open descriptors through /proc")
def test_connect_refuses_a_missing_servo_naming_it_and_closes_the_port(emulator):
    """A servo id that does not answer makes connect() raise BusError naming that id; the bus stays
    disconnected and the port is closed again."""
    before = _fds_open_on(emulator.port)
    bus = DynamixelBus(emulator.port, BAUD, [1, 2, 9], retries=1)
    with pytest.raises(BusError, match=r"servo id 9\b"):
        bus.connect()
    assert not bus.is_connected
    assert _fds_open_on(emulator.port) == before


def test_a_nonexistent_port_is_refused_naming_it():
    """Opening a device that does not exist raises BusError with its path."""
    with pytest.raises(BusError, match="/dev/ttyDOESNOTEXIST0"):
        DynamixelBus("/dev/ttyDOESNOTEXIST0", BAUD, [1]).connect()


def test_using_the_bus_before_connect_says_to_connect(emulator):
    """Every transfer on a bus that is not connected raises NotConnectedError naming connect()."""
    bus = DynamixelBus(emulator.port, BAUD, IDS)
    for call in (
        lambda: bus.read("present_position", 1),
        lambda: bus.write("goal_position", 1, 2048),
        lambda: bus.sync_read("present_position"),
        lambda: bus.sync_write("goal_position", {1: 2048}),
        lambda: bus.ping(1),
    ):
        with pytest.raises(NotConnectedError, match=r"connect\(\)"):
            call()
    assert emulator.served == {}


def test_an_unknown_register_is_refused_naming_it(bus):
    """A register name not in the control table raises KeyError with that name."""
    with pytest.raises(KeyError, match="present_torque"):
        bus.read("present_torque", 1)


def test_configuration_is_validated():
    """A baud rate the servos cannot use, or a non-positive latency timer, is refused at construction."""
    with pytest.raises(ValueError, match="baudrate"):
        DynamixelBus("/dev/null", 1_500_000, [1])
    with pytest.raises(ValueError, match="latency_timer_ms"):
        DynamixelBus("/dev/null", BAUD, [1], latency_timer_ms=0)


# ---- reads and writes --------------------------------------------------------------------------------------
def test_write_then_read_returns_the_value_written(bus, emulator):
    """goal_position written to one servo reads back equal and is what it holds; the others keep theirs."""
    bus.write("goal_position", 3, 3071)
    assert bus.read("goal_position", 3) == 3071
    assert emulator.goal(3) == 3071
    assert emulator.goal(4) == 2048
    bus.write("position_p_gain", 3, 800)
    assert bus.read("position_p_gain", 3) == 800


def test_signed_registers_round_trip_negative_values(bus, emulator):
    """A negative goal (extended position mode) is written in two's complement, the servo moves below zero,
    and present_position and present_velocity read back negative."""
    bus.write("operating_mode", 1, 4)  # extended position: the 0..4095 limits no longer apply
    bus.write("goal_position", 1, -1000)
    assert bus.read("goal_position", 1) == -1000
    assert emulator.goal(1) == -1000
    bus.enable_torque([1])
    time.sleep(0.05)
    assert bus.read("present_velocity", 1) < 0  # still on its way down
    assert _wait_until(lambda: bus.read("present_position", 1) < -900)
    assert emulator.position(1) < -900


def test_values_that_do_not_fit_are_refused(bus, emulator):
    """A value outside the register's range, or one the SDK cannot frame, raises ValueError and nothing is
    sent."""
    with pytest.raises(ValueError, match="torque_enable"):
        bus.write("torque_enable", 1, 256)
    with pytest.raises(ValueError, match="torque_enable"):
        bus.write("torque_enable", 1, -1)
    with pytest.raises(ValueError, match="goal_position"):
        bus.sync_write("goal_position", {1: 2**31})
    with pytest.raises(ValueError, match="stuffing"):  # FF FF FD: the SDK would send it unstuffed
        bus.write("goal_position", 1, -131073)
    assert emulator.served.get("write", 0) == emulator.served.get("sync_write", 0) == 0


def test_a_write_the_servo_refuses_is_an_error(bus, emulator):
    """A write the servo rejects (read-only register; EEPROM with torque on) raises BusError naming the
    register, and the value is not applied."""
    with pytest.raises(BusError, match="present_position of servo 2.*refused"):
        bus.write("present_position", 2, 100)
    bus.enable_torque([2])
    with pytest.raises(BusError, match="max_position_limit of servo 2.*refused"):
        bus.write("max_position_limit", 2, 3000)
    assert bus.read("max_position_limit", 2) == 4095
    assert bus.stats.servo_errors == 2


# ---- motion ------------------------------------------------------------------------------------------------
def test_sync_write_goals_are_followed_with_torque_on(bus, emulator):
    """With torque on, positions from sync_read approach the sync_written goals monotonically and are within
    a few ticks of them after 0.35 s (tau 50 ms, 6 rad/s cap)."""
    goals = {servo: 2048 + (-1) ** servo * 100 * servo for servo in IDS}  # 1448..2648
    bus.sync_write("goal_position", goals)
    assert bus.sync_read("present_position") == {servo: 2048 for servo in IDS}
    bus.enable_torque()
    distances = []
    start = time.monotonic()
    while time.monotonic() - start < 0.35:
        positions = bus.sync_read("present_position")
        assert sorted(positions) == IDS
        distances.append(max(abs(positions[s] - goals[s]) for s in IDS))
        time.sleep(0.01)
    assert all(later <= earlier for earlier, later in zip(distances, distances[1:], strict=False))
    assert distances[0] > 300 and distances[-1] <= 5
    assert all(abs(emulator.position(s) - goals[s]) <= 5 for s in IDS)


def test_with_torque_off_goals_are_stored_but_nothing_moves(bus, emulator):
    """With torque off, sync_written goals land in the servos but present_position stays put."""
    goals = {servo: 1000 for servo in IDS}
    bus.sync_write("goal_position", goals)
    time.sleep(0.2)
    assert bus.sync_read("present_position") == {servo: 2048 for servo in IDS}
    assert bus.sync_read("goal_position") == goals
    assert bus.sync_read("present_velocity") == {servo: 0 for servo in IDS}


def test_goals_are_clamped_to_the_position_limits(bus, emulator):
    """In position mode a goal past max_position_limit stops at the limit."""
    bus.write("max_position_limit", 5, 2500)  # EEPROM: torque is still off
    bus.enable_torque([5])
    bus.write("goal_position", 5, 4000)
    assert _wait_until(lambda: bus.read("present_position", 5) >= 2500)
    time.sleep(0.1)
    assert bus.read("present_position", 5) == 2500
    assert (bus.read("moving", 5), bus.read("goal_position", 5)) == (0, 4000)


# ---- faults ------------------------------------------------------------------------------------------------
def test_corrupt_status_packets_are_retried_and_counted(bus, emulator):
    """Two corrupt status packets in a row: the read still returns the right value, after exactly two
    retries, each counted as corrupt."""
    bus.write("goal_position", 2, 1234)
    emulator.corrupt_next(2)
    assert bus.read("goal_position", 2) == 1234
    assert (bus.stats.retries, bus.stats.corrupt, bus.stats.failures) == (2, 2, 0)
    assert emulator.injected["corrupt"] == 2


def test_a_corrupt_packet_inside_a_sync_read_retries_the_whole_sync_read(bus, emulator):
    """A corrupt status packet from one servo of a sync_read costs one retry, and every servo's value is
    still returned."""
    emulator.corrupt_next(1)
    assert bus.sync_read("present_position") == {servo: 2048 for servo in IDS}
    assert (bus.stats.retries, bus.stats.corrupt) == (1, 1)
    assert emulator.served["sync_read"] == 2


def test_a_servo_that_stops_answering_fails_naming_servo_and_register(bus, emulator):
    """More missing replies than retries: BusError naming the servo and the register, one failure and
    retries+1 timeouts counted; the next transfer works again."""
    emulator.drop_next(bus.retries + 1)
    with pytest.raises(BusError, match="present_position of servo 4"):
        bus.read("present_position", 4)
    assert (bus.stats.failures, bus.stats.no_reply, bus.stats.retries) == (1, bus.retries + 1, bus.retries)
    assert bus.read("present_position", 4) == 2048


def test_a_slow_servo_within_the_timeout_costs_no_retry(bus, emulator):
    """Replies delayed 5 ms (under the SDK's 34 ms window at the default latency timer) are read without
    retries."""
    emulator.faults.slow_reply_ms = 5
    assert bus.sync_read("present_position") == {servo: 2048 for servo in IDS}
    assert bus.read("model_number", 6) == MODEL_XL430_W250
    assert bus.stats.retries == 0


def test_an_overloaded_servo_still_answers_but_stops_following(bus, emulator, caplog):
    """After an overload shutdown, reads still return values, each of its status packets counts a servo
    error, the warning is logged once, and it no longer follows goals while the others do."""
    bus.enable_torque()
    emulator.set_fault(3, "overload", True)
    caplog.set_level(logging.WARNING, logger="nodes.hardware.dynamixel")
    bus.sync_write("goal_position", {servo: 2548 for servo in IDS})
    time.sleep(0.3)
    for _ in range(3):
        positions = bus.sync_read("present_position")
    assert positions[3] == 2048 and all(positions[s] > 2500 for s in IDS if s != 3)
    assert bus.read("hardware_error_status", 3) & 0x20
    assert bus.read("torque_enable", 3) == 0
    assert bus.stats.servo_errors == 5  # three sync_reads, two reads: one alert each
    warnings = [r for r in caplog.records if "servo 3 reports a hardware error" in r.getMessage()]
    assert len(warnings) == 1
    bus.write("torque_enable", 3, 1)  # a shut-down servo keeps torque off until rebooted
    assert not emulator.torque(3)


def test_disconnect_turns_torque_off_on_every_servo(emulator):
    """disconnect() (here: leaving the `with` block) disables torque on every servo."""
    with DynamixelBus(emulator.port, BAUD, IDS) as bus:
        bus.enable_torque()
        # A sync write has no status packet: the servos act on it when the bytes arrive.
        assert _wait_until(lambda: all(emulator.torque(servo) for servo in IDS))
    assert not bus.is_connected
    assert _wait_until(lambda: not any(emulator.torque(servo) for servo in IDS))


_DRIVER_IN_A_CHILD = """
import sys
from nodes.hardware.dynamixel import DynamixelBus
with DynamixelBus(sys.argv[1], 1_000_000, [1, 2]) as bus:
    bus.write("goal_position", 2, 100)
    print(bus.sync_read("goal_position"))
"""


@pytest.mark.timeout(60)
def test_a_driver_in_another_process_uses_the_emulator(emulator):
    """The emulator's pty path works from another process, as the hardware node would open it."""
    child = subprocess.run(
        [sys.executable, "-c", _DRIVER_IN_A_CHILD, emulator.port],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=50,
    )
    assert child.returncode == 0, child.stderr
    assert child.stdout.strip() == "{1: 2048, 2: 100}"
    assert emulator.goal(2) == 100


# ---- the codec ---------------------------------------------------------------------------------------------
# Bodies rich in the byte patterns stuffing is about.
bodies = st.lists(
    st.one_of(
        st.binary(min_size=1, max_size=4), st.sampled_from([b"\xff\xff\xfd", b"\xff\xff\xfd\xfd", b"\xff"])
    ),
    min_size=1,
    max_size=24,
).map(b"".join)
servo_ids = st.integers(min_value=0, max_value=0xFE)


class _SdkPort:
    """Just enough of the SDK's PortHandler for its packet handler to send and receive from a buffer."""

    def __init__(self, incoming: bytes = b""):
        self.is_using, self.sent, self.incoming = False, b"", bytearray(incoming)

    def clearPort(self):  # noqa: N802 (the SDK's names)
        pass

    def writePort(self, packet):  # noqa: N802
        self.sent = bytes(packet)
        return len(packet)

    def readPort(self, length):  # noqa: N802
        chunk = bytes(self.incoming[:length])
        del self.incoming[:length]
        return chunk

    def isPacketTimeout(self):  # noqa: N802
        return not self.incoming


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=64), st.integers(min_value=0, max_value=0xFFFF))
def test_crc_matches_the_sdk(data, initial):
    """The emulator's own CRC-16 equals the SDK's updateCRC on any bytes and any running value."""
    assert crc16(data, initial) == Protocol2PacketHandler().updateCRC(initial, data, len(data))


@settings(max_examples=200, deadline=None)
@given(bodies)
def test_stuffing_round_trips_and_hides_every_header(body):
    """unstuff(stuff(x)) == x, and a stuffed body never contains a header (FF FF FD not followed by FD)."""
    stuffed = stuff(body)
    assert unstuff(stuffed) == body
    for i in range(len(stuffed) - 2):
        if stuffed[i : i + 3] == b"\xff\xff\xfd":
            assert stuffed[i + 3 : i + 4] == b"\xfd"


@settings(max_examples=200, deadline=None)
@given(servo_ids, bodies, st.binary(max_size=8), st.data())
def test_packets_survive_framing_in_any_chunking(servo_id, body, garbage, data):
    """Encoded packets decode to the same id and body when preceded by garbage and fed in arbitrary chunks."""
    garbage = garbage.replace(b"\xff", b"")  # garbage that cannot start a header
    wire = garbage + encode_packet(servo_id, body) + encode_packet(servo_id ^ 1, body[::-1])
    cuts = sorted(data.draw(st.lists(st.integers(0, len(wire)), max_size=6)))
    decoder, packets = PacketDecoder(), []
    for start, end in zip([0, *cuts], [*cuts, len(wire)], strict=True):
        packets += decoder.feed(wire[start:end])
    assert [(p.servo_id, p.body, p.crc_ok) for p in packets] == [
        (servo_id, body, True),
        (servo_id ^ 1, body[::-1], True),
    ]


@settings(max_examples=100, deadline=None)
@given(servo_ids, bodies)
def test_a_flipped_crc_byte_is_detected(servo_id, body):
    """A packet whose CRC was altered decodes as crc_ok=False, never as a valid packet."""
    packet = bytearray(encode_packet(servo_id, body))
    packet[-1] ^= 0xFF
    assert [p.crc_ok for p in PacketDecoder().feed(bytes(packet))] == [False]


@settings(max_examples=200, deadline=None)
@given(servo_ids, bodies)
def test_instruction_packets_match_the_sdks_bytes(servo_id, body):
    """For bodies that need no stuffing, the emulator builds exactly the bytes the SDK transmits. (With
    stuffing the SDK 4.1 sends the body unstuffed: its txPacket discards addStuffing's copy.)"""
    while b"\xff\xff\xfd" in body:
        body = body.replace(b"\xff\xff\xfd", b"\xfd")
    port = _SdkPort()
    txpacket = [0] * 7 + list(body) + [0, 0]
    txpacket[4], txpacket[5], txpacket[6] = servo_id, (len(body) + 2) & 0xFF, (len(body) + 2) >> 8
    assert Protocol2PacketHandler().txPacket(port, txpacket) == COMM_SUCCESS
    assert port.sent == encode_packet(servo_id, body)


@settings(max_examples=200, deadline=None)
@given(st.integers(min_value=0, max_value=0xFC), st.integers(0, 255), bodies)
def test_status_packets_are_read_by_the_sdk(servo_id, error, params):
    """The SDK's receiver accepts the emulator's status packets, stuffed or not, and recovers the id, the
    error byte and the parameters."""
    port = _SdkPort(encode_packet(servo_id, bytes([0x55, error]) + params))
    received, result = Protocol2PacketHandler().rxPacket(port, False)
    assert result == COMM_SUCCESS
    assert (received[4], received[8], bytes(received[9 : 9 + len(params)])) == (servo_id, error, params)
