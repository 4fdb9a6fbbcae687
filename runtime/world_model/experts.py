"""Sparse mixture of Hamiltonian experts: E oscillator banks per layer, a router picking top-k per tick.

Each expert is an oscillator bank (stiffness, damping, its own force and selective-step projections, its own
readout). Per tick the router scores the experts from u_t and keeps the top k; only those experts' projections
and readouts are computed, weighted by the softmax of their scores. Every expert keeps its own phase-space
state; an expert not chosen this tick coasts undriven at dt_eff (a cheap elementwise step: its dynamics go
on, nothing about u_t is computed for it). The Switch-Transformer load-balancing term keeps the router from
collapsing onto a few experts.

As for one bank (layer.py), `forward` runs a sequence through the parallel scan and `step` runs one tick;
they agree. The oscillators' phase-space state is float64 in both: lightly damped banks carry rounding from
tick to tick, and in float32 the two paths, each about 1e-4 from the exact states after 300 ticks, differed
by up to 1.7e-5 at the output. The state is 4 KiB a layer and the rest of the layer stays float32.
"""

import math

import torch
from torch import nn
from torch.nn import functional as F

from runtime.world_model.layer import OMEGA_RANGE, RMSNorm
from runtime.world_model.oscillators import energy, kick_drift_kick, scan, stable_dt, step_matrices


class HamiltonianExperts(nn.Module):
    def __init__(self, d_model: int, d_state: int, experts: int = 8, top_k: int = 2):
        super().__init__()
        if not 1 <= top_k <= experts:
            raise ValueError(f"`top_k` must be between 1 and `experts` ({experts}), got {top_k}")
        self.d_model, self.d_state, self.experts, self.top_k = d_model, d_state, experts, top_k
        omega = torch.exp(torch.linspace(math.log(OMEGA_RANGE[0]), math.log(OMEGA_RANGE[1]), d_state))
        jitter = 1 + 0.1 * torch.randn(experts, d_state)  # experts start on slightly different frequencies
        self.log_k = nn.Parameter(2 * torch.log(omega * jitter.abs()))
        self.raw_gamma = nn.Parameter(torch.full((experts, d_state), -2.0))
        self.router = nn.Linear(d_model, experts)
        self.force = nn.Parameter(torch.randn(experts, d_model, d_state) / math.sqrt(d_model))
        self.dt_w = nn.Parameter(torch.zeros(experts, d_model, d_state))
        self.dt_b = nn.Parameter(torch.full((experts, d_state), math.log(math.e - 1)))  # softplus = 1
        self.readout = nn.Parameter(torch.randn(experts, 2 * d_state, d_model) / math.sqrt(2 * d_state))
        self.norm = RMSNorm(d_model)

    @property
    def stiffness(self) -> torch.Tensor:
        return torch.exp(self.log_k)  # (E, D)

    def route(self, u: torch.Tensor, probs: bool = True):
        """u (N, d_model) -> top-k expert indices (N, k), their weights (N, k), all router probs (N, E) (None
        when `probs` is False: only the balance loss needs them)."""
        logits = self.router(u)
        top, idx = logits.topk(self.top_k, -1)
        return idx, torch.softmax(top, -1), torch.softmax(logits, -1) if probs else None

    def _drive(self, u: torch.Tensor, dt_eff: torch.Tensor, idx: torch.Tensor, k: torch.Tensor):
        """Per expert and oscillator, the step dt and the force (N, E, D): the chosen experts driven and
        selective, the others coasting undriven at dt_eff (clamped to the stable band)."""
        n = u.shape[0]
        rows = idx[..., None].expand(n, self.top_k, self.d_state)
        x = u[:, None, None]  # (N, 1, 1, d_model): only the chosen experts' projections, (N, k, D)
        gate = (x @ self.dt_w[idx]).squeeze(-2) + self.dt_b[idx]
        coast = dt_eff[:, None, None].expand(n, self.experts, self.d_state)
        dt = coast.scatter(1, rows, dt_eff[:, None, None] * F.softplus(gate))
        force = u.new_zeros(n, self.experts, self.d_state).scatter(1, rows, (x @ self.force[idx]).squeeze(-2))
        return stable_dt(dt, k), force

    def _output(self, u: torch.Tensor, x: torch.Tensor, idx: torch.Tensor, weight: torch.Tensor):
        """u (N, d_model), x (N, E, D, 2): the chosen experts' readouts, weighted, residual, norm."""
        chosen = x.gather(1, idx[..., None, None].expand(-1, -1, self.d_state, 2)).flatten(-2)  # (N, k, 2D)
        out = (chosen.unsqueeze(-2) @ self.readout[idx]).squeeze(-2)
        return self.norm(u + (weight[..., None] * F.silu(out)).sum(1))

    def load_balance(self, idx: torch.Tensor, probs: torch.Tensor) -> torch.Tensor:
        """Switch Transformer's auxiliary loss: E * sum_e (share of ticks routed to e) * (mean prob of e);
        1 when routing is uniform, up to E when it collapses."""
        share = F.one_hot(idx, self.experts).sum(-2).float().mean(0) / self.top_k
        return self.experts * (share * probs.mean(0)).sum()

    def initial_state(self, batch: int) -> torch.Tensor:
        return torch.zeros(batch, self.experts, self.d_state, 2, dtype=torch.float64)

    def _banks(self, dt: torch.Tensor, k: torch.Tensor, force: torch.Tensor):
        """dt, stiffness, damping and force in float64, the state's precision."""
        return dt.double(), k.double(), F.softplus(self.raw_gamma).double(), force.double()

    def forward(self, u: torch.Tensor, dt_eff: torch.Tensor, x0: torch.Tensor | None = None):
        """u (B, T, d_model), dt_eff (B, T) -> y (B, T, d_model), states (B, T, E, D, 2), balance loss."""
        b, t, _ = u.shape
        flat = u.reshape(b * t, -1)
        idx, weight, probs = self.route(flat)
        k = self.stiffness
        dt, force = self._drive(flat, dt_eff.reshape(-1), idx, k)
        a, bias = step_matrices(*self._banks(dt, k, force))
        a = a.reshape(b, t, self.experts * self.d_state, 2, 2)
        bias = bias.reshape(b, t, self.experts * self.d_state, 2)
        x0 = self.initial_state(b) if x0 is None else x0.double()
        states = scan(x0.reshape(b, -1, 2), a, bias).reshape(b, t, self.experts, self.d_state, 2)
        y = self._output(flat, states.reshape(b * t, self.experts, self.d_state, 2).to(u.dtype), idx, weight)
        return y.reshape(b, t, -1), states, self.load_balance(idx, probs)

    def step(self, u: torch.Tensor, dt_eff: torch.Tensor, x: torch.Tensor):
        """One tick: u (B, d_model), dt_eff (B,), x (B, E, D, 2) -> y (B, d_model), x, experts (B, k)."""
        idx, weight, _ = self.route(u, probs=False)
        k = self.stiffness
        dt, force = self._drive(u, dt_eff, idx, k)
        x = kick_drift_kick(x.double(), *self._banks(dt, k, force))
        return self._output(u, x.to(u.dtype), idx, weight), x, idx

    def energy(self, x: torch.Tensor) -> torch.Tensor:
        """Total energy of every expert's bank, (...,)."""
        return energy(x, self.stiffness).sum((-1, -2))
