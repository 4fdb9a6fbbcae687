"""`python -m launch.bench hardware --profile koch-v1.1 --port emulator`: a real arm's loop, by the numbers.

- `bus_roundtrip_p50_ms` / `bus_roundtrip_p99_ms`: one sync-write of every joint's goal and one sync-read of
  every joint's position, through the real driver at the profile's baud rate (a remote controller's zmq
  bus: the calls' cost, a read taking the next state to arrive; no target, as nothing is asked and answered);
- `e2e_p99_ms` (and p50): the full `launch.hw` graph (camera, microphone, arm, goal, brain planning), each
  action from the capture of its camera frame to its hand-off, as the pipeline benchmark times it;
- `watchdog_ms` (the profile's) and `watchdog_stop_ms`: the brain process is SIGKILLed while the arm follows
  it; the time until the arm's watchdog has acted and its joints have stopped moving (read back from the
  bus, still for 0.2 s).

`--port emulator` starts the protocol emulator in a process of its own and uses its pseudo-terminal; any
other value is a real port. Without `--camera`/`--mic`, a video of the simulated scene and a noise WAV are
written to a temporary directory and stream in their place (the camera and microphone nodes run as usual).
"""

import shutil
import signal
import tempfile
import time
import wave
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from runtime.benchmarks.report import Report
from runtime.latency import ACTION_COLUMNS, ACTION_STAGES

STILL_S = 0.2  # joints unchanged this long count as stopped
STILL_RAD = 2e-3  # ~1.3 servo ticks: a joint moving less than this is not moving


@dataclass
class HardwareBenchConfig:
    profile: str = "koch-v1.1"
    """Robot profile (firmware_profiles/robots/<name>.toml)."""
    port: str = "emulator"
    """Serial port, or `emulator` (the protocol emulator on a pseudo-terminal)."""
    camera: str | None = None
    """Camera source for the graph (default: a generated video of the simulated scene)."""
    mic: str | None = None
    """Microphone source (default: a generated WAV)."""
    roundtrips: int = 1000
    """Timed bus round trips."""
    seconds: float = 30.0
    """Seconds of the full graph measured, after the warm-up."""
    warmup_s: float = 8.0
    """Seconds run and left out first (processes starting, the model loading)."""


def _sources(directory: Path) -> tuple[str, str]:
    """A video of the simulated reach scene (what the camera would see) and a WAV of low noise."""
    import cv2

    import envs

    env = envs.make("manipulation", "reach", audio=False, action_mode="absolute")
    video = directory / "camera.mp4"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"mp4v"), 30.0, (64, 64))
    for episode in range(4):
        obs, _ = env.reset(seed=episode)
        for _ in range(60):
            obs, *_ = env.step(env.action_space.sample())
            writer.write(cv2.cvtColor(obs["image"], cv2.COLOR_RGB2BGR))
    writer.release()
    env.close()
    audio = directory / "mic.wav"
    samples = (np.random.default_rng(0).normal(0, 0.02, 16000 * 4) * 32767).astype(np.int16)
    with wave.open(str(audio), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(16000)
        w.writeframes(samples.tobytes())
    return str(video), str(audio)


def bus_roundtrips(profile, port: str, n: int, command_port: str | None = None) -> np.ndarray:
    """ms per sync-write of every goal plus sync-read of every position (torque off: nothing moves). On a
    remote controller's zmq bus, the calls' own cost: its state streams in, no read waits for a reply."""
    from nodes.hardware.node import make_bus

    out = np.empty(n)
    with make_bus(profile, port, command_port=command_port) as bus:
        goals = bus.sync_read("present_position")
        for _ in range(50):
            bus.sync_write("goal_position", goals)
            bus.sync_read("present_position")
        for i in range(n):
            t0 = time.perf_counter()
            bus.sync_write("goal_position", goals)
            bus.sync_read("present_position")
            out[i] = (time.perf_counter() - t0) * 1e3
    return out


def run(cfg: HardwareBenchConfig, progress=None) -> Report:
    import yaml

    from launch.hw import HwConfig, prepare
    from launch.sim import discard_merged
    from nodes.hardware.node import STATUS_COLUMNS
    from runtime.graph import load_graph
    from runtime.profiles import load_robot
    from runtime.supervisor import Supervisor
    from runtime.transport import Policy, Subscriber

    profile = load_robot(cfg.profile)
    report = Report(
        "hardware",
        config={k: str(v) for k, v in vars(cfg).items()},
        targets={
            # a remote controller's state streams in: no read waits for a reply, so no round trip to judge
            **({} if profile.bus.type == "zmq" else {"bus_roundtrip_p99_ms": ("<=", 10.0)}),
            "e2e_p99_ms": ("<=", 50.0),
            "watchdog_stop_ms": ("<=", 2 * profile.watchdog_ms),
        },
    )
    report.budget_ms = 50.0
    scratch = Path(tempfile.mkdtemp(prefix="hamrt-bench-hw-"))
    camera, mic = cfg.camera, cfg.mic
    if camera is None or mic is None:
        video, audio = _sources(scratch)
        camera, mic = camera or video, mic or audio
    hw = HwConfig(profile=cfg.profile, port=cfg.port, camera=camera, mic=mic)
    try:
        graph, params, emulator = prepare(hw)  # the bus probed, the emulator started if asked for
    except BaseException:
        shutil.rmtree(scratch, ignore_errors=True)
        raise
    try:
        if progress:
            progress("bus round trips")
        port = graph.nodes["arm"].params["port"]
        command_port = graph.nodes["arm"].params.get("command_port")  # a remote controller's
        trips = bus_roundtrips(profile, port, cfg.roundtrips, command_port)
        raw = yaml.safe_load(Path(graph.source).read_text())
        raw["nodes"]["brain"]["restart"] = {"max_restarts": 0, "backoff_s": 0.5}  # killed stays dead
        Path(graph.source).write_text(yaml.safe_dump(raw, sort_keys=False))
        graph = load_graph(graph.source)
        supervisor = Supervisor(graph, params=params)
        topics = {
            "brain/latency": Policy.LOSSLESS,
            "arm/joint": Policy.LOSSLESS,
            "arm/status": Policy.LOSSLESS,
        }
        endpoints = sorted({graph.publisher_endpoint(t, supervisor.run_dir) for t in topics})
        listener = Subscriber(endpoints, topics, name="launch.bench")
        rows, joints, status = [], [], []
        try:
            supervisor.start()
            start = time.monotonic()
            while (elapsed := time.monotonic() - start) < cfg.warmup_s + cfg.seconds:
                for msg in listener.poll(0.1):
                    if msg.topic == "brain/latency" and elapsed >= cfg.warmup_s:
                        rows.append(np.asarray(msg.data, np.float64))
                supervisor.watch()
                if progress:
                    progress(f"graph: {len(rows)} actions timed, {elapsed:.0f} s")
            # the brain dies while the arm follows it
            kill_ns = time.monotonic_ns()
            supervisor.nodes["brain"].process.send_signal(signal.SIGKILL)
            end = time.monotonic() + 4 * profile.watchdog_ms / 1e3 + 1.0
            while time.monotonic() < end:
                for msg in listener.poll(0.05):
                    if msg.topic == "arm/joint" and msg.capture_ns >= kill_ns:
                        joints.append((msg.capture_ns, np.asarray(msg.data[:5], np.float64)))
                    elif msg.topic == "arm/status" and msg.capture_ns >= kill_ns:
                        status.append((msg.capture_ns, np.asarray(msg.data, np.float64)))
        finally:
            listener.close()
            supervisor.stop()
    finally:
        if emulator is not None:
            emulator.close()
        discard_merged(graph)
        shutil.rmtree(scratch, ignore_errors=True)  # the stand-in video and WAV, read by nodes now gone
    trips_col = STATUS_COLUMNS.index("watchdog_trips")
    fired = next((t for t, row in status if row[trips_col] >= 1), None)
    still = None
    for i, (t, q) in enumerate(joints):  # the first sample after which the joints stay put for STILL_S
        later = [q2 for t2, q2 in joints[i:] if t2 - t <= STILL_S * 1e9]
        if joints[-1][0] - t >= STILL_S * 1e9 and all(np.abs(q2 - q).max() < STILL_RAD for q2 in later):
            still = t
            break
    results, details = report.results, report.details
    results["bus_roundtrip_p50_ms"] = float(np.median(trips))
    results["bus_roundtrip_p99_ms"] = float(np.percentile(trips, 99))
    if not rows:
        raise RuntimeError("the brain published no brain/latency rows: did it plan? (see its node log)")
    table = np.array(rows)
    e2e = table[:, ACTION_COLUMNS.index("e2e_ms")]
    results["e2e_p50_ms"] = float(np.median(e2e))
    results["e2e_p99_ms"] = float(np.percentile(e2e, 99))
    results["watchdog_ms"] = float(profile.watchdog_ms)
    if fired is not None and still is not None:
        results["watchdog_stop_ms"] = (max(fired, still) - kill_ns) / 1e6
    details.update(
        watchdog_fired_ms=None if fired is None else (fired - kill_ns) / 1e6,
        joints_still_ms=None if still is None else (still - kill_ns) / 1e6,
        on_watchdog=profile.on_watchdog,
        actions=len(rows),
        stage_p50_ms={s: float(np.nanmedian(table[:, ACTION_COLUMNS.index(s)])) for s in ACTION_STAGES},
        profile=profile.name,
        port=cfg.port,
        baudrate=profile.bus.baudrate,
    )
    report.samples["bus round trip"] = trips.tolist()
    report.samples["e2e"] = e2e.tolist()
    report.stages["hardware graph"] = details["stage_p50_ms"]
    return report
