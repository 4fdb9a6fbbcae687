"""The stacked backbone: scan == step across layers, constant-size streaming state, energies exposed."""

import pytest
import torch

from runtime.world_model.backbone import Backbone


def test_stack_scan_equals_step_and_state_size_is_constant():
    """Three layers of experts: a sequence through the scans and tick by tick give the same outputs (1e-5,
    float32); the streaming state has the same size after 1 tick and after 200; energies are per layer."""
    torch.manual_seed(0)
    net = Backbone(d_model=16, d_state=8, layers=3, experts=4, top_k=2)
    u = torch.randn(2, 25, 16)
    dt_eff = 1 / 30 * (1 + 0.2 * torch.rand(2, 25))
    y, finals, energies, balance = net(u, dt_eff)
    assert energies.shape == (2, 25, 3) and balance.item() >= 1.0 - 1e-6
    state = net.initial_state(2)
    sizes = sum(s.numel() for s in state)
    for t in range(25):
        y_t, state, e_t = net.step(u[:, t], dt_eff[:, t], state)
        assert torch.allclose(y_t, y[:, t], atol=1e-5), (t, (y_t - y[:, t]).abs().max())
        assert torch.allclose(e_t, energies[:, t], rtol=1e-4, atol=1e-5)
    for a, b in zip(state, finals, strict=True):
        assert torch.allclose(a, b, atol=1e-5)
    for _ in range(200):
        _, state, _ = net.step(torch.randn(2, 16), torch.full((2,), 1 / 30), state)
    assert sum(s.numel() for s in state) == sizes


def test_continuing_a_sequence_from_its_final_state():
    """Splitting a sequence in two and carrying the state over gives the outputs of the whole sequence."""
    torch.manual_seed(1)
    net = Backbone(d_model=8, d_state=4, layers=2, experts=3, top_k=1)
    u, dt = torch.randn(1, 20, 8), torch.full((1, 20), 1 / 30)
    whole, _, _, _ = net(u, dt)
    first, state, _, _ = net(u[:, :12], dt[:, :12])
    second, _, _, _ = net(u[:, 12:], dt[:, 12:], state)
    assert torch.allclose(torch.cat((first, second), 1), whole, atol=1e-5)


def test_bad_layer_count_is_refused():
    """A backbone of zero layers is refused, naming the field."""
    with pytest.raises(ValueError, match="layers"):
        Backbone(8, 4, layers=0)
