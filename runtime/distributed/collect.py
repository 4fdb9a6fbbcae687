"""Episodes collected by Ray actors: `launch.collect --workers N [--address ADDR]`.

Each `Collector` actor owns its own simulator and runs whole episodes, `collect_episode(cfg, seed)`; an
episode depends on its seed alone, so the dataset is the same whatever the number of workers, the order they
finish in, or a worker dying half-way. A dead worker's actor is restarted by Ray and its episode run again
from its seed (`max_restarts`, `max_task_retries`); the driver writes each episode under its seed as it
arrives, once.

Ray is started (or joined) by runtime/distributed/cluster.py.
"""

import logging
import os
import time
from collections.abc import Callable, Iterable
from dataclasses import replace

import ray
import torch

from runtime.world_model.data import CollectConfig, collect_episode

log = logging.getLogger(__name__)
RESTARTS = 5  # a worker may die this many times before its episodes count as failed
# episodes queued per worker: the next one waits in the actor's queue while the last one travels to the
# driver, so a worker never idles for the round trip (with one, a single worker ran 20 % below its speed)
IN_FLIGHT = 2


@ray.remote(num_cpus=1, max_restarts=RESTARTS, max_task_retries=RESTARTS)
class Collector:
    """One simulator, episodes on request. Its process id lets tests and the benchmark kill it."""

    def __init__(
        self, cfg: CollectConfig, controller: Callable | None = None, summarize: Callable | None = None
    ):
        os.environ.setdefault("MUJOCO_GL", "egl")
        torch.set_num_threads(1)  # one CPU each (num_cpus=1); a model's float sums then split as in-process
        # a short episode first: the numba kernels compile and the renderer starts here, not in the first
        # real episode (start-up is the worker's, not its throughput)
        collect_episode(replace(cfg, episode_seconds=0.3), 0)
        self.cfg = cfg
        self.controller = controller() if controller is not None else None
        self.summarize = summarize
        self.episodes = 0
        self.busy_s = 0.0

    def pid(self) -> int:
        return os.getpid()

    def collect(self, seed: int) -> tuple[int, dict, float]:
        t0 = time.perf_counter()
        episode = collect_episode(self.cfg, seed, controller=self.controller)
        if self.summarize is not None:
            episode = self.summarize(episode, self.controller)
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
    controller: Callable | None = None,
    summarize: Callable | None = None,
) -> list[dict]:
    """Every seed's episode, handed to `on_episode(seed, episode)` as it completes (once per seed), with at
    most IN_FLIGHT per worker in flight. Returns each worker's throughput summary, timed from when every
    worker had started (`wall_s`). Ray must be started.

    `controller`, a picklable function of nothing, builds each worker's policy there (launch.eval control;
    default: the scripted expert or random walk of `cfg`); `summarize(episode, controller)`, also run there,
    replaces the episode with what the caller needs of it."""
    actors = [Collector.remote(cfg, controller, summarize) for _ in range(workers)]
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
