"""Tick encoders: shapes, masking, non-finite input, other image sizes, and that audio features hear audio."""

import numpy as np
import torch

from runtime.world_model.encoders import ProprioEncoder, TickEncoder, mel_filterbank


def _batch(b=3, size=64):
    g = torch.Generator().manual_seed(0)
    return dict(
        image=torch.randint(0, 256, (b, size, size, 3), dtype=torch.uint8, generator=g),
        audio=torch.randn(b, 6, 160, generator=g) * 0.1,
        chunks=torch.tensor([3, 4, 2])[:b],
        joint=torch.randn(b, 13, generator=g),
        action=torch.randn(b, 5, generator=g),
        mask=torch.ones(b, 4, dtype=torch.bool),
    )


def test_shapes_and_gradients():
    """u_t is (B, d_model) and a loss on it reaches every modality's encoder."""
    torch.manual_seed(0)
    enc = TickEncoder(d_model=48)
    u = enc(**_batch())
    assert u.shape == (3, 48) and torch.isfinite(u).all()
    u.pow(2).mean().backward()
    for name in ("vision", "audio", "joint", "action"):
        grads = [p.grad for p in getattr(enc, name).parameters()]
        assert all(g is not None and g.abs().sum() > 0 for g in grads), name


def test_masked_and_non_finite_inputs_give_the_mask_embedding():
    """A masked modality contributes its mask embedding whatever its input; a NaN input is masked the same
    way; a tick with every modality masked still gives a finite u_t."""
    torch.manual_seed(0)
    enc = TickEncoder(d_model=32)
    batch = _batch()
    batch["mask"][:, 0] = False
    u1 = enc(**batch)
    batch["image"] = torch.zeros_like(batch["image"])
    assert torch.allclose(enc(**batch), u1)  # the masked camera's pixels do not matter
    nan = _batch()
    nan["joint"][1, 3] = float("nan")
    u_nan = enc(**nan)
    masked = _batch()
    masked["mask"][1, 2] = False
    assert torch.isfinite(u_nan).all() and torch.allclose(u_nan[1], enc(**masked)[1])
    none = _batch()
    none["mask"][:] = False
    u_none = enc(**none)
    assert torch.isfinite(u_none).all() and torch.allclose(u_none[0], u_none[1])


def test_proprioception_token_carries_the_standardized_reading():
    """The proprioception token starts with the reading itself, standardized by the training data's mean and
    scale (a coordinate that never moves keeps scale 1), and those statistics travel with the weights."""
    rng = np.random.default_rng(0)
    readings = rng.normal([0.5, -1.0, 2.0], [0.1, 3.0, 0.0], (500, 3)).astype(np.float32)
    enc = ProprioEncoder(3, 8)
    enc.standardize(readings)
    token = enc(torch.from_numpy(readings))
    assert token.shape == (500, 8)
    expected = (readings - readings.mean(0)) / np.where(readings.std(0) > 1e-6, readings.std(0), 1.0)
    np.testing.assert_allclose(token[:, :3].detach().numpy(), expected, atol=1e-4)
    assert enc.scale[2] == 1.0
    again = ProprioEncoder(3, 8)
    again.load_state_dict(enc.state_dict())
    assert torch.equal(again(torch.from_numpy(readings)), token)


def test_other_image_sizes_are_resized():
    """A 96x96 camera works through the same encoder."""
    enc = TickEncoder(d_model=16)
    assert enc(**_batch(size=96)).shape == (3, 16)


def test_audio_features_separate_a_tone_from_silence():
    """The audio encoder's log-mel front end responds to sound: a 1 kHz tone and silence give different
    tokens, and the mel bank covers the spectrum (every bin but the edges feeds some filter)."""
    enc = TickEncoder(d_model=16)
    t = torch.arange(6 * 160) / 16_000
    tone = torch.sin(2 * torch.pi * 1000 * t).reshape(1, 6, 160)
    a = enc.audio(tone, torch.tensor([6]))
    b = enc.audio(torch.zeros(1, 6, 160), torch.tensor([6]))
    assert (a - b).abs().max() > 1e-3
    bank = mel_filterbank()
    assert (bank.sum(0)[1:-1] > 0).all() and np.isfinite(bank).all()


def test_log_mel_matches_torch_stft():
    """The audio front end (framing and one DFT matmul, for speed per tick) computes the same centred,
    Hann-windowed power spectrum on the mel bank as torch.stft does, to 1e-4 in log units."""
    from runtime.world_model.encoders import HOP, N_FFT, AudioEncoder

    signal = torch.randn(3, 960, generator=torch.Generator().manual_seed(0))
    spec = torch.stft(signal, N_FFT, HOP, window=torch.hann_window(N_FFT), center=True, return_complex=True)
    reference = torch.log(torch.tensor(mel_filterbank(), dtype=torch.float32) @ spec.abs().pow(2) + 1e-6)
    assert torch.allclose(AudioEncoder(8, 6).log_mel(signal), reference, atol=1e-4)
