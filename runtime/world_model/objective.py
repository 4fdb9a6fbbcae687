"""The JEPA objective: predict future latents, never pixels (DESIGN.md, "The world model"; seeds 000, 001).

For every tick t of a window and k = 1..K, the predictor rolls z_t forward under the actions actually taken
and is scored against the stop-gradient latent the model itself assigns to tick t+k (the target encoder is the
online one behind a stop-gradient, as in TD-MPC2's latent consistency: no second forward pass, no EMA copy).
Terms, each returned for logging:
- `predict`: forward prediction error, mean over k = 1..K;
- `backward`: from z_t+K, the predictor run with -dt over the same actions in reverse, scored against
  z_t+K-1 .. z_t (a reversible dynamics gets this for free; one that is not has to earn it);
- the anti-collapse terms (regularizers.py) on the batch's latents, none of them isotropic;
- `conservation` (Hamiltonian predictors): the undriven, undamped transition must keep H over K steps;
- `stability`: a hinge keeping omega_max * dt below a margin inside leapfrog's stable band (omega dt < 2);
- `balance`: the experts' load-balancing term.
"""

from dataclasses import dataclass, field

import torch
from torch.nn import functional as F

from runtime.world_model.regularizers import AntiCollapse

ANTI_COLLAPSE_WEIGHTS = {
    "energy_budget": 1.0,
    "variance_floor": 1.0,
    "logdet_floor": 0.1,
    "pr_floor": 1.0,
    "eigmax_ceiling": 1.0,
    "mean": 1.0,
}


@dataclass(frozen=True)
class ObjectiveConfig:
    horizon: int = 5  # K
    backward: float = 0.5
    conservation: float = 0.1
    stability: float = 1.0
    stability_margin: float = 1.0  # omega_max * dt kept below this (leapfrog diverges at 2)
    balance: float = 0.01
    anti_collapse: AntiCollapse = field(default_factory=AntiCollapse)

    def __post_init__(self):
        if self.horizon < 1:
            raise ValueError(f"`horizon` must be >= 1, got {self.horizon}")


def windows(x: torch.Tensor, k: int) -> torch.Tensor:
    """(B, T, ...) -> (B * (T - k + 1), k, ...): every run of k consecutive ticks."""
    b, t = x.shape[:2]
    idx = torch.arange(t - k + 1)[:, None] + torch.arange(k)[None]
    return x[:, idx].reshape(b * (t - k + 1), k, *x.shape[2:])


def jepa_loss(model, batch: dict, cfg: ObjectiveConfig, generator: torch.Generator | None = None):
    """Total loss and its terms (floats) for a batch of tick windows (B, T, ...), T > K."""
    k = cfg.horizon
    z, _, aux = model(batch)
    b, t, d = z.shape
    if t <= k:
        raise ValueError(f"windows of {t} ticks are too short for horizon {k}")
    target = z.detach()
    actions = windows(batch["action"][:, 1:], k)  # the action in force during each step
    dt = windows(model.clamp_dt(batch["dt_eff"][:, 1:].float()), k)
    z0 = z[:, : t - k].reshape(-1, d)
    pred = model.rollout(z0, actions, dt)
    terms = {"predict": F.mse_loss(pred, windows(target[:, 1:], k))}
    zk = z[:, k:].reshape(-1, d)
    back = model.rollout(zk, actions.flip(1), -dt.flip(1))
    terms["backward"] = F.mse_loss(back, windows(target[:, :-1], k).flip(1))
    collapse = cfg.anti_collapse.terms(z.reshape(-1, d), generator)
    terms.update(collapse)
    total = terms["predict"] + cfg.backward * terms["backward"]
    total = total + sum(ANTI_COLLAPSE_WEIGHTS[name] * value for name, value in collapse.items())
    if model.hamiltonian:
        terms["conservation"] = conservation(model.predictor, z0, dt)
        terms["stability"] = stability(model.predictor, z0, dt, cfg.stability_margin)
        total = total + cfg.conservation * terms["conservation"] + cfg.stability * terms["stability"]
    if "balance" in aux:
        terms["balance"] = aux["balance"]
        total = total + cfg.balance * aux["balance"]
    terms["total"] = total
    return total, {name: float(value.detach()) for name, value in terms.items()}


def conservation(predictor, z0: torch.Tensor, dt: torch.Tensor) -> torch.Tensor:
    """Relative energy change of K undriven, undamped transition steps (squared, mean over starts)."""
    transition, d = predictor.transition, predictor.d_latent
    mix = predictor.mix(z0)
    q, p = z0[:, :d], z0[:, d:]
    h0 = transition.energy(q, p, mix)
    ticks = predictor.ticks(dt)
    for i in range(dt.shape[1]):
        q, p = transition.step(q, p, None, ticks[:, i], mix, damped=False)
    return ((transition.energy(q, p, mix) - h0) / (h0.abs() + 1.0)).pow(2).mean()


def stability(predictor, z0: torch.Tensor, dt: torch.Tensor, margin: float) -> torch.Tensor:
    """Hinge on omega_max * dt, omega_max^2 bounding the potential's curvature for each start's mix."""
    omega = torch.sqrt(predictor.transition.hessian_bound(predictor.mix(z0)))
    return F.relu(omega * predictor.ticks(dt).abs().max(1).values - margin).pow(2).mean()
