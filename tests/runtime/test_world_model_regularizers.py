"""Each anti-collapse term penalizes the failure it exists for, and a healthy anisotropic batch passes."""

import torch

from runtime.world_model.regularizers import AntiCollapse


def _codes(scales, n=512, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, len(scales), generator=g) * torch.tensor(scales)


REG = AntiCollapse(logdet_proj_dim=16)
TERMS = ("energy_budget", "variance_floor", "mean", "logdet_floor", "pr_floor", "eigmax_ceiling")


def _terms(z):
    return {k: v.item() for k, v in REG.terms(z, torch.Generator().manual_seed(1)).items()}


def test_healthy_anisotropic_codes_pass():
    """Codes with unequal but healthy scales (0.7 to 1.3) cost (almost) nothing: isotropy is not required."""
    t = _terms(_codes(torch.linspace(0.7, 1.3, 16).tolist()))
    assert all(t[k] < 0.02 for k in TERMS), t


def test_rank_one_batch_hits_the_logdet_floor():
    """Every code on one line (rank 1): the log-det floor and the participation ratio fire."""
    g = torch.Generator().manual_seed(2)
    z = torch.randn(512, 1, generator=g) * torch.randn(1, 16, generator=g)
    t = _terms(z)
    assert t["logdet_floor"] > 1.0 and t["pr_floor"] > 0.1, t


def test_one_spike_spectrum_hits_pr_and_eigmax():
    """One direction with most of the variance and the rest small but alive: the participation-ratio floor
    and the top-eigenvalue ceiling fire."""
    t = _terms(_codes([6.0] + [0.3] * 15))
    assert t["pr_floor"] > 0.1 and t["eigmax_ceiling"] > 0.1, t


def test_shrunken_scale_hits_budget_and_variance_floor():
    """All codes shrunk toward zero (full rank, balanced): the energy budget and the variance floor fire."""
    t = _terms(_codes([0.05] * 16))
    assert t["energy_budget"] > 0.5 and t["variance_floor"] > 0.3, t


def test_offset_codes_hit_the_mean_penalty():
    """Codes not centred: the mean penalty fires."""
    t = _terms(_codes([1.0] * 16) + 2.0)
    assert t["mean"] > 3.0, t


def test_terms_are_differentiable():
    """Every term gives a finite gradient to the codes."""
    z = _codes([1.0] * 8 + [0.2] * 8).requires_grad_()
    total = sum(REG.terms(z, torch.Generator().manual_seed(3)).values())
    total.backward()
    assert torch.isfinite(z.grad).all()
