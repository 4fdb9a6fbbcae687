"""Calibrate a real arm: `python -m launch.calibrate --profile koch-v1.1 --port /dev/ttyUSB0`.

With torque off, you put the arm in its home pose (every joint at the zero its profile describes) and
press Enter: those readings become the joints' zeros. Then you move every joint through its whole travel
and press Enter again: the ranges seen become the limits the hardware node will never command past. The
result goes to `--out` (default `calibration/<profile>.json`), written atomically; `launch.hw` loads it.
Directions come from the profile (a joint mounted the other way round has `direction = -1` there).

`--port emulator` runs against the protocol emulator on a pseudo-terminal (nothing moves it by hand, so it
ends refusing the unmoved joints: for trying the command out). `--home-now --record-s N` runs without
prompts: the pose at start is home, and ranges are recorded for N seconds. No file is written unless every
joint moved.
"""

import logging
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tyro
from rich.console import Console
from rich.live import Live
from rich.table import Table

from nodes.hardware.bus import BusError
from nodes.hardware.calibration import Calibration, JointCalibration
from runtime.profiles import ProfileError, load_robot

log = logging.getLogger("launch.calibrate")
READ_HZ = 50  # range recording: fast enough not to miss the ends of a quick sweep by hand
MIN_RANGE_TICKS = 20  # ~2 deg: a joint that moved less was not moved, and would get no room at all


@dataclass
class CalibrateConfig:
    profile: str
    """Robot profile (firmware_profiles/robots/<name>.toml)."""
    port: str | None = None
    """Serial port of the arm's bus (default: the profile's), or `emulator`."""
    out: Path | None = None
    """Calibration file to write (default: calibration/<profile>.json)."""
    home_now: bool = False
    """Take the pose at start as home, without a prompt."""
    record_s: float | None = None
    """Record ranges for this many seconds instead of until Enter."""


def record_ranges(bus, ids: list[int], stop: threading.Event, on_read=None) -> tuple[dict, dict]:
    """Lowest and highest present position per servo while `stop` is not set."""
    low, high = {}, {}
    while not stop.is_set():
        ticks = bus.sync_read("present_position")
        for servo in ids:
            low[servo] = min(low.get(servo, ticks[servo]), ticks[servo])
            high[servo] = max(high.get(servo, ticks[servo]), ticks[servo])
        if on_read is not None:
            on_read(ticks, low, high)
        stop.wait(1 / READ_HZ)
    return low, high


def calibrate(bus, profile, console: Console, home_now: bool, record_s: float | None) -> Calibration:
    bus.disable_torque()  # the arm must move freely by hand
    if not home_now:
        console.input("Torque is off. Put the arm in its home pose, then press Enter ")
    home = bus.sync_read("present_position")
    ids = [j.id for j in profile.joints]
    stop = threading.Event()
    table_rows: dict = {}

    def show(ticks, low, high):
        table_rows.update({s: (ticks[s], low[s], high[s]) for s in ids})

    if record_s is None:
        console.print("Move every joint through its whole travel, then press Enter.")
        waiter = threading.Thread(target=lambda: (console.input(""), stop.set()), daemon=True)
        waiter.start()
    else:
        threading.Timer(record_s, stop.set).start()
    result = {}
    reader = threading.Thread(
        target=lambda: result.update(zip(("low", "high"), record_ranges(bus, ids, stop, show), strict=True))
    )
    reader.start()
    with Live(console=console, refresh_per_second=4, transient=True) as live:
        while reader.is_alive():
            table = Table("joint", "id", "now", "min", "max", title="ranges so far (servo ticks)")
            for j in profile.joints:
                now, lo, hi = table_rows.get(j.id, ("", "", ""))
                table.add_row(j.name, str(j.id), str(now), str(lo), str(hi))
            live.update(table)
            time.sleep(0.25)
    joints = {
        j.name: JointCalibration(j.id, home[j.id], j.direction, result["low"][j.id], result["high"][j.id])
        for j in profile.joints
    }
    still = [name for name, c in joints.items() if c.max_ticks - c.min_ticks < MIN_RANGE_TICKS]
    if still:
        raise ValueError(
            f"joints {still} hardly moved (under {MIN_RANGE_TICKS} ticks): move each through its travel"
        )
    return Calibration(profile.name, joints)


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    cfg = tyro.cli(CalibrateConfig, args=argv, description=__doc__)
    console = Console()
    try:
        profile = load_robot(cfg.profile)
    except ProfileError as exc:
        console.print(f"[red]refused:[/red] {exc}")
        return 2
    if profile.bus.type == "zmq":
        console.print(f"[red]refused:[/red] {profile.name}'s controller is calibrated on its own side")
        return 2
    from nodes.hardware.node import make_bus

    port, emulator = cfg.port or profile.bus.port, None
    if port == "emulator":
        from nodes.hardware.emulators import EmulatorProcess

        emulator = EmulatorProcess(cfg.profile)
        port = emulator.port
    out = cfg.out or Path("calibration") / f"{profile.name}.json"
    try:
        with make_bus(profile, port) as bus:  # torque off again on the way out
            calibration = calibrate(bus, profile, console, cfg.home_now, cfg.record_s)
    except (BusError, ValueError) as exc:
        console.print(f"[red]refused:[/red] {exc}")
        return 2
    finally:
        if emulator is not None:
            emulator.close()
    out.parent.mkdir(parents=True, exist_ok=True)
    calibration.save(out)
    table = Table(
        "joint", "id", "zero", "direction", "min", "max", "range (deg)", title=f"calibration: {out}"
    )
    for name, c in calibration.joints.items():
        span = np.degrees((c.max_ticks - c.min_ticks) * 2 * np.pi / 4096)
        table.add_row(
            name,
            str(c.id),
            str(c.zero_ticks),
            f"{c.direction:+d}",
            str(c.min_ticks),
            str(c.max_ticks),
            f"{span:.0f}",
        )
    console.print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
