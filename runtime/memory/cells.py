"""The holarchy: a tree of cells, each a store (store.py) with a local correction and links up and down.

- **Down: context.** An inner cell keeps, for each child, a running error of that child's recalls against
  what was then written; the child that explains the present best is its `active` one (with hysteresis, so
  noise does not flip it), and queries and writes go down the chain of active children to a leaf.
- **Up: summaries.** Every cell reports its entries, crystallized entries, recall error and conflict;
  an inner cell's counts are its children's sums (`summaries`).
- **Local correction.** Each cell keeps the running mean of the values written to it: with residuals as
  values, the bias of the transition in that cell's regime, the zeroth-order term a fast adapter can add to a
  prediction before any entry matches.
- **Conflict and splits.** A leaf tracks the error of recalling each new value from the entries whose keys
  are close to its key (fast and slow running means). When the world changes (a heavier cube, a reversed
  joint), values stop matching the stored ones for the same keys and the fast error rises above the slow one.
  A leaf whose ratio stays above `split_ratio` for `split_patience` writes (net of writes below it; the
  slow mean holds still meanwhile, as a change detector's baseline does) splits in two: entries stored
  before the conflict began go to one child, later ones to the other, which becomes active. Both survive: when
  the world changes back, the old child's recalls fit again and routing returns to it, so nothing learned
  before the change is lost.
- **Persistence** (`save`, `load`): atomic, versioned snapshots (snapshot.py); a corrupt newest one is
  reported and the one before it loaded.
- **Maintenance** (`maintain(budget_s)`): merges near-duplicate entries and carries out pending splits, in
  small chunks, stopping when the time budget (the idle time before the next tick) is spent.
"""

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from runtime.memory import snapshot
from runtime.memory.store import EPS, HolographicStore, MemoryInputError, Recall, StoreConfig, check_vectors


@dataclass(frozen=True)
class MemoryConfig:
    store: StoreConfig
    max_depth: int = 3  # cells this deep (the root is 0) do not split
    close_similarity: float = 0.9  # a write's key this close to an entry's is "the same situation"
    fast_rate: float = 0.1  # of the fast recall-error mean (about 10 writes)
    slow_rate: float = 0.005  # of the slow one (about 200 writes)
    split_ratio: float = 1.5
    split_patience: int = 10  # writes (net) with fast > split_ratio x slow before a split
    split_min_entries: int = 32  # on each side of the split
    route_rate: float = 0.1  # of each child's recall-error mean
    route_hysteresis: float = 0.8  # another child takes over when its error is below this x the active one's
    correction_rate: float = 0.02
    merge_key_similarity: float = 0.999
    merge_value_similarity: float = 0.99
    merge_chunk: int = 64  # entries compared against the rest per maintenance chunk

    def __post_init__(self):
        if self.max_depth < 0:
            raise ValueError(f"`max_depth` must be >= 0, got {self.max_depth}")
        for name in ("fast_rate", "slow_rate", "route_rate", "correction_rate"):
            if not 0.0 < getattr(self, name) <= 1.0:
                raise ValueError(f"`{name}` must be in (0, 1], got {getattr(self, name)}")
        for name in ("split_patience", "split_min_entries", "merge_chunk"):
            if getattr(self, name) < 1:
                raise ValueError(f"`{name}` must be >= 1, got {getattr(self, name)}")
        if self.slow_rate >= self.fast_rate:
            raise ValueError("`slow_rate` must be below `fast_rate`")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, raw: dict) -> "MemoryConfig":
        raw = dict(raw)
        return cls(store=StoreConfig(**raw.pop("store")), **raw)


@dataclass
class Cell:
    id: int
    depth: int
    store: HolographicStore
    parent: "Cell | None" = None
    children: list["Cell"] = field(default_factory=list)
    active: int = 0  # the child queries and writes go to
    child_error: np.ndarray = field(default_factory=lambda: np.zeros(0))
    correction: np.ndarray | None = None
    fast_error: float = 0.0
    slow_error: float = 0.0
    value_scale: float = 0.0  # running mean |value| written here: errors are in units of it
    conflicted_writes: int = 0  # consecutive writes with fast > split_ratio x slow
    conflict_since: int = -1  # the store's write count when the present conflict began
    writes: int = 0

    @property
    def leaf(self) -> bool:
        return not self.children

    @property
    def conflict(self) -> float:
        return self.fast_error / (self.slow_error + EPS) if self.writes else 0.0


@dataclass
class MaintenanceReport:
    merged: int = 0
    splits: int = 0
    chunks: int = 0
    seconds: float = 0.0
    finished: bool = True  # False: the budget ran out with work left


class CellMemory:
    """The tree and its operations; single-threaded (the brain calls it between ticks)."""

    def __init__(self, cfg: MemoryConfig):
        self.cfg = cfg
        self.cells: list[Cell] = []
        self.root = self._new_cell(depth=0, parent=None)
        self._merge_cursor = 0
        self._cost = {"split": 2e-3, "merge": 5e-4}  # estimated seconds of each piece of idle work
        self.splits = 0
        self.switches = 0  # times an inner cell's active child changed

    def _new_cell(self, depth: int, parent: Cell | None) -> Cell:
        cell = Cell(len(self.cells), depth, HolographicStore(self.cfg.store), parent)
        cell.correction = np.zeros(self.cfg.store.value_dim, np.float32)
        self.cells.append(cell)
        return cell

    # ---- routing ------------------------------------------------------------------------------------------
    def active_leaf(self) -> Cell:
        cell = self.root
        while cell.children:
            cell = cell.children[cell.active]
        return cell

    def leaves(self) -> list[Cell]:
        return [c for c in self.cells if c.leaf]

    def __len__(self) -> int:
        return sum(len(c.store) for c in self.leaves())

    @property
    def crystallized(self) -> int:
        return sum(c.store.crystallized for c in self.leaves())

    # ---- reading ------------------------------------------------------------------------------------------
    def recall(self, cue, known=None, *, probe: bool = False) -> tuple[Cell, Recall]:
        """From the active leaf; batched cues are how planning reads (`probe=True`: it never writes)."""
        leaf = self.active_leaf()
        return leaf, leaf.store.recall(cue, known, probe=probe)

    def credit(self, cell: Cell, recall: Recall, gain) -> None:
        """Feed what `recall` used; nothing if the cell has split since (its entries moved to children)."""
        if cell.leaf:
            cell.store.credit(recall, gain)

    # ---- writing ------------------------------------------------------------------------------------------
    def write(self, key, value) -> Cell:
        """One entry (Dk,), (Dv,): routing is updated on the way down, then the active leaf stores it."""
        key = check_vectors(key, self.cfg.store.key_dim, "key")  # before routing or tracking sees it
        value = check_vectors(value, self.cfg.store.value_dim, "value")
        if len(key) != 1 or len(value) != 1:
            raise MemoryInputError(f"one entry per write, got {len(key)} keys and {len(value)} values")
        key, value = key[0], value[0]
        cell = self.root
        while cell.children:
            self._route(cell, key, value)
            cell = cell.children[cell.active]
        self._track_conflict(cell, key, value)
        cell.store.write(key, value)
        node = cell
        size = float(np.linalg.norm(value))
        while node is not None:  # the correction of every cell on the path: each is its regime's mean
            node.correction += self.cfg.correction_rate * (value - node.correction)
            node.value_scale += (size - node.value_scale) * (
                1.0 if node.value_scale == 0 else self.cfg.slow_rate
            )
            node.writes += node is not cell
            node = node.parent
        return cell

    def _route(self, cell: Cell, key: np.ndarray, value: np.ndarray) -> None:
        """Score each child by its active leaf's recall of this write; inner children are routed first
        (probe recalls only), so a subtree the writes do not go through still follows the world."""
        cfg = self.cfg
        for child in cell.children:
            if child.children:
                self._route(child, key, value)
        for i, child in enumerate(cell.children):
            leaf = child
            while leaf.children:
                leaf = leaf.children[leaf.active]
            if len(leaf.store):
                err = _error(leaf.store.recall(key, probe=True).value[0], value, cell.value_scale)
                cell.child_error[i] += cfg.route_rate * (err - cell.child_error[i])
        best = int(np.argmin(cell.child_error))
        if (
            best != cell.active
            and cell.child_error[best] < cfg.route_hysteresis * cell.child_error[cell.active]
        ):
            cell.active = best
            self.switches += 1

    def _track_conflict(self, cell: Cell, key: np.ndarray, value: np.ndarray) -> None:
        store, cfg = cell.store, self.cfg
        if not len(store) or cell.value_scale <= EPS:
            return  # nothing to conflict with, or no scale yet to measure errors in
        got = store.recall(key, probe=True)
        if got.similarity[0].max() < cfg.close_similarity:
            return  # a new situation, not a conflicting one
        err = _error(got.value[0], value, cell.value_scale)
        if cell.writes == 0:
            cell.fast_error = cell.slow_error = err
        cell.writes += 1
        cell.fast_error += cfg.fast_rate * (err - cell.fast_error)
        if cell.conflict > cfg.split_ratio:  # the baseline holds still while the alarm is up (as in CUSUM)
            if cell.conflicted_writes == 0:
                cell.conflict_since = store.writes
            cell.conflicted_writes += 1
            return
        cell.slow_error += cfg.slow_rate * (err - cell.slow_error)
        cell.conflicted_writes = max(cell.conflicted_writes - 1, 0)  # leaky: one good write does not reset
        if cell.conflicted_writes == 0:
            cell.conflict_since = -1

    # ---- time and maintenance -----------------------------------------------------------------------------
    def tick(self, ticks: int = 1) -> int:
        """Decay and crystallization in every leaf; returns how many entries crystallized."""
        return sum(c.store.tick(ticks) for c in self.leaves())

    def _inner_store(self) -> HolographicStore:
        """An inner cell's store: its entries live in its children, so it holds none."""
        return HolographicStore(StoreConfig(**{**asdict(self.cfg.store), "capacity": 1}))

    def split_due(self, cell: Cell) -> bool:
        cfg = self.cfg
        if not cell.leaf or cell.depth >= cfg.max_depth or cell.conflicted_writes < cfg.split_patience:
            return False
        used = cell.store.used
        old = int((used & (cell.store.born <= cell.conflict_since)).sum())
        return min(old, int(used.sum()) - old) >= cfg.split_min_entries

    def split(self, cell: Cell) -> None:
        """Entries from before the conflict to one child, later ones to the other (active)."""
        store = cell.store
        slots = np.flatnonzero(store.used)
        late = store.born[slots] > cell.conflict_since
        for part in (slots[~late], slots[late]):
            child = self._new_cell(cell.depth + 1, cell)
            child.store.put(store.take(part))
            child.store.writes = store.writes
            child.correction[...] = store.values[part].mean(0)
            child.slow_error = child.fast_error = cell.slow_error
            child.value_scale = cell.value_scale
            child.writes = 1
            cell.children.append(child)
        cell.child_error = np.array([cell.fast_error, cell.slow_error], np.float64)
        cell.active = 1
        cell.store = self._inner_store()
        cell.conflicted_writes, cell.conflict_since = 0, -1
        self.splits += 1

    def maintain(self, budget_s: float) -> MaintenanceReport:
        """Idle-time work within `budget_s`: pending splits, then a pass of near-duplicate merging, a chunk
        at a time. A piece of work starts only if its estimated cost fits in what is left. The estimate is a
        slowly decaying maximum of measured costs (and decays faster while work is being skipped, so work
        too big for the usual idle time is tried again now and then): an overrun is possible on the first
        chunks and after such a decay, not in steady state."""
        t0 = time.perf_counter()
        deadline = t0 + budget_s
        report = MaintenanceReport()
        fits = lambda cost: time.perf_counter() + cost <= deadline  # noqa: E731
        for cell in self.leaves():
            if self.split_due(cell):
                if not fits(self._cost["split"]):
                    self._cost["split"] *= 0.9
                    report.finished = False
                    break
                self._timed("split", self.split, cell)
                report.splits += 1
        leaves = self.leaves()
        spans = [(c, s) for c in leaves for s in range(0, c.store.cfg.capacity, self.cfg.merge_chunk)]
        while report.finished and report.chunks < len(spans):
            cell, start = spans[self._merge_cursor % len(spans)]
            if not cell.store.used[start : start + self.cfg.merge_chunk].any():
                self._merge_cursor += 1  # an empty span costs nothing; do not let it lower the estimate
                report.chunks += 1
                continue
            if not fits(self._cost["merge"]):
                self._cost["merge"] *= 0.9
                report.finished = False
                break
            self._merge_cursor += 1
            report.merged += self._timed("merge", self._merge_chunk, cell.store, start)
            report.chunks += 1
        report.seconds = time.perf_counter() - t0
        return report

    def _timed(self, kind: str, fn, *args):
        t0 = time.perf_counter()
        out = fn(*args)
        self._cost[kind] = max(time.perf_counter() - t0, 0.99 * self._cost[kind])
        return out

    def _merge_chunk(self, store: HolographicStore, start: int) -> int:
        """Slots start .. start + merge_chunk against the whole store (one batched read); an entry whose key
        and value both nearly equal another's is folded into it."""
        slots = np.arange(start, min(start + self.cfg.merge_chunk, store.cfg.capacity))
        slots = slots[store.used[slots]]
        if len(slots) == 0 or len(store) < 2:
            return 0
        near, sim = store.nearest(store.keys[slots], None, 2)  # itself and its closest other
        is_self = near[:, 0] == slots
        other_of = np.where(is_self, near[:, 1], near[:, 0])
        other_sim = np.where(is_self, sim[:, 1], sim[:, 0])
        merged = 0
        for i in np.flatnonzero(other_sim >= self.cfg.merge_key_similarity):
            slot, other = int(slots[i]), int(other_of[i])
            if not (store.used[slot] and store.used[other]):
                continue  # one of them was folded already in this chunk
            if _cosine(store.values[slot], store.values[other]) < self.cfg.merge_value_similarity:
                continue
            _fold(store, into=other, src=slot)
            merged += 1
        return merged

    # ---- summaries ----------------------------------------------------------------------------------------
    def summaries(self) -> list[dict]:
        """One dict per cell, children first: what each sends up; inner cells sum their children's counts."""
        out: dict[int, dict] = {}
        for cell in sorted(self.cells, key=lambda c: -c.depth):
            if cell.leaf:
                entries, crystals = len(cell.store), cell.store.crystallized
            else:
                entries = sum(out[c.id]["entries"] for c in cell.children)
                crystals = sum(out[c.id]["crystallized"] for c in cell.children)
            out[cell.id] = {
                "id": cell.id,
                "depth": cell.depth,
                "parent": None if cell.parent is None else cell.parent.id,
                "children": [c.id for c in cell.children],
                "active": cell.active if cell.children else None,
                "entries": entries,
                "crystallized": crystals,
                "recall_error": cell.fast_error,
                "conflict": cell.conflict,
            }
        return [out[c.id] for c in self.cells]

    # ---- persistence --------------------------------------------------------------------------------------
    def state(self) -> tuple[dict[str, np.ndarray], dict]:
        """Arrays and metadata for a snapshot (snapshot.py)."""
        arrays: dict[str, np.ndarray] = {}
        cells = []
        for cell in self.cells:
            if cell.leaf:
                for name, array in cell.store.state().items():
                    arrays[f"cell{cell.id}.{name}"] = array
            arrays[f"cell{cell.id}.correction"] = cell.correction.copy()
            arrays[f"cell{cell.id}.child_error"] = cell.child_error.copy()
            cells.append(
                {
                    "id": cell.id,
                    "depth": cell.depth,
                    "parent": None if cell.parent is None else cell.parent.id,
                    "active": cell.active,
                    "errors": [cell.fast_error, cell.slow_error, cell.value_scale],
                    "conflict": [cell.conflicted_writes, cell.conflict_since],
                    "writes": cell.writes,
                }
            )
        meta = {
            "config": self.cfg.to_dict(),
            "cells": cells,
            "splits": self.splits,
            "switches": self.switches,
        }
        return arrays, meta

    def save(self, directory: Path, keep: int = 2) -> Path:
        """An atomic snapshot in `directory` (snapshot.py); the `keep` newest are kept."""
        arrays, meta = self.state()
        return snapshot.write_snapshot(directory, arrays, meta, keep)

    @classmethod
    def load(cls, directory: Path) -> tuple["CellMemory", snapshot.LoadReport]:
        """The newest snapshot that verifies; the report names any newer one that did not, and why."""
        arrays, meta, report = snapshot.load_latest(directory)
        return cls.from_state(arrays, meta), report

    @classmethod
    def from_state(cls, arrays: dict[str, np.ndarray], meta: dict) -> "CellMemory":
        memory = cls(MemoryConfig.from_dict(meta["config"]))
        memory.cells = []
        for raw in meta["cells"]:
            parent = None if raw["parent"] is None else memory.cells[raw["parent"]]
            cell = memory._new_cell(raw["depth"], parent)
            if cell.id != raw["id"]:
                raise MemoryInputError(f"snapshot cells out of order: {raw['id']} at position {cell.id}")
            if parent is not None:
                parent.children.append(cell)
            cell.active = raw["active"]
            cell.fast_error, cell.slow_error, cell.value_scale = raw["errors"]
            cell.conflicted_writes, cell.conflict_since = raw["conflict"]
            cell.writes = raw["writes"]
            cell.correction = arrays[f"cell{cell.id}.correction"].astype(np.float32)
            cell.child_error = arrays[f"cell{cell.id}.child_error"].astype(np.float64)
        for cell in memory.cells:
            if cell.leaf:
                prefix = f"cell{cell.id}."
                own = {k[len(prefix) :]: v for k, v in arrays.items() if k.startswith(prefix)}
                cell.store = HolographicStore.from_state(memory.cfg.store, own)
            else:
                cell.store = memory._inner_store()
        memory.root = memory.cells[0]
        memory.splits, memory.switches = meta["splits"], meta["switches"]
        return memory


def _error(got: np.ndarray, want: np.ndarray, scale: float) -> float:
    """Distance in units of the typical value written (not of this value: residuals can be near zero)."""
    return float(np.linalg.norm(got - want) / (scale + EPS))


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b) + EPS))


def _fold(store: HolographicStore, into: int, src: int) -> None:
    """Merge entry `src` into `into`: energy-weighted key and value, energies added, crystal if either."""
    wa, wb = max(float(store.energy[into]), EPS), max(float(store.energy[src]), EPS)
    for array in (store.keys, store.values):
        array[into] = (wa * array[into] + wb * array[src]) / (wa + wb)
    store.keys_changed(into)
    store.energy[into] += store.energy[src]
    store.crystal[into] |= store.crystal[src]
    store.hits[into] += store.hits[src]
    store.born[into] = max(store.born[into], store.born[src])
    store.remove(np.array([src]))
