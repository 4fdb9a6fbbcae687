"""Sparse mixture of Hamiltonian experts: top-k routing, scan == step, load balance, gradients."""

import pytest
import torch

from runtime.world_model.experts import HamiltonianExperts


def test_scan_and_step_agree_with_per_tick_routing():
    """Over a sequence with per-tick top-2 routing among 6 experts and jittered dt_eff, the parallel scan and
    the one-tick step give the same outputs and states within 1e-5 (float32)."""
    torch.manual_seed(0)
    moe = HamiltonianExperts(d_model=16, d_state=8, experts=6, top_k=2)
    u = torch.randn(2, 30, 16)
    dt_eff = 1 / 30 * (1 + 0.3 * torch.rand(2, 30))
    y, states, _ = moe(u, dt_eff)
    x = moe.initial_state(2)
    for t in range(30):
        y_t, x, idx = moe.step(u[:, t], dt_eff[:, t], x)
        assert idx.shape == (2, 2) and len(set(idx[0].tolist())) == 2
        assert torch.allclose(y_t, y[:, t], atol=1e-5), (t, (y_t - y[:, t]).abs().max())
        assert torch.allclose(x, states[:, t], atol=1e-5)
    assert moe.energy(states).shape == (2, 30)


def test_only_chosen_experts_are_driven():
    """An expert the router does not choose coasts undriven: with zero initial state, its bank stays at zero
    while the chosen experts' banks move."""
    torch.manual_seed(1)
    moe = HamiltonianExperts(d_model=8, d_state=4, experts=5, top_k=1)
    u = torch.randn(1, 8)
    _, x, idx = moe.step(u, torch.tensor([1 / 30]), moe.initial_state(1))
    chosen = idx[0, 0].item()
    for e in range(5):
        moved = x[0, e].abs().sum() > 0
        assert moved == (e == chosen), (e, chosen)


def test_load_balance_penalizes_collapse():
    """The load-balancing term is 1 for uniform routing and rises toward E when one expert takes every tick;
    its gradient reaches the router."""
    moe = HamiltonianExperts(d_model=8, d_state=4, experts=4, top_k=1)
    uniform_idx = torch.arange(4).repeat(25)[:, None]
    uniform = moe.load_balance(uniform_idx, torch.full((100, 4), 0.25))
    collapsed_probs = torch.tensor([[0.97, 0.01, 0.01, 0.01]]).expand(100, 4)
    collapsed = moe.load_balance(torch.zeros(100, 1, dtype=torch.long), collapsed_probs)
    assert uniform.item() == pytest.approx(1.0)
    assert collapsed.item() > 3.5
    _, _, lb = moe(torch.randn(2, 10, 8), torch.full((2, 10), 1 / 30))
    lb.backward()
    assert moe.router.weight.grad is not None and moe.router.weight.grad.abs().sum() > 0


def test_bad_top_k_is_refused():
    """top_k outside [1, experts] is refused, naming the field."""
    with pytest.raises(ValueError, match="top_k"):
        HamiltonianExperts(8, 4, experts=4, top_k=5)
