"""Run the simulated robot as a graph of processes: `python -m launch.sim --env manipulation --seconds 20`.

Starts the node graph `launch/graphs/sim.yaml` (sim -> expert -> actuator -> sim over ZeroMQ, and the brain,
which aligns the sensor streams and actions into ticks with the V-sync scheduler; each node its own process,
supervised and restarted on a crash) and shows a live dashboard: per-stream rate and staleness, node
liveness, restarts, episodes and successes, and the brain's per-stream tracked rate, jitter, drops and stale
flags. The scripted IK expert acts by default; `--policy mpc` has the brain plan in its world model's latent
space instead (`sim_mpc.yaml`: the brain publishes `brain/action`). `--env gym:Pusher-v5` (any
Gymnasium id with rgb_array rendering) runs `sim_gym.yaml` instead: camera and joint streams, random actions.
`--shift flip@10` changes the world's dynamics at that simulated second; `--record run.mcap` records every
topic (launch.record beside the graph). Ctrl-C stops every process within 2 s and prints the summary.
"""

import importlib
import json
import logging
import math
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import defaultdict, deque
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import tyro
import yaml
from rich.console import Console, Group
from rich.live import Live
from rich.table import Table

import envs
from nodes.hardware.node import STATUS_COLUMNS as ARM_COLUMNS
from runtime.graph import GRAPHS_DIR, Graph, GraphError, load_graph
from runtime.latency import ACTION_STAGES
from runtime.record import recording_summary
from runtime.signals import StopFlag
from runtime.supervisor import Supervisor
from runtime.transport import Policy, Subscriber
from runtime.video import VideoWriter
from runtime.viz import PREDICTED_RGB
from runtime.vsync.wire import STATUS_COLUMNS, read_tick_summary
from runtime.world_model.live import MODEL_COLUMNS

log = logging.getLogger("launch.sim")


@dataclass
class SimConfig:
    env: str = "manipulation"
    """World to simulate: `manipulation` (our MuJoCo tabletop arm) or `gym:<id>` (any Gymnasium env with
    rgb_array rendering, e.g. `gym:Pusher-v5`)."""
    task: Literal["reach", "push"] | None = None
    """Task for `--env manipulation` (default push)."""
    seconds: float | None = None
    """Stop after this many wall-clock seconds (default: run until Ctrl-C)."""
    save_video: Path | None = None
    """Write the camera stream to this .mp4 or .gif file."""
    video_scale: int = 4
    """Enlarge video frames this many times (nearest neighbour) so a 64x64 camera is watchable."""
    speed: float = 1.0
    """Simulated seconds per wall-clock second; 0 runs as fast as the machine can."""
    seed: int = 0
    """Seed of the first episode; episode i uses seed + i."""
    image_size: int = 64
    """Camera resolution (square) of the image stream (a `--profile` sets it)."""
    graph: Path | None = None
    """Node graph YAML (default: launch/graphs/sim.yaml, or sim_gym.yaml for gym:<id>)."""
    logs: Path | None = None
    """Directory for each node's log file (default: a temporary run directory)."""
    policy: Literal["expert", "mpc", "random", "actor"] = "expert"
    """Who acts on the manipulation arm: the scripted IK `expert`; `mpc`, the brain planning in the world
    model's latent space (graph sim_mpc.yaml); `actor`, the policy distilled from that planner (the same
    graph, one forward pass instead of a search); `random`, a random walk of joint targets."""
    camera: str | None = None
    """Attach a live camera: a device index (`0`), a video file or a stream URL. It joins the graph as its
    own node (`camera/image`, 30 Hz), is synchronized into the brain's ticks, encoded, shown and recorded."""
    mic: str | None = None
    """Attach a live microphone: a PortAudio device name or index, or a WAV file (`mic/audio`, 100/s)."""
    optional_devices: bool = False
    """Run on without a `--camera`/`--mic` that cannot be opened (default: refuse to start, naming it)."""
    shift: str | None = None
    """Change the world's dynamics live: NAME@SECONDS of simulated time, NAME one of flip (the shoulder's
    command reversed), mass (cube x4), friction (x0.3), gain (arm servos x0.5); e.g. `--shift flip@10`."""
    record: Path | None = None
    """Record every topic of the run to this MCAP file (`launch.record` as its own process; replay it with
    `python -m launch.replay`). Refused if the file exists."""
    viz: Literal["rerun"] | None = None
    """`rerun`: log the camera, the predicted and actual end-effector paths, energy, prediction error and
    frame-to-action latency to a Rerun recording (`--viz-file`; open it with `rerun FILE.rrd`)."""
    viz_file: Path | None = None
    """Where `--viz rerun` writes (default: viz.rrd in the run's log directory)."""
    status_file: Path | None = None
    """Write the dashboard's figures here as JSON, once a second and at exit (`streams` with per-stream
    `rate_hz`, `stale`, `latency_p50_ms`; `ticks`; `e2e_p50_ms`, `e2e_p99_ms`; `episodes`, `successes`;
    `memory_entries`; `locked`; `deadline_misses`; `arm`, a real arm's status under launch.hw)."""
    profile: str | None = None
    """Run as this device profile says (firmware_profiles/devices/NAME.toml): the brain's engine, threads,
    precision, policy (for `--policy mpc|actor`) and planner budget; the cameras' size and rate (the simulated
    one's and `--camera`'s, in place of `--image-size` and 30 Hz) and `--mic`'s rate and chunk. An onnxruntime
    profile runs the export in `--export-dir`/NAME, made first if absent (python -m launch.export)."""
    export_dir: Path = Path("results/export")
    """Where device profiles' ONNX exports live, one directory per profile."""

    def __post_init__(self):
        if self.seconds is not None and not self.seconds > 0:
            raise ValueError(f"`seconds` must be > 0, got {self.seconds}")
        if not self.speed >= 0:
            raise ValueError(f"`speed` must be >= 0, got {self.speed}")


STALE_FLOOR_S = 0.25
MERGED_GRAPH_PREFIX = "hamrt-graph-"  # temporary directories of graphs with live sensors merged in


class StreamMonitor:
    """Per-topic rate (from capture timestamps) and staleness, for the dashboard."""

    def __init__(self, graph: Graph, run_dir: Path):
        topics = {
            t: (Policy.LOSSLESS if spec.policy is Policy.LOSSLESS else Policy.LATEST)
            for t, (_, spec) in graph.topics.items()
        }
        endpoints = sorted({graph.publisher_endpoint(t, run_dir) for t in topics})
        self.subscriber = Subscriber(endpoints, topics, name="launch.sim")
        self.graph = graph
        self.captures: dict[str, deque] = defaultdict(lambda: deque(maxlen=400))
        self.latency_ms: dict[str, deque] = defaultdict(lambda: deque(maxlen=400))  # capture -> here
        self.tick_count = 0
        self.last_capture: dict[str, int] = {}
        self.episodes = self.successes = 0
        self.audio_peak = 0.0
        self.frames: list[tuple[int, np.ndarray]] = []  # (capture_ns, RGB) not yet written or logged
        self.plan: np.ndarray | None = None  # the arm joints the brain's last plan predicts (brain/plan)
        self.hand: deque = deque(maxlen=30)  # the end effector's last positions (sim/task), 0.3 s at 100 Hz
        brain = graph.nodes.get("brain")
        self.vsync_streams = list((brain.params.get("vsync") or {}).get("streams") or {}) if brain else []
        self.vsync_status: np.ndarray | None = None
        arm = next((n for n, spec in graph.nodes.items() if spec.module.startswith("nodes.hardware")), None)
        self.arm_topic = f"{arm}/status" if f"{arm}/status" in graph.topics else None  # a real arm's node
        self.arm_status: np.ndarray | None = None  # its last status row (nodes/hardware/node.py)
        self.ticks: deque = deque(maxlen=300)  # recent brain/tick summaries: (head, per-stream)
        self.model_rows: deque = deque(maxlen=300)  # recent brain/model rows (runtime/world_model/live.py)
        self.model_count = 0  # all of them
        # The whole run, for the exit summary: per tick, V-sync's emit latency (capture to tick) and the world
        # model's step time, both as the brain measured them (the dashboard's own delays are not in them).
        self.emit_ms: list[float] = []
        self.step_ms: list[float] = []
        # Per action the brain took, capture of its frame to the action published, by stage (brain/latency)
        self.action_rows: list[np.ndarray] = []

    def poll(self, timeout_s: float) -> None:
        for msg in self.subscriber.poll(timeout_s):
            self.captures[msg.topic].append(msg.capture_ns)
            self.latency_ms[msg.topic].append((time.monotonic_ns() - msg.capture_ns) / 1e6)
            self.last_capture[msg.topic] = msg.capture_ns
            if msg.topic == "sim/episode":
                self.episodes += 1
                self.successes += bool(msg.data[1])
            elif msg.kind == "audio":
                self.audio_peak = max(self.audio_peak * 0.9, float(np.abs(msg.data).max()))
            elif msg.topic == "sim/camera":
                self.frames.append((msg.capture_ns, np.array(msg.data)))
            elif msg.topic == "brain/plan":
                self.plan = np.array(msg.data)
            elif msg.topic == "sim/task" and msg.data.size >= 4:
                self.hand.append(np.array(msg.data[1:4], float))
            elif msg.topic == "brain/vsync":
                self.vsync_status = msg.data
            elif msg.topic == self.arm_topic:
                self.arm_status = np.asarray(msg.data, np.float64)
            elif msg.topic == "brain/model":
                self.model_count += 1
                self.model_rows.append(np.asarray(msg.data, np.float64))
                self.step_ms.append(float(msg.data[MODEL_COLUMNS.index("step_ms")]))
            elif msg.topic == "brain/latency":
                self.action_rows.append(np.asarray(msg.data, np.float64))
            elif msg.topic == "brain/tick":
                self.tick_count += 1
                try:
                    self.ticks.append(read_tick_summary(msg.data, len(self.vsync_streams)))
                    self.emit_ms.append(self.ticks[-1][0]["emit_latency_ms"])
                except ValueError:
                    pass  # a brain with another stream list: nothing to show

    def rate_hz(self, topic: str) -> float:
        stamps = self.captures.get(topic)
        if not stamps or len(stamps) < 2:
            return 0.0
        window = [s for s in stamps if s >= stamps[-1] - 2_000_000_000]  # last 2 s of capture time
        span = (window[-1] - window[0]) / 1e9
        return (len(window) - 1) / span if span > 0 else 0.0

    def view(self, supervisor: Supervisor, elapsed_s: float) -> Group:
        parts = [self.table(supervisor, elapsed_s)]
        if self.vsync_streams:
            parts.append(self.vsync_table())
        if self.model_rows:
            parts.append(self.model_line())
        if self.action_rows:
            parts.append(self.action_line())
        if self.arm_status is not None:
            parts.append(self.arm_line())
        return Group(*parts)

    def arm_figures(self) -> dict[str, int] | None:
        """The real arm's last status (ARM_COLUMNS), or None without one."""
        if self.arm_status is None or len(self.arm_status) != len(ARM_COLUMNS):
            return None
        return {name: int(v) for name, v in zip(ARM_COLUMNS, self.arm_status, strict=True)}

    def arm_line(self) -> str:
        """A real arm's state: torque, a protective stop, actions taken and refused, the watchdog, the bus."""
        s = self.arm_figures()
        if s is None:
            return "Arm: a status row of another layout"
        state = (
            "[red]PROTECTIVE STOP[/] (actions refused)"
            if s["stopped"]
            else ("torque on" if s["torque"] else "[yellow]torque off[/]")
        )
        return (
            f"Arm: {state}; {s['actions']} actions, {s['refused']} refused, watchdog trips "
            f"{s['watchdog_trips']}; bus {s['transfers']} transfers, {s['retries']} retries, "
            f"{s['failures']} failures, {s['servo_errors']} servo errors"
        )

    def action_line(self) -> str:
        """The brain's last 100 actions: capture of the frame to the action out, and its stages (p50)."""
        rows = np.array(self.action_rows[-100:])
        stages = ", ".join(
            f"{s} {np.nanmedian(rows[:, k]):.1f}" for k, s in enumerate(ACTION_STAGES, start=1)
        )
        p50, p99 = np.percentile(rows[:, 0], [50, 99])
        return f"Frame -> action: p50 {p50:.1f} ms, p99 {p99:.1f} ms ({stages} ms)"

    def model_line(self) -> str:
        """The world model on the brain's ticks: step time, backbone energy, one-tick prediction error."""
        rows = np.array(self.model_rows)
        col = {name: i for i, name in enumerate(MODEL_COLUMNS)}
        step = rows[:, col["step_ms"]]
        step = step[np.isfinite(step)]
        p50, p99 = np.percentile(step, [50, 99]) if step.size else (np.nan, np.nan)
        last = rows[-1]
        lock = {-1: "none", 0: "open", 1: "locked", 2: "TRIPPED (actuators stopped)"}.get(
            int(last[col["lock"]]), "?"
        )
        return (
            f"World model: step p50 {p50:.2f} ms p99 {p99:.2f} ms, energy {last[col['energy']]:.3g}, "
            f"1-tick prediction error {np.nanmean(rows[:, col['pred_err']]):.3g}, "
            f"dt_eff clamped {last[col['dt_clamped']]:.0f}, ticks refused {last[col['refused']]:.0f}\n"
            f"Adaptation: memory {last[col['memory_entries']]:.0f} entries, "
            f"{last[col['crystallized']]:.0f} crystallized, "
            f"learner swaps {last[col['swaps']]:.0f}, lock {lock}"
        )

    def vsync_table(self) -> Table:
        """The brain's V-sync scheduler: tracked rate, jitter, drops and staleness per stream; tick timing."""
        if self.ticks:
            heads = [h for h, _ in self.ticks]
            latency = np.array([h["emit_latency_ms"] for h in heads])
            dt_ms = np.mean([h["dt_eff_s"] for h in heads]) * 1e3
            p50, p99 = np.percentile(latency, [50, 99])
            title = (
                f"V-sync: {len(heads)} recent ticks, dt_eff {dt_ms:.1f} ms, tick latency p50 {p50:.1f} ms "
                f"p99 {p99:.1f} ms (from window end), "
                f"{np.mean([h['by_deadline'] for h in heads]):.0%} by deadline"
            )
        else:
            title = "V-sync: no ticks yet"
        table = Table(title=title)
        for column in (
            "stream",
            "rate Hz",
            "nominal",
            "jitter ms",
            "missed",
            "dropped",
            "relocks",
            "valid",
            "age ms",
        ):
            table.add_column(column, justify="left" if column == "stream" else "right")
        columns = {name: i for i, name in enumerate(STATUS_COLUMNS)}
        for k, name in enumerate(self.vsync_streams):
            row = (
                self.vsync_status[k] if self.vsync_status is not None and k < len(self.vsync_status) else None
            )
            per = np.array([p[k] for _, p in self.ticks]) if self.ticks else None

            def cell(column: str, fmt: str, row=row) -> str:
                return fmt.format(row[columns[column]]) if row is not None else "-"

            stale = row is not None and row[columns["stale"]] > 0
            table.add_row(
                name + (" [red](stale)[/]" if stale else ""),
                cell("rate_hz", "{:.2f}"),
                cell("nominal_hz", "{:g}"),
                cell("jitter_ms", "{:.2f}"),
                cell("missed", "{:.0f}"),
                cell("dropped", "{:.0f}"),
                cell("relocks", "{:.0f}"),
                f"{per[:, 0].mean():.0%}" if per is not None else "-",
                f"{np.nanmean(per[:, 1]) * 1e3:.1f}"
                if per is not None and np.isfinite(per[:, 1]).any()
                else "-",
            )
        return table

    def table(self, supervisor: Supervisor, elapsed_s: float) -> Table:
        now = time.monotonic_ns()
        audio = any(spec.kind == "audio" for _, spec in self.graph.topics.values())
        table = Table(
            title=f"{self.graph.name}: {elapsed_s:5.1f} s, {self.episodes} episodes, "
            f"{self.successes} succeeded, " + (f"audio peak {self.audio_peak:.3f}" if audio else "no audio")
        )
        for column in ("stream", "publisher", "rate Hz", "nominal", "age ms", "gaps", "node"):
            table.add_column(column, justify="left" if column in ("stream", "publisher", "node") else "right")
        live = self.subscriber.liveness
        for topic, (node, spec) in self.graph.topics.items():
            last = self.last_capture.get(topic)
            age = f"{(now - last) / 1e6:.0f}" if last else "-"
            stats = self.subscriber.stats.topics.get(topic)
            proc = supervisor.nodes[node]
            status = (
                "down" if proc.given_up else ("up" if live.get(node) and live[node].alive else "starting")
            )
            if proc.restarts:
                status += f" ({proc.restarts} restarts)"
            table.add_row(
                topic,
                node,
                f"{self.rate_hz(topic):.1f}",
                f"{spec.rate_hz:g}",
                age,
                str(stats.gaps if stats else 0),
                status,
            )
        return table

    def status(self, elapsed_s: float) -> dict:
        """The dashboard's figures as JSON-able values (`--status-file`)."""
        now = time.monotonic_ns()
        streams = {}
        for topic, (_, spec) in self.graph.topics.items():
            last = self.last_capture.get(topic)
            lat = self.latency_ms.get(topic)
            streams[topic] = {
                "rate_hz": round(self.rate_hz(topic), 3),
                "nominal_hz": spec.rate_hz,
                # nothing for three periods (a quarter second at least: one dashboard refresh on a busy
                # 2-core machine can hold the loop that long), or never heard of; event streams (under
                # 1 Hz: episode ends, protective stops) are quiet by nature
                "stale": None
                if spec.rate_hz < 1
                else last is None or (now - last) / 1e9 > max(3 / spec.rate_hz, STALE_FLOOR_S),
                "latency_p50_ms": round(float(np.median(lat)), 3) if lat else None,
            }
        model = {}
        if self.model_rows:
            col = {name: i for i, name in enumerate(MODEL_COLUMNS)}
            last = self.model_rows[-1]
            model = {
                "memory_entries": int(last[col["memory_entries"]]),
                "locked": int(last[col["lock"]]) >= 1,
            }
        return {
            "elapsed_s": round(elapsed_s, 3),
            "streams": streams,
            "ticks": self.tick_count,
            # capture of a frame to the action planned from it (the brain's actions only: the scripted
            # expert does not read frames, so with it there is nothing to report)
            "e2e_p50_ms": self.e2e_percentile(50),
            "e2e_p99_ms": self.e2e_percentile(99),
            "episodes": self.episodes,
            "successes": self.successes,
            "memory_entries": model.get("memory_entries"),
            "locked": model.get("locked"),
            "deadline_misses": self.deadline_misses(),  # ticks later than a camera period after capture
            "arm": self.arm_figures(),  # a real arm's last status (launch.hw), else None
        }

    def e2e_percentile(self, q: float) -> float | None:
        if not self.action_rows:
            return None
        return round(float(np.percentile([r[0] for r in self.action_rows], q)), 3)

    def deadline_ms(self) -> float | None:
        """A tick's budget: one period of the camera the brain ticks on (the next frame is due then): the
        simulated one, or a real arm's (launch.hw)."""
        camera = self.graph.topics.get(self.vsync_streams[0] if self.vsync_streams else "sim/camera")
        return 1e3 / camera[1].rate_hz if camera and camera[1].kind == "image" else None

    def brain_ms(self) -> np.ndarray:
        """Per tick, capture to belief: V-sync's emit latency plus the world model's step (paired in order:
        the brain publishes each tick's row right after the tick)."""
        n = min(len(self.emit_ms), len(self.step_ms))
        return np.asarray(self.emit_ms[:n]) + np.asarray(self.step_ms[:n])

    def deadline_misses(self) -> int | None:
        """Ticks whose capture-to-belief time exceeded the deadline; None without a world model's ticks."""
        total, deadline = self.brain_ms(), self.deadline_ms()
        if deadline is None or not total.size:
            return None
        return int((total > deadline).sum())

    def summary(self, elapsed_s: float) -> Table:
        """At exit: episodes and success rate, the brain's latency per stage over the whole run, and the ticks
        that missed their deadline."""
        table = Table(title=f"Run summary: {elapsed_s:.1f} s", title_justify="left")
        for column in ("", "p50", "p99", "n", "note"):
            table.add_column(column, justify="left" if column in ("", "note") else "right")
        rate = f"{self.successes / self.episodes:.0%} succeeded" if self.episodes else "none finished"
        table.add_row("episodes", "", "", str(self.episodes), rate)

        def row(name: str, values, note: str = "") -> None:
            v = np.asarray(values, np.float64)
            v = v[np.isfinite(v)]
            if v.size:
                p50, p99 = np.percentile(v, [50, 99])
                table.add_row(name, f"{p50:.2f} ms", f"{p99:.2f} ms", str(v.size), note)

        row("V-sync: capture -> tick", self.emit_ms)
        row("world-model step", self.step_ms, "encoders, belief (adaptation after the action)")
        if self.action_rows:
            rows = np.array(self.action_rows)
            late = int((rows[:, 0] > (self.deadline_ms() or np.inf)).sum())
            row("capture -> action", rows[:, 0], f"{late} of {len(rows)} actions over one camera period")
            for k, stage in enumerate(ACTION_STAGES, start=1):
                row(f"  {stage}", rows[:, k])
        misses = self.deadline_misses()
        if misses is not None:
            total = self.brain_ms()
            note = f"deadline misses: {misses} over {self.deadline_ms():.1f} ms ({misses / total.size:.1%})"
            row("capture -> belief", total, note)
        return table

    def close(self) -> None:
        self.subscriber.close()


def write_status(path: Path, status: dict) -> None:
    """Atomically: a reader never sees half a file."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(status, indent=2) + "\n")
    os.replace(tmp, path)


def start_recorder(path: Path, graph: Graph, supervisor: Supervisor) -> subprocess.Popen:
    """`launch.record` on every topic of the graph, as its own process (its log beside the nodes')."""
    endpoints = sorted({graph.publisher_endpoint(t, supervisor.run_dir) for t in graph.topics})
    log_file = open(Path(supervisor.log_dir) / "recorder.log", "wb")  # noqa: SIM115 (the child holds it)
    with log_file:
        return subprocess.Popen(
            [sys.executable, "-m", "launch.record", "--out", str(path), "--endpoints", *endpoints],
            stdout=log_file,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )


def stop_recorder(recorder: subprocess.Popen, console: Console) -> None:
    """SIGTERM: the recorder writes what is queued and finishes the file (summary and footer)."""
    recorder.send_signal(signal.SIGTERM)
    try:
        recorder.wait(timeout=10)
    except subprocess.TimeoutExpired:
        recorder.kill()
        console.print("[red]the recorder did not finish in 10 s and was killed[/]")
        return
    path = Path(recorder.args[recorder.args.index("--out") + 1])
    summary = recording_summary(path) if path.exists() else None
    if recorder.returncode != 0 or summary is None:
        console.print(f"[red]recording to {path} failed (exit {recorder.returncode}); see recorder.log[/]")
    else:
        console.print(
            f"recorded {summary.messages:,} messages on {len(summary.topics)} topics, "
            f"{summary.duration_s:.1f} s, to {path}"
        )


SENSOR_STREAMS = {"camera": ("camera/image", "nearest"), "microphone": ("mic/audio", "concat")}
TICK_TOPICS = ("brain/tick", "brain/model")  # the brain's topics with a message per tick (per camera frame)


def sensor_params(cfg: SimConfig, sensors=None) -> dict[str, dict]:
    """The live sensors asked for, as node params: `camera` (a device index, file or URL) and `microphone`
    (a WAV file, or a PortAudio device name or index). `sensors`: a device profile's sensor settings (the
    camera's size and rate, the microphone's rate and chunk) in place of the defaults."""
    out = {}
    if cfg.camera is not None:
        source = int(cfg.camera) if cfg.camera.isdigit() else cfg.camera
        camera = {"source": source, "width": cfg.image_size, "height": cfg.image_size, "fps": 30}
        if sensors is not None:
            camera.update(width=sensors.camera_width, height=sensors.camera_height, fps=sensors.camera_hz)
        out["camera"] = camera
    if cfg.mic is not None:
        if cfg.mic.lower().endswith(".wav"):
            mic = {"file": cfg.mic}
        else:
            mic = {"device": int(cfg.mic) if cfg.mic.isdigit() else cfg.mic}
        if sensors is not None:
            chunk_ms = 1e3 * sensors.audio_chunk / sensors.audio_rate_hz
            mic.update(sample_rate_hz=sensors.audio_rate_hz, chunk_ms=chunk_ms)
        out["microphone"] = mic
    return out


def probe_sensor(node: str, params: dict) -> str | None:
    """Open and close the device as its node will; None if it opens, else why not (naming the source)."""
    if node == "camera":
        from nodes.camera_device import Camera as Device
        from nodes.camera_device import CameraConfig as Config
    else:
        from nodes.microphone_device import Microphone as Device
        from nodes.microphone_device import MicrophoneConfig as Config
    source = params.get("source", params.get("file", params.get("device")))
    try:
        device = Device(Config(**params))
        device.connect()
        device.disconnect()
    except Exception as exc:  # any failure to open is the same answer: this source cannot be used now
        return f"`--{'camera' if node == 'camera' else 'mic'} {source}` cannot be opened: {exc}"
    return None


def merged_graph(graph: Graph, sensors: dict[str, dict], camera_hz: float | None = None) -> Graph:
    """The graph with the live sensors' nodes (from `sensors.yaml`) added at the rates their params set,
    their streams in the brain's V-sync config and subscriptions, and the simulated camera at `camera_hz`
    (a device profile's), written to a temporary file (nodes load their graph from a file)."""
    raw = yaml.safe_load(Path(graph.source).read_text())
    sensor_nodes = yaml.safe_load((GRAPHS_DIR / "sensors.yaml").read_text())["nodes"]
    brain = raw["nodes"].get("brain")
    sim_camera = raw["nodes"].get("sim", {}).get("publishes", {}).get("sim/camera")
    if camera_hz is not None and sim_camera is not None:
        sim_camera["rate_hz"] = camera_hz  # the sim node renders at its topic's rate; the brain ticks on it
        for topic in TICK_TOPICS:  # one message a tick
            if topic in (brain or {}).get("publishes", {}):
                brain["publishes"][topic]["rate_hz"] = camera_hz
    tick_hz = sim_camera["rate_hz"] if sim_camera is not None else 30
    for node, params in sensors.items():
        spec = sensor_nodes[node]
        spec["params"] = {**spec.get("params", {}), **params}
        topic, assemble = SENSOR_STREAMS[node]
        p = spec["params"]
        spec["rate_hz"] = spec["publishes"][topic]["rate_hz"] = (
            p["fps"] if node == "camera" else 1e3 / p["chunk_ms"]  # frames, or chunks, a second
        )
        raw["nodes"][node] = spec
        if brain is not None:
            brain["subscribes"] = [*brain.get("subscribes", []), topic]
            brain["params"]["vsync"]["streams"][topic] = {"assemble": assemble}
            brain["publishes"]["brain/extra"] = {"kind": "state", "rate_hz": tick_hz, "policy": "latest"}
    raw["name"] = graph.name
    path = Path(tempfile.mkdtemp(prefix=MERGED_GRAPH_PREFIX)) / Path(graph.source).name
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return load_graph(path)


def discard_merged(graph: Graph) -> None:
    """Remove a graph's file if it was written for one run (merged_graph, launch.hw)."""
    merged = Path(graph.source).parent
    if merged.name.startswith(MERGED_GRAPH_PREFIX):
        shutil.rmtree(merged, ignore_errors=True)


def profile_params(cfg: SimConfig, graph: Graph, profile) -> dict:
    """The brain's params for a device profile: engine, threads, precision and provider, the policy and the
    planner's budget (an onnxruntime profile's export is `prepare`'s to make)."""
    brain = graph.nodes["brain"].params
    params = {"threads": profile.compute.threads, "runtime": profile.runtime.engine}
    if profile.runtime.engine == "onnxruntime":
        params.update(
            onnx=str(cfg.export_dir / profile.name),
            provider=profile.runtime.provider,
            precision=profile.runtime.precision,
        )
    if cfg.policy in ("mpc", "actor"):
        params["policy"] = profile.policy.kind
        params["plan_deadline_ms"] = profile.policy.plan_deadline_ms
        planner = dict(brain.get("planner") or {})
        params["planner"] = {
            **planner,
            "candidates": profile.policy.candidates,
            "iterations": profile.policy.iterations,
            "elites": min(int(planner.get("elites", 32)), profile.policy.candidates),
        }
    return params


def check_model_inputs(brain: dict, sim: dict, sensors: dict[str, dict], profile) -> None:
    """What the brain's world model cannot take, refused naming where it was set: an exported graph takes
    frames of the checkpoint's size only (torch resizes), a camera period no longer than the model's stable
    step, and the audio encoder 16 kHz in 10 ms chunks."""
    from nodes.brain import world_model_path
    from runtime.world_model import checkpoint
    from runtime.world_model.encoders import CHUNK, SAMPLE_RATE

    path = world_model_path(brain)
    if path is None:
        return
    size = checkpoint.read_manifest(path)["config"]["image_size"]
    source = "--image-size" if profile is None else f"profile {profile.name!r}: `sensors.camera_width`"
    if brain.get("runtime", "torch") == "onnxruntime" and sim["image_size"] != size:
        raise ValueError(f"{source} {sim['image_size']}: the exported model takes {size}x{size} frames")
    if profile is not None:  # a tick past the stable band is clamped: the belief would fall behind the world
        longest = checkpoint.load(path)[0].dt_band()[1]
        if 1 / profile.sensors.camera_hz > longest:
            raise ValueError(
                f"profile {profile.name!r}: `sensors.camera_hz` {profile.sensors.camera_hz:g}: a tick of "
                f"{1e3 / profile.sensors.camera_hz:.1f} ms is longer than the world model's stable step "
                f"({longest * 1e3:.1f} ms), so every tick would be clamped; use "
                f"{math.ceil(1 / longest):d} Hz or more"
            )
    mic = sensors.get("microphone")
    if mic is not None and profile is not None:
        rate, chunk = profile.sensors.audio_rate_hz, profile.sensors.audio_chunk
        if rate != SAMPLE_RATE or chunk % CHUNK:
            raise ValueError(
                f"profile {profile.name!r}: `sensors.audio_rate_hz` {rate} and `audio_chunk` {chunk}: the "
                f"brain's audio encoder takes {SAMPLE_RATE} Hz in chunks of a multiple of {CHUNK} samples"
            )


def prepare(cfg: SimConfig) -> tuple[Graph, dict]:
    """Everything that can refuse bad input, before any process starts."""
    envs.check_name(cfg.env, cfg.task)
    manipulation = cfg.env == "manipulation"
    if cfg.policy != "expert" and not manipulation:
        raise ValueError(f"`--policy {cfg.policy}` drives the manipulation arm; gym envs act at random")
    default = "sim_mpc" if cfg.policy in ("mpc", "actor") else "sim"
    graph = load_graph(cfg.graph or (default if manipulation else "sim_gym"))
    sim = {"env": cfg.env, "seed": cfg.seed, "image_size": cfg.image_size, "speed": cfg.speed}
    params = {"sim": sim}
    if manipulation:
        sim["task"] = cfg.task or "push"
        for node in ("expert", "brain"):
            if node in graph.nodes:
                params[node] = {"task": sim["task"]}
        if cfg.policy == "actor" and "brain" in params:  # the planning graph, the distilled actor acting
            params["brain"]["policy"] = "actor"
        if cfg.policy == "random" and "expert" in params:
            params["expert"]["policy"] = "random"
    if cfg.shift is not None:
        params["sim"]["shift"] = cfg.shift
    profile = None
    if cfg.profile is not None:
        from runtime.profiles import load_device

        profile = load_device(cfg.profile)  # a ProfileError is a ValueError: refused before anything starts
        camera = profile.sensors
        if camera.camera_width != camera.camera_height:
            raise ValueError(
                f"profile {profile.name!r}: the simulated camera renders square frames; "
                f"`sensors.camera_width` x `camera_height` is {camera.camera_width}x{camera.camera_height}"
            )
        sim["image_size"] = camera.camera_width
        if "brain" in graph.nodes:
            params["brain"] = {**params.get("brain", {}), **profile_params(cfg, graph, profile)}
    sensors = sensor_params(cfg, None if profile is None else profile.sensors)
    for node, node_params in list(sensors.items()):
        problem = probe_sensor(node, node_params)
        if problem is not None and not cfg.optional_devices:
            raise ValueError(f"{problem} (pass --optional-devices to run without it)")
        if problem is not None:
            log.warning("%s; running without it (--optional-devices)", problem)
            del sensors[node]
    if "brain" in graph.nodes:
        check_model_inputs({**graph.nodes["brain"].params, **params.get("brain", {})}, sim, sensors, profile)
    if cfg.record is not None and (cfg.record.exists() or not cfg.record.parent.is_dir()):
        raise ValueError(f"`--record`: {cfg.record} exists, or its directory does not")
    if cfg.save_video is not None:
        VideoWriter(cfg.save_video, fps=30, scale=cfg.video_scale)  # checks the path; writes nothing yet
    if cfg.viz_file is not None and (cfg.viz is None or cfg.viz_file.suffix != ".rrd"):
        raise ValueError(f"`--viz-file` is a .rrd file for `--viz rerun`, got {cfg.viz_file}")
    if cfg.viz_file is not None and not cfg.viz_file.parent.is_dir():
        raise ValueError(f"`--viz-file`: directory {cfg.viz_file.parent} does not exist")
    if cfg.status_file is not None and not cfg.status_file.parent.is_dir():
        raise ValueError(f"`--status-file`: directory {cfg.status_file.parent} does not exist")
    if profile is not None and profile.runtime.engine == "onnxruntime" and "brain" in graph.nodes:
        from runtime.export.session import ensure_export

        # after the quick checks (a typo should not wait for an export); before the brain's, which reads it
        ensure_export(cfg.export_dir / profile.name, profile=profile.name)
    if sensors or profile is not None:
        graph = merged_graph(graph, sensors, None if profile is None else profile.sensors.camera_hz)
    try:
        for name, spec in graph.nodes.items():  # node-specific params, e.g. the brain's V-sync config
            check = getattr(importlib.import_module(spec.module.partition(":")[0]), "check_params", None)
            if check is not None:
                try:
                    check({**spec.params, **params.get(name, {})}, graph)
                except ValueError as exc:
                    raise ValueError(f"nodes.{name}.params: {exc}") from None
    except BaseException:
        discard_merged(graph)  # refused: no run will read it
        raise
    return graph, params


class Viewers:
    """What people watch besides the dashboard: the video (`--save-video`, the plan's predicted end-effector
    path drawn on the camera when the brain plans) and the Rerun log (`--viz rerun`)."""

    def __init__(self, cfg: SimConfig, graph: Graph, log_dir: Path, console: Console):
        from runtime.viz import PathProjector, RerunLog

        self.console = console
        plans = any("brain/plan" in spec.publishes for spec in graph.nodes.values())
        self.projector = PathProjector() if plans and cfg.env == "manipulation" else None
        self.rerun = None
        if cfg.viz == "rerun":
            path = cfg.viz_file or Path(log_dir) / "viz.rrd"
            self.rerun = RerunLog(path)
            console.print(f"Rerun recording: {path} (open it with `rerun {path}`)")
        self.logged_model = self.logged_actions = 0
        self._plan, self._predicted = None, None  # the last plan seen and its end-effector path

    def predicted(self, plan: np.ndarray | None) -> np.ndarray | None:
        """The end-effector path (H, 3) of the brain's last plan, computed once per plan."""
        if self.projector is None or plan is None or plan.ndim != 2:
            return None
        if plan is not self._plan:
            self._plan, self._predicted = plan, self.projector.ee_path(plan[:, :4])
        return self._predicted

    def show(self, monitor: "StreamMonitor", video: VideoWriter | None) -> None:
        """Write and log the frames that came in since the last call, then the new scalar rows."""
        if monitor.frames:
            self._frames(monitor, video)
        if self.rerun is None:
            return
        # the rows that came in since the last call, at the capture time of the latest (rows between two
        # calls, a quarter second at most, share it)
        col = {name: i for i, name in enumerate(MODEL_COLUMNS)}
        fresh = min(monitor.model_count - self.logged_model, len(monitor.model_rows))
        self.logged_model = monitor.model_count
        for row in list(monitor.model_rows)[len(monitor.model_rows) - fresh :]:
            for name in ("energy", "pred_err"):
                self.rerun.scalar(monitor.last_capture["brain/model"], f"model/{name}", row[col[name]])
        for row in monitor.action_rows[self.logged_actions :]:
            self.rerun.scalar(monitor.last_capture["brain/latency"], "latency/frame_to_action_ms", row[0])
        self.logged_actions = len(monitor.action_rows)

    def _frames(self, monitor: "StreamMonitor", video: VideoWriter | None) -> None:
        predicted = self.predicted(monitor.plan)
        actual = np.array(monitor.hand) if self.rerun is not None and monitor.hand else None
        for capture_ns, frame in monitor.frames:
            if video is not None:
                paths = []
                if predicted is not None:
                    paths.append((self.projector.pixels(predicted, *frame.shape[:2]), PREDICTED_RGB))
                video.write(frame, paths)
            if self.rerun is not None:
                self.rerun.frame(capture_ns, frame)
                self.rerun.paths(capture_ns, predicted, actual)
        monitor.frames.clear()

    def close(self) -> None:
        if self.rerun is not None:
            self.rerun.close()
            self.console.print(f"wrote {self.rerun.path}")


def main(cfg: SimConfig, graph: Graph, params: dict) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    console = Console(stderr=True)
    supervisor = Supervisor(graph, params=params, log_dir=cfg.logs)
    if cfg.logs is not None:
        cfg.logs.mkdir(parents=True, exist_ok=True)
    monitor = StreamMonitor(graph, supervisor.run_dir)
    console.print(
        f"[bold]{graph.name}[/] graph ({graph.source}): {', '.join(graph.nodes)} as processes; "
        f"node logs in {supervisor.log_dir}" + (f"; {cfg.seconds:g} s" if cfg.seconds else "; Ctrl-C to stop")
    )
    t0 = time.monotonic()
    video = None
    # Ctrl-C sets a flag the loop checks, instead of a KeyboardInterrupt landing wherever the main thread is
    # (inside rich's or ZeroMQ's locks, or a node's start), which can leave them in a state that blocks exit.
    stop = StopFlag()
    previous = {s: signal.signal(s, stop) for s in (signal.SIGINT, signal.SIGTERM)}
    recorder = None
    viz = Viewers(cfg, graph, supervisor.log_dir, console)
    try:
        supervisor.start()
        if cfg.record is not None:
            recorder = start_recorder(cfg.record, graph, supervisor)
        next_watch = next_status = 0.0
        with Live(console=console, refresh_per_second=4, transient=False) as live:
            while not stop and (cfg.seconds is None or time.monotonic() - t0 < cfg.seconds):
                monitor.poll(0.02)
                now = time.monotonic()
                if now >= next_watch:
                    next_watch = now + 0.2
                    supervisor.watch()
                    live.update(monitor.view(supervisor, now - t0))
                if cfg.status_file is not None and now >= next_status:
                    next_status = now + 1.0
                    write_status(cfg.status_file, monitor.status(now - t0))
                if cfg.save_video is not None and monitor.frames and video is None:
                    video = VideoWriter(
                        cfg.save_video, fps=graph.topics["sim/camera"][1].rate_hz, scale=cfg.video_scale
                    )
                viz.show(monitor, video)
    finally:
        if stop:
            console.print(f"stopped by {stop.signal}")
        if cfg.status_file is not None:  # the figures as they were while running, before the nodes stop
            monitor.poll(0)  # what arrived while the loop was drawing or writing video
            write_status(cfg.status_file, monitor.status(time.monotonic() - t0))
        t_stop = time.monotonic()
        monitor.close()
        if recorder is not None:  # before the nodes stop: it finishes the file with what they sent
            stop_recorder(recorder, console)
        supervisor.stop()
        discard_merged(graph)  # the nodes that read it are gone
        for s, handler in previous.items():
            signal.signal(s, handler)
        console.print(f"stopped {len(graph.nodes)} nodes in {time.monotonic() - t_stop:.2f} s")
        if video is not None:
            video.close()
            console.print(f"wrote {video.frames_written} frames to {cfg.save_video}")
        viz.close()
        console.print(monitor.view(supervisor, time.monotonic() - t0))
        console.print(monitor.summary(time.monotonic() - t0))
        if cfg.status_file is not None:
            console.print(f"wrote {cfg.status_file}")
    return 0


def cli(argv: list[str] | None = None) -> int:
    try:
        cfg = tyro.cli(SimConfig, args=argv, description=__doc__)
        graph, params = prepare(cfg)
    except (ValueError, GraphError) as exc:  # bad flag, env, task, graph or video path: nothing started
        print(f"launch.sim: {exc}", file=sys.stderr)
        return 2
    return main(cfg, graph, params)


if __name__ == "__main__":
    sys.exit(cli())
