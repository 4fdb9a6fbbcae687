"""Episodes collected on Ray (runtime/distributed): the same dataset whatever the worker count, a killed
worker survived with nothing lost or duplicated, a two-node cluster (collection and training), a clear
refusal where no cluster is, the control evaluation on two workers."""

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import ray
import torch

from runtime.distributed import collect as distributed
from runtime.world_model.data import CollectConfig, collect_episode, load_episode

ROOT = Path(__file__).resolve().parents[2]
CFG = CollectConfig(task="reach", episode_seconds=1.5)


def _same(a: dict, b: dict) -> bool:
    """Byte for byte, a NaN (a stream not seen yet) equal to a NaN."""
    nan_ok = lambda x: np.asarray(x).dtype.kind == "f"  # noqa: E731
    return a.keys() == b.keys() and all(np.array_equal(a[k], b[k], equal_nan=nan_ok(a[k])) for k in a)


def _collect(seeds, workers, on_started=None, after_first=None) -> dict[int, dict]:
    got: dict[int, dict] = {}
    calls: list[int] = []

    def keep(seed, episode):
        calls.append(seed)
        got[seed] = episode
        if len(calls) == 1 and after_first is not None:
            after_first()

    distributed.collect(CFG, seeds, workers, keep, on_started)
    assert sorted(calls) == sorted(seeds), "an episode handed in twice, or missing"
    return got


@pytest.mark.timeout(300)
def test_one_and_two_workers_give_identical_episodes(local_ray):
    """Episodes depend on their seed alone: 1 and 2 Ray workers, and the in-process path, give byte-identical
    arrays for every seed."""
    seeds = list(range(500, 504))
    one, two = _collect(seeds, 1), _collect(seeds, 2)
    for seed in seeds:
        assert _same(one[seed], two[seed]), seed
        assert _same(one[seed], collect_episode(CFG, seed)), seed


@pytest.mark.timeout(300)
def test_a_killed_worker_is_restarted_and_nothing_is_lost_or_duplicated(local_ray):
    """SIGKILL on a worker's process mid-collection (when the first episode comes in, the worker is in its
    next one): Ray restarts it, its episodes are run again from their seeds, and the result has exactly the
    requested episodes, each once, equal to an undisturbed run's."""
    seeds = list(range(600, 610))
    pids: list[int] = []

    def kill():
        os.kill(pids[0], signal.SIGKILL)
        pids.append(-1)  # done

    got = _collect(seeds, 2, lambda actors: pids.append(ray.get(actors[0].pid.remote())), kill)
    assert pids[-1] == -1, "the worker was never killed"
    assert sorted(got) == seeds
    for seed in (seeds[0], seeds[-1]):
        assert _same(got[seed], collect_episode(CFG, seed)), seed


@pytest.mark.timeout(300)
def test_collection_and_training_run_on_a_two_node_cluster(tmp_path):
    """A head and a worker node on this machine (ray.cluster_utils.Cluster): two collectors, one per node's
    CPU, collect every seed; then two Ray Train workers, one per node, train on those episodes (a few steps:
    the weights move, the losses are finite)."""
    from ray.cluster_utils import Cluster

    from runtime.distributed.train import train_on_ray
    from runtime.world_model.model import WorldModel, WorldModelConfig
    from runtime.world_model.training import Episodes, TrainConfig

    ray.shutdown()
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
    cluster.add_node(num_cpus=1)
    try:
        ray.init(address=cluster.address, log_to_driver=False)
        assert len([n for n in ray.nodes() if n["Alive"]]) == 2
        got = _collect([700, 701], 2)
        assert sorted(got) == [700, 701]
        cfg = TrainConfig(steps=3, refit_steps=2, refit_batch=16)
        model, history, refit = train_on_ray(
            WorldModelConfig(), cfg, Episodes.of(list(got.values())), 2, tmp_path / "ray"
        )
        assert len(history) == 3 and len(refit) == 2
        assert all(np.isfinite(h["total"]) for h in history)
        torch.manual_seed(cfg.seed)  # the weights training started from
        fresh = WorldModel(WorldModelConfig())
        moved = torch.nn.utils.parameters_to_vector(model.parameters())
        assert not torch.equal(moved, torch.nn.utils.parameters_to_vector(fresh.parameters()))
    finally:
        ray.shutdown()
        cluster.shutdown()


def test_an_address_with_nothing_listening_is_refused_at_once(tmp_path):
    """`launch.collect --address HOST:PORT` where no cluster is: exit code 2 and a message naming the
    address, nothing written."""
    proc = subprocess.run(
        [sys.executable, "-m", "launch.collect", "--out", str(tmp_path / "data"), "--episodes", "1"]
        + ["--address", "127.0.0.1:1"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2 and "no Ray cluster at '127.0.0.1:1'" in proc.stderr, proc.stderr[-2000:]
    assert not list((tmp_path / "data").glob("episode_*.npz"))


def _launch_collect(out: Path, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "launch.collect", "--out", str(out), *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.mark.timeout(400)
@pytest.mark.parametrize(("policy", "episodes", "seconds"), [("expert", 3, "1.5"), ("mpc_hssm", 2, "1.0")])
def test_launch_collect_with_two_workers_writes_the_same_files(tmp_path, policy, episodes, seconds):
    """`launch.collect --workers 2` writes the episodes `--workers 1` writes, byte for byte, and a throughput
    line per worker: with the scripted expert, and with the latent MPC planner on the shipped model, built
    inside each Ray worker (no deadline in virtual time, one thread each: its episodes depend on their seed
    alone)."""
    seeds = range(800, 800 + episodes)
    args = ["--task", "reach", "--episodes", str(episodes), "--episode-seconds", seconds, "--seed", "800"]
    runs = {}
    for workers in (1, 2):
        runs[workers] = tmp_path / f"w{workers}"
        proc = _launch_collect(runs[workers], "--workers", str(workers), "--policy", policy, *args)
        assert proc.returncode == 0, proc.stderr[-2000:]
    assert "worker 1:" in proc.stderr
    for seed in seeds:
        name = f"episode_{seed}.npz"
        assert _same(load_episode(runs[1] / name), load_episode(runs[2] / name)), seed
    assert json.loads((runs[2] / "manifest.json").read_text())["config"]["policy"] == policy


def test_launch_collect_refuses_a_policy_checkpoint_that_is_not_there(tmp_path):
    """`--policy actor --checkpoint MISSING`: exit 2 naming the path, nothing written."""
    missing = tmp_path / "nowhere"
    proc = _launch_collect(tmp_path / "out", "--policy", "actor", "--checkpoint", str(missing), timeout=120)
    assert proc.returncode == 2 and str(missing) in proc.stderr, proc.stderr[-2000:]
    assert not (tmp_path / "out").exists()


def _eval_on_one_and_two_workers(args: list[str], tmp_path: Path) -> tuple[dict, dict]:
    """The JSON reports of `launch.eval ARGS` in process and on 2 Ray workers."""
    reports = []
    for workers in (1, 2):
        path = tmp_path / f"w{workers}.json"
        proc = subprocess.run(
            [sys.executable, "-m", "launch.eval", *args, "--workers", str(workers), "--json", str(path)],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=500,
        )
        assert proc.returncode == 0, proc.stderr[-3000:]
        reports.append(json.loads(path.read_text()))
    return reports[0], reports[1]


@pytest.mark.timeout(400)
def test_launch_eval_control_on_two_workers_scores_as_one(tmp_path):
    """`launch.eval control --workers 2`: each Ray worker builds its own controllers (the distilled actor, the
    MPC planner on the shipped model); the successes equal the in-process run's on the same seeded episodes,
    the same figures are reported, and each worker's throughput."""
    args = ["control", "--task", "reach", "--episodes", "2", "--episode-seconds", "1.0"]
    args += ["--policies", "actor", "mpc_hssm", "expert", "--candidates", "32", "--horizon", "5"]
    args += ["--iterations", "1"]
    one, two = _eval_on_one_and_two_workers(args, tmp_path)
    assert {k: v for k, v in one["results"].items() if k.startswith("success_")} == {
        k: v for k, v in two["results"].items() if k.startswith("success_")
    }
    assert set(one["results"]) == set(two["results"]) >= {"success_actor", "success_mpc_hssm", "plan_p99_ms"}
    workers = two["details"]["workers_mpc_hssm"]
    assert len(workers) == 2 and sum(w["episodes"] for w in workers) == 2


@pytest.mark.timeout(600)
def test_launch_eval_adapt_scores_shifts_on_two_workers_as_in_process(tmp_path):
    """`launch.eval adapt --workers 2`: one shift per Ray task. The same keys as the in-process run, the
    world's change (simulation alone) identical, and the no-adaptation errors (inference alone) equal to
    float rounding; the adapting variants learn on one thread there, two here."""
    data = tmp_path / "train"
    collect = _launch_collect(data, "--task", "push", "--episodes", "4", "--episode-seconds", "1.5")
    assert collect.returncode == 0, collect.stderr[-2000:]
    args = ["adapt", "--train-data", str(data), "--probe-episodes", "4", "--phase", "1"]
    args += ["--episode-seconds", "2", "--shifts", "flip", "gain"]
    one, two = _eval_on_one_and_two_workers(args, tmp_path)
    assert set(one["results"]) == set(two["results"]) and set(one["details"]) == set(two["details"])
    for shift in ("flip", "gain"):
        key = f"{shift}_world_change_m"
        assert one["details"][key] == two["details"][key], key
        for name in ("post_error_m_none", "pre_error_m_none"):
            key = f"{shift}_{name}"
            assert two["details"][key] == pytest.approx(one["details"][key], rel=1e-4), key
