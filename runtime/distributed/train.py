"""World models trained on Ray Train: `launch.train --workers N [--address ADDR]`.

Data-parallel on CPUs: a `TorchTrainer` with N workers and the gloo backend. Every worker builds the same
model from the same seed, draws the same global batch of windows (the one-worker run's, in the same order)
and trains on its slice of it; before each optimizer step the gradients are averaged over the workers in
one all-reduce (`Shard` in runtime/world_model/training.py), so the global batch and the learning rate stay
those of one worker whatever N. The transition's refit is sharded the same way.

The episodes travel once, through Ray's object store (`ray.put`): workers on other machines need no copy
of the data directory. The trained weights come back as a Ray Train checkpoint written by worker 0 under
`storage` (a directory every node can reach: this machine's disk for a local cluster, shared storage or
a cloud URI for a real one). Worker 0 sends each step's averaged loss terms to the driver for the progress
bar.
"""

import os
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import ray
import torch
from ray.util.queue import Empty, Queue

from runtime.world_model.model import WorldModel, WorldModelConfig
from runtime.world_model.training import Episodes, Shard, TrainConfig, refit_predictor, train

WEIGHTS = "trained.pt"


def check(cfg: TrainConfig, workers: int) -> None:
    """ValueError unless every worker gets an equal, non-empty slice of each global batch."""
    for name in ("batch", "refit_batch"):
        size = getattr(cfg, name)
        if size % workers or size < workers:
            raise ValueError(
                f"`train.{name}` ({size}) must be a multiple of --workers ({workers}): the global batch is "
                "split evenly over the workers"
            )


def _storage_path(storage: Path | str) -> str:
    """A cloud URI as it is; a directory made absolute (Ray Train asks for one)."""
    return str(storage) if "://" in str(storage) else str(Path(storage).resolve())


def _per_worker(config: dict) -> None:
    context = ray.train.get_context()
    shard = Shard(context.get_world_rank(), context.get_world_size())
    episodes = Episodes.of(ray.get(config["episodes"]))
    queue = config["queue"] if shard.rank == 0 else None

    def send(phase: str) -> Callable[[int, dict], None]:
        return lambda step, terms: queue.put((phase, step, terms)) if queue is not None else None

    model, history = train(config["model_cfg"], config["cfg"], episodes, send("train"), shard)
    refit = refit_predictor(model, config["cfg"], episodes, send("refit"), shard)
    metrics = {"final_total": history[-1]["total"]}
    if shard.rank != 0:
        ray.train.report(metrics)
        return
    with tempfile.TemporaryDirectory() as directory:
        weights = {"state": model.state_dict(), "history": history, "refit": refit}
        torch.save(weights, Path(directory) / WEIGHTS)
        ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(directory))


def train_on_ray(
    model_cfg: WorldModelConfig,
    cfg: TrainConfig,
    episodes: Episodes,
    workers: int,
    storage: Path | str,
    progress: Callable[[str, int, dict], None] | None = None,
    cpus_per_worker: int = 1,
) -> tuple[WorldModel, list[dict], list[dict]]:
    """The trained model, its per-step loss terms (averaged over the workers) and its refit's terms. Ray must
    be started, with `workers * cpus_per_worker` CPUs free."""
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    check(cfg, workers)
    run = f"train-{model_cfg.model}-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}"  # never an old run
    queue = Queue(actor_options={"num_cpus": 0})
    trainer = TorchTrainer(
        _per_worker,
        train_loop_config={
            "model_cfg": model_cfg,
            "cfg": replace(cfg, threads=cpus_per_worker),
            "episodes": ray.put(episodes.episodes),
            "queue": queue,
        },
        torch_config=TorchConfig(backend="gloo"),
        scaling_config=ScalingConfig(
            num_workers=workers, use_gpu=False, resources_per_worker={"CPU": cpus_per_worker}
        ),
        run_config=RunConfig(storage_path=_storage_path(storage), name=run),
    )
    outcome: dict = {}

    def fit() -> None:
        try:
            outcome["result"] = trainer.fit()
        except Exception as exc:  # handed to the caller's thread below
            outcome["error"] = exc

    thread = threading.Thread(target=fit, name="ray-train", daemon=True)
    thread.start()
    while thread.is_alive() or not queue.empty():
        try:
            phase, step, terms = queue.get(timeout=0.2)
        except Empty:
            continue
        if progress is not None:
            progress(phase, step, terms)
    thread.join()
    queue.shutdown()
    if "error" in outcome:
        raise outcome["error"]
    with outcome["result"].checkpoint.as_directory() as directory:
        weights = torch.load(Path(directory) / WEIGHTS, weights_only=False)
    model = WorldModel(model_cfg)
    model.load_state_dict(weights["state"])
    return model.eval(), weights["history"], weights["refit"]
