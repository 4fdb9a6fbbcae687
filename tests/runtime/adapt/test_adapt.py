"""Online adaptation on the shipped model's transition: memory corrections act in the tick they are written,
the learner swaps only what validates and rolls back what stops validating, the dynamics lock refuses
changed weights at start, during a run and from the learner."""

import copy

import numpy as np
import pytest
import torch

from runtime.adapt.fast import FastAdapter
from runtime.adapt.learner import LearnerConfig, SlowLearner
from runtime.adapt.lock import DynamicsLock, LockError, LockWatch
from runtime.adapt.online import AdaptConfig, OnlineAdapter
from runtime.world_model import checkpoint

DT = torch.tensor([1 / 30])
SHIPPED, _ = checkpoint.load(checkpoint.DEFAULT_CHECKPOINT)
Z_DIM = 2 * SHIPPED.cfg.d_latent  # the shipped model's z = (q, p)


@pytest.fixture(scope="module")
def shipped():
    return SHIPPED


@pytest.fixture
def model(shipped):
    return copy.deepcopy(shipped)


def _states(n: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, Z_DIM, generator=g) * 0.5, torch.randn(n, 5, generator=g) * 0.3


def _weights(module) -> dict:
    return {k: v.clone() for k, v in module.state_dict().items()}


def _same(a: dict, b: dict) -> bool:
    return all(torch.equal(a[k], b[k]) for k in a)


@torch.no_grad()
def test_a_memory_correction_acts_in_the_tick_it_is_written(model):
    """The world adds an offset c to every transition: one observed tick later, the prediction for that
    state and action carries c; the transition's own prediction does not."""
    fast = FastAdapter(model)
    z, a = _states(1)
    offset = torch.full((1, Z_DIM), 0.3)
    truth = model.predictor.step(z, a, DT) + offset
    assert (fast.predict(z, a, DT) - truth).abs().max() > 0.29
    fast.observe(z, a, DT, truth)
    torch.testing.assert_close(fast.predict(z, a, DT), truth, atol=1e-4, rtol=0)
    assert (model.predictor.step(z, a, DT) - truth).abs().max() > 0.29
    rolled = fast.rollout(z, a[:, None].expand(1, 3, 5), DT.expand(1, 3))
    assert rolled.shape == (1, 3, Z_DIM) and torch.isfinite(rolled).all()


@torch.no_grad()
def test_a_planning_rollout_holds_the_correction_recalled_for_the_action_in_force(model):
    """The world adds an offset c per tick: a rollout that holds the correction recalled for the action in
    force takes the same first step as the per-step corrected rollout under that action (c away from the
    bare transition's), every candidate gets the same correction whatever its actions, and with an empty
    memory it is the bare rollout itself."""
    fast = FastAdapter(model)
    z, a = _states(1)
    actions, dt = a[:, None].expand(1, 6, 5), DT.expand(1, 6)
    torch.testing.assert_close(fast.rollout(z, actions, dt, held=a[0]), model.rollout(z, actions, dt))
    offset = torch.full((1, Z_DIM), 0.05)
    fast.observe(z, a, DT, model.predictor.step(z, a, DT) + offset)
    others = torch.cat((actions, actions + 0.5, actions - 0.5))  # candidates far from the stored action
    held = fast.rollout(z.expand(3, -1), others, dt.expand(3, -1), held=a[0])
    bare_others = model.rollout(z.expand(3, -1), others, dt.expand(3, -1))
    torch.testing.assert_close(held[:, 0] - bare_others[:, 0], offset.expand(3, -1), atol=1e-5, rtol=0)
    stepped = fast.rollout(z, actions, dt)
    bare = model.rollout(z, actions, dt)
    assert held.shape == (3, 6, Z_DIM)
    torch.testing.assert_close(held[:1, 0], stepped[:, 0], atol=1e-5, rtol=0)
    torch.testing.assert_close(held[:1, 0] - bare[:, 0], offset, atol=1e-5, rtol=0)


@torch.no_grad()
def test_trust_switches_corrections_off_while_they_hurt_and_back_on_when_they_help(model):
    """Outcomes that are noise around the transition's prediction: recalled residuals add noise, the trust
    falls to zero and predictions are the transition's own. Then the world adds a constant offset: the
    corrections help, the trust returns within 40 ticks, and predictions carry the offset again."""
    fast = FastAdapter(model)
    z, a = _states(4)
    g = torch.Generator().manual_seed(1)
    for i in range(200):
        k = i % 4
        base = model.predictor.step(z[k : k + 1], a[k : k + 1], DT)
        fast.observe(z[k : k + 1], a[k : k + 1], DT, base + 0.3 * torch.randn(base.shape, generator=g))
    assert fast.trust == 0.0
    torch.testing.assert_close(fast.predict(z[:1], a[:1], DT), model.predictor.step(z[:1], a[:1], DT))
    offset = torch.full((1, Z_DIM), 0.5)
    z, a = _states(4, seed=1)  # the shifted world's states, each seen again and again
    for i in range(40):
        k = i % 4
        truth = model.predictor.step(z[k : k + 1], a[k : k + 1], DT) + offset
        fast.observe(z[k : k + 1], a[k : k + 1], DT, truth)
    assert fast.trust == 1.0
    err = (fast.predict(z[:1], a[:1], DT) - model.predictor.step(z[:1], a[:1], DT) - offset).abs().mean()
    assert err < 0.05


def _reversed(model):
    """A copy of the transition in which every action pushes the other way: a changed world."""
    world = copy.deepcopy(model.predictor)
    with torch.no_grad():
        world.transition.b.mul_(-1.0)
    return world


def _feed(learner, model, source, n: int, seed: int) -> None:
    """n ticks whose outcome is `source`'s transition from random states and actions."""
    z, a = _states(n, seed)
    with torch.no_grad():
        nxt = source.step(z, a, DT.expand(n))
    for i in range(n):
        learner.observe(z[i : i + 1], a[i : i + 1], DT, nxt[i : i + 1])


def test_the_learner_swaps_in_what_validates_and_rejects_what_does_not(model):
    """Ticks from a different transition (the world changed): the fine-tuned copy validates and is swapped
    in. Ticks from the live transition itself: nothing to gain, the copy is rejected, weights untouched."""
    cfg = LearnerConfig(min_ticks=64, steps=40)
    learner = SlowLearner(model, cfg)
    world = _reversed(model)
    _feed(learner, model, world, 300, seed=1)
    before = _weights(model.predictor)
    event, weights = learner.round()
    assert event.kind == "swapped" and event.candidate_error < 0.98 * event.live_error
    learner.apply(event, weights, locked=False)
    assert not _same(before, _weights(model.predictor))
    assert len(learner.library) == 2 and learner.live == 1 and _same(before, learner.library[0].weights)

    same = SlowLearner(copy.deepcopy(model), cfg)
    _feed(same, same.model, same.model.predictor, 300, seed=2)
    before = _weights(same.model.predictor)
    event, weights = same.round()
    assert event.kind == "rejected" and weights is None
    same.apply(event, weights, locked=False)
    assert _same(before, _weights(same.model.predictor))


def test_a_candidate_must_beat_the_predictions_already_made_with_memory(model):
    """The same changed world, but the runtime's predictions (the memory's corrections included) already
    match it: a candidate that beats the bare predictor is still rejected."""
    learner = SlowLearner(model, LearnerConfig(min_ticks=64, steps=40))
    world = _reversed(model)
    _feed(learner, model, world, 300, seed=1)
    event, weights = learner.round(reference=world.step)
    assert event.kind == "rejected" and weights is None and event.live_error < 1e-9


def test_the_learner_rolls_back_a_swap_that_stops_validating(model):
    """After a swap, the world turns out to be the old one: the replaced weights validate better on recent
    ticks neither trained on, and the next round restores them exactly."""
    original = _weights(model.predictor)
    learner = SlowLearner(model, LearnerConfig(window=300, min_ticks=64, steps=40))
    world = _reversed(model)
    _feed(learner, model, world, 300, seed=3)
    event, weights = learner.round()
    learner.apply(event, weights, locked=False)
    assert event.kind == "swapped"
    reference = copy.deepcopy(model.predictor)
    reference.load_state_dict(original)
    _feed(learner, model, reference, 150, seed=4)  # the last 120 ticks are the original world's
    event, weights = learner.round()
    assert event.kind == "rolled_back" and event.entry == 0
    learner.apply(event, weights, locked=False)
    assert _same(original, _weights(model.predictor)) and learner.live == 0


def test_the_shipped_weights_come_back_after_many_swaps_and_the_library_stays_bounded(model):
    """Four swaps in changed worlds (each a different scale of the reversed actions), more than the library
    holds: the shipped weights are never evicted, and when the world returns to the original, one round
    restores them, not the last swap's predecessor (itself a changed world's transition)."""
    original = _weights(model.predictor)
    learner = SlowLearner(model, LearnerConfig(window=300, min_ticks=64, steps=40, library=3))
    for k, scale in enumerate((-1.0, -1.5, -2.0, -2.5)):
        world = copy.deepcopy(model.predictor)
        world.load_state_dict(original)
        with torch.no_grad():
            world.transition.b.mul_(scale)
        _feed(learner, model, world, 300, seed=10 + k)
        event, weights = learner.round()
        assert event.kind == "swapped", event
        learner.apply(event, weights, locked=False)
        assert len(learner.library) <= 3 and _same(original, learner.library[0].weights)
    shipped = copy.deepcopy(model.predictor)
    shipped.load_state_dict(original)
    _feed(learner, model, shipped, 150, seed=20)
    event, weights = learner.round()
    assert event.kind == "rolled_back" and event.entry == 0, event
    learner.apply(event, weights, locked=False)
    assert _same(original, _weights(model.predictor))


def test_a_locked_runtime_refuses_weight_changes_but_may_still_learn_in_memory(model):
    """Under a lock no learner round runs and no weights change, though the world changed enough for a swap
    (the same data swaps without the lock); the memory still learns if the record allows it; a round that
    finished before the lock is refused at `apply`."""
    world = _reversed(model)
    z, a = _states(300, seed=5)
    with torch.no_grad():
        nxt = world.step(z, a, DT.expand(300))
    cfg = AdaptConfig(slow=LearnerConfig(min_ticks=64, every=300, steps=40))

    def run(lock):
        adapter = OnlineAdapter(copy.deepcopy(model), cfg, lock)
        events = [adapter.observe(z[i : i + 1], a[i : i + 1], DT, nxt[i : i + 1]) for i in range(300)]
        return adapter, [e.kind for e in events if e is not None]

    _, open_events = run(None)
    assert open_events == ["swapped"]
    lock = DynamicsLock.seal(model.predictor, locked=True, memory_writes=True)
    adapter, events = run(lock)
    assert events == [] and adapter.status()["swaps"] == 0
    lock.check(adapter.model.predictor)  # still the sealed weights
    assert adapter.status()["memory_entries"] == 300 and adapter.status()["lock"] == "locked"
    learner = adapter.learner
    event, weights = learner.round()
    assert weights is not None and learner.apply(event, weights, locked=True).kind == "locked"
    lock.check(adapter.model.predictor)

    closed = OnlineAdapter(
        model, AdaptConfig(learner=False), DynamicsLock.seal(model.predictor, memory_writes=False)
    )
    closed.observe(z[:1], a[:1], DT, nxt[:1])
    assert closed.status()["memory_entries"] == 0


def test_tampered_weights_are_refused_at_start_and_trip_the_watch_at_run_time(model, tmp_path):
    lock = DynamicsLock.seal(model.predictor)
    path = tmp_path / "lock.json"
    lock.save(path)
    again = DynamicsLock.load(path)
    again.check(model.predictor)
    other = DynamicsLock.seal(model.predictor)
    assert other.salt_hex != lock.salt_hex and other.sha256 != lock.sha256  # salted

    tampered = copy.deepcopy(model.predictor)
    with torch.no_grad():
        next(tampered.parameters()).view(-1)[0] += 1e-6  # one weight, one ulp-scale nudge
    with pytest.raises(LockError, match="do not match"):
        again.check(tampered)

    reasons = []
    watch = LockWatch(again, model.predictor, reasons.append, recheck_ticks=5)
    assert all(watch.tick() for _ in range(5))
    with torch.no_grad():
        next(model.predictor.parameters()).view(-1)[0] += 1e-6
    results = [watch.tick() for _ in range(10)]
    assert results[:4] == [True] * 4 and not any(results[4:])  # tripped at the next re-check
    assert len(reasons) == 1 and "protective stop" in reasons[0]

    path.write_text("{not json")
    with pytest.raises(LockError, match="unreadable"):
        DynamicsLock.load(path)


def test_variants_name_what_they_run(model):
    for name, (memory, learner) in {
        "none": (0, 0),
        "memory": (1, 0),
        "learner": (0, 1),
        "both": (1, 1),
    }.items():
        adapter = OnlineAdapter(model, AdaptConfig.variant(name))
        assert (adapter.fast is not None, adapter.learner is not None) == (bool(memory), bool(learner))
    with pytest.raises(ValueError, match="unknown adaptation variant"):
        AdaptConfig.variant("all")


def test_recovery_is_the_start_of_a_sustained_return_to_the_old_error():
    """A calm start after the shift does not count as recovered; the return after the lapse does; an error
    that never comes back is capped at the phase length."""
    from runtime.adapt.evaluation import scores

    phase = np.r_[np.zeros(100), np.ones(300), np.full(100, 2)].astype(int)
    err = np.ones(500)
    err[110:200] = 3.0  # 10 calm ticks, then bad until 100 ticks into the shift
    got = scores(err, phase, smooth=15, hold=60)
    assert 100 <= got["recovery_ticks"] <= 115 and got["forget_ratio"] == 1.0
    assert got["post_ratio"] == pytest.approx((10 + 90 * 3 + 200) / 300)
    err[100:] = 3.0
    assert scores(err, phase, smooth=15, hold=60)["recovery_ticks"] == 300


def test_a_round_spread_over_ticks_changes_weights_only_when_it_ends(model):
    """Live, a round runs a few Adam steps per tick: the weights stay as they were until its last step,
    then the validated copy is swapped in, in one piece."""
    cfg = AdaptConfig(memory=False, steps_per_tick=5, slow=LearnerConfig(min_ticks=64, every=64, steps=40))
    adapter = OnlineAdapter(model, cfg)
    world = _reversed(model)
    z, a = _states(200, seed=6)
    with torch.no_grad():
        nxt = world.step(z, a, DT.expand(200))
    before = _weights(model.predictor)
    events = []
    for i in range(200):
        event = adapter.observe(z[i : i + 1], a[i : i + 1], DT, nxt[i : i + 1])
        if event is not None:
            events.append((i, event.kind))
        if not events:
            assert _same(before, _weights(model.predictor))
    assert events and events[0] == (63 + 8, "swapped")  # due at tick 64 (index 63), 40 steps / 5 per tick


def test_only_a_locked_record_is_watched(shipped):
    """An open record lets the learner change the weights, so nothing re-checks them (a swap would read as
    tampering and stop the arm); a locked one is watched from the first tick."""
    from runtime.world_model.live import LiveWorldModel

    for locked in (False, True):
        live = LiveWorldModel(lock=DynamicsLock.seal(shipped.predictor, locked=locked), adapt=AdaptConfig())
        assert (live.watch is not None) == locked and not live.tripped


def test_the_world_change_of_a_shift_is_measured_from_the_same_state():
    """The nominal world as its own twin moves nothing (same state, same command, same physics); the
    shoulder's flipped command moves the hand by centimetres in one tick, a 4x cube by a fraction of a
    millimetre."""
    from envs.dynamics_shift import NAMED_SHIFTS, DynamicsShift
    from runtime.adapt.evaluation import AdaptEvalConfig, world_change

    cfg = AdaptEvalConfig(phase=1, episode_seconds=2.0)
    assert world_change(DynamicsShift(), cfg) == 0.0
    assert world_change(NAMED_SHIFTS["flip"], cfg) > 0.01
    assert 0.0 < world_change(NAMED_SHIFTS["mass"], cfg) < 0.001
