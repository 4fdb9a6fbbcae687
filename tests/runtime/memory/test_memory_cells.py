"""The tree of cells: a change in the world splits a cell, routing follows the world back, nothing learned
before is lost; maintenance merges duplicates within its budget; summaries add up; state round-trips."""

import numpy as np
import pytest

from runtime.memory.cells import CellMemory, MemoryConfig
from runtime.memory.store import MemoryInputError, StoreConfig

DK, DV = 8, 4


def _memory(capacity: int = 1024, **kw) -> CellMemory:
    return CellMemory(MemoryConfig(StoreConfig(key_dim=DK, value_dim=DV, capacity=capacity), **kw))


def _world(seed: int = 0):
    """value = W key + noise; the "shifted" world negates W (a reversed actuator, in miniature)."""
    rng = np.random.default_rng(seed)
    w = rng.normal(size=(DV, DK))
    return rng, lambda key, shifted: key @ (-w if shifted else w).T + 0.01 * rng.normal(size=DV)


def _recall_error(memory: CellMemory, keys: np.ndarray, want: np.ndarray) -> float:
    _, got = memory.recall(keys, probe=True)
    return float(np.mean(np.linalg.norm(got.value - want, axis=-1) / np.linalg.norm(want, axis=-1)))


def _run(memory: CellMemory, rng, world, ticks: int, shifted: bool) -> None:
    for key in rng.normal(size=(ticks, DK)).astype(np.float32):
        memory.write(key, world(key, shifted))
        memory.tick()
        memory.maintain(0.01)


def test_a_change_splits_the_cell_and_routing_follows_the_world_back():
    memory = _memory()
    rng, world = _world()
    probe_keys = rng.normal(size=(200, DK)).astype(np.float32)
    _run(memory, rng, world, 1000, shifted=False)
    assert memory.splits == 0 and len(memory.cells) == 1  # a steady world does not split
    before = _recall_error(memory, probe_keys, np.stack([world(k, False) for k in probe_keys]))
    _run(memory, rng, world, 300, shifted=True)
    assert memory.splits == 1 and not memory.root.leaf
    old, new = memory.root.children
    assert memory.root.active == 1 and len(old.store) >= 900 and len(new.store) > 100
    # The first world's entries would be off by 2 (every value negated); the new child's few hundred
    # entries already do far better.
    assert _recall_error(memory, probe_keys, np.stack([world(k, True) for k in probe_keys])) < 1.0
    _run(memory, rng, world, 100, shifted=False)  # back to the first world
    assert memory.root.active == 0 and memory.switches == 1
    after = _recall_error(memory, probe_keys, np.stack([world(k, False) for k in probe_keys]))
    assert after <= 1.2 * before + 0.02, (before, after)  # nothing forgotten


def test_no_split_under_noise_alone():
    """Values that scatter around the same mapping are not a conflict: the fast and slow errors agree."""
    memory = _memory()
    rng = np.random.default_rng(5)
    w = rng.normal(size=(DV, DK))
    for key in rng.normal(size=(2000, DK)).astype(np.float32):
        memory.write(key, key @ w.T + 0.3 * rng.normal(size=DV))
        memory.maintain(0.01)
    assert memory.splits == 0


def test_maintenance_merges_duplicates_and_keeps_its_budget():
    memory = _memory(capacity=256)
    rng = np.random.default_rng(6)
    keys = rng.normal(size=(50, DK)).astype(np.float32)
    values = rng.normal(size=(50, DV)).astype(np.float32)
    for k, v in zip(keys, values, strict=True):
        memory.write(k, v)
        memory.write(k * 1.0001, v)  # a near-duplicate of each
    assert len(memory) == 100
    _, before = memory.recall(keys, probe=True)
    idle = memory.maintain(0.0)  # no idle time: no work started
    assert idle.chunks == 0 and not idle.finished and len(memory) == 100
    report = memory.maintain(1.0)
    assert report.finished and report.merged == 50 and len(memory) == 50
    assert memory.active_leaf().store.energy[memory.active_leaf().store.used].min() == pytest.approx(2.0)
    _, after = memory.recall(keys, probe=True)
    np.testing.assert_allclose(after.value, before.value, atol=1e-3)  # merging lost nothing


def _split_memory(seed: int, before: int):
    """A memory that saw `before` writes of one world and 200 of the shifted one (split by then)."""
    memory = _memory()
    rng, world = _world(seed)
    _run(memory, rng, world, before, shifted=False)
    _run(memory, rng, world, 200, shifted=True)
    return memory, rng


def test_summaries_add_up_the_tree():
    memory, rng = _split_memory(seed=1, before=600)
    rows = {row["id"]: row for row in memory.summaries()}
    root = rows[memory.root.id]
    assert root["children"] and root["active"] == 1
    assert root["entries"] == sum(rows[c]["entries"] for c in root["children"]) == len(memory)
    assert all(rows[c]["parent"] == root["id"] for c in root["children"])


def test_state_round_trip_recalls_the_same():
    memory, rng = _split_memory(seed=2, before=600)
    arrays, meta = memory.state()
    again = CellMemory.from_state(arrays, meta)
    cues = rng.normal(size=(32, DK)).astype(np.float32)
    np.testing.assert_array_equal(
        memory.recall(cues, probe=True)[1].value, again.recall(cues, probe=True)[1].value
    )
    assert again.summaries() == memory.summaries()
    again_arrays, again_meta = again.state()
    assert again_meta == meta and all(np.array_equal(arrays[k], again_arrays[k]) for k in arrays)


def test_probes_change_no_cell():
    memory, rng = _split_memory(seed=3, before=400)
    arrays, meta = memory.state()
    memory.recall(rng.normal(size=(256, DK)), rng.random((256, DK)) < 0.5, probe=True)
    again_arrays, again_meta = memory.state()
    assert again_meta == meta and all(arrays[k].tobytes() == again_arrays[k].tobytes() for k in arrays)


def test_save_and_load_through_snapshots_survive_a_corrupt_newest(tmp_path):
    """The memory saved twice, the newest file then truncated: load reports it and returns the first."""
    memory, rng = _split_memory(seed=4, before=400)
    first = memory.save(tmp_path)
    cues = rng.normal(size=(16, DK)).astype(np.float32)
    want = memory.recall(cues, probe=True)[1].value
    memory.write(cues[0], np.ones(DV, np.float32))
    newest = memory.save(tmp_path)
    newest.write_bytes(newest.read_bytes()[:-100])
    again, report = CellMemory.load(tmp_path)
    assert report.path == first and report.skipped[0][0] == newest
    np.testing.assert_array_equal(again.recall(cues, probe=True)[1].value, want)


@pytest.mark.parametrize(
    "key, value",
    [(np.zeros(DK), np.full(DV, np.nan)), (np.zeros(DK), np.ones(1)), (np.full(DK, np.inf), np.ones(DV))],
)
def test_a_bad_write_is_refused_before_routing_or_conflict_tracking_see_it(key, value):
    memory, _ = _split_memory(seed=5, before=400)
    arrays, meta = memory.state()
    with pytest.raises(MemoryInputError):
        memory.write(key, value)
    again_arrays, again_meta = memory.state()
    assert again_meta == meta and all(arrays[k].tobytes() == again_arrays[k].tobytes() for k in arrays)


def test_credit_skips_entries_rewritten_since_the_recall():
    memory = _memory(capacity=4)
    rng = np.random.default_rng(7)
    keys = rng.normal(size=(6, DK)).astype(np.float32)
    for k in keys[:4]:
        memory.write(k, np.ones(DV, np.float32))
    cell, got = memory.recall(keys[0])
    memory.write(keys[4], np.ones(DV, np.float32))  # full: evicts one of the entries the recall used
    store = cell.store
    evicted = int(np.flatnonzero(store.born == store.writes)[0])
    memory.credit(cell, got, 5.0)
    assert store.energy[evicted] == pytest.approx(1.0) and store.hits[evicted] == 0


def test_credit_after_the_cell_split_is_a_no_op():
    """A recall made before a split, credited after it: the entries moved to children, nothing is fed."""
    memory = _memory()
    rng, world = _world(8)
    _run(memory, rng, world, 400, shifted=False)
    cell, got = memory.recall(rng.normal(size=DK).astype(np.float32))
    _run(memory, rng, world, 200, shifted=True)
    assert not cell.leaf
    energies = [c.store.energy.copy() for c in memory.leaves()]
    memory.credit(cell, got, 1.0)
    assert all(np.array_equal(e, c.store.energy) for e, c in zip(energies, memory.leaves(), strict=True))


def test_routing_finds_a_world_seen_two_splits_ago():
    """Three worlds in turn (W1, W2, W3, W1, W2): the second visit to W2 goes back to the cell that learned it
    instead of splitting to learn it again."""
    memory = _memory()
    rng = np.random.default_rng(9)
    worlds = [rng.normal(size=(DV, DK)) for _ in range(3)]

    def visit(w, ticks):
        for key in rng.normal(size=(ticks, DK)).astype(np.float32):
            memory.write(key, key @ w.T + 0.01 * rng.normal(size=DV))
            memory.maintain(0.01)

    for w in (0, 1, 2):
        visit(worlds[w], 600)
    cells_before = len(memory.cells)
    visit(worlds[0], 300)
    leaf_w1 = memory.active_leaf()
    visit(worlds[1], 300)
    leaf_w2 = memory.active_leaf()
    assert len(memory.cells) == cells_before  # no new cell for a world it has seen
    assert leaf_w2 is not leaf_w1
    probe = rng.normal(size=(100, DK)).astype(np.float32)
    assert _recall_error(memory, probe, probe @ worlds[1].T) < 0.6
