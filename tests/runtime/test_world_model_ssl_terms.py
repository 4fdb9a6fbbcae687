"""The objective's terms that give the latent its content: each must fire on the failure it exists for and
stay quiet on a healthy batch, and the EMA target must move the way BYOL / V-JEPA define it."""

import torch

from runtime.world_model.model import JOINT_DIM, WorldModel, WorldModelConfig
from runtime.world_model.objective import decorrelation, scene_contrast
from runtime.world_model.training import ema_copy, ema_update

SMALL = dict(d_model=32, d_token=16, d_latent=8, experts=4, d_state=8, channels=(4, 8), keypoints=4)


def test_decorrelation_fires_on_repeated_dimensions_only():
    """Codes whose dimensions copy each other score near 1; independent dimensions near 0, whatever their
    scales (the term asks nothing of the variances: no isotropy)."""
    g = torch.Generator().manual_seed(0)
    base = torch.randn(4096, 1, generator=g)
    repeated = base.repeat(1, 6) + 0.01 * torch.randn(4096, 6, generator=g)
    independent = torch.randn(4096, 6, generator=g) * torch.tensor([0.01, 0.1, 1, 10, 100, 1000])
    assert decorrelation(repeated) > 0.95
    assert decorrelation(independent) < 0.01


def _tokens(per_window: torch.Tensor, within: float, g: torch.Generator) -> torch.Tensor:
    """(B, T, d) tokens: each window's own direction plus `within` noise per tick."""
    b, d = per_window.shape
    return per_window[:, None] + within * torch.randn(b, 12, d, generator=g)


def test_scene_contrast_prefers_tokens_that_tell_windows_apart():
    """Tokens constant within a window and different between windows (what a camera encoder that found the
    cube gives) score far below tokens that say nothing about the window; ticks without a frame are left
    out instead of counted."""
    g = torch.Generator().manual_seed(0)
    per_window = torch.randn(8, 16, generator=g)
    seen = torch.ones(8, 12, dtype=torch.bool)
    telling = scene_contrast(_tokens(per_window, 0.05, g), seen)
    blind = scene_contrast(torch.randn(8, 12, 16, generator=g), seen)
    assert telling < 0.5 * blind
    seen[:, ::2] = False
    tokens = _tokens(per_window, 0.05, g)
    tokens[:, ::2] = torch.randn(8, 6, 16, generator=g) * 100  # unseen ticks: garbage that must not count
    assert scene_contrast(tokens, seen) < 0.5 * blind


def test_scene_contrast_gradient_reaches_the_camera_encoder():
    """The term trains the vision encoder: its gradient on the first conv is non-zero."""
    torch.manual_seed(0)
    model = WorldModel(WorldModelConfig(**SMALL))
    batch = {
        "image": torch.randint(0, 256, (2, 6, 64, 64, 3), dtype=torch.uint8),
        "audio": torch.zeros(2, 6, 6, 160),
        "audio_chunks": torch.full((2, 6), 3),
        "joint": torch.zeros(2, 6, JOINT_DIM),
        "action": torch.zeros(2, 6, 5),
        "mask": torch.ones(2, 6, 4, dtype=torch.bool),
        "dt_eff": torch.full((2, 6), 1 / 30, dtype=torch.float64),
    }
    scene_contrast(model.tokens(batch)[:, :, 0], batch["mask"][..., 0]).backward()
    assert model.encoder.vision.convs[0].weight.grad.abs().sum() > 0


def test_ema_target_follows_the_online_model_by_its_decay():
    """After one update the target's parameters are decay * old + (1 - decay) * online, and the copy takes
    no gradients."""
    torch.manual_seed(0)
    model = WorldModel(WorldModelConfig(**SMALL))
    target = ema_copy(model)
    old = [p.detach().clone() for p in target.parameters()]
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
    ema_update(target, model, 0.9)
    for t, o, p in zip(target.parameters(), old, model.parameters(), strict=True):
        torch.testing.assert_close(t, 0.9 * o + 0.1 * p)
        assert not t.requires_grad


def test_token_prediction_ignores_masked_ticks():
    """A masked tick's token is the mask embedding, not an observation: however wrong the prediction there,
    the error counts only the ticks whose stream was present."""
    from runtime.world_model.objective import masked_mse

    target = torch.zeros(4, 2, 8)
    pred = torch.ones(4, 2, 8)
    seen = torch.ones(4, 2)
    assert masked_mse(pred, target, seen) == 1.0
    pred[0, 1] = 1e6
    seen[0, 1] = 0.0
    assert masked_mse(pred, target, seen) == 1.0
    assert masked_mse(pred, target, torch.zeros(4, 2)) == 0.0  # nothing seen: no error, not NaN
