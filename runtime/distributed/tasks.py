"""Independent tasks on Ray workers, one CPU each: `launch.eval adapt --workers N` scores its shifts this way.

`run_all(fn, items, workers, on_done)` calls `fn(item)` for every item on Ray, at most `workers` at a time,
and hands each result to `on_done(item, result)` as it comes in; results come back in `items`' order. A
worker killed mid-task has its task run again (`max_retries`), so every item is done once. `fn` must be
picklable (a module-level function, or a `functools.partial` of one). Ray must be started.
"""

from collections.abc import Callable, Iterable

import ray

RETRIES = 3  # a task whose worker died is run again this many times


@ray.remote(num_cpus=1, max_retries=RETRIES)
def _call(fn: Callable, item):
    import torch

    torch.set_num_threads(1)  # one CPU each
    return fn(item)


def run_all(fn: Callable, items: Iterable, workers: int, on_done: Callable | None = None) -> list:
    items = list(items)
    results: dict[int, object] = {}
    pending, running = list(range(len(items))), {}
    while pending or running:
        while pending and len(running) < workers:
            i = pending.pop(0)
            running[_call.remote(fn, items[i])] = i
        ready, _ = ray.wait(list(running), num_returns=1)
        i = running.pop(ready[0])
        results[i] = ray.get(ready[0])
        if on_done is not None:
            on_done(items[i], results[i])
    return [results[i] for i in range(len(items))]
