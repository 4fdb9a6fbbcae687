"""One layer of the Hamiltonian state-space backbone: inputs as forces on an oscillator bank, a selective
symplectic step, a gated readout, residual and norm (DESIGN.md, "The world model"; seeds 000 and 003).

    force_t = W_f u_t                                  (the tick's input pushes on the momenta)
    dt_t    = dt_eff_t * softplus(W_dt u_t + c)        (selective step, clamped to leapfrog's stable band)
    x_t     = A(dt_t, k, gamma) x_{t-1} + b(dt_t, F_t) (kick-drift-kick, oscillators.py)
    y_t     = norm(u_t + GLU([q_t, p_t]))

Two paths compute the same thing: `forward` over a whole sequence with the parallel scan (training) and
`step` one tick at a time with a constant-size state (streaming). The layer's energy per tick is exposed.
"""

import math

import torch
from torch import nn
from torch.nn import functional as F

from runtime.world_model.oscillators import energy, kick_drift_kick, scan, stable_dt, step_matrices

OMEGA_RANGE = (0.5, 30.0)  # rad/s: periods from 12 s (a slow push) down to 0.2 s (an impact's ring-down)


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float = 1e-6):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight


class HamiltonianLayer(nn.Module):
    def __init__(self, d_model: int, d_state: int):
        super().__init__()
        self.d_model, self.d_state = d_model, d_state
        omega = torch.exp(torch.linspace(math.log(OMEGA_RANGE[0]), math.log(OMEGA_RANGE[1]), d_state))
        self.log_k = nn.Parameter(2 * torch.log(omega))  # k = omega^2, log-spaced across the bank
        self.raw_gamma = nn.Parameter(torch.full((d_state,), -2.0))  # gamma = softplus: ~0.13 /s to start
        self.force = nn.Linear(d_model, d_state)
        self.dt_gate = nn.Linear(d_model, d_state)
        nn.init.zeros_(self.dt_gate.weight)
        nn.init.constant_(self.dt_gate.bias, math.log(math.e - 1))  # softplus = 1: dt = dt_eff to start
        self.readout = nn.Linear(2 * d_state, 2 * d_model)
        self.out = nn.Linear(d_model, d_model)
        self.norm = RMSNorm(d_model)

    @property
    def stiffness(self) -> torch.Tensor:
        return torch.exp(self.log_k)

    def _drive(self, u: torch.Tensor, dt_eff: torch.Tensor):
        """u (..., d_model), dt_eff (...,) -> each oscillator's step dt and force (..., D)."""
        return stable_dt(dt_eff.unsqueeze(-1) * F.softplus(self.dt_gate(u)), self.stiffness), self.force(u)

    def _output(self, u: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        gate, value = self.readout(x.flatten(-2)).chunk(2, -1)
        return self.norm(u + self.out(F.silu(gate) * value))

    def initial_state(self, batch: int) -> torch.Tensor:
        return torch.zeros(batch, self.d_state, 2)

    def forward(self, u: torch.Tensor, dt_eff: torch.Tensor, x0: torch.Tensor | None = None):
        """u (B, T, d_model), dt_eff (B, T) seconds -> (y (B, T, d_model), states (B, T, D, 2))."""
        dt, force = self._drive(u, dt_eff)
        a, b = step_matrices(dt, self.stiffness, F.softplus(self.raw_gamma), force)
        x0 = self.initial_state(u.shape[0]).to(u) if x0 is None else x0
        states = scan(x0, a, b)
        return self._output(u, states), states

    def step(self, u: torch.Tensor, dt_eff: torch.Tensor, x: torch.Tensor):
        """One tick: u (B, d_model), dt_eff (B,), x (B, D, 2) -> (y (B, d_model), x (B, D, 2))."""
        dt, force = self._drive(u, dt_eff)
        x = kick_drift_kick(x, dt, self.stiffness, F.softplus(self.raw_gamma), force)
        return self._output(u, x), x

    def energy(self, x: torch.Tensor) -> torch.Tensor:
        """The bank's total energy per state, (...,)."""
        return energy(x, self.stiffness).sum(-1)
