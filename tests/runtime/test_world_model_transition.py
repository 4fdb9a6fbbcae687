"""The action-conditioned transition: closed-form gradients, symplectic and reversible leapfrog, batching."""

import torch

from runtime.world_model.transition import Transition


def _model(dtype=torch.float64) -> Transition:
    torch.manual_seed(0)
    model = Transition(d_state=6, d_action=3, experts=4, hidden=8).to(dtype)
    with torch.no_grad():
        model.raw_a.fill_(0.5)  # experts strong enough to matter
        model.c.normal_()
        model.log_inv_mass.uniform_(-1.0, 0.5)  # unequal masses: the step must stay symplectic with them
    return model


def test_closed_form_gradient_matches_autograd():
    """grad V from the closed form equals autograd's gradient of V, to 1e-10 in float64."""
    model = _model()
    q = torch.randn(5, 6, dtype=torch.float64, requires_grad=True)
    mix = torch.softmax(torch.randn(5, 4, dtype=torch.float64), -1)
    (auto,) = torch.autograd.grad(model.potential(q, mix).sum(), q)
    assert torch.allclose(model.potential_grad(q.detach(), mix), auto, atol=1e-10)


def test_undamped_undriven_step_is_symplectic_and_reversible():
    """Without damping or action: the step's Jacobian J satisfies J^T Omega J = Omega to 1e-8, and a step
    with -dt returns to the start to 1e-10 (float64)."""
    model = _model()
    mix = torch.softmax(torch.randn(4, dtype=torch.float64), -1)
    x = torch.randn(12, dtype=torch.float64)

    def flow(state):
        q, p = model.step(state[:6][None], state[6:][None], None, 0.05, mix, damped=False)
        return torch.cat((q[0], p[0]))

    jac = torch.autograd.functional.jacobian(flow, x)
    eye = torch.eye(6, dtype=torch.float64)
    omega = torch.cat((torch.cat((0 * eye, eye), 1), torch.cat((-eye, 0 * eye), 1)), 0)
    assert torch.allclose(jac.T @ omega @ jac, omega, atol=1e-8)
    q, p = model.step(x[:6][None], x[6:][None], None, 0.05, mix, damped=False)
    q, p = model.step(q, p, None, -0.05, mix, damped=False)
    assert torch.allclose(torch.cat((q[0], p[0])), x, atol=1e-10)


def test_energy_bounded_over_10000_undriven_steps():
    """Undamped and undriven, leapfrog keeps the energy within 1 % of its start over 10,000 steps."""
    model = _model()
    mix = torch.softmax(torch.randn(4, dtype=torch.float64), -1)
    q, p = torch.randn(3, 6, dtype=torch.float64), torch.randn(3, 6, dtype=torch.float64)
    h0 = model.energy(q, p, mix)
    worst = torch.zeros_like(h0)
    with torch.no_grad():
        for _ in range(10_000):
            q, p = model.step(q, p, None, 0.02, mix, damped=False)
            worst = torch.maximum(worst, ((model.energy(q, p, mix) - h0) / h0).abs())
    assert worst.max() < 0.01, worst


def test_batched_rollout_equals_one_candidate_at_a_time():
    """A rollout over N candidates gives each candidate's own rollout; actions move the state."""
    model = _model(torch.float32)
    mix = torch.softmax(torch.randn(4), -1)
    q0, p0 = torch.randn(1, 6).expand(5, 6), torch.zeros(5, 6)
    actions = torch.randn(5, 7, 3)
    dt = torch.full((7,), 1 / 30)
    with torch.no_grad():
        qs, ps = model.rollout(q0, p0, actions, dt, mix)
        for i in range(5):
            qi, pi = model.rollout(q0[i : i + 1], p0[i : i + 1], actions[i : i + 1], dt, mix)
            assert torch.allclose(qs[i], qi[0], atol=1e-6) and torch.allclose(ps[i], pi[0], atol=1e-6)
    assert not torch.allclose(qs[0], qs[1])  # different actions, different futures


def test_rollout_reusing_gradients_equals_stepping():
    """The rollout computes grad V once per step (the second kick's is the next step's first); it gives what
    `step` gives, step after step, with per-candidate dt too."""
    model = _model(torch.float64)
    mix = torch.softmax(torch.randn(5, 4, dtype=torch.float64), -1)
    q, p = torch.randn(5, 6, dtype=torch.float64), torch.randn(5, 6, dtype=torch.float64)
    actions = torch.randn(5, 9, 3, dtype=torch.float64)
    dt = torch.rand(5, 9, dtype=torch.float64) / 10 - 0.02  # some steps backwards
    with torch.no_grad():
        qs, ps = model.rollout(q, p, actions, dt, mix)
        for t in range(9):
            q, p = model.step(q, p, actions[:, t], dt[:, t], mix)
            assert torch.allclose(qs[:, t], q, atol=1e-12) and torch.allclose(ps[:, t], p, atol=1e-12)


def test_a_residual_on_the_first_ticks_only_is_a_corrected_head_then_a_bare_tail():
    """`residual_ticks` n: the rollout is the corrected rollout for n steps, then the bare one from there
    (one call instead of two, for planning's held memory correction)."""
    model = _model(torch.float64)
    mix = torch.softmax(torch.randn(4, dtype=torch.float64), -1)
    q, p = torch.randn(3, 6, dtype=torch.float64), torch.randn(3, 6, dtype=torch.float64)
    residual = (0.05 * torch.randn(3, 6, dtype=torch.float64), 0.05 * torch.randn(3, 6, dtype=torch.float64))
    actions, dt = torch.randn(3, 8, 3, dtype=torch.float64), torch.full((8,), 1 / 30, dtype=torch.float64)
    with torch.no_grad():
        qs, ps = model.rollout(q, p, actions, dt, mix, residual, residual_ticks=3)
        qh, ph = model.rollout(q, p, actions[:, :3], dt[:3], mix, residual)
        qt, pt = model.rollout(qh[:, -1], ph[:, -1], actions[:, 3:], dt[3:], mix)
    assert torch.allclose(qs, torch.cat((qh, qt), 1), atol=1e-12)
    assert torch.allclose(ps, torch.cat((ph, pt), 1), atol=1e-12)


def test_the_predictor_maps_into_its_canonical_coordinates_and_back():
    """With a random invertible basis and centre, z -> (q~, p~) -> z is the identity, a step of dt = 0 leaves
    z where it was, and the predictor's energy is the transition's in those coordinates."""
    from runtime.world_model.model import LeapfrogPredictor, WorldModelConfig

    torch.manual_seed(0)
    predictor = LeapfrogPredictor(WorldModelConfig(d_latent=6, experts=4), "leapfrog").double()
    with torch.no_grad():
        predictor.basis.add_(0.3 * torch.randn(12, 12, dtype=torch.float64))
        predictor.center.normal_()
    z = torch.randn(5, 12, dtype=torch.float64)
    q, p = predictor.canonical(z)
    assert torch.allclose(predictor.latent(q, p), z, atol=1e-10)
    with torch.no_grad():
        still = predictor.step(z, torch.zeros(5, 5, dtype=torch.float64), torch.zeros(5, dtype=torch.float64))
    assert torch.allclose(still, z, atol=1e-10)
    mix = predictor.mix(z)
    assert torch.allclose(predictor.energy(z, mix), predictor.transition.energy(q, p, mix))
    # A rollout stays in those coordinates between steps and maps back once: the same as stepping z.
    actions, dt = torch.randn(5, 7, 5, dtype=torch.float64), torch.full((5, 7), 1 / 30, dtype=torch.float64)
    with torch.no_grad():
        rolled, stepped = predictor.rollout(z, actions, dt), z
        for k in range(7):
            stepped = predictor.step(stepped, actions[:, k], dt[:, k], mix)
            assert torch.allclose(rolled[:, k], stepped, atol=1e-10)


def test_a_rollout_follows_the_basis_when_the_weights_change():
    """Planning keeps inv(basis) between rollouts; a change of the weights in place (a learner's swap, a load)
    is seen at the next rollout: it matches a predictor built with the new weights."""
    from runtime.world_model.model import LeapfrogPredictor, WorldModelConfig

    torch.manual_seed(1)
    predictor = LeapfrogPredictor(WorldModelConfig(d_latent=6, experts=4), "leapfrog").double()
    z = torch.randn(3, 12, dtype=torch.float64)
    actions, dt = torch.randn(3, 4, 5, dtype=torch.float64), torch.full((3, 4), 1 / 30, dtype=torch.float64)
    with torch.no_grad():
        before = predictor.rollout(z, actions, dt)
        predictor.basis.add_(0.2 * torch.randn(12, 12, dtype=torch.float64))  # as load_state_dict copies
        after = predictor.rollout(z, actions, dt)
    fresh = LeapfrogPredictor(WorldModelConfig(d_latent=6, experts=4), "leapfrog").double()
    fresh.load_state_dict(predictor.state_dict())
    with torch.no_grad():
        assert torch.allclose(after, fresh.rollout(z, actions, dt), atol=1e-10)
    assert not torch.allclose(before, after)
