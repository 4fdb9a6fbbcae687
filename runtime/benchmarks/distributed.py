"""`python -m launch.bench distributed`: collection throughput on Ray with 1 and 2 workers, same seeds.

`collect_eps_per_s_1` and `collect_eps_per_s_2`: episodes per second of wall-clock time with that many Ray
actors (one simulator each), from when every actor has started (a process each, imports done: start-up is
not throughput) to the last episode in; `scaling_2_over_1`, their ratio in this run.
`train_loss_gap_2_vs_1` needs training on Ray Train, which is not built yet: it stays unmeasured (and so
fails its target).
"""

from dataclasses import dataclass

from runtime.benchmarks.report import Report


@dataclass
class DistributedBenchConfig:
    episodes: int = 16
    """Episodes per worker count (the same seeds both times)."""
    episode_seconds: float = 5.0
    """Simulated length of each (reach) episode."""
    seed: int = 900_000


def run(cfg: DistributedBenchConfig, progress=None) -> Report:
    import ray

    from runtime.distributed import collect as distributed
    from runtime.world_model.data import CollectConfig

    report = Report(
        "distributed",
        config={k: str(v) for k, v in vars(cfg).items()},
        targets={"scaling_2_over_1": (">=", 1.6), "train_loss_gap_2_vs_1": ("<=", 0.05)},
    )
    collect = CollectConfig(task="reach", episode_seconds=cfg.episode_seconds)
    seeds = list(range(cfg.seed, cfg.seed + cfg.episodes))
    ray.shutdown()
    distributed.start(2)
    try:
        for workers in (1, 2):
            done = []

            def keep(seed, episode, done=done, workers=workers):
                done.append(seed)
                if progress:
                    progress(f"{workers} worker(s): {len(done)}/{cfg.episodes} episodes")

            summary = distributed.collect(collect, seeds, workers, keep)
            report.results[f"collect_eps_per_s_{workers}"] = len(done) / summary[0]["wall_s"]
            report.details[f"workers_{workers}"] = summary
    finally:
        ray.shutdown()
    report.results["scaling_2_over_1"] = (
        report.results["collect_eps_per_s_2"] / report.results["collect_eps_per_s_1"]
    )
    return report
