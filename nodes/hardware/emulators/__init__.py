"""Protocol-level servo emulators on pseudo-terminals: the real drivers run against them, byte for byte; and a
remote arm controller on our wire format (bridge.py)."""

import numpy as np

from nodes.hardware.emulators.dynamixel import DynamixelEmulator as DynamixelEmulator
from nodes.hardware.emulators.feetech import FeetechEmulator as FeetechEmulator


def start_emulator(profile, **kw):
    """The emulator for a robot profile's bus, with its servo ids, started, every joint at the profile's home
    pose (`launch.hw --port emulator`)."""
    from nodes.hardware.calibration import Calibration

    ids = [j.id for j in profile.joints]
    home = Calibration.from_profile(profile).to_ticks(profile.home())  # servo ticks by id
    if profile.bus.type == "zmq":  # a remote controller: its joints in radians, in its own order
        from nodes.hardware.bridge import to_rad
        from nodes.hardware.emulators.bridge import RemoteArmEmulator

        positions = np.zeros(max(ids) + 1)
        for servo, ticks in home.items():
            positions[servo] = to_rad(ticks)
        speed = max(j.max_velocity_rad_s for j in profile.joints)
        return RemoteArmEmulator(positions, speed, profile.state_hz, **kw).start()
    if profile.bus.type == "dynamixel-2.0":
        emulator = DynamixelEmulator(ids, **kw).start()
    elif profile.bus.type == "feetech-sts":
        emulator = FeetechEmulator(ids, **kw).start()
    else:
        raise ValueError(f"no emulator for a {profile.bus.type} bus (robot {profile.name!r})")
    for servo, ticks in home.items():
        emulator.move_by_hand(servo, ticks)  # the arm at rest in its home pose, as it would be switched on
    return emulator


class EmulatorProcess:
    """`start_emulator` in a process of its own, for launchers: whatever the launcher does (drawing the
    dashboard, stopping the graph) never delays a servo's reply. `.port` is the pty to open; `close()` stops
    it. A daemon process: it does not outlive the launcher."""

    def __init__(self, robot: str, timeout_s: float = 30.0):
        import multiprocessing

        context = multiprocessing.get_context("spawn")  # a clean interpreter: no copy of the launcher's state
        self._conn, child = context.Pipe()
        self.process = context.Process(target=_serve, args=(str(robot), child), daemon=True, name="emulator")
        self.process.start()
        if not self._conn.poll(timeout_s):
            self.process.terminate()
            raise RuntimeError(f"the servo emulator for {robot!r} did not start within {timeout_s:g} s")
        self.port, self.command_port = self._conn.recv()  # a remote controller has two endpoints

    def close(self) -> None:
        if self.process.is_alive():
            self._conn.send("stop")
            self.process.join(5)
            if self.process.is_alive():
                self.process.terminate()


def _serve(robot: str, conn) -> None:
    from runtime.profiles import load_robot

    emulator = start_emulator(load_robot(robot))
    try:
        conn.send((emulator.port, getattr(emulator, "command_port", None)))
        conn.recv()  # until told to stop, or the launcher is gone (EOFError)
    except EOFError:
        pass
    finally:
        emulator.close()
