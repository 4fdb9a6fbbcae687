"""The whole loop, frame to action: `python -m launch.bench pipeline --env manipulation --seconds 60`.

Runs the planning graph (`launch/graphs/sim_mpc.yaml`: sim, actuator and brain, each its own process, over
ZeroMQ; the brain plans, or with `--policy actor` its distilled actor acts) for `seconds` of wall-clock
time, with nothing drawing a dashboard, and collects the brain's `brain/latency` rows: for every action, the
time from the capture of the camera frame it was planned from to the action handed to its socket, and that
time by stage (runtime/latency.py, ACTION_STAGES). Reports `e2e_p50_ms`, `e2e_p95_ms`, `e2e_p99_ms`,
`miss_rate_33ms` (actions later than one camera period after their frame) and `stage_p50_ms` /
`stage_p99_ms` per stage. The first `warmup_s` are left out (processes
starting, the first plans compiling their kernels).
"""

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from runtime.benchmarks.report import Report
from runtime.latency import ACTION_COLUMNS, ACTION_STAGES

FRAME_MS = 1e3 / 30  # the camera period: the budget of one frame's whole path


@dataclass
class PipelineBenchConfig:
    env: Literal["manipulation"] = "manipulation"
    """The simulated world (the planning graph drives our MuJoCo arm)."""
    task: Literal["reach", "push"] = "reach"
    policy: Literal["mpc", "actor"] = "mpc"
    """Who acts in the brain: the planner, or the actor distilled from it."""
    seconds: float = 60.0
    """Wall-clock seconds measured, after the warm-up."""
    warmup_s: float = 5.0
    """Seconds run and left out first."""
    seed: int = 0
    profile: str | None = None
    """Run the brain as this device profile says (engine, threads, precision, policy, planner budget) and
    judge the latencies against its per-frame budget (default: the graph as it is, the 30 Hz camera's)."""
    export_dir: Path = Path("results/export")
    """Where the profile's ONNX export lives (<dir>/<profile>), made first if absent."""

    def __post_init__(self):
        if not self.seconds > 0 or self.warmup_s < 0:
            raise ValueError(f"need `seconds` > 0 and `warmup_s` >= 0, got {self.seconds}, {self.warmup_s}")


def _rss_mb(process) -> float:
    """Resident memory of a node's process (0 if it is gone): VmRSS from /proc."""
    try:
        with open(f"/proc/{process.pid}/status") as f:
            return next(int(line.split()[1]) / 1024 for line in f if line.startswith("VmRSS:"))
    except (OSError, StopIteration, AttributeError):
        return 0.0


def run(cfg: PipelineBenchConfig, progress=None) -> Report:
    from rich.progress import Progress

    from launch.sim import SimConfig, discard_merged, prepare
    from runtime.signals import StopFlag
    from runtime.supervisor import Supervisor
    from runtime.transport import Policy, Subscriber

    sim = SimConfig(
        env=cfg.env,
        task=cfg.task,
        policy=cfg.policy,
        seed=cfg.seed,
        profile=cfg.profile,
        export_dir=cfg.export_dir,
    )
    graph, params = prepare(sim)
    budget_ms = FRAME_MS
    if cfg.profile is not None:
        from runtime.profiles import load_device

        budget_ms = load_device(cfg.profile).budget.frame_ms
    supervisor = Supervisor(graph, params=params)
    topics = {"brain/latency": Policy.LOSSLESS, "sim/episode": Policy.LOSSLESS}
    endpoints = sorted({graph.publisher_endpoint(t, supervisor.run_dir) for t in topics})
    listener = Subscriber(endpoints, topics, name="launch.bench")
    rows, episodes, successes, rss, next_rss_s = [], 0, 0, {}, 0.0
    stop = StopFlag()
    try:
        supervisor.start()
        start = time.monotonic()
        with Progress(transient=True, disable=progress is not None) as bar:  # a caller's line, or its own
            task = bar.add_task("pipeline", total=cfg.warmup_s + cfg.seconds)
            while not stop and (elapsed := time.monotonic() - start) < cfg.warmup_s + cfg.seconds:
                for msg in listener.poll(0.1):
                    if elapsed < cfg.warmup_s:
                        continue
                    if msg.topic == "brain/latency":
                        rows.append(np.asarray(msg.data, np.float64))
                    else:
                        episodes, successes = episodes + 1, successes + bool(msg.data[1])
                supervisor.watch()
                if elapsed >= next_rss_s:  # once a second: the peak each node reached
                    next_rss_s = elapsed + 1.0
                    for name, node in supervisor.nodes.items():
                        rss[name] = max(rss.get(name, 0.0), _rss_mb(node.process))
                what = f"pipeline: {len(rows)} actions, {elapsed:.0f} of {cfg.warmup_s + cfg.seconds:.0f} s"
                bar.update(task, completed=elapsed, description=what)
                if progress is not None:
                    progress(what)
    finally:
        listener.close()
        supervisor.stop()
        discard_merged(graph)
    report = Report(
        "pipeline",
        config={k: str(v) for k, v in vars(cfg).items()},
        targets={"e2e_p50_ms": ("<=", 15.0), "e2e_p99_ms": ("<=", budget_ms), "miss_rate_33ms": ("<=", 0.01)},
    )
    report.budget_ms = budget_ms
    if not rows:
        raise RuntimeError("the brain published no brain/latency rows: did it plan? (see its node log)")
    table = np.array(rows)
    e2e = table[:, ACTION_COLUMNS.index("e2e_ms")]
    p50, p95, p99 = np.percentile(e2e, [50, 95, 99])
    report.results.update(
        e2e_p50_ms=float(p50),
        e2e_p95_ms=float(p95),
        e2e_p99_ms=float(p99),
        miss_rate_33ms=float(np.mean(e2e > FRAME_MS)),
        stage_p50_ms={
            s: float(np.nanpercentile(table[:, ACTION_COLUMNS.index(s)], 50)) for s in ACTION_STAGES
        },
        stage_p99_ms={
            s: float(np.nanpercentile(table[:, ACTION_COLUMNS.index(s)], 99)) for s in ACTION_STAGES
        },
    )
    report.details["stage_p95_ms"] = {
        s: float(np.nanpercentile(table[:, ACTION_COLUMNS.index(s)], 95)) for s in ACTION_STAGES
    }
    report.results["miss_rate_budget"] = float(np.mean(e2e > budget_ms))
    report.details.update(
        actions=len(rows),
        episodes=episodes,
        successes=successes,
        frame_ms=FRAME_MS,
        budget_ms=budget_ms,
        profile=cfg.profile,
        brain={k: v for k, v in params.get("brain", {}).items() if k != "task"},
        rss_mb_peak=rss,
    )
    report.samples["e2e"] = e2e.tolist()
    report.stages["pipeline"] = report.results["stage_p50_ms"]
    return report
