"""The world model's two paths and its input checks: the sequence forward (training) and the one-tick step
(streaming) agree for every model; bad ticks give a clear error or a masked update, never a NaN state."""

import numpy as np
import pytest
import torch

from runtime.world_model.model import (
    HEAD_INPUTS,
    JOINT_DIM,
    MODELS,
    WorldModel,
    WorldModelConfig,
    parameter_count,
)

SMALL = dict(d_model=32, d_token=16, d_latent=8, experts=4, d_state=8, channels=(4, 8), keypoints=4)


def _batch(b=2, t=12, seed=0):
    rng = np.random.default_rng(seed)
    mask = rng.random((b, t, 4)) > 0.2
    return {
        "image": torch.from_numpy(rng.integers(0, 256, (b, t, 64, 64, 3), dtype=np.uint8)),
        "audio": torch.from_numpy(rng.normal(0, 0.1, (b, t, 6, 160)).astype(np.float32)),
        "audio_chunks": torch.from_numpy(rng.integers(0, 7, (b, t))),
        "joint": torch.from_numpy(rng.normal(0, 1, (b, t, JOINT_DIM)).astype(np.float32)),
        "action": torch.from_numpy(rng.normal(0, 1, (b, t, 5)).astype(np.float32)),
        "mask": torch.from_numpy(mask),
        "dt_eff": torch.from_numpy(rng.uniform(0.025, 0.045, (b, t))),
    }


def _model(name="hssm", **overrides):
    torch.manual_seed(0)
    return WorldModel(WorldModelConfig(model=name, **{**SMALL, **overrides})).eval()


@pytest.mark.parametrize("name", MODELS)
def test_sequence_and_streaming_paths_agree(name):
    """z from the whole-sequence forward (the parallel scan for the Hamiltonian models) equals z from stepping
    tick by tick with a constant-size state, to 1e-5 in fp32, for every model."""
    model, batch = _model(name), _batch()
    with torch.no_grad():
        z_seq, _, _ = model(batch)
        state = model.initial_state(2)
        for t in range(batch["joint"].shape[1]):
            state, z, _ = model.step(state, {k: v[:, t] for k, v in batch.items()})
            assert torch.allclose(z, z_seq[:, t], atol=1e-5), (name, t, (z - z_seq[:, t]).abs().max())


@pytest.mark.parametrize("head_input", HEAD_INPUTS)
def test_every_head_reads_the_same_in_both_paths(head_input):
    """Whichever input the latent head reads (the tick's encoding, the belief, or q from the one and p from
    both), sequence and streaming paths give the same z."""
    model, batch = _model(head_input=head_input), _batch()
    with torch.no_grad():
        z_seq, _, _ = model(batch)
        state = model.initial_state(2)
        for t in range(batch["joint"].shape[1]):
            state, z, _ = model.step(state, {k: v[:, t] for k, v in batch.items()})
            assert torch.allclose(z, z_seq[:, t], atol=1e-5), (head_input, t)


def test_split_head_q_depends_on_the_tick_alone():
    """With the split head, q_t is a function of tick t's encoding only: the same tick after different
    histories gives the same q (and a different p)."""
    model, batch = _model(head_input="split"), _batch(b=1, t=6)
    d = model.cfg.d_latent
    other = _batch(b=1, t=6, seed=1)
    for k in batch:  # same last tick, different history
        other[k][:, -1] = batch[k][:, -1]
    with torch.no_grad():
        z_a, _, _ = model(batch)
        z_b, _, _ = model(other)
    torch.testing.assert_close(z_a[:, -1, :d], z_b[:, -1, :d])
    assert not torch.allclose(z_a[:, -1, d:], z_b[:, -1, d:])


def test_baselines_match_the_parameter_count():
    """Every baseline is sized to within 10 % of the Hamiltonian model's parameter count (default config)."""
    counts = {name: parameter_count(WorldModel(WorldModelConfig(model=name))) for name in MODELS}
    assert all(abs(count - counts["hssm"]) <= 0.1 * counts["hssm"] for count in counts.values()), counts


def test_streaming_state_keeps_its_size():
    """The hssm state after 40 ticks has exactly the shapes it started with: memory does not grow."""
    model, batch = _model(), _batch(t=40)
    state = model.initial_state(2)
    shapes = [s.shape for s in state]
    with torch.no_grad():
        for t in range(40):
            state, _, _ = model.step(state, {k: v[:, t] for k, v in batch.items()})
    assert [s.shape for s in state] == shapes


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("joint", torch.zeros(2, 9), "`joint`"),
        ("image", torch.zeros(2, 64, 64), "`image`"),
        ("audio", torch.zeros(2, 5, 160), "`audio`"),
        ("mask", torch.ones(2, 4), "`mask` must be bool"),
    ],
)
def test_wrong_shapes_are_refused_naming_the_field(field, value, message):
    model, tick = _model(), {k: v[:, 0] for k, v in _batch().items()}
    tick[field] = value
    with pytest.raises(ValueError, match=message):
        model.step(model.initial_state(2), tick)


def test_non_finite_and_fully_masked_ticks_give_a_finite_state():
    """NaN joints, infinite audio, and a tick with every modality masked are masked updates: z and the state
    stay finite."""
    model = _model()
    tick = {k: v[:, 0] for k, v in _batch().items()}
    tick["joint"][0, 3] = float("nan")
    tick["audio"][1, 0, 0] = float("inf")
    state = model.initial_state(2)
    with torch.no_grad():
        state, z, _ = model.step(state, tick)
        assert torch.isfinite(z).all() and all(torch.isfinite(s).all() for s in state)
        tick["mask"][:] = False
        state, z, _ = model.step(state, tick)
    assert torch.isfinite(z).all() and all(torch.isfinite(s).all() for s in state)


def test_dt_outside_the_stable_band_is_clamped_and_counted():
    """dt_eff of 5 s, -1 s and NaN are clamped into the band and counted; the state stays finite."""
    model = _model()
    tick = {k: v[:, 0] for k, v in _batch().items()}
    state = model.initial_state(2)
    with torch.no_grad():
        for bad in (5.0, -1.0, float("nan")):
            tick["dt_eff"] = torch.tensor([bad, 1 / 30], dtype=torch.float64)
            state, z, _ = model.step(state, tick)
            assert torch.isfinite(z).all()
    assert model.dt_clamped == 3
    lo, hi = model.dt_band()
    assert 0 < lo < 1 / 30 < hi <= 0.25


def test_rollout_backwards_with_negative_dt_returns_to_the_start():
    """hssm's rollout is reversible: K steps forward, then the same actions in reverse with -dt, give back the
    start (float64, damping included: the decay is undone exactly)."""
    model = _model().double()
    g = torch.Generator().manual_seed(1)
    z0 = torch.randn(5, 16, generator=g, dtype=torch.float64)
    actions = torch.randn(5, 6, 5, generator=g, dtype=torch.float64)
    dt = torch.full((5, 6), 1 / 30, dtype=torch.float64)
    with torch.no_grad():
        mix = model.predictor.mix(z0)
        z = z0
        for k in range(6):
            z = model.predictor.step(z, actions[:, k], dt[:, k], mix)
        for k in reversed(range(6)):
            z = model.predictor.step(z, actions[:, k], -dt[:, k], mix)
    assert torch.allclose(z, z0, atol=1e-9)


def test_the_state_head_keeps_the_commanded_action_out_of_q():
    """With `head_input="state"` (the default), q reads the sensors only: another action changes p (the
    belief knows what was commanded), never q."""
    model, batch = _model(head_input="state"), _batch(b=1, t=6)
    other = dict(batch, action=batch["action"] + 1.0)
    with torch.no_grad():
        z, _, _ = model(batch)
        z_other, _, _ = model(other)
    d = model.cfg.d_latent
    assert torch.allclose(z[..., :d], z_other[..., :d], atol=1e-6)
    assert not torch.allclose(z[..., d:], z_other[..., d:], atol=1e-3)
