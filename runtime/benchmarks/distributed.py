"""`python -m launch.bench distributed`: collection throughput on Ray with 1 and 2 workers, same seeds.

`collect_eps_per_s_1` and `collect_eps_per_s_2`: episodes per second of wall-clock time with that many Ray
actors (one simulator each), from when every actor has started (a process each, imports done: start-up is
not throughput) to the last episode in; `scaling_2_over_1`, their ratio in this run.
`train_loss_gap_2_vs_1`: the collected episodes, then the world model trained on them with Ray Train by 1
and by 2 workers (the same global batch, split over the workers: runtime/distributed/train.py);
|final loss (2) - final loss (1)| / final loss (1), the final loss being the mean total JEPA loss of the last
`final_steps` steps. A third run, one worker from seed 1, gives the gap between two one-worker runs to read
it against. The refit's gaps and each run's time are in the details.
"""

import time
from dataclasses import dataclass, replace

import numpy as np

from runtime.benchmarks.report import Report
from runtime.world_model.model import WorldModelConfig
from runtime.world_model.training import Episodes, TrainConfig


@dataclass
class DistributedBenchConfig:
    episodes: int = 16
    """Episodes per worker count (the same seeds both times)."""
    episode_seconds: float = 5.0
    """Simulated length of each (reach) episode."""
    seed: int = 900_000
    train_steps: int = 300
    """JEPA steps of each training run (global batch 8 windows)."""
    refit_steps: int = 100
    final_steps: int = 50
    """The final loss is the mean over this many last steps."""


def run(cfg: DistributedBenchConfig, progress=None) -> Report:
    import ray

    from runtime.distributed import cluster
    from runtime.distributed import collect as distributed
    from runtime.world_model.data import CollectConfig

    report = Report(
        "distributed",
        config={k: str(v) for k, v in vars(cfg).items()},
        targets={"scaling_2_over_1": (">=", 1.6), "train_loss_gap_2_vs_1": ("<=", 0.05)},
    )
    collect = CollectConfig(task="reach", episode_seconds=cfg.episode_seconds)
    seeds = list(range(cfg.seed, cfg.seed + cfg.episodes))
    episodes: dict[int, dict] = {}
    ray.shutdown()
    cluster.start(2)
    try:
        for workers in (1, 2):
            done = []

            def keep(seed, episode, done=done, workers=workers):
                done.append(seed)
                episodes[seed] = episode
                if progress:
                    progress(f"collect, {workers} worker(s): {len(done)}/{cfg.episodes} episodes")

            summary = distributed.collect(collect, seeds, workers, keep)
            report.results[f"collect_eps_per_s_{workers}"] = len(done) / summary[0]["wall_s"]
            report.details[f"workers_{workers}"] = summary
        report.results["scaling_2_over_1"] = (
            report.results["collect_eps_per_s_2"] / report.results["collect_eps_per_s_1"]
        )
        _train(cfg, Episodes.of([episodes[s] for s in seeds]), report, progress)
    finally:
        ray.shutdown()
    return report


def _train(cfg: DistributedBenchConfig, episodes, report: Report, progress) -> None:
    import tempfile

    from runtime.distributed.train import train_on_ray

    train_cfg = TrainConfig(steps=cfg.train_steps, refit_steps=cfg.refit_steps)
    # the third run, one worker from another seed, is the yardstick: how far two one-worker runs end apart
    runs = {"1": (1, train_cfg), "2": (2, train_cfg), "1_seed1": (1, replace(train_cfg, seed=1))}
    final = {}
    with tempfile.TemporaryDirectory() as storage:
        for name, (workers, run_cfg) in runs.items():

            def show(phase, step, terms, name=name):
                if progress and step % 10 == 0:
                    loss = terms.get("total", terms.get("refit", 0.0))
                    progress(f"train {name}: {phase} step {step}, loss {loss:.2f}")

            t0 = time.perf_counter()
            _, history, refit = train_on_ray(WorldModelConfig(), run_cfg, episodes, workers, storage, show)
            final[name] = {
                "loss": float(np.mean([h["total"] for h in history[-cfg.final_steps :]])),
                "refit": float(np.mean([h["refit"] for h in refit[-cfg.final_steps :]])) if refit else None,
                "seconds": time.perf_counter() - t0,
            }
    report.details["train"] = final
    gap = lambda key, other: abs(final[other][key] - final["1"][key]) / final["1"][key]  # noqa: E731
    report.results["train_loss_gap_2_vs_1"] = gap("loss", "2")
    report.details["train_loss_gap_seed1_vs_seed0"] = gap("loss", "1_seed1")
    if cfg.refit_steps:
        report.details["refit_loss_gap_2_vs_1"] = gap("refit", "2")
        report.details["refit_loss_gap_seed1_vs_seed0"] = gap("refit", "1_seed1")
