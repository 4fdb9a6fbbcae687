"""Train world models on collected episodes: `python -m launch.train --env manipulation`.

Trains the Hamiltonian SSM world model (or a baseline, or all five with `--model all`, each on the same
windows in the same order for the same number of steps) on `--data`, with a progress bar showing the JEPA
loss terms, and writes a checkpoint per model to `--out/<model>`: weights, config, training summary, the
exact command, and SHA-256 of the weights (see runtime/world_model/checkpoint.py). The default configuration
trains hssm in about 6 minutes on one CPU core (2,000 steps).

`--workers N` trains data-parallel on N Ray Train workers (runtime/distributed/train.py): the same global
batch, split over them, gradients averaged each step; `--address` joins a Ray cluster to do it there.

Data first: `python -m launch.collect --env manipulation --episodes 160 --out data/train`.
"""

import shlex
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal

import numpy as np
import torch
import tyro
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from runtime.planning.actor import DistillConfig, distill
from runtime.world_model import checkpoint, readout
from runtime.world_model.model import MODELS, WorldModelConfig, parameter_count
from runtime.world_model.training import Episodes, TrainConfig, refit_predictor, train


@dataclass
class TrainArgs:
    env: Literal["manipulation"] = "manipulation"
    """World the episodes come from."""
    model: Literal["hssm", "euler", "mlp_pred", "gru", "transformer", "all"] = "hssm"
    """Which model to train; `all` trains the Hamiltonian model and every baseline the same way."""
    data: Path = Path("data/train")
    """Directory of collected episodes (launch.collect)."""
    out: Path = Path("results/checkpoints")
    """Checkpoints go to OUT/<model>."""
    episodes: int | None = None
    """Use only the first N episodes (default: all)."""
    readout_only: Path | None = None
    """Train nothing: fit the planning readout (z -> arm joints) of the checkpoint at this path on the data,
    and add it to that checkpoint's manifest (e.g. runtime/world_model/default)."""
    readout_episodes: int = 60
    """Episodes the planning readout is fitted on (the first N)."""
    actor_only: Path | None = None
    """Train nothing: distill the actor (runtime/planning/actor.py) from the planner of the checkpoint at this
    path, in teacher episodes it runs itself (no data needed), and add it to that checkpoint's manifest."""
    workers: int = 1
    """Ray Train workers sharing each global batch (1 without --address: in this process, no Ray)."""
    address: str | None = None
    """Ray cluster to join: `auto` or HOST:PORT of a head node (default: Ray started locally)."""
    cpus_per_worker: int = 1
    """CPUs (torch threads) each Ray worker trains with; in this process `--train.threads` counts."""
    ray_storage: str | None = None
    """Where Ray Train workers leave the trained weights for this process (default: OUT/ray; on a cluster a
    directory every node can reach, or a cloud URI such as s3://bucket/runs)."""
    actor: DistillConfig = DistillConfig()
    config: WorldModelConfig = WorldModelConfig()
    train: TrainConfig = TrainConfig()

    def __post_init__(self):
        if self.workers < 1 or self.cpus_per_worker < 1:
            raise ValueError(
                f"`workers` and `cpus_per_worker` must be >= 1, got {self.workers} and {self.cpus_per_worker}"
            )
        if self.on_ray:
            from runtime.distributed.train import check

            check(self.train, self.workers)

    @property
    def on_ray(self) -> bool:
        return self.workers > 1 or self.address is not None


def main(args: TrainArgs, argv: list[str]) -> int:
    console = Console(stderr=True)
    if args.actor_only is not None:
        return _distill_actor(args.actor_only, args.actor, console)
    if args.on_ray and args.readout_only is None:  # no cluster: refused before the data is read
        from runtime.distributed import cluster

        cluster.start(args.workers * args.cpus_per_worker, args.address)
    try:
        episodes = Episodes(args.data, args.episodes)
    except (FileNotFoundError, ValueError) as exc:
        console.print(f"launch.train: {exc}")
        return 2
    ticks = sum(len(e["dt_eff"]) for e in episodes.episodes)
    console.print(f"{len(episodes)} episodes, {ticks:,} ticks from {args.data}")
    names = MODELS if args.model == "all" else (args.model,)
    command = "python -m launch.train " + shlex.join(argv)
    if args.readout_only is not None:
        try:
            model, _ = checkpoint.load(args.readout_only)
        except checkpoint.CheckpointError as exc:
            console.print(f"launch.train: {exc}")
            return 2
        _fit_readout(model, args.readout_only, episodes, args.readout_episodes, console)
        return 0
    for name in names:
        cfg = replace(args.config, model=name)
        t0 = time.monotonic()
        columns = (
            TextColumn(f"{name:<11}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[loss]}"),
            TimeRemainingColumn(),
        )
        with Progress(*columns, console=console) as progress:
            bar = progress.add_task(name, total=args.train.steps + args.train.refit_steps, loss="")

            def report(step: int, terms: dict, bar=bar, progress=progress) -> None:
                shown = " ".join(f"{k} {terms[k]:.3f}" for k in ("total", "predict", "refit") if k in terms)
                progress.update(bar, advance=1, loss=shown)

            if args.on_ray:
                from runtime.distributed.train import train_on_ray

                model, history, refit = train_on_ray(
                    cfg,
                    args.train,
                    episodes,
                    args.workers,
                    args.ray_storage or args.out / "ray",
                    lambda phase, step, terms: report(step, terms),
                    args.cpus_per_worker,
                )
            else:
                model, history = train(cfg, args.train, episodes, report)
                refit = refit_predictor(model, args.train, episodes, report)
        seconds = time.monotonic() - t0
        last = history[-50:]
        summary = {k: float(np.mean([h[k] for h in last])) for k in last[-1]}
        directory = checkpoint.save(
            args.out / name,
            model,
            {
                "command": command,
                "train": args.train.summary(),
                "data": {"directory": str(args.data), "episodes": len(episodes), "ticks": ticks},
                "parameters": parameter_count(model),
                "train_seconds": round(seconds, 1),
                "workers": args.workers,
                "final_terms": summary,
                "refit_terms": {k: float(np.mean([h[k] for h in refit[-50:]])) for k in refit[-1]}
                if refit
                else {},
                "dt_clamped": model.dt_clamped,
            },
        )
        if args.on_ray:
            steps = args.train.steps + args.train.refit_steps
            per = args.train.batch // args.workers
            console.print(
                f"{args.workers} Ray Train worker(s), {per} windows each a step: "
                f"{steps / seconds:.2f} steps/s including start-up"
            )
        console.print(
            f"{name}: {parameter_count(model):,} parameters, {seconds / 60:.1f} min, "
            f"final loss {summary['total']:.3f} (predict {summary['predict']:.3f}) -> {directory}"
        )
        _fit_readout(model, directory, episodes, args.readout_episodes, console)
    return 0


def _fit_readout(model, directory: Path, episodes: Episodes, n: int, console: Console) -> None:
    chosen = episodes.episodes[:n]
    with console.status(f"fitting the planning readout on {len(chosen)} episodes"):
        fitted, error = readout.fit_on_episodes(model.eval(), chosen)
    path = fitted.save(directory)
    console.print(f"planning readout: joints to {error:.3f} rad (mean abs, training episodes) -> {path}")


def _distill_actor(directory: Path, cfg: DistillConfig, console: Console) -> int:
    try:
        model, _ = checkpoint.load(directory)
        joints = readout.load(directory)
    except checkpoint.CheckpointError as exc:
        console.print(f"launch.train: {exc}")
        return 2
    torch.set_num_threads(2)
    total = cfg.episodes * len(cfg.tasks)
    with Progress(TextColumn("actor"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[note]}"),
                  TimeRemainingColumn(), console=console) as progress:  # fmt: skip
        bar = progress.add_task("teacher", total=total, note="")

        def report(task: str, episode: int, samples: int) -> None:
            progress.update(bar, advance=1, note=f"{task} episode {episode}, {samples} samples")

        fitted, stats = distill(model.eval(), joints, cfg, report)
    path = fitted.save(directory)
    console.print(
        f"actor: {stats['samples']} teacher steps, held-out step error "
        f"{stats['held_out_step_error_rad']:.3f} rad -> {path}"
    )
    return 0


def cli(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    try:
        args = tyro.cli(TrainArgs, args=argv, description=__doc__)
    except ValueError as exc:  # a bad config value: nothing trained
        print(f"launch.train: {exc}", file=sys.stderr)
        return 2
    from runtime.distributed import ClusterError

    try:
        return main(args, argv)
    except ClusterError as exc:  # no cluster at --address: nothing trained
        print(f"launch.train: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(cli())
