"""`python -m launch.bench memory`: a full cell's read and write cost on this machine.

- `read_write_p99_ms` (and `_p50_ms`): one recall and one write through the cell tree, one cell of capacity
  C = 4096 already full (so every write evicts), keys of the online adapter's layout: the latent z and the
  action (2 * 32 + 5 dimensions), values the 64-dimensional prediction residual;
- details: the same with the evaluation's 128-dimensional token keys, a planning read (256 probe cues in one
  batch), and one idle-time maintenance chunk.
"""

import time
from dataclasses import dataclass

import numpy as np

from runtime.benchmarks.report import Report
from runtime.memory.cells import CellMemory, MemoryConfig
from runtime.memory.store import StoreConfig

TARGETS = {"read_write_p99_ms": ("<=", 0.5)}


@dataclass
class MemoryBenchConfig:
    capacity: int = 4096
    """Entries per cell (C)."""
    steps: int = 5000
    """Timed read + write pairs (after 500 warm-up pairs)."""
    key_dim: int = 69  # z (2 d_latent) and the action, as runtime/adapt/fast.py keys them
    value_dim: int = 64
    seed: int = 0


def _full_memory(cfg: MemoryBenchConfig, key_dim: int, rng: np.random.Generator) -> CellMemory:
    memory = CellMemory(
        MemoryConfig(StoreConfig(key_dim=key_dim, value_dim=cfg.value_dim, capacity=cfg.capacity))
    )
    keys = rng.normal(size=(cfg.capacity, key_dim)).astype(np.float32)
    store = memory.active_leaf().store
    store.write(keys, rng.normal(size=(cfg.capacity, cfg.value_dim)).astype(np.float32))
    store.energy[:] = rng.uniform(0.1, 2.0, cfg.capacity)  # evictions land anywhere, as in use
    return memory


def _read_write_ms(memory: CellMemory, cfg: MemoryBenchConfig, key_dim: int, rng: np.random.Generator):
    keys = rng.normal(size=(cfg.steps + 500, key_dim)).astype(np.float32)
    values = rng.normal(size=(cfg.steps + 500, cfg.value_dim)).astype(np.float32)
    out = np.empty(cfg.steps)
    for i in range(len(keys)):
        t0 = time.perf_counter()
        memory.recall(keys[i])
        memory.write(keys[i], values[i])
        if i >= 500:
            out[i - 500] = time.perf_counter() - t0
    return out * 1e3


def run(cfg: MemoryBenchConfig) -> Report:
    rng = np.random.default_rng(cfg.seed)
    report = Report("memory", config={k: str(v) for k, v in vars(cfg).items()}, targets=TARGETS)
    res, det = report.results, report.details
    memory = _full_memory(cfg, cfg.key_dim, rng)
    ms = _read_write_ms(memory, cfg, cfg.key_dim, rng)
    res["read_write_p50_ms"] = float(np.median(ms))
    res["read_write_p99_ms"] = float(np.percentile(ms, 99))
    det["entries"], det["evicted"] = len(memory), memory.active_leaf().store.evicted
    wide = _full_memory(cfg, 128, rng)
    ms = _read_write_ms(wide, cfg, 128, rng)
    det["read_write_p99_ms_key128"] = float(np.percentile(ms, 99))
    cues = rng.normal(size=(256, cfg.key_dim)).astype(np.float32)
    known = rng.random(cues.shape) < 0.5
    known[:, 0] = True
    batch = []
    for _ in range(200):
        t0 = time.perf_counter()
        memory.recall(cues, known, probe=True)
        batch.append(time.perf_counter() - t0)
    det["probe_read_256_p50_ms"] = float(np.median(batch) * 1e3)
    passes = [memory.maintain(1.0) for _ in range(3)]  # whole merge passes over the full cell
    det["maintenance_chunk_ms"] = float(np.median([p.seconds / max(p.chunks, 1) for p in passes]) * 1e3)
    return report
