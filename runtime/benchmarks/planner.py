"""`python -m launch.bench planner --profile NAME --runtime both`: the planner's time per control step.

The closed loop of `launch.eval control` (MPCController: belief, goal, safety filter; the actor as the
search's prior), in process on held-out reach episodes, with the profile's planner budget (candidates,
iterations, deadline). Its rollouts run in torch, or through the export's rollout graph in onnxruntime
(`--runtime onnxruntime`; `both` runs the same episodes once each way). Per runtime: `plan_p50_ms_<rt>`,
p95, p99, `plan_miss_rate_<rt>` (plans over the profile's plan deadline) and `success_<rt>`; and one batched
rollout of the plan's candidates (`rollout_p50_ms_<rt>`, N candidates x 30 ticks), timed in turns.
"""

import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from runtime.benchmarks.report import Report
from runtime.world_model import checkpoint


@dataclass
class PlannerBenchConfig:
    profile: str = "host-x86-2core"
    """Device profile: threads, planner candidates, iterations and deadline, export."""
    runtime: Literal["torch", "onnxruntime", "both"] = "both"
    """Where the plans' rollouts run."""
    episodes: int = 6
    """Reach episodes per runtime (seeds from 300,000: held out from training and distillation)."""
    export_dir: Path = Path("results/export")
    """Where the profile's ONNX export lives (<dir>/<profile>), made first if absent."""
    steps: int = 300
    """Timed batched rollouts per runtime."""
    seed: int = 300_000

    def __post_init__(self):
        if self.episodes < 1 or self.steps < 1:
            raise ValueError(f"need `episodes` >= 1 and `steps` >= 1, got {self.episodes}, {self.steps}")


def run(cfg: PlannerBenchConfig, progress=None) -> Report:
    from runtime.export.session import OrtRollout, ensure_export
    from runtime.planning import actor
    from runtime.planning.control import PLANNER, MPCController
    from runtime.profiles import load_device
    from runtime.world_model import readout
    from runtime.world_model.data import CollectConfig, collect_episode

    profile = load_device(cfg.profile)
    torch.set_num_threads(profile.compute.threads)
    policy = profile.policy
    planner = replace(
        PLANNER,
        candidates=policy.candidates,
        iterations=policy.iterations,
        elites=min(PLANNER.elites, policy.candidates),
    )
    deadline_ms = policy.plan_deadline_ms
    report = Report("planner", config={k: str(v) for k, v in vars(cfg).items()})
    report.budget_ms = profile.budget.frame_ms
    model, _ = checkpoint.load()
    joints, prior = readout.load(), actor.load()
    runtimes = ("torch", "onnxruntime") if cfg.runtime == "both" else (cfg.runtime,)
    rollouts = {"torch": model.rollout}
    if "onnxruntime" in runtimes:
        directory = cfg.export_dir / profile.name
        ensure_export(directory, profile=profile.name)
        precision = profile.runtime.precision
        rollouts["onnxruntime"] = OrtRollout(
            directory, profile.compute.threads, profile.runtime.provider, precision
        )
    short = {"torch": "torch", "onnxruntime": "ort"}
    results, details = report.results, report.details
    collect = CollectConfig(task="reach", episode_seconds=5.0, random_fraction=0.0, noise_rad=0.0)
    for rt in runtimes:
        controller = MPCController(
            model, planner, deadline_s=deadline_ms / 1e3, readout=joints, prior=prior, rollout=rollouts[rt]
        )
        wins = 0
        for i in range(cfg.episodes):
            wins += bool(collect_episode(collect, cfg.seed + i, controller=controller)["success"])
            if progress:
                progress(f"{rt}: episode {i + 1}/{cfg.episodes}")
        ms = np.asarray(controller.plan_ms)
        name = short[rt]
        results[f"plan_p50_ms_{name}"] = float(np.median(ms))
        results[f"plan_p95_ms_{name}"] = float(np.percentile(ms, 95))
        results[f"plan_p99_ms_{name}"] = float(np.percentile(ms, 99))
        results[f"plan_miss_rate_{name}"] = float(np.mean(ms > deadline_ms))
        results[f"success_{name}"] = wins / cfg.episodes
        details[f"plans_{name}"] = len(ms)
        report.samples[f"plan {name}"] = ms.tolist()
    # one batched rollout of the candidates, the runtimes in turns
    rng = np.random.default_rng(0)
    z0 = torch.from_numpy(rng.normal(0, 1, (planner.candidates, 2 * model.cfg.d_latent)).astype(np.float32))
    actions = torch.from_numpy(rng.normal(0, 0.3, (planner.candidates, 30, 5)).astype(np.float32))
    dt = torch.full((planner.candidates, 30), 1 / 30)
    times = {rt: [] for rt in runtimes}
    with torch.inference_mode():
        for _ in range(max(cfg.steps // 50, 1)):
            for rt in runtimes:
                for _ in range(50):
                    t0 = time.perf_counter()
                    rollouts[rt](z0, actions, dt)
                    times[rt].append((time.perf_counter() - t0) * 1e3)
    for rt in runtimes:
        results[f"rollout_p50_ms_{short[rt]}"] = float(np.median(times[rt]))
    if len(runtimes) == 2:
        results["rollout_ort_over_torch"] = results["rollout_p50_ms_ort"] / results["rollout_p50_ms_torch"]
        report.stages = {short[rt]: {"plan p50": results[f"plan_p50_ms_{short[rt]}"]} for rt in runtimes}
    details.update(
        profile=profile.name,
        plan_deadline_ms=deadline_ms,
        candidates=planner.candidates,
        iterations=planner.iterations,
        horizon_steps=planner.horizon,
    )
    return report
