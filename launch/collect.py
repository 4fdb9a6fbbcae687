"""Collect world-model training data: `python -m launch.collect --env manipulation --episodes 200 --out data`.

Runs simulated episodes in process, in virtual time (about five times faster than real time here), with the
scripted expert plus exploration noise, or random actions for a share of the episodes; or with a world-model
policy (`--policy mpc_hssm` or `actor`, runtime/planning/policies.py) from `--checkpoint`. Their ticks are
built by the V-sync scheduler exactly as the live brain builds them. Writes one `episode_<seed>.npz` per
episode (see `runtime/world_model/data.py` for the arrays) and `manifest.json` (the command's config, the
episodes, their successes). Episode i uses seed `--seed + i`, so a collection can be extended or repeated
exactly; episodes already on disk are kept, not redone. `--workers N` collects on N Ray actors
(runtime/distributed), with the same episodes whatever N; `--address` joins a Ray cluster.
"""

import json
import sys
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path
from typing import Literal

import torch
import tyro
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

import envs
from runtime.planning import policies as closed_loop
from runtime.world_model.data import CollectConfig, collect_episode, load_episode, save_episode


@dataclass
class CollectArgs:
    out: Path
    """Directory for the episodes and the manifest (created if missing)."""
    env: Literal["manipulation"] = "manipulation"
    """World to collect from."""
    task: Literal["reach", "push"] = "push"
    episodes: int = 200
    """Number of episodes."""
    seed: int = 0
    """Seed of the first episode; episode i uses seed + i."""
    episode_seconds: float = 10.0
    """Simulated length of an episode (shorter if the cube falls off the table)."""
    noise_rad: float = 0.05
    """Exploration noise on the expert's joint targets (radians, Gaussian sd, per control step)."""
    random_fraction: float = 0.2
    """Share of episodes driven by uniformly random actions instead of the expert."""
    policy: Literal["expert", "mpc_hssm", "actor"] = "expert"
    """Who acts: the scripted expert (with `noise_rad`, and `random_fraction`), the latent MPC planner or the
    distilled actor of `--checkpoint` (these two ignore the noise and the random share)."""
    checkpoint: Path | None = None
    """World-model checkpoint of `mpc_hssm` and `actor` (default: the shipped one)."""
    workers: int = 1
    """Ray actors collecting in parallel, one simulator each (1 without --address: in this process)."""
    address: str | None = None
    """Ray cluster to join: `auto` or HOST:PORT of a head node (default: Ray started locally)."""

    def __post_init__(self):
        if self.episodes < 1:
            raise ValueError(f"`episodes` must be >= 1, got {self.episodes}")
        if self.workers < 1:
            raise ValueError(f"`workers` must be >= 1, got {self.workers}")


def main(args: CollectArgs) -> int:
    cfg = CollectConfig(args.task, args.episode_seconds, args.noise_rad, args.random_fraction)
    # in virtual time no deadline cuts a search short, and one thread each as on a Ray worker: an episode
    # depends on its seed alone, not on the load or the number of threads its float sums were split over
    policy = partial(closed_loop.controller, args.policy, source=args.checkpoint, deadline=False)
    controller = policy()  # no checkpoint: refused here
    if controller is not None:
        torch.set_num_threads(1)
    args.out.mkdir(parents=True, exist_ok=True)
    console = Console(stderr=True)
    episodes = []
    columns = (TextColumn("collecting"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    seeds = range(args.seed, args.seed + args.episodes)
    todo = [seed for seed in seeds if not (args.out / f"episode_{seed}.npz").exists()]
    throughput = None
    with Progress(*columns, console=console) as progress:
        bar = progress.add_task("episodes", total=args.episodes, completed=args.episodes - len(todo))

        def keep(seed: int, episode: dict) -> None:
            save_episode(args.out / f"episode_{seed}.npz", episode)
            progress.advance(bar)

        if args.workers > 1 or args.address is not None:
            from runtime.distributed import cluster
            from runtime.distributed import collect as distributed

            cluster.start(args.workers, args.address)
            build = policy if controller is not None else None
            throughput = distributed.collect(cfg, todo, args.workers, keep, controller=build)
        else:
            for seed in todo:
                keep(seed, collect_episode(cfg, seed, controller=controller))
    for seed in seeds:
        path = args.out / f"episode_{seed}.npz"
        episode = load_episode(path)
        episodes.append(
            {
                "file": path.name,
                "seed": seed,
                "ticks": int(len(episode["dt_eff"])),
                "success": bool(episode["success"]),
            }
        )
    manifest = {
        "command": "launch.collect",
        "env_id": envs.ENV_IDS[args.task],  # episodes of another env version must not be mixed with these
        "config": {
            **asdict(args),
            "out": str(args.out),
            "checkpoint": args.checkpoint and str(args.checkpoint),
        },
        "episodes": episodes,
    }
    (args.out / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    ticks = sum(e["ticks"] for e in episodes)
    successes = sum(e["success"] for e in episodes)
    console.print(f"{len(episodes)} episodes, {ticks:,} ticks, {successes} succeeded; wrote {args.out}")
    for w in throughput or []:
        console.print(
            f"worker {w['worker']}: {w['episodes']} episodes, {w['busy_s']:.1f} s simulating, "
            f"{w['episodes_per_s']:.2f} episodes/s"
        )
    return 0


def cli(argv: list[str] | None = None) -> int:
    try:
        args = tyro.cli(CollectArgs, args=argv, description=__doc__)
        CollectConfig(args.task, args.episode_seconds, args.noise_rad, args.random_fraction)
    except ValueError as exc:  # a bad flag: nothing collected
        print(f"launch.collect: {exc}", file=sys.stderr)
        return 2
    from runtime.distributed import ClusterError
    from runtime.world_model.checkpoint import CheckpointError

    try:
        return main(args)
    except (ClusterError, CheckpointError) as exc:  # no cluster at --address, no model: nothing collected
        print(f"launch.collect: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(cli())
