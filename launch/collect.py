"""Collect world-model training data: `python -m launch.collect --env manipulation --episodes 200 --out data`.

Runs simulated episodes in process, in virtual time (about five times faster than real time here), with the
scripted expert plus exploration noise, or random actions for a share of the episodes. Their ticks are built
by the V-sync scheduler exactly as the live brain builds them. Writes one `episode_<seed>.npz` per episode
(see `runtime/world_model/data.py` for the arrays) and `manifest.json` (the command's config, the episodes,
their successes). Episode i uses seed `--seed + i`, so a collection can be extended or repeated exactly;
episodes already on disk are kept, not redone.
"""

import json
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

import tyro
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

import envs
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

    def __post_init__(self):
        if self.episodes < 1:
            raise ValueError(f"`episodes` must be >= 1, got {self.episodes}")


def main(args: CollectArgs) -> int:
    cfg = CollectConfig(args.task, args.episode_seconds, args.noise_rad, args.random_fraction)
    args.out.mkdir(parents=True, exist_ok=True)
    console = Console(stderr=True)
    episodes = []
    columns = (TextColumn("collecting"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*columns, console=console) as progress:
        bar = progress.add_task("episodes", total=args.episodes)
        for seed in range(args.seed, args.seed + args.episodes):
            path = args.out / f"episode_{seed}.npz"
            episode = load_episode(path) if path.exists() else None
            if episode is None:
                episode = collect_episode(cfg, seed)
                save_episode(path, episode)
            episodes.append(
                {
                    "file": path.name,
                    "seed": seed,
                    "ticks": int(len(episode["dt_eff"])),
                    "success": bool(episode["success"]),
                }
            )
            progress.advance(bar)
    manifest = {
        "command": "launch.collect",
        "env_id": envs.ENV_IDS[args.task],  # episodes of another env version must not be mixed with these
        "config": {**asdict(args), "out": str(args.out)},
        "episodes": episodes,
    }
    (args.out / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    ticks = sum(e["ticks"] for e in episodes)
    successes = sum(e["success"] for e in episodes)
    console.print(f"{len(episodes)} episodes, {ticks:,} ticks, {successes} succeeded; wrote {args.out}")
    return 0


def cli(argv: list[str] | None = None) -> int:
    try:
        args = tyro.cli(CollectArgs, args=argv, description=__doc__)
        CollectConfig(args.task, args.episode_seconds, args.noise_rad, args.random_fraction)
    except ValueError as exc:  # a bad flag: nothing collected
        print(f"launch.collect: {exc}", file=sys.stderr)
        return 2
    return main(args)


if __name__ == "__main__":
    sys.exit(cli())
