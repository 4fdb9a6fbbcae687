"""Drive a real arm: `python -m launch.hw --profile koch-v1.1 --port /dev/ttyUSB0 --camera 0 --mic default`.

The graph of `launch.sim` with the hardware node (nodes/hardware: the profile's servo bus, calibration,
safety filter, watchdog) in place of the sim node: the camera and microphone stream into the brain with the
arm's joints and commands, the brain plans toward reach goals from the goal node, and its actions go to the
servos through the safety filter. The same live dashboard, `--seconds`, `--status-file` and `--record`.

Before anything starts, the profile is validated and the bus is opened and every servo pinged: a port that
does not exist, a servo id that does not answer or an inconsistent profile stops the start with a message
naming it, and no torque is enabled. `--port emulator` runs against the protocol emulator on a
pseudo-terminal (nodes/hardware/emulators): everything but the servos is real. `--profile zmq-bridge` drives
an arm with its own controller over our wire format (nodes/hardware/bridge.py); its emulator is a remote
controller on ZeroMQ sockets.

Without `--camera` and `--mic` the brain cannot see (its world model reads both): the arm is connected,
holds where it is with torque on, and the dashboard shows its joints.

The shipped world model learned the simulated arm. On a real arm the brain plans with it as if the arm were
that one (each joint driven by the action channel its profile names): the plumbing, timing and safety are
real, the plans are not yet good ones. Collecting episodes on the real arm and training on them is what
makes them good.
"""

import logging
import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import tyro
import yaml

from launch.sim import MERGED_GRAPH_PREFIX, SimConfig, main, probe_sensor
from runtime.graph import GRAPHS_DIR, GraphError, load_graph

log = logging.getLogger("launch.hw")
BUSES = ("dynamixel-2.0", "feetech-sts", "zmq")  # serial servos, or a remote controller (bridge.py)


@dataclass
class HwConfig:
    profile: str
    """Robot profile (firmware_profiles/robots/<name>.toml): koch-v1.1, so100, zmq-bridge."""
    port: str | None = None
    """Serial port of the arm's bus, or a remote controller's endpoint (`zmq-bridge`) (default: the
    profile's), or `emulator` (the protocol emulator)."""
    calibration: Path | None = None
    """Calibration file from `launch.calibrate` (default: calibration/<profile>.json if it exists, else the
    profile's offsets)."""
    camera: str | None = None
    """The camera the brain sees through: a device index (`0`), a video file or a stream URL."""
    mic: str | None = None
    """The microphone: a PortAudio device name or index, or a WAV file."""
    policy: Literal["mpc", "actor"] = "mpc"
    """Who acts: the planner, or the actor distilled from it."""
    goal_period_s: float = 8.0
    """A new reach goal this often."""
    seconds: float | None = None
    """Stop after this many seconds (default: until Ctrl-C)."""
    status_file: Path | None = None
    """Write the dashboard's figures here as JSON, once a second and at exit."""
    record: Path | None = None
    """Record every topic to this MCAP file."""
    logs: Path | None = None
    """Directory for each node's log file (default: a temporary run directory)."""
    seed: int = 0
    """Seed of the first goal."""


def probe_bus(profile, port: str, command_port: str | None = None) -> None:
    """Open the bus and ping every servo as the node will, then close it; ValueError naming the port or the
    servo id that failed (a remote controller: its endpoint). Torque is not enabled (closing turns it off,
    which it already is)."""
    from nodes.hardware.bus import BusError
    from nodes.hardware.node import make_bus

    serial = profile.bus.type != "zmq"
    if serial and port != "emulator" and not Path(port).exists():
        raise ValueError(f"port {port} does not exist (is the arm's USB adapter plugged in? `ls /dev/tty*`)")
    try:
        with make_bus(profile, port, command_port=command_port):
            pass
    except BusError as exc:
        raise ValueError(str(exc)) from None


def prepare(cfg: HwConfig) -> tuple:
    """Everything that can refuse bad input, before any process starts: (graph, params, emulator or None)."""
    from nodes.hardware.calibration import Calibration, CalibrationError
    from runtime.profiles import load_robot

    profile = load_robot(cfg.profile)  # ProfileError (a ValueError) names the field
    if profile.bus.type not in BUSES:
        raise ValueError(
            f"robot {profile.name!r} has a {profile.bus.type} bus; launch.hw drives "
            f"{', '.join(BUSES)} buses; the simulated arm runs with launch.sim"
        )
    if not cfg.goal_period_s > 0:
        raise ValueError(f"`--goal-period-s` must be > 0, got {cfg.goal_period_s}")
    calibration = cfg.calibration
    if calibration is None and (Path("calibration") / f"{profile.name}.json").exists():
        calibration = Path("calibration") / f"{profile.name}.json"
    if calibration is not None:
        try:
            Calibration.load(calibration, profile)
        except CalibrationError as exc:
            raise ValueError(f"`--calibration`: {exc}") from None
    emulator = None
    if (cfg.port or profile.bus.port) == "emulator":
        from nodes.hardware.emulators import EmulatorProcess

        emulator = EmulatorProcess(cfg.profile)
    port = emulator.port if emulator is not None else (cfg.port or profile.bus.port)
    command_port = emulator.command_port if emulator is not None else None  # a remote controller's
    try:
        probe_bus(profile, port, command_port)
        raw = yaml.safe_load((GRAPHS_DIR / "hw.yaml").read_text())
        nodes = raw["nodes"]
        nodes["arm"]["params"].update(robot=profile.name, port=port, calibration=str(calibration or "none"))
        if command_port is not None:
            nodes["arm"]["params"]["command_port"] = command_port
        nodes["goal"]["params"].update(period_s=cfg.goal_period_s, seed=cfg.seed)
        nodes["brain"]["params"]["policy"] = cfg.policy
        sensors = {}
        if cfg.camera is not None:
            source = int(cfg.camera) if cfg.camera.isdigit() else cfg.camera
            sensors["camera"] = {"source": source, "width": 64, "height": 64, "fps": 30}
        if cfg.mic is not None:
            mic = {"file": cfg.mic} if cfg.mic.lower().endswith(".wav") else {"device": cfg.mic}
            sensors["microphone"] = mic if not cfg.mic.isdigit() else {"device": int(cfg.mic)}
        for node, params in sensors.items():
            problem = probe_sensor(node, params)
            if problem is not None:
                raise ValueError(problem)
            nodes[node]["params"].update(params)
        if set(sensors) != {"camera", "microphone"}:  # blind: the arm alone, holding where it is
            if sensors:
                raise ValueError(
                    "the brain reads a camera and a microphone: give both --camera and --mic, or neither"
                )
            for node in ("camera", "microphone", "brain", "goal"):
                del nodes[node]
            nodes["arm"]["subscribes"] = []
        path = Path(tempfile.mkdtemp(prefix=MERGED_GRAPH_PREFIX)) / "hw.yaml"
        path.write_text(yaml.safe_dump(raw, sort_keys=False))
        graph = load_graph(path)
        if "brain" in graph.nodes:
            from nodes.brain import check_params

            try:
                check_params(dict(graph.nodes["brain"].params), graph)
            except ValueError as exc:
                raise ValueError(f"nodes.brain.params: {exc}") from None
    except BaseException:
        if emulator is not None:
            emulator.close()
        raise
    return graph, {}, emulator


def cli(argv: list[str] | None = None) -> int:
    try:
        cfg = tyro.cli(HwConfig, args=argv, description=__doc__)
        graph, params, emulator = prepare(cfg)
    except (
        ValueError,
        GraphError,
    ) as exc:  # bad profile, port, servo, calibration or sensor: nothing started
        print(f"launch.hw: {exc}", file=sys.stderr)
        return 2
    view = SimConfig(
        env="manipulation", seconds=cfg.seconds, status_file=cfg.status_file, record=cfg.record, logs=cfg.logs
    )
    try:
        return main(view, graph, params)
    finally:
        if emulator is not None:
            emulator.close()
        shutil.rmtree(Path(graph.source).parent, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(cli())
