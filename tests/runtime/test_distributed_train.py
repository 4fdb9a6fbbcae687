"""Training on Ray Train (runtime/distributed/train.py): sharded gradients are the full batch's, one Ray
worker is the in-process loop exactly, two train like one, and launch.train refuses what cannot run."""

import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import distributed as dist
from torch import multiprocessing as mp

from runtime.distributed.train import train_on_ray
from runtime.world_model.data import CollectConfig, collect_episode
from runtime.world_model.model import WorldModelConfig
from runtime.world_model.training import Episodes, Shard, TrainConfig, refit_predictor, train

ROOT = Path(__file__).resolve().parents[2]


def _shard_worker(rank: int, init: str, world: int) -> None:
    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=world)
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(5, 7), torch.nn.Tanh(), torch.nn.Linear(7, 3))
    unused = torch.nn.Parameter(torch.ones(2))  # no worker's loss touches it
    partial = torch.nn.Parameter(torch.ones(2))  # only worker 0's loss touches it
    params = [*model.parameters(), unused, partial]
    x, y = torch.randn(8, 5), torch.randn(8, 3)

    def loss_of(xs, ys, with_partial, gather):
        out = model(xs)
        # a mean over samples (each worker its slice) and a term over the whole batch (gathered)
        loss = torch.nn.functional.mse_loss(out, ys) + gather(out).var(dim=0).sum()
        return loss + (partial**2).sum() if with_partial else loss

    full = loss_of(x, y, False, lambda v: v)
    full.backward()
    expected = [p.grad.clone() for p in model.parameters()]
    for p in params:
        p.grad = None
    shard = Shard(rank, world)
    mask = torch.arange(8) % 3 == 0
    assert torch.equal(shard.gather(shard.take(mask)), mask), "a gathered mask is not the global one"
    local = loss_of(shard.take(x), shard.take(y), rank == 0, shard.gather)
    local.backward()
    terms = shard.average(params, {"total": float(local), "rank": float(rank)})
    for got, want in zip(model.parameters(), expected, strict=True):
        torch.testing.assert_close(got.grad, want, rtol=1e-5, atol=1e-6)
    assert unused.grad is None, "a parameter no worker has a gradient for got one"
    torch.testing.assert_close(partial.grad, torch.full((2,), 2.0 / world))  # d/dp p^2 = 2, from one worker
    assert terms["rank"] == pytest.approx(sum(range(world)) / world)
    dist.destroy_process_group()


def test_sharded_gradients_are_the_full_batch_gradient(tmp_path):
    """Two gloo processes, each on its half of a batch of 8: after `Shard.average` every worker holds the
    gradient of the whole batch's loss, a mean over samples plus a variance over the batch (through
    `Shard.gather`); a parameter no worker touched keeps no gradient, one only a worker touched gets that
    worker's share; the loss terms are averaged; a gathered mask is the global one."""
    mp.spawn(_shard_worker, args=(f"file://{tmp_path / 'rendezvous'}", 2), nprocs=2, join=True)


@pytest.fixture(scope="module")
def episodes():
    cfg = CollectConfig(task="reach", episode_seconds=1.5)
    return Episodes.of([collect_episode(cfg, seed) for seed in range(4)])


@pytest.mark.timeout(400)
def test_one_ray_worker_is_the_in_process_loop_and_two_train_alike(episodes, local_ray, tmp_path):
    """On one Ray Train worker, training is the in-process loop bit for bit (loss terms and weights). On two
    (the same global batch, split; the terms over the batch gathered), the loss follows the one-worker run
    step by step within 0.1 % (float sums in another order, and the experts' load balance per slice)."""
    cfg = TrainConfig(steps=6, refit_steps=3, refit_batch=16, threads=1)
    local, history = train(WorldModelConfig(), cfg, episodes)
    refit = refit_predictor(local, cfg, episodes)
    one, history_1, refit_1 = train_on_ray(WorldModelConfig(), cfg, episodes, 1, tmp_path / "ray")
    untimed = lambda terms: [{k: v for k, v in t.items() if k != "step_s"} for t in terms]  # noqa: E731
    assert untimed(history_1) == untimed(history) and refit_1 == refit
    for (name, a), b in zip(local.state_dict().items(), one.state_dict().values(), strict=True):
        assert torch.equal(a, b), name
    seen = []
    two, history_2, refit_2 = train_on_ray(
        WorldModelConfig(), cfg, episodes, 2, tmp_path / "ray", lambda *step: seen.append(step)
    )
    assert [(phase, step) for phase, step, _ in seen] == [("train", i) for i in range(6)] + [
        ("refit", i) for i in range(3)
    ], "the progress callback missed steps"
    a, b = np.array([h["total"] for h in history]), np.array([h["total"] for h in history_2])
    assert np.all(np.abs(b - a) / a <= 1e-3), (a, b)
    assert not all(torch.equal(x, y) for x, y in zip(one.parameters(), two.parameters(), strict=True))


def _train_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "launch.train", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_launch_train_refuses_an_address_with_nothing_listening(tmp_path):
    """`--address` where no cluster is: exit 2 naming it, before any data is read (the data directory does
    not even exist) and nothing written."""
    out = tmp_path / "out"
    proc = _train_cli("--data", str(tmp_path / "none"), "--out", str(out), "--address", "127.0.0.1:1")
    assert proc.returncode == 2 and "no Ray cluster at '127.0.0.1:1'" in proc.stderr, proc.stderr[-2000:]
    assert not out.exists()


def test_launch_train_refuses_a_batch_the_workers_cannot_split(tmp_path):
    """A global batch of 8 windows over 3 workers: refused naming the field, nothing started."""
    proc = _train_cli("--data", str(tmp_path / "none"), "--workers", "3")
    said = " ".join(re.sub("[│╭╮╰╯─]", " ", proc.stderr).split())  # tyro draws its errors in a box
    assert proc.returncode == 2 and "`train.batch` (8) must be a multiple of --workers (3)" in said, said
