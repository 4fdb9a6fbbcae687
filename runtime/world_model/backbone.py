"""The Hamiltonian SSM backbone: a stack of sparse-mixture layers over the tick inputs u_t.

`forward` runs a whole sequence (every layer through its parallel scan: training); `step` folds one tick into
a state whose size never changes, however long the robot runs (streaming). Both give the same outputs.
"""

import torch
from torch import nn

from runtime.world_model.experts import HamiltonianExperts


class Backbone(nn.Module):
    def __init__(self, d_model: int, d_state: int, layers: int = 2, experts: int = 8, top_k: int = 2):
        super().__init__()
        if layers < 1:
            raise ValueError(f"`layers` must be >= 1, got {layers}")
        self.layers = nn.ModuleList(
            HamiltonianExperts(d_model, d_state, experts, top_k) for _ in range(layers)
        )

    def initial_state(self, batch: int) -> list[torch.Tensor]:
        return [layer.initial_state(batch) for layer in self.layers]

    def forward(self, u: torch.Tensor, dt_eff: torch.Tensor, state: list[torch.Tensor] | None = None):
        """u (B, T, d_model), dt_eff (B, T) -> y (B, T, d_model), final state, per-layer energies (B, T, L),
        summed load-balancing loss."""
        state = state or [None] * len(self.layers)
        finals, energies, balance = [], [], u.new_zeros(())
        for layer, x0 in zip(self.layers, state, strict=True):
            u, states, lb = layer(u, dt_eff, x0)
            finals.append(states[:, -1])
            energies.append(layer.energy(states))
            balance = balance + lb
        return u, finals, torch.stack(energies, -1), balance

    def step(self, u: torch.Tensor, dt_eff: torch.Tensor, state: list[torch.Tensor]):
        """One tick: u (B, d_model), dt_eff (B,) -> y (B, d_model), new state, per-layer energy (B, L)."""
        new_state, energies = [], []
        for layer, x in zip(self.layers, state, strict=True):
            u, x, _ = layer.step(u, dt_eff, x)
            new_state.append(x)
            energies.append(layer.energy(x))
        return u, new_state, torch.stack(energies, -1)
