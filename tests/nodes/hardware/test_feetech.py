"""The Feetech STS bus driver, run for real (pyserial + Feetech's SDK) against STS3215s emulated on a pty."""

import logging
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import scservo_sdk as scs
from hypothesis import given, settings
from hypothesis import strategies as st
from scservo_sdk.protocol_packet_handler import protocol_packet_handler

from nodes.hardware.bus import BusError, NotConnectedError
from nodes.hardware.emulators.feetech import (
    FeetechEmulator,
    Packet,
    _Servo,
    decode_packets,
    encode_packet,
)
from nodes.hardware.feetech import FeetechBus, decode_sign_magnitude, encode_sign_magnitude

pytestmark = pytest.mark.skipif(not Path("/dev/ptmx").exists(), reason="needs pseudo-terminals")

IDS = [1, 2, 3, 4, 5, 6]
ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture
def emulator():
    with FeetechEmulator(IDS) as emu:
        yield emu


@pytest.fixture
def bus(emulator):
    with FeetechBus(emulator.port, 1_000_000, IDS) as connected:
        yield connected


def fds_open_on(path: str) -> int:
    """How many of this process's file descriptors point at `path`."""
    count = 0
    for fd in os.listdir("/proc/self/fd"):
        try:
            count += os.readlink(f"/proc/self/fd/{fd}") == path
        except OSError:
            pass
    return count


def wait_for(condition, timeout_s: float = 3.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.01)
    return condition()


# ---- connection --------------------------------------------------------------------------------------------
def test_connect_pings_every_servo(emulator):
    """connect() pings each configured id once, gets STS3215 model numbers back, and enables no torque."""
    bus = FeetechBus(emulator.port, 1_000_000, IDS)
    bus.connect()
    try:
        assert bus.is_connected
        assert emulator.served["ping"] == len(IDS)
        assert all(bus.ping(servo) == 777 for servo in IDS)
        assert not any(emulator.torque(servo) for servo in IDS)
    finally:
        bus.disconnect()


def test_missing_servo_is_refused_by_id_and_port_closed(emulator):
    """An id that does not answer fails connect() with a BusError naming it, and the port is closed again."""
    before = fds_open_on(emulator.port)
    bus = FeetechBus(emulator.port, 1_000_000, [1, 2, 9])
    with pytest.raises(BusError, match="servo id 9"):
        bus.connect()
    assert not bus.is_connected
    assert fds_open_on(emulator.port) == before


def test_emulator_serves_another_process():
    """The emulator's pty path works from another process: a driver here talks to servos emulated there."""
    serve = (
        "from nodes.hardware.emulators.feetech import FeetechEmulator as E\n"
        "import sys\nwith E([1, 2]) as emu:\n    print(emu.port, flush=True)\n    sys.stdin.read()\n"
    )
    child = subprocess.Popen(
        [sys.executable, "-c", serve], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=ROOT
    )
    try:
        with FeetechBus(child.stdout.readline().strip(), 1_000_000, [1, 2]) as bus:
            assert bus.sync_read("model_number") == {1: 777, 2: 777}
    finally:
        child.stdin.close()
        child.wait(timeout=10)


def test_use_before_connect_says_what_to_call(emulator):
    """A transfer on a bus that is not connected raises NotConnectedError pointing at connect()."""
    bus = FeetechBus(emulator.port, 1_000_000, IDS)
    with pytest.raises(NotConnectedError, match="connect"):
        bus.read("present_position", 1)
    with pytest.raises(NotConnectedError):
        bus.sync_write("goal_position", {1: 2048})


def test_nonexistent_port_is_named():
    """Opening a serial port that does not exist raises BusError naming that port."""
    bus = FeetechBus("/dev/does-not-exist-ttyUSB9", 1_000_000, [1])
    with pytest.raises(BusError, match="/dev/does-not-exist-ttyUSB9"):
        bus.connect()
    assert not bus.is_connected


def test_unknown_register_is_a_key_error(bus):
    """A register name outside the STS3215 table raises KeyError listing the known names."""
    with pytest.raises(KeyError, match="present_position"):
        bus.read("goal_current", 1)


def test_disconnect_disables_torque_on_every_servo(emulator):
    """disconnect() leaves every servo with torque off, including ones the caller switched on."""
    bus = FeetechBus(emulator.port, 1_000_000, IDS)
    bus.connect()
    bus.enable_torque()
    assert wait_for(lambda: all(emulator.torque(servo) for servo in IDS))  # sync writes are not answered
    bus.disconnect()
    assert wait_for(lambda: not any(emulator.torque(servo) for servo in IDS))
    assert not bus.is_connected


# ---- registers ---------------------------------------------------------------------------------------------
def test_read_write_round_trip(bus, emulator):
    """A written register reads back unchanged, one- and two-byte, and reaches the servo's memory."""
    bus.write("acceleration", 3, 50)
    bus.write("goal_position", 3, 1234)
    assert bus.read("acceleration", 3) == 50
    assert bus.read("goal_position", 3) == 1234
    assert emulator.goal(3) == 1234
    assert bus.read("acceleration", 4) == 0  # the other servos are untouched


def test_signed_registers_use_sign_magnitude(bus, emulator):
    """goal_speed travels as sign-magnitude (bit 15 = sign), so -300 is 0x812C on the wire and reads back as
    -300; a value whose magnitude needs the sign bit is refused before anything is sent."""
    bus.write("goal_speed", 2, -300)
    assert emulator.register(2, 46, 2) == 0x8000 | 300
    assert bus.read("goal_speed", 2) == -300
    with pytest.raises(ValueError, match="goal_speed"):
        bus.write("goal_speed", 2, -40000)
    with pytest.raises(ValueError, match="acceleration"):
        bus.write("acceleration", 2, 256)


def test_velocity_sign_follows_direction(bus):
    """present_velocity decodes negative while a servo moves toward a lower position, positive upward."""
    bus.enable_torque()
    bus.sync_write("goal_position", {1: 500, 2: 3500})
    time.sleep(0.05)
    velocity = bus.sync_read("present_velocity", [1, 2])
    assert velocity[1] < -100 and velocity[2] > 100


# ---- motion ------------------------------------------------------------------------------------------------
def test_goals_are_reached_with_torque_on(bus, emulator):
    """With torque on, sync-written goals are reached (within 2 ticks) as read back by sync_read."""
    goals = {servo: 1000 + 400 * k for k, servo in enumerate(IDS)}
    bus.enable_torque()
    bus.sync_write("goal_position", goals)
    assert wait_for(lambda: {servo: emulator.goal(servo) for servo in IDS} == goals)

    def arrived():
        present = bus.sync_read("present_position")
        return all(abs(present[servo] - goals[servo]) <= 2 for servo in IDS)

    assert wait_for(arrived), bus.sync_read("present_position")


def test_goals_are_ignored_with_torque_off(bus):
    """With torque off, sync-written goals do not move the servos."""
    start = bus.sync_read("present_position")
    bus.sync_write("goal_position", {servo: 100 for servo in IDS})
    time.sleep(0.3)  # 6 time constants: a powered servo would have covered most of the way
    assert bus.sync_read("present_position") == start


# ---- faults ------------------------------------------------------------------------------------------------
def test_corrupt_replies_are_retried(bus, emulator):
    """Two corrupt status packets cost two retries, are counted as corrupt, and the read still succeeds."""
    emulator.corrupt_next(2)
    assert bus.read("present_position", 4) == 2048
    assert (bus.stats.retries, bus.stats.corrupt, bus.stats.failures) == (2, 2, 0)


def test_missing_replies_fail_naming_servo_and_register(bus, emulator):
    """When every try goes unanswered, the BusError names the servo and the register, one failure is
    counted, and the bus works again afterwards."""
    emulator.drop_next(bus.retries + 1)
    with pytest.raises(BusError, match=r"present_position of servo 3"):
        bus.read("present_position", 3)
    assert bus.stats.failures == 1
    assert bus.stats.no_reply == bus.retries + 1
    assert bus.read("present_position", 3) == 2048


def test_abandoned_replies_are_not_taken_for_the_next(emulator):
    """Replies left on the wire by a failed sync read are discarded, not read as the next transfer's reply."""
    with FeetechBus(emulator.port, 1_000_000, IDS, retries=0) as bus:
        bus.write("goal_speed", 2, 77)
        emulator.corrupt_next(1)  # servo 1's reply; servos 2..6 still answer with present_position 2048
        with pytest.raises(BusError, match="servo 1"):
            bus.sync_read("present_position")
        assert bus.read("goal_speed", 2) == 77


def test_overloaded_servo_still_answers_and_is_counted(bus, emulator, caplog):
    """An overloaded servo's replies still carry data; each counts as a servo error, the warning is logged
    once, and the servo no longer follows its goal while the others do."""
    bus.enable_torque()
    emulator.set_fault(2, "overload", True)
    with caplog.at_level(logging.WARNING, logger="nodes.hardware.feetech"):
        bus.sync_write("goal_position", {servo: 1000 for servo in IDS})
        reads = []
        assert wait_for(lambda: reads.append(bus.sync_read("present_position")) or reads[-1][1] == 1000)
    assert len(reads) >= 2 and all(present[2] == 2048 for present in reads)
    assert bus.stats.servo_errors == len(reads)
    assert bus.read("status", 2) & 0x20
    assert len([r for r in caplog.records if "overload" in r.getMessage()]) == 1


# ---- the wire format and the emulator's motor --------------------------------------------------------------
class _CapturePort:
    """Just enough of the SDK's PortHandler to capture an instruction packet and replay a status packet."""

    def __init__(self, incoming: bytes = b""):
        self.is_using, self.sent, self.incoming = False, b"", bytearray(incoming)

    def clearPort(self):  # noqa: N802 (the SDK's name)
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


@settings(max_examples=300, deadline=None)
@given(
    servo=st.integers(0, 0xFD),
    instruction=st.integers(0, 255),
    error=st.integers(0, 0x7F),
    params=st.binary(max_size=200),
    noise=st.binary(max_size=8).map(lambda b: b.replace(b"\xff", b"")),
    checksum_flip=st.one_of(st.just(0), st.integers(1, 255)),
)
def test_packet_codec_round_trips_and_agrees_with_the_sdk(
    servo, instruction, error, params, noise, checksum_flip
):
    """The emulator's packets round-trip through its own parser (after line noise), the SDK builds the same
    bytes for the same instruction, and the SDK and the emulator agree on which status packets are intact."""
    wire = encode_packet(servo, instruction, params)
    buffer = bytearray(noise + wire)
    assert decode_packets(buffer) == ([Packet(servo, instruction, params)], 0) and not buffer

    sdk, port = protocol_packet_handler(), _CapturePort()
    assert sdk.txPacket(port, [0, 0, servo, len(params) + 2, instruction, *params, 0]) == scs.COMM_SUCCESS
    assert port.sent == wire

    status = bytearray(encode_packet(servo, error, params))
    status[-1] ^= checksum_flip
    packets, bad = decode_packets(bytearray(status))
    received, result = sdk.rxPacket(_CapturePort(bytes(status)))
    emulator_accepts = bad == 0 and packets == [Packet(servo, error, params)]
    assert (result == scs.COMM_SUCCESS) == emulator_accepts == (checksum_flip == 0)
    if emulator_accepts:
        assert bytes(received) == bytes(status)


@given(value=st.integers(-(2**15) + 1, 2**15 - 1), sign_bit=st.sampled_from([10, 15]))
def test_sign_magnitude_round_trips(value, sign_bit):
    """Every value with |value| < 2**sign_bit survives the driver's sign-magnitude encode and decode."""
    if abs(value) < 1 << sign_bit:
        assert decode_sign_magnitude(encode_sign_magnitude(value, sign_bit), sign_bit) == value
    else:
        with pytest.raises(ValueError):
            encode_sign_magnitude(value, sign_bit)


@given(
    goal=st.integers(0, 4095),
    split=st.floats(0.0, 1.0),
    duration=st.floats(0.0, 1.0),
)
def test_emulated_motor_is_exact_and_speed_capped(goal, split, duration):
    """The emulated motor integrates exactly (advancing in two steps lands where one step does), never
    exceeds its speed cap, and never overshoots its goal."""
    tau_s, max_speed = 0.05, 6.0 * 4096 / (2 * math.pi)
    one, two = _Servo(1, 0.0), _Servo(1, 0.0)
    for servo in (one, two):
        servo.put(40, 1, 1)  # torque on
        servo.put(42, 2, goal)
    one.advance(duration, tau_s, max_speed)
    two.advance(duration * split, tau_s, max_speed)
    two.advance(duration, tau_s, max_speed)
    assert one.position == pytest.approx(two.position, abs=1e-6)
    assert abs(one.position - 2048) <= max_speed * duration + 1e-6
    assert min(2048, goal) - 1e-9 <= one.position <= max(2048, goal) + 1e-9
    assert abs(one.velocity) <= max_speed + 1e-9
