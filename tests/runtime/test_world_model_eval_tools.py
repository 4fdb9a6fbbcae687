"""The evaluation's instruments: the linear probe, the error units, the jittered-tick stream and the dt_eff
modes. A wrong instrument makes every model's figure wrong in the same way, so none of the tables would
show it."""

import numpy as np
import pytest
import torch

from runtime.world_model import evaluation as ev


def test_probe_recovers_a_linear_map_and_scores_noise_near_zero():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2000, 12))
    w = rng.normal(size=(12, 11))
    y = x @ w + 0.5
    probe = ev.Probe.fit(x[:1500], y[:1500])
    assert all(v > 0.999 for v in ev.r2(probe(x[1500:]), y[1500:]).values())
    noise = ev.Probe.fit(rng.normal(size=(1500, 12)), y[:1500])
    assert all(v < 0.05 for v in ev.r2(noise(rng.normal(size=(500, 12))), y[1500:]).values())


def test_errors_are_euclidean_per_quantity():
    pred, true = np.zeros((4, 11)), np.zeros((4, 11))
    true[:, 0:3] = [3.0, 4.0, 0.0]  # 5 m off at the end-effector, nothing else
    assert ev.errors(pred, true) == {"ee": 5.0, "object": 0.0, "joint": 0.0}


def test_jittered_episode_keeps_time_and_drops_about_the_share_asked():
    """Kept ticks carry the true time since the previous kept tick, so elapsed time is conserved."""
    n = 3000
    dt = np.random.default_rng(1).uniform(0.03, 0.036, n)
    episode = {"dt_eff": dt, "joint": np.arange(n, dtype=np.float32)[:, None], "seed": np.array(3)}
    out = ev.jitter_episode(episode, np.random.default_rng(2), drop=1 / 3)
    kept = out["joint"][:, 0].astype(int)
    assert kept[0] == 0 and abs(len(kept) / n - 2 / 3) < 0.03
    assert np.allclose(np.cumsum(out["dt_eff"]), np.cumsum(dt)[kept])
    assert out["dt_eff"].max() > 2.5 * dt.mean()  # gaps of two lost ticks and more occur


def test_dt_modes():
    dt = torch.tensor([[0.03, 0.06, 0.03]])
    assert torch.equal(ev.dt_for_mode(dt, "measured"), dt)
    assert torch.allclose(ev.dt_for_mode(dt, "phase"), torch.full((1, 3), 0.04))
    assert torch.allclose(ev.dt_for_mode(dt, "fixed"), torch.full((1, 3), 1 / 30))
    with pytest.raises(ValueError, match="unknown dt_eff mode"):
        ev.dt_for_mode(dt, "wall")
