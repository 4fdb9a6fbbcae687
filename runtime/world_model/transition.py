"""The action-conditioned latent transition used for rollouts: a separable Hamiltonian, leapfrog in dt_eff.

    H(q, p) = p^T M^-1 p / 2 + V(q),   V(q) = q^T K q / 2 + sum_e w_e V_e(q),
    V_e(q) = sum_h a_eh log cosh(W_e q + c_e)_h

The quadratic base is the oscillator bank's; each expert adds a smooth potential whose gradient is closed
form, grad V_e = W_e^T (a_e * tanh(W_e q + c_e)), so a rollout needs no autograd (the planner runs hundreds
of them per tick). `w` mixes the experts (from the router, fixed along a rollout). The mass M is diagonal and
learned: the belief's momenta come out of an encoder at the scale its regularizers hold them to (about 1),
and with unit mass every q then had to move that far each tick; a fresh unit-mass transition fitted to a
trained model's latents predicted the next q worse than holding it still (mean error 0.44 against 0.25).
Actions push on the momenta through B; damping gamma decays them. One step is kick-drift-kick leapfrog:

    p <- exp(-gamma dt/2) p;  p <- p + dt/2 (B a - grad V(q));  q <- q + dt M^-1 p;
    p <- p + dt/2 (B a - grad V(q));  p <- exp(-gamma dt/2) p

Undamped and undriven, it is symplectic and `-dt` undoes it exactly. Candidates are a batch dimension.
`integrator="euler"` swaps leapfrog for explicit Euler on the same Hamiltonian (a baseline: neither
symplectic nor reversible, its energy drifts).
"""

import math

import torch
from torch import nn
from torch.nn import functional as F


class Transition(nn.Module):
    def __init__(
        self, d_state: int, d_action: int, experts: int = 8, hidden: int = 32, integrator: str = "leapfrog"
    ):
        super().__init__()
        if integrator not in ("leapfrog", "euler"):
            raise ValueError(f"`integrator` must be 'leapfrog' or 'euler', got {integrator!r}")
        self.integrator = integrator
        self.d_state, self.d_action, self.experts = d_state, d_action, experts
        self.log_k = nn.Parameter(torch.zeros(d_state))  # k = 1 / s^2 to start
        self.log_inv_mass = nn.Parameter(torch.zeros(d_state))  # M^-1, diagonal; unit mass to start
        self.raw_gamma = nn.Parameter(torch.full((d_state,), -2.0))
        self.w = nn.Parameter(torch.randn(experts, hidden, d_state) / math.sqrt(d_state))
        self.c = nn.Parameter(torch.zeros(experts, hidden))
        self.raw_a = nn.Parameter(torch.full((experts, hidden), -2.0))  # amplitudes a = softplus >= 0
        self.b = nn.Parameter(torch.randn(d_state, d_action) / math.sqrt(d_action))

    def _pre(self, q: torch.Tensor) -> torch.Tensor:
        """W_e q + c_e for every expert at once, flat (N, E*H): the experts' rows stacked, one matmul."""
        e, h, d = self.w.shape
        return torch.addmm(self.c.reshape(e * h), q, self.w.reshape(e * h, d).T)

    def potential(self, q: torch.Tensor, mix: torch.Tensor) -> torch.Tensor:
        """V(q), (N,); q (N, D), mix (N, E) or (E,)."""
        base = 0.5 * (torch.exp(self.log_k) * q * q).sum(-1)
        z = self._pre(q).reshape(-1, *self.c.shape)
        log_cosh = z.abs() + F.softplus(-2 * z.abs()) - math.log(2)  # stable log cosh
        experts = (F.softplus(self.raw_a) * log_cosh).sum(-1)  # (N, E)
        return base + (mix * experts).sum(-1)

    def potential_grad(self, q: torch.Tensor, mix: torch.Tensor) -> torch.Tensor:
        """grad V(q) in closed form, (N, D)."""
        return self._gradient_of(mix)(q)

    def energy(self, q: torch.Tensor, p: torch.Tensor, mix: torch.Tensor) -> torch.Tensor:
        return 0.5 * (torch.exp(self.log_inv_mass) * p * p).sum(-1) + self.potential(q, mix)

    def step(self, q, p, action, dt, mix, damped: bool = True):
        """One leapfrog step: q, p (N, D); action (N, A) or None; dt a float or (N,) tensor of seconds."""
        dt = torch.as_tensor(dt, dtype=q.dtype, device=q.device)
        dt = dt.unsqueeze(-1) if dt.dim() == 1 else dt
        h = dt / 2
        drive = 0.0 if action is None else action @ self.b.T
        if self.integrator == "euler":
            friction = F.softplus(self.raw_gamma) * p if damped else 0.0
            velocity = torch.exp(self.log_inv_mass) * p
            return q + dt * velocity, p + dt * (drive - self.potential_grad(q, mix) - friction)
        grad = self._gradient_of(mix)
        decay = torch.exp(-F.softplus(self.raw_gamma) * h) if damped else 1.0
        p = decay * p
        p = p + h * (drive - grad(q))
        q = q + dt * torch.exp(self.log_inv_mass) * p
        p = p + h * (drive - grad(q))
        return q, decay * p

    def hessian_bound(self, mix: torch.Tensor) -> torch.Tensor:
        """An upper bound on omega_max^2, the largest eigenvalue of M^-1 grad^2 V (|sech^2| <= 1), per mix
        row."""
        per_expert = (F.softplus(self.raw_a) * self.w.pow(2).sum(-1)).sum(-1)  # (E,)
        return torch.exp(self.log_inv_mass).max() * (torch.exp(self.log_k).max() + (mix * per_expert).sum(-1))

    def rollout(self, q, p, actions, dt, mix, residual=None, residual_ticks=None):
        """Batched open-loop rollout: actions (N, T, A), dt (T,) or (N, T) seconds -> q, p (N, T, D) after
        each step. Leapfrog's second kick and the next step's first read grad V at the same q: computed once,
        the rollout costs one gradient per step instead of two (the same numbers as `step` T times).
        `residual`: (rq, rp), each (N, D), a correction per unit of dt (per tick) held along the rollout (the
        memory's, runtime/adapt/fast.py), added after each step as `step` then adding it would; it costs a
        second gradient per step (adding it inside the step, to save that, moved a 0.05 correction 0.13).
        `residual_ticks`: add it on the first that many steps only (default: all)."""
        corrected = actions.shape[1] if residual_ticks is None else residual_ticks
        if self.integrator != "leapfrog":
            qs, ps = [], []
            for t in range(actions.shape[1]):
                q, p = self.step(q, p, actions[:, t], dt[..., t], mix)
                if residual is not None and t < corrected:
                    h = torch.as_tensor(dt[..., t], dtype=q.dtype).reshape(-1, 1)
                    q, p = q + h * residual[0], p + h * residual[1]
                qs.append(q)
                ps.append(p)
            return torch.stack(qs, 1), torch.stack(ps, 1)
        dt = torch.as_tensor(dt, dtype=q.dtype, device=q.device)
        dt = dt.expand(q.shape[0], -1) if dt.dim() == 1 else dt  # (N, T)
        gamma, inv_mass, steps = F.softplus(self.raw_gamma), torch.exp(self.log_inv_mass), actions.shape[1]
        # Each torch call costs ~10 us of dispatch here, about what its arithmetic costs at 256 x 32: a plan's
        # rollout is mostly calls, so the loop makes few (fused multiply-adds, per-step views made at once).
        # one step size, the planner's case: scalars and (D,) vectors (a traced graph takes dt per step)
        if not torch.jit.is_tracing() and bool((dt == dt[0, 0]).all()):
            h = float(dt[0, 0]) / 2
            halves, decays, drifts = [h] * steps, [torch.exp(-gamma * h)] * steps, [2 * h * inv_mass] * steps
            kicks = ((h * actions) @ self.b.T).unbind(1)  # the action's push over half a step
        else:
            half = dt.unsqueeze(-1) / 2  # (N, T, 1)
            halves, decays = half.unbind(1), torch.exp(-gamma * half).unbind(1)
            drifts, kicks = (2 * half * inv_mass).unbind(1), (half * (actions @ self.b.T)).unbind(1)
        grad = self._gradient_of(mix)
        g = grad(q)
        rq, rp = residual if residual is not None else (None, None)
        qs, ps = [], []
        for t, (h, decay, drift, kick) in enumerate(zip(halves, decays, drifts, kicks, strict=True)):
            p = _minus(torch.addcmul(kick, decay, p), h, g)
            q = torch.addcmul(q, drift, p)
            g = grad(q)
            p = decay * _minus(p + kick, h, g)
            if rq is not None and t < corrected:  # the step, then the correction: the next kick reads grad V
                # where it moved q
                q, p = q + 2 * h * rq, p + 2 * h * rp
                g = grad(q)
            qs.append(q)
            ps.append(p)
        return torch.stack(qs, 1), torch.stack(ps, 1)

    def _gradient_of(self, mix: torch.Tensor):
        """grad V for a fixed mix, as a function of q, with everything that does not depend on q done once:
        with A the mix-weighted amplitudes and tanh = 2 sigmoid(2x) - 1,
        grad V = k q - A W + (2 A sigmoid(2 (W q + c))) W.
        The experts' sum is one matmul over their stacked rows; torch's CPU tanh ran 5x slower than sigmoid
        here (AVX-512, torch 2.13) and was most of a plan's time."""
        e, h, d = self.w.shape
        w = self.w.reshape(e * h, d)
        amplitude = F.softplus(self.raw_a).reshape(e * h) * mix.repeat_interleave(h, -1)  # (N, E*H) or (E*H,)
        offset, twice, w2, c2 = amplitude @ w, 2 * amplitude, 2 * w.T, 2 * self.c.reshape(e * h)
        k = torch.exp(self.log_k)
        return lambda q: torch.addmm(
            torch.addcmul(-offset, k, q), twice * torch.sigmoid(torch.addmm(c2, q, w2)), w
        )


def _minus(p: torch.Tensor, h, g: torch.Tensor) -> torch.Tensor:
    """p - h g, h a float (one call) or a tensor."""
    return p.sub(g, alpha=h) if isinstance(h, float) else p - h * g
