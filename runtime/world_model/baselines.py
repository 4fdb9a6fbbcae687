"""The baselines' parts, beside the Hamiltonian ones, with the same interfaces (selected by name in model.py).

Belief models fold the tick inputs u_t (B, T, d) into outputs y_t; `forward` runs a sequence, `step` one tick:
- `GRUBelief`: a stacked GRU (the deterministic path of an RSSM, as in Dreamer);
- `TransformerBelief`: a causal Transformer whose one-tick `step` attends over a key/value cache. The cache is
  preallocated and used as a ring: with no positional encoding (causal attention orders the tokens; dt is an
  input), the order of the slots does not matter, and the newest `ctx` ticks are kept.
Predictors roll a latent z = (q, p) forward under actions, like the leapfrog transition does:
- `MLPPredictor`: a residual MLP on (z, action, dt);
- `GRUPredictor`: a GRU cell whose hidden state is z and whose input is (action, dt): the RSSM prior.
"""

import torch
from torch import nn
from torch.nn import functional as F

from runtime.world_model.layer import RMSNorm

DT_NOMINAL_S = 1 / 30  # dt enters the learned baselines as dt / DT_NOMINAL_S - 1


def dt_feature(dt: torch.Tensor) -> torch.Tensor:
    return (dt / DT_NOMINAL_S - 1).unsqueeze(-1)


class GRUBelief(nn.Module):
    def __init__(self, d_model: int, hidden: int, layers: int):
        super().__init__()
        self.gru = nn.GRU(d_model + 1, hidden, layers, batch_first=True)
        self.out = nn.Linear(hidden, d_model)

    def initial_state(self, batch: int) -> torch.Tensor:
        return torch.zeros(self.gru.num_layers, batch, self.gru.hidden_size)

    def forward(self, u, dt_eff, state=None):
        y, h = self.gru(torch.cat((u, dt_feature(dt_eff)), -1), state)
        return self.out(y), h, {}

    def step(self, u, dt_eff, state):
        y, h = self.gru(torch.cat((u, dt_feature(dt_eff)), -1)[:, None], state)
        return self.out(y[:, 0]), h, {}


class _Block(nn.Module):
    def __init__(self, d: int, heads: int, d_ff: int):
        super().__init__()
        self.heads = heads
        self.norm1, self.norm2 = RMSNorm(d), RMSNorm(d)
        self.qkv = nn.Linear(d, 3 * d)
        self.proj = nn.Linear(d, d)
        self.ff = nn.Sequential(nn.Linear(d, d_ff), nn.GELU(), nn.Linear(d_ff, d))

    def _split(self, x):  # (B, T, d) -> 3 x (B, H, T, d / H)
        b, t, _ = x.shape
        return self.qkv(x).view(b, t, 3, self.heads, -1).permute(2, 0, 3, 1, 4)

    def forward(self, x):
        q, k, v = self._split(self.norm1(x))
        a = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + self.proj(a.transpose(1, 2).flatten(2))
        return x + self.ff(self.norm2(x)), k, v

    def step(self, x, cache_k, cache_v, slot: int, filled: int):
        """x (B, 1, d); caches (B, H, ctx, dh) written at `slot`; attends over the `filled` slots."""
        q, k, v = self._split(self.norm1(x))
        cache_k[:, :, slot] = k[:, :, 0]
        cache_v[:, :, slot] = v[:, :, 0]
        a = F.scaled_dot_product_attention(q, cache_k[:, :, :filled], cache_v[:, :, :filled])
        x = x + self.proj(a.transpose(1, 2).flatten(2))
        return x + self.ff(self.norm2(x))


class TransformerBelief(nn.Module):
    def __init__(self, d_model: int, d_ff: int, layers: int, heads: int = 4, ctx: int = 512):
        super().__init__()
        if d_model % heads:
            raise ValueError(f"`d_model` ({d_model}) must be divisible by `heads` ({heads})")
        self.ctx, self.heads = ctx, heads
        self.inp = nn.Linear(d_model + 1, d_model)
        self.blocks = nn.ModuleList(_Block(d_model, heads, d_ff) for _ in range(layers))
        self.norm = RMSNorm(d_model)

    def initial_state(self, batch: int, ctx: int | None = None) -> dict:
        """An empty key/value cache of `ctx` ticks (default: the model's)."""
        ctx = ctx or self.ctx
        d = self.inp.out_features
        shape = (len(self.blocks), batch, self.heads, ctx, d // self.heads)
        return {"k": torch.zeros(shape), "v": torch.zeros(shape), "seen": 0}

    def forward(self, u, dt_eff, state=None):
        x = self.inp(torch.cat((u, dt_feature(dt_eff)), -1))
        for block in self.blocks:
            x, _, _ = block(x)
        return self.norm(x), None, {}

    def step(self, u, dt_eff, state):
        ctx = state["k"].shape[3]
        slot, filled = state["seen"] % ctx, min(state["seen"] + 1, ctx)
        x = self.inp(torch.cat((u, dt_feature(dt_eff)), -1))[:, None]
        for i, block in enumerate(self.blocks):
            x = block.step(x, state["k"][i], state["v"][i], slot, filled)
        state["seen"] += 1
        return self.norm(x[:, 0]), state, {}


class MLPPredictor(nn.Module):
    def __init__(self, d_latent: int, d_action: int, hidden: int):
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(2 * d_latent + d_action + 1, hidden),
            nn.SiLU(),
            nn.Linear(hidden, hidden),
            nn.SiLU(),
            nn.Linear(hidden, 2 * d_latent),
        )
        nn.init.zeros_(self.net[-1].weight)  # starts as "nothing changes"
        nn.init.zeros_(self.net[-1].bias)

    def mix(self, z):  # no experts: the interface of the Hamiltonian predictor
        return None

    def step(self, z, action, dt, mix=None):
        return z + self.net(torch.cat((z, action, dt_feature(dt)), -1))


class GRUPredictor(nn.Module):
    def __init__(self, d_latent: int, d_action: int):
        super().__init__()
        self.cell = nn.GRUCell(d_action + 1, 2 * d_latent)

    def mix(self, z):
        return None

    def step(self, z, action, dt, mix=None):
        return self.cell(torch.cat((action, dt_feature(dt)), -1), z)
