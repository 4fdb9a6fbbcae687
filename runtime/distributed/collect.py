"""Episodes collected by Ray actors: `launch.collect --workers N [--address ADDR]`.

Each `Collector` actor owns its own simulator and runs whole episodes, `collect_episode(cfg, seed)`; an
episode depends on its seed alone, so the dataset is the same whatever the number of workers, the order they
finish in, or a worker dying half-way. A dead worker's actor is restarted by Ray and its episode run again
from its seed (`max_restarts`, `max_task_retries`); the driver writes each episode under its seed as it
arrives, once.

Without `--address`, Ray starts in this process with `workers` CPUs and no dashboard; `auto` joins the
cluster this machine belongs to, `HOST:PORT` a cluster's head node. An address where nothing listens is
refused at once, naming it (Ray itself would retry for a minute).
"""

import logging
import os
import socket
import time
from collections.abc import Callable, Iterable
from dataclasses import replace

import ray

from runtime.distributed import ClusterError
from runtime.world_model.data import CollectConfig, collect_episode

log = logging.getLogger(__name__)
RESTARTS = 5  # a worker may die this many times before its episodes count as failed
# episodes queued per worker: the next one waits in the actor's queue while the last one travels to the
# driver, so a worker never idles for the round trip (with one, a single worker ran 20 % below its speed)
IN_FLIGHT = 2


def check_address(address: str | None) -> None:
    """ClusterError naming `address` if it is `HOST:PORT` and nothing listens there."""
    if address in (None, "", "auto", "local") or address.startswith("ray://"):
        return
    host, _, port = address.rpartition(":")
    try:
        with socket.create_connection((host or "127.0.0.1", int(port)), timeout=2.0):
            return
    except (OSError, ValueError) as exc:
        raise ClusterError(
            f"no Ray cluster at {address!r} ({exc}); start one with `ray start --head` or leave --address "
            "out to run locally"
        ) from None


def start(workers: int, address: str | None = None) -> None:
    """Ray, locally (`workers` CPUs, no dashboard) or joined to the cluster at `address`."""
    if ray.is_initialized():
        return
    check_address(address)
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    if address in (None, "", "local"):
        ray.init(num_cpus=workers, include_dashboard=False, log_to_driver=False, configure_logging=False)
    else:
        ray.init(address=address, log_to_driver=False, configure_logging=False)


@ray.remote(num_cpus=1, max_restarts=RESTARTS, max_task_retries=RESTARTS)
class Collector:
    """One simulator, episodes on request. Its process id lets tests and the benchmark kill it."""

    def __init__(self, cfg: CollectConfig):
        os.environ.setdefault("MUJOCO_GL", "egl")
        # a short episode first: the numba kernels compile and the renderer starts here, not in the first
        # real episode (start-up is the worker's, not its throughput)
        collect_episode(replace(cfg, episode_seconds=0.3), 0)
        self.cfg = cfg
        self.episodes = 0
        self.busy_s = 0.0

    def pid(self) -> int:
        return os.getpid()

    def collect(self, seed: int) -> tuple[int, dict, float]:
        t0 = time.perf_counter()
        episode = collect_episode(self.cfg, seed)
        elapsed = time.perf_counter() - t0
        self.episodes += 1
        self.busy_s += elapsed
        return seed, episode, elapsed

    def stats(self) -> dict:
        return {"pid": os.getpid(), "episodes": self.episodes, "busy_s": self.busy_s}


def collect(
    cfg: CollectConfig,
    seeds: Iterable[int],
    workers: int,
    on_episode: Callable[[int, dict], None],
    on_started: Callable[[list], None] | None = None,
) -> list[dict]:
    """Every seed's episode, handed to `on_episode(seed, episode)` as it completes (once per seed), with at
    most IN_FLIGHT per worker in flight. Returns each worker's throughput summary, timed from when every
    worker had started (`wall_s`). Ray must be started."""
    actors = [Collector.remote(cfg) for _ in range(workers)]
    ray.get([actor.pid.remote() for actor in actors])  # started (a process each, its imports done)
    if on_started is not None:
        on_started(actors)
    pending = list(seeds)
    running: dict = {}  # object ref -> (actor index, seed)
    done: set[int] = set()
    per_worker = [{"episodes": 0, "busy_s": 0.0} for _ in actors]
    wall0 = time.perf_counter()
    for _ in range(IN_FLIGHT):
        for k in range(len(actors)):
            if pending:
                seed = pending.pop(0)
                running[actors[k].collect.remote(seed)] = (k, seed)
    while running:
        ready, _ = ray.wait(list(running), num_returns=1)
        k, seed = running.pop(ready[0])
        got_seed, episode, elapsed = ray.get(ready[0])
        if got_seed not in done:  # a retried task cannot hand an episode in twice
            done.add(got_seed)
            on_episode(got_seed, episode)
            per_worker[k]["episodes"] += 1
            per_worker[k]["busy_s"] += elapsed
        if pending:
            seed = pending.pop(0)
            running[actors[k].collect.remote(seed)] = (k, seed)
    wall = time.perf_counter() - wall0
    for actor in actors:
        ray.kill(actor)
    return [
        {"worker": k, **w, "wall_s": wall, "episodes_per_s": w["episodes"] / wall if wall > 0 else 0.0}
        for k, w in enumerate(per_worker)
    ]
