"""The oscillator banks' kick-drift-kick step: symplectic, reversible, bounded energy, and scan == step."""

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from runtime.world_model.oscillators import energy, kick_drift_kick, scan, stable_dt, step, step_matrices

OMEGA = torch.tensor([[0.2, 1.0, 5.0, 20.0]], dtype=torch.float64)


def test_undriven_undamped_step_is_symplectic():
    """In float64, J^T Omega J = Omega to 1e-12 for every channel (the 2x2 step has determinant 1)."""
    k = OMEGA**2
    dt = stable_dt(torch.full_like(k, 0.08), k)
    a, _ = step_matrices(dt, k, torch.zeros_like(k), torch.zeros_like(k))
    omega = torch.tensor([[0.0, 1.0], [-1.0, 0.0]], dtype=torch.float64)
    lhs = a.transpose(-1, -2) @ omega @ a
    assert torch.allclose(lhs, omega.expand_as(lhs), atol=1e-12)


def test_negative_dt_inverts_the_step():
    """Undriven and undamped, stepping with -dt undoes a step with dt (time reversibility), to 1e-12."""
    k = OMEGA**2
    dt = stable_dt(torch.full_like(k, 0.05), k)
    zero = torch.zeros_like(k)
    a_fwd, _ = step_matrices(dt, k, zero, zero)
    a_back, _ = step_matrices(-dt, k, zero, zero)
    x = torch.randn(1, 4, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(
        step(step(x, a_fwd, torch.zeros_like(x)), a_back, torch.zeros_like(x)), x, atol=1e-12
    )


def test_energy_stays_bounded_over_10000_undriven_steps():
    """Leapfrog conserves a shadow Hamiltonian: over 10,000 undamped steps the energy never drifts more than
    a few percent from its start (explicit Euler, for contrast, grows it without bound)."""
    k = OMEGA**2
    dt = stable_dt(torch.full_like(k, 0.05), k)
    zero = torch.zeros_like(k)
    a, b = step_matrices(dt, k, zero, zero)
    x = torch.tensor([[[1.0, 0.0]] * 4], dtype=torch.float64)
    h0 = energy(x, k)
    worst = torch.zeros_like(h0)
    for _ in range(10_000):
        x = step(x, a, b)
        worst = torch.maximum(worst, (energy(x, k) - h0).abs() / h0)
    assert worst.max() < 0.3, (
        worst
    )  # omega dt up to 1 here: the shadow Hamiltonian differs by O((omega dt)^2)
    q, p = torch.ones_like(k), torch.zeros_like(k)  # explicit Euler on the same oscillators
    for _ in range(1_000):
        q, p = q + dt * p, p - dt * k * q
    assert ((0.5 * p**2 + 0.5 * k * q**2) / h0).max() > 10


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 2**16), length=st.integers(1, 70))
def test_scan_equals_step(seed, length):
    """For random stiffness, damping, per-tick dt and forces, the parallel scan gives every state that
    stepping tick by tick gives, within 1e-5 in float32."""
    g = torch.Generator().manual_seed(seed)
    batch, d = 3, 8
    k = torch.rand(batch, 1, d, generator=g) * 50
    gamma = torch.rand(batch, 1, d, generator=g)
    dt = stable_dt(torch.rand(batch, length, 1, generator=g) * 0.06 + 0.01, k)
    force = torch.randn(batch, length, d, generator=g)
    a, b = step_matrices(dt, k, gamma, force)
    x0 = torch.randn(batch, d, 2, generator=g)
    states = scan(x0, a, b)
    x = x0
    for t in range(length):
        x = step(x, a[:, t], b[:, t])
        assert torch.allclose(states[:, t], x, atol=1e-5, rtol=1e-5), (t, (states[:, t] - x).abs().max())


def test_layer_scan_and_step_agree_and_gradients_flow():
    """A HamiltonianLayer run over a sequence (parallel scan) and tick by tick (constant-size state) gives the
    same outputs and states within 1e-5 in float32, with jittered dt_eff; its loss back-propagates to the
    stiffness, the damping and the selective step."""
    from runtime.world_model.layer import HamiltonianLayer

    torch.manual_seed(0)
    layer = HamiltonianLayer(d_model=16, d_state=12)
    u = torch.randn(2, 40, 16)
    dt_eff = 1 / 30 * (1 + 0.3 * torch.rand(2, 40))
    y, states = layer(u, dt_eff)
    x = layer.initial_state(2)
    for t in range(40):
        y_t, x = layer.step(u[:, t], dt_eff[:, t], x)
        assert torch.allclose(y_t, y[:, t], atol=1e-5), (t, (y_t - y[:, t]).abs().max())
        assert torch.allclose(x, states[:, t], atol=1e-5)
    assert layer.energy(states).shape == (2, 40)
    y.pow(2).mean().backward()
    for p in (layer.log_k, layer.raw_gamma, layer.dt_gate.weight, layer.force.weight):
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0


def test_kick_drift_kick_is_the_matrix_step():
    """The streaming path's direct kick-drift-kick gives the affine map the scan composes, to 1e-12 (float64),
    damped and driven, across the stable band."""
    g = torch.Generator().manual_seed(3)
    x = torch.randn(4, 16, 2, generator=g, dtype=torch.float64)
    k = torch.exp(torch.randn(16, generator=g, dtype=torch.float64) * 2)
    dt = stable_dt(torch.rand(4, 16, generator=g, dtype=torch.float64) * 0.2, k)
    gamma = torch.rand(16, generator=g, dtype=torch.float64)
    force = torch.randn(4, 16, generator=g, dtype=torch.float64)
    a, b = step_matrices(dt, k, gamma, force)
    assert torch.allclose(kick_drift_kick(x, dt, k, gamma, force), step(x, a, b), atol=1e-12)
