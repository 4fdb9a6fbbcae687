"""A cell's store: partial cues recall whole entries, energy decides eviction, crystals stay, probes write
nothing, bad input changes nothing."""

import numpy as np
import pytest

from runtime.memory.store import HolographicStore, MemoryInputError, StoreConfig


def _entries(n: int, dk: int = 32, dv: int = 16, seed: int = 0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, dk)).astype(np.float32), rng.normal(size=(n, dv)).astype(np.float32)


def _cos(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(-1) / (np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1))


def _snapshot(store: HolographicStore) -> dict[str, bytes]:
    return {k: v.tobytes() for k, v in store.state().items()} | {"key_sq": store.key_sq.tobytes()}


def test_partial_cue_recalls_the_whole_entry():
    """Half the key dimensions find the entry: its value, and its full key with the hidden half filled in."""
    keys, values = _entries(500)
    store = HolographicStore(StoreConfig(key_dim=32, value_dim=16, capacity=1024))
    store.write(keys, values)
    known = np.random.default_rng(1).random(keys.shape) < 0.5
    got = store.recall(np.where(known, keys, 0.0), known)
    assert _cos(got.value, values).mean() > 0.99
    assert _cos(got.key, keys).mean() > 0.99  # the hidden dimensions came back too
    assert np.array_equal(got.key[known], keys[known])


def test_recall_degrades_gradually_as_the_cue_shrinks_and_the_store_fills():
    """Mean recall cosine falls as more of the key is hidden and as more entries share the store, without a
    cliff from one mask fraction to the next."""
    dk = 16
    keys, values = _entries(4000, dk=dk, seed=2)
    rng = np.random.default_rng(3)
    curves = {}
    for load in (250, 4000):
        store = HolographicStore(StoreConfig(key_dim=dk, value_dim=16, capacity=4096))
        store.write(keys[:load], values[:load])
        curve = []
        for hidden in (0.0, 0.25, 0.5, 0.75, 0.9):
            known = rng.random((load, dk)) >= hidden
            known[np.arange(load), rng.integers(0, dk, load)] = True  # at least one dimension known
            curve.append(_cos(store.recall(keys[:load], known).value, values[:load]).mean())
        curves[load] = np.array(curve)
    for curve in curves.values():
        assert np.all(np.diff(curve) <= 0.01), curve  # monotone, up to sampling noise
        assert np.all(np.diff(curve) > -0.5), curve  # gradual
        assert curve[0] > 0.99 and curve[-1] < curve[0]
    assert np.all(curves[4000] <= curves[250] + 0.01) and curves[4000][3] < curves[250][3]


def test_eviction_takes_the_weakest_entry():
    keys, values = _entries(5)
    store = HolographicStore(StoreConfig(key_dim=32, value_dim=16, capacity=4))
    for i in range(4):
        store.write(keys[i], values[i], energy=[3.0, 1.0, 4.0, 2.0][i])
    # Slot i holds original i. Each newcomer (energy 10) evicts the weakest original left.
    order = [int(store.write(keys[4] + i, values[4], energy=10.0)[0]) for i in range(4)]
    assert order == [1, 3, 0, 2]  # energies 1, 2, 3, 4
    assert store.evicted == 4


def test_crystallized_entries_survive_decay_and_eviction():
    cfg = StoreConfig(
        key_dim=32, value_dim=16, capacity=3, decay_per_tick=0.1, crystallize_energy=2.0, crystallize_ticks=5
    )
    keys, values = _entries(10)
    store = HolographicStore(cfg)
    store.write(keys[:3], values[:3])
    store.energy[0] = 10.0  # as if credited many times
    for _ in range(5):
        store.tick()
    assert store.crystal[0] and not store.crystal[1:].any()
    energy = store.energy[0]
    for _ in range(100):
        store.tick()
    assert store.energy[0] == energy and store.energy[1] < 1e-3
    for i in range(3, 10):  # a stream of new entries evicts the fluid ones only
        store.write(keys[i], values[i])
    assert np.array_equal(store.keys[0], keys[0]) and store.crystal[0]
    store.crystal[:] = True  # every slot crystallized: a write is refused, nothing overwritten
    before = _snapshot(store)
    assert store.write(keys[0] + 1, values[0])[0] == -1 and store.refused == 1
    assert {k: v for k, v in _snapshot(store).items() if k != "counters"} == {
        k: v for k, v in before.items() if k != "counters"
    }


def test_credit_feeds_the_entries_a_recall_used():
    keys, values = _entries(50)
    store = HolographicStore(StoreConfig(key_dim=32, value_dim=16, capacity=64))
    store.write(keys, values)
    got = store.recall(keys[7])
    store.credit(got, 2.0)
    assert store.energy[got.slots[0]].sum() == pytest.approx(len(got.slots[0]) + 2.0, rel=1e-5)
    assert store.hits[7] == 1 and store.energy[7] > 2.9


def test_probes_leave_the_store_byte_identical():
    keys, values = _entries(200)
    store = HolographicStore(StoreConfig(key_dim=32, value_dim=16, capacity=256))
    store.write(keys, values)
    before = _snapshot(store)
    known = np.random.default_rng(4).random((64, 32)) < 0.5
    got = store.recall(keys[:64], known, probe=True)
    with pytest.raises(MemoryInputError, match="probe"):
        store.credit(got, 1.0)
    assert _snapshot(store) == before


@pytest.mark.parametrize(
    "call",
    [
        lambda s, k, v: s.write(k[:1, :5], v[:1]),  # wrong key dimension
        lambda s, k, v: s.write(np.full((1, 32), np.nan), v[:1]),
        lambda s, k, v: s.write(k[:1], np.full((1, 16), np.inf)),
        lambda s, k, v: s.write(k[:2], v[:1]),
        lambda s, k, v: s.write(k[:1], v[:1], energy=float("nan")),
        lambda s, k, v: s.recall(k[:1], np.zeros((1, 32), bool)),  # a cue that knows nothing
        lambda s, k, v: s.recall(k[:1], np.ones((1, 32))),  # a mask that is not bool
        lambda s, k, v: s.recall(np.full(32, np.nan)),
        lambda s, k, v: s.credit(s.recall(k[0]), -1.0),
    ],
)
def test_bad_input_is_refused_and_changes_nothing(call):
    keys, values = _entries(20)
    store = HolographicStore(StoreConfig(key_dim=32, value_dim=16, capacity=32))
    store.write(keys[:10], values[:10])
    before = _snapshot(store)
    with pytest.raises(MemoryInputError):
        call(store, keys, values)
    assert _snapshot(store) == before


def test_state_round_trip_and_refusal_of_a_wrong_shape():
    keys, values = _entries(30)
    cfg = StoreConfig(key_dim=32, value_dim=16, capacity=40)
    store = HolographicStore(cfg)
    store.write(keys, values)
    store.tick(3)
    again = HolographicStore.from_state(cfg, store.state())
    assert _snapshot(again) == _snapshot(store)
    with pytest.raises(MemoryInputError, match="keys"):
        HolographicStore.from_state(StoreConfig(key_dim=31, value_dim=16, capacity=40), store.state())


def test_recency_prefers_what_was_written_since_the_world_changed():
    """The same key stored with an old value, then (after 50 other writes) a new one: by content alone the
    recall blends the two equally; with `recency_writes` it returns mostly the new value, and a newer entry
    that is much less similar still loses to an older one that matches."""
    keys, values = _entries(60, dk=8, dv=4, seed=5)
    old, new = np.ones(4, np.float32), -np.ones(4, np.float32)
    for recency, expect in ((0.0, 0.0), (20.0, -0.8)):  # e^-2.5: about 0.92 of the weight
        store = HolographicStore(StoreConfig(key_dim=8, value_dim=4, capacity=128, recency_writes=recency))
        store.write(keys[0], old)
        store.write(keys[1:51], values[1:51])
        store.write(keys[0], new)
        got = store.recall(keys[0]).value[0]
        assert (got.mean() < expect) if recency else np.allclose(got, 0.0, atol=1e-3), (recency, got)
    store.write(keys[51], np.full(4, 5.0, np.float32))  # the newest entry, under an unrelated key
    assert store.recall(keys[0]).similarity[0, 0] > 0.999  # the matching entries still come first
