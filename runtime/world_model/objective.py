"""The JEPA objective: predict future latents, never pixels (DESIGN.md, "The world model"; seeds 000, 001).

For every tick t of a window and k = 1..K, the predictor rolls z_t forward under the actions actually taken
and is scored against the stop-gradient latent the model itself assigns to tick t+k (the target encoder is the
online one behind a stop-gradient, as in TD-MPC2's latent consistency; `target_ema` > 0 uses an EMA copy
instead, as V-JEPA and BYOL do). Terms, each returned for logging:
- `predict`: forward prediction error, mean over k = 1..K;
- `backward`: from z_t+K, the predictor run with -dt over the same actions in reverse, scored against
  z_t+K-1 .. z_t (a reversible dynamics gets this for free; one that is not has to earn it);
- the anti-collapse terms (regularizers.py) on the batch's latents, none of them isotropic;
- `conservation` (Hamiltonian predictors): the undriven, undamped transition must keep H over K steps;
- `stability`: a hinge keeping omega_max * dt below a margin inside leapfrog's stable band (omega dt < 2);
- `balance`: the experts' load-balancing term;
- `token_predict`: the camera and joint tokens of ticks t..t+K (stop-gradient) read linearly from q_t and from
  the rollout's q_t+k: the planning state has to hold what the sensors will report, not only what is easy to
  predict (without it the latent kept the joints and dropped what the camera sees). Reading tick t from q_t
  weighs `token_now` (3) against 1 for each step ahead: at 1, q kept 93 % of the tool position's variance
  (R^2 of a linear probe), at 3 about 96 %, at 6 97 % but the cube's fell under 90 %;
- `scene_contrast`: a time-contrastive term on the camera token (frames of one window together, frames of
  other windows apart). The cube and the goal marker are what tells episodes apart and stays put within one,
  so this is what makes the camera encoder find them: without it the cube's position was not linearly
  readable from any part of the model (R^2 below 0), with it about 0.8 from the camera token in 600 steps;
- `covariance` (off by default): VICReg's decorrelation of the latent's dimensions.
"""

from dataclasses import dataclass, field

import torch
from torch.nn import functional as F

from runtime.world_model.regularizers import AntiCollapse

TARGET_TOKENS = [0, 2]  # camera and joint tokens (encoders.TickEncoder order); audio is mostly noise
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
    # omega_max * dt kept below this (leapfrog diverges at 2; its energy error grows as (omega dt)^2): at 1.0
    # undriven energy drifted 1.2 % over 1,000 steps, at 0.6 0.75 %, at 0.5 0.65 % but h30 rollouts worsened
    stability_margin: float = 0.6
    balance: float = 0.01
    covariance: float = 0.0  # weight of the decorrelation term (VICReg's covariance loss)
    token_predict: float = 5.0  # weight of reading the camera and joint tokens from q, now and K ticks ahead
    token_now: float = 3.0  # within it, the weight of reading tick t's tokens from q_t (each of K ahead: 1)
    scene_contrast: float = 3.0  # weight of the time-contrastive term on the camera token
    target_ema: float = 0.0  # > 0: targets from an EMA copy of the model with this decay; 0: the online one
    anti_collapse: AntiCollapse = field(default_factory=AntiCollapse)

    def __post_init__(self):
        if self.horizon < 1:
            raise ValueError(f"`horizon` must be >= 1, got {self.horizon}")
        if not 0.0 <= self.target_ema < 1.0:
            raise ValueError(f"`target_ema` must be in [0, 1), got {self.target_ema}")


def windows(x: torch.Tensor, k: int) -> torch.Tensor:
    """(B, T, ...) -> (B * (T - k + 1), k, ...): every run of k consecutive ticks."""
    b, t = x.shape[:2]
    idx = torch.arange(t - k + 1)[:, None] + torch.arange(k)[None]
    return x[:, idx].reshape(b * (t - k + 1), k, *x.shape[2:])


def jepa_loss(
    model,
    batch: dict,
    cfg: ObjectiveConfig,
    generator: torch.Generator | None = None,
    target_model=None,
    gather=None,
):
    """Total loss and its terms (floats) for a batch of tick windows (B, T, ...), T > K. `target_model` (an
    EMA copy) gives the targets when set; otherwise the model's own latents behind a stop-gradient. `gather`
    (data-parallel training: `Shard.gather`) turns this worker's slice into the global batch for the terms
    taken over a whole batch."""
    gather = gather or (lambda x: x)
    k = cfg.horizon
    z, _, aux = model(batch)
    b, t, d = z.shape
    if t <= k:
        raise ValueError(f"windows of {t} ticks are too short for horizon {k}")
    if bool(cfg.target_ema) != (target_model is not None):
        raise ValueError("an EMA target model is given exactly when `target_ema` > 0")
    if target_model is None:
        target = z.detach()
    else:
        with torch.no_grad():
            target, _, target_aux = target_model(batch)
    actions = windows(batch["action"][:, 1:], k)  # the action in force during each step
    dt = windows(model.clamp_dt(batch["dt_eff"][:, 1:].float()), k)
    z0 = z[:, : t - k].reshape(-1, d)
    pred = model.rollout(z0, actions, dt)
    terms = {"predict": F.mse_loss(pred, windows(target[:, 1:], k))}
    zk = z[:, k:].reshape(-1, d)
    back = model.rollout(zk, actions.flip(1), -dt.flip(1))
    terms["backward"] = F.mse_loss(back, windows(target[:, :-1], k).flip(1))
    z_all = gather(z).reshape(-1, d)  # the terms over the batch: over the global one
    collapse = cfg.anti_collapse.terms(z_all, generator)
    terms.update(collapse)
    total = terms["predict"] + cfg.backward * terms["backward"]
    total = total + sum(ANTI_COLLAPSE_WEIGHTS[name] * value for name, value in collapse.items())
    if cfg.covariance:
        terms["covariance"] = decorrelation(z_all)
        total = total + cfg.covariance * terms["covariance"]
    if cfg.token_predict:
        # The observations' own tokens (camera, joints) at t..t+K, read linearly from q now and from the
        # rollout's q after k steps: q must hold what the sensors will see, where things are included.
        tokens = aux["tokens"][:, :, TARGET_TOKENS]  # (B, T, 2, d_token)
        target_tokens = tokens.detach() if target_model is None else target_aux["tokens"][:, :, TARGET_TOKENS]
        seen = batch["mask"][:, :, TARGET_TOKENS].to(z.dtype)  # a masked tick's token is the mask embedding
        read = lambda q: model.token_readout(q).unflatten(-1, (len(TARGET_TOKENS), -1))  # noqa: E731
        now = masked_mse(read(z[..., : d // 2]), target_tokens, seen)
        ahead = masked_mse(
            read(pred[..., : d // 2]), windows(target_tokens[:, 1:], k), windows(seen[:, 1:], k)
        )
        terms["token_predict"] = (cfg.token_now * now + k * ahead) / (1 + k)
        total = total + cfg.token_predict * terms["token_predict"]
    if model.hamiltonian:
        terms["conservation"] = conservation(model.predictor, z0, dt)
        terms["stability"] = stability(model.predictor, z0, dt, cfg.stability_margin)
        total = total + cfg.conservation * terms["conservation"] + cfg.stability * terms["stability"]
    if cfg.scene_contrast:
        terms["scene_contrast"] = scene_contrast(
            gather(aux["tokens"][:, :, 0]), gather(batch["mask"][..., 0])
        )
        total = total + cfg.scene_contrast * terms["scene_contrast"]
    if "balance" in aux:
        terms["balance"] = aux["balance"]
        total = total + cfg.balance * aux["balance"]
    terms["total"] = total
    return total, {name: float(value.detach()) for name, value in terms.items()}


def masked_mse(pred: torch.Tensor, target: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Mean square error over (..., M, d) where weight (..., M) is 1, each valid token counting once."""
    err = (pred - target).pow(2).mean(-1)
    return (err * weight).sum() / weight.sum().clamp(min=1)


def decorrelation(z: torch.Tensor) -> torch.Tensor:
    """Mean squared off-diagonal correlation of the codes (N, D): dimensions that repeat each other waste the
    latent. Correlations, not covariances, so it asks nothing of the scales (no isotropy)."""
    c = z - z.mean(0)
    c = c / (c.std(0) + 1e-4)
    corr = c.T @ c / max(len(z) - 1, 1)
    d = corr.shape[0]
    return (corr.pow(2).sum() - corr.diagonal().pow(2).sum()) / (d * (d - 1))


def scene_contrast(vision: torch.Tensor, seen: torch.Tensor, temperature: float = 0.1) -> torch.Tensor:
    """Time-contrastive term on camera tokens (B, T, d) (Sermanet et al. 2018, supervised-contrastive form):
    frames of one window attract, frames of other windows repel. What tells windows of different episodes
    apart while staying put within one is where the cube and the goal lie, so the camera encoder has to find
    them. `seen` (B, T) marks ticks with a camera frame."""
    b, t, _ = vision.shape
    v = F.normalize(vision[seen], dim=-1)  # (N, d)
    window = torch.arange(b, device=vision.device)[:, None].expand(b, t)[seen]
    self_mask = torch.eye(len(v), dtype=torch.bool, device=v.device)
    positive = (window[:, None] == window[None]) & ~self_mask
    anchors = positive.any(-1)  # a frame alone in its window has nothing to be pulled towards
    if not bool(anchors.any()):
        return vision.new_zeros(())
    logits = (v @ v.T / temperature).masked_fill(self_mask, -1e9)
    log_prob = logits - logits.logsumexp(-1, keepdim=True)
    per_anchor = (log_prob * positive).sum(-1) / positive.sum(-1).clamp(min=1)
    return -per_anchor[anchors].mean()


def conservation(predictor, z0: torch.Tensor, dt: torch.Tensor) -> torch.Tensor:
    """Relative energy change of K undriven, undamped transition steps (squared, mean over starts)."""
    transition = predictor.transition
    mix = predictor.mix(z0)
    q, p = predictor.canonical(z0)
    h0 = transition.energy(q, p, mix)
    ticks = predictor.ticks(dt)
    for i in range(dt.shape[1]):
        q, p = transition.step(q, p, None, ticks[:, i], mix, damped=False)
    return ((transition.energy(q, p, mix) - h0) / (h0.abs() + 1.0)).pow(2).mean()


def stability(predictor, z0: torch.Tensor, dt: torch.Tensor, margin: float) -> torch.Tensor:
    """Hinge on omega_max * dt, omega_max^2 bounding the potential's curvature for each start's mix."""
    omega = torch.sqrt(predictor.transition.hessian_bound(predictor.mix(z0)))
    return F.relu(omega * predictor.ticks(dt).abs().max(1).values - margin).pow(2).mean()
