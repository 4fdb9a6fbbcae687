"""The JEPA loss is the weighted sum of the terms it logs: a term that is logged but left out of the total
(or counted twice) trains a different model from the one the logs describe."""

import numpy as np
import pytest
import torch

from runtime.world_model.model import JOINT_DIM, WorldModel, WorldModelConfig
from runtime.world_model.objective import ANTI_COLLAPSE_WEIGHTS, ObjectiveConfig, jepa_loss

SMALL = dict(d_model=32, d_token=16, d_latent=8, experts=4, d_state=8, channels=(4, 8), keypoints=4)


def _batch(b=2, t=10, seed=0):
    rng = np.random.default_rng(seed)
    return {
        "image": torch.from_numpy(rng.integers(0, 256, (b, t, 64, 64, 3), dtype=np.uint8)),
        "audio": torch.from_numpy(rng.normal(0, 0.1, (b, t, 6, 160)).astype(np.float32)),
        "audio_chunks": torch.from_numpy(rng.integers(0, 7, (b, t))),
        "joint": torch.from_numpy(rng.normal(0, 1, (b, t, JOINT_DIM)).astype(np.float32)),
        "action": torch.from_numpy(rng.normal(0, 1, (b, t, 5)).astype(np.float32)),
        "mask": torch.ones(b, t, 4, dtype=torch.bool),
        "dt_eff": torch.from_numpy(rng.uniform(0.03, 0.037, (b, t))),
    }


@pytest.mark.parametrize("name", ["hssm", "gru"])
def test_total_is_the_weighted_sum_of_the_logged_terms(name):
    """total = predict + w_b backward + sum_i w_i anti_collapse_i (+ conservation, stability, balance where
    the model has them), with the config's weights; and every anti-collapse term moves the total."""
    torch.manual_seed(0)
    model = WorldModel(WorldModelConfig(model=name, **SMALL))
    cfg = ObjectiveConfig(token_predict=0.0, scene_contrast=0.0)  # the optional terms: the test below
    _, terms = jepa_loss(model, _batch(), cfg)
    expected = terms["predict"] + cfg.backward * terms["backward"]
    expected += sum(w * terms[k] for k, w in ANTI_COLLAPSE_WEIGHTS.items())
    expected += cfg.conservation * terms.get("conservation", 0.0) + cfg.stability * terms.get(
        "stability", 0.0
    )
    expected += cfg.balance * terms.get("balance", 0.0)
    assert terms["total"] == pytest.approx(expected, rel=1e-5)
    assert ("conservation" in terms) == (name == "hssm")


@pytest.mark.parametrize("ema", [0.0, 0.9])
def test_optional_terms_enter_the_total_with_their_weights(ema):
    """With the decorrelation, token-prediction and scene-contrast terms switched on (with or without an EMA
    target), each is logged and the total moves by exactly its weight times its value."""
    from runtime.world_model.training import ema_copy

    torch.manual_seed(0)
    model = WorldModel(WorldModelConfig(**SMALL))
    target = ema_copy(model) if ema else None
    if target is not None:  # a target that differs from the online model, so using it shows
        with torch.no_grad():
            target.head.bias.add_(0.5)
    batch = _batch()
    optional = {"covariance": 0.7, "token_predict": 2.0, "scene_contrast": 0.3}
    assert ObjectiveConfig().covariance == 0.0  # the defaults have the other two on
    none = {k: 0.0 for k in optional}
    _, off = jepa_loss(model, batch, ObjectiveConfig(target_ema=ema, **none), target_model=target)
    _, on = jepa_loss(model, batch, ObjectiveConfig(target_ema=ema, **optional), target_model=target)
    assert not set(optional) & set(off)
    with pytest.raises(ValueError, match="EMA target"):
        jepa_loss(model, batch, ObjectiveConfig(target_ema=0.5))
    added = sum(w * on[k] for k, w in optional.items())
    assert all(on[k] > 0 for k in optional)
    assert on["total"] == pytest.approx(off["total"] + added, rel=1e-5)
    if target is not None:
        _, online = jepa_loss(model, batch, ObjectiveConfig(**optional))
        assert online["predict"] != pytest.approx(on["predict"], rel=1e-3)


def test_an_exploding_latent_is_penalized():
    """A latent blown up by a constant offset (the failure the energy budget and mean terms exist for) costs
    far more than the same model's latent: the gradient sees it."""
    torch.manual_seed(0)
    model = WorldModel(WorldModelConfig(**SMALL))
    batch = _batch()
    _, base = jepa_loss(model, batch, ObjectiveConfig())
    with torch.no_grad():
        model.head.bias[0] += 100.0
    _, blown = jepa_loss(model, batch, ObjectiveConfig())
    assert blown["total"] > 100 * base["total"]


def test_a_tiny_training_run_lowers_the_loss():
    """Sixty steps of the real training loop on two short simulated episodes bring the JEPA loss well down
    from where it starts (the first steps' mean against the last steps')."""
    from runtime.world_model.data import CollectConfig, collect_episode
    from runtime.world_model.training import Episodes, TrainConfig, refit_predictor, train

    episodes = Episodes.__new__(Episodes)
    episodes.episodes = [collect_episode(CollectConfig(episode_seconds=2.0), seed) for seed in (0, 1)]
    cfg = TrainConfig(steps=60, batch=4, window=12, warmup=5, threads=1, refit_steps=60, refit_batch=32)
    model, history = train(WorldModelConfig(**SMALL), cfg, episodes)
    first = np.mean([h["total"] for h in history[:5]])
    last = np.mean([h["total"] for h in history[-10:]])
    assert np.isfinite(last) and last < 0.5 * first, (first, last)
    # Then the transition alone, on the trained model's latents: its K-step error falls.
    refit = refit_predictor(model, cfg, episodes)
    first = np.mean([h["refit"] for h in refit[:5]])
    last = np.mean([h["refit"] for h in refit[-10:]])
    assert len(refit) == 60 and np.isfinite(last) and last < 0.8 * first, (first, last)
