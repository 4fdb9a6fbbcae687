"""Protocol-level servo emulators on pseudo-terminals: the real drivers run against them, byte for byte."""

from nodes.hardware.emulators.dynamixel import DynamixelEmulator as DynamixelEmulator
from nodes.hardware.emulators.feetech import FeetechEmulator as FeetechEmulator


def start_emulator(profile, **kw):
    """The emulator for a robot profile's bus, with its servo ids, started (`launch.hw --port emulator`)."""
    ids = [j.id for j in profile.joints]
    if profile.bus.type == "dynamixel-2.0":
        return DynamixelEmulator(ids, **kw).start()
    if profile.bus.type == "feetech-sts":
        return FeetechEmulator(ids, **kw).start()
    raise ValueError(f"no emulator for a {profile.bus.type} bus (robot {profile.name!r})")
