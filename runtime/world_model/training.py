"""Training on collected episodes: random windows of ticks, AdamW, the JEPA objective, seeded throughout.

Every model is trained by the same loop on the same windows in the same order (same seed), for the same
number of steps: the baselines get exactly what the Hamiltonian model gets.

Then `refit_predictor` trains the transition alone on the finished model's latents, which stay put while it
learns (in the joint phase they move under it). Its K-step prediction error is what planning and adaptation
live on: on the Hamiltonian model's latents, 1,500 such steps took the 5-step error of the probe-decoded
state from 1.4x that of holding the state still to 1.0x. Every model gets the same refit.
"""

import copy
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import distributed as dist
from torch.nn import functional as F

from runtime.world_model.data import STREAMS, load_episode
from runtime.world_model.model import JOINT_DIM, TICK_FIELDS, WorldModel, WorldModelConfig
from runtime.world_model.objective import ObjectiveConfig, conservation, jepa_loss, stability


@dataclass(frozen=True)
class TrainConfig:
    steps: int = 2000
    batch: int = 8  # windows per step
    window: int = 32  # ticks per window (about a second)
    lr: float = 2e-3
    weight_decay: float = 1e-4
    warmup: int = 50
    clip: float = 1.0
    seed: int = 0
    threads: int = 2
    objective: ObjectiveConfig = field(default_factory=ObjectiveConfig)
    refit_steps: int = 1500  # transition-only steps on the trained model's latents (0: none)
    refit_batch: int = 256  # K-step windows per refit step
    refit_lr: float = 3e-3

    def __post_init__(self):
        if self.refit_steps < 0 or self.refit_batch < 1 or not self.refit_lr > 0:
            raise ValueError("need `refit_steps` >= 0, `refit_batch` >= 1 and `refit_lr` > 0")
        for name in ("steps", "batch", "threads"):
            if getattr(self, name) < 1:
                raise ValueError(f"`{name}` must be >= 1, got {getattr(self, name)}")
        if self.window <= self.objective.horizon:
            raise ValueError(f"`window` ({self.window}) must exceed the horizon ({self.objective.horizon})")
        if not self.lr > 0:
            raise ValueError(f"`lr` must be > 0, got {self.lr}")

    def summary(self) -> dict:
        out = asdict(self)
        out["objective"] = {k: v for k, v in out["objective"].items() if k != "anti_collapse"}
        return out


@dataclass(frozen=True)
class Shard:
    """One worker's part in data-parallel training (runtime/distributed/train.py): every worker draws the same
    global batch, trains on its `rank`-th slice of it, and the gradients (and loss terms) are averaged over
    the `world` workers through torch.distributed before each step. The terms taken over a whole batch
    (anti-collapse, decorrelation, scene contrast) see the whole global batch through `gather`. So a step
    is the one-worker step on the same windows, but for the experts' load balance, which each worker takes
    on its own slice."""

    rank: int = 0
    world: int = 1

    def take(self, x: torch.Tensor) -> torch.Tensor:
        per = len(x) // self.world
        return x[self.rank * per : (self.rank + 1) * per]

    def gather(self, x: torch.Tensor) -> torch.Tensor:
        """Every worker's `x` (its slice of a batch), concatenated in rank order: the global batch's own
        order. The gradient flows back to each worker's slice."""
        if self.world == 1:
            return x
        if not x.is_floating_point():  # masks: no gradient
            return _Gather.apply(x.to(torch.float32), self.rank, self.world).to(x.dtype)
        return _Gather.apply(x, self.rank, self.world)

    def average(self, params: list[torch.nn.Parameter], terms: dict[str, float]) -> dict[str, float]:
        """Gradients averaged in place over the workers, in one all-reduce with the loss terms; the terms'
        averages are returned. A parameter no worker has a gradient for keeps none, as on one worker (the
        optimizer skips it); one that only some have (an expert routed to in one slice only) counts zero
        from the others."""
        if self.world == 1:
            return terms
        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
        had = torch.tensor([p.grad is not None for p in params], dtype=grads[0].dtype)
        values = torch.tensor(list(terms.values()), dtype=grads[0].dtype)
        flat = torch.cat([g.reshape(-1) for g in grads] + [had, values])
        dist.all_reduce(flat)
        offset = 0
        for p, g in zip(params, grads, strict=True):
            p.grad = flat[offset : offset + g.numel()].view_as(g) / self.world
            offset += g.numel()
        for p, count in zip(params, flat[offset : offset + len(params)].tolist(), strict=True):
            if count == 0:
                p.grad = None
        return dict(zip(terms, (flat[offset + len(params) :] / self.world).tolist(), strict=True))


SINGLE = Shard()


class _Gather(torch.autograd.Function):
    """all_gather forward; backward, the gathered gradient summed over the workers (each worker's loss reads
    every slice), this worker's slice of it. `Shard.average` then divides by the worker count."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, rank: int, world: int) -> torch.Tensor:
        parts = [torch.empty_like(x) for _ in range(world)]
        dist.all_gather(parts, x.contiguous())
        ctx.rank, ctx.n = rank, len(x)
        return torch.cat(parts)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        grad = grad.contiguous().clone()
        dist.all_reduce(grad)
        return grad[ctx.rank * ctx.n : (ctx.rank + 1) * ctx.n], None, None


class Episodes:
    """Every episode of a directory in memory (uint8 images: about 4 MB per 10 s episode)."""

    def __init__(self, directory: Path, limit: int | None = None):
        paths = sorted(Path(directory).glob("episode_*.npz"), key=lambda p: int(p.stem.split("_")[1]))
        if not paths:
            raise FileNotFoundError(
                f"no episodes in {directory}; collect some with "
                f"`python -m launch.collect --env manipulation --out {directory}`"
            )
        self.paths = paths[:limit]
        self.episodes = [load_episode(p) for p in self.paths]
        self._check()

    @classmethod
    def of(cls, episodes: list[dict]) -> "Episodes":
        """Episodes already in memory (as launch.collect's workers hand them in)."""
        self = cls.__new__(cls)
        self.paths = [Path(f"<episode {i}>") for i in range(len(episodes))]
        self.episodes = list(episodes)
        self._check()
        return self

    def _check(self) -> None:
        for path, e in zip(self.paths, self.episodes, strict=True):
            if e["joint"].shape[1:] != (JOINT_DIM,):
                raise ValueError(
                    f"{path}: proprioception has {e['joint'].shape[1:]} values per tick, this runtime reads "
                    f"{JOINT_DIM} (joints, velocities, tool position); collect it again with launch.collect"
                )

    def __len__(self) -> int:
        return len(self.episodes)

    def readings(self, stream: str) -> np.ndarray:
        """Every fresh (unmasked) sample of a vector stream, (N, D): what its encoder standardizes by."""
        i = STREAMS.index(stream)
        return np.concatenate([e[stream][e["mask"][:, i]] for e in self.episodes])

    def sample(self, rng: np.random.Generator, batch: int, window: int) -> dict[str, torch.Tensor]:
        """`batch` random windows of `window` ticks, as tensors (B, T, ...)."""
        usable = [i for i, e in enumerate(self.episodes) if len(e["dt_eff"]) >= window]
        if not usable:
            raise ValueError(f"no episode has {window} ticks")
        # Distinct episodes while there are enough: the scene-contrast term takes windows of one batch for
        # different scenes.
        picks = rng.choice(usable, batch, replace=len(usable) < batch)
        out = {k: [] for k in TICK_FIELDS}
        for i in picks:
            e = self.episodes[i]
            s = rng.integers(0, len(e["dt_eff"]) - window + 1)
            for k in TICK_FIELDS:
                out[k].append(e[k][s : s + window])
        return {k: torch.from_numpy(np.stack(v)) for k, v in out.items()}


def train(
    model_cfg: WorldModelConfig,
    cfg: TrainConfig,
    episodes: Episodes,
    progress: Callable[[int, dict], None] | None = None,
    shard: Shard = SINGLE,
) -> tuple[WorldModel, list[dict]]:
    """Trains a fresh model; returns it with the per-step loss terms (averaged over the workers)."""
    torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    generator = torch.Generator().manual_seed(cfg.seed)
    model = WorldModel(model_cfg)
    model.encoder.joint.standardize(episodes.readings("joint"))
    target = ema_copy(model) if cfg.objective.target_ema else None
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    schedule = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_factor(s, cfg.warmup, cfg.steps))
    history = []
    model.train()
    for step in range(cfg.steps):
        t0 = time.perf_counter()
        batch = {k: shard.take(v) for k, v in episodes.sample(rng, cfg.batch, cfg.window).items()}
        loss, terms = jepa_loss(model, batch, cfg.objective, generator, target, shard.gather)
        if not math.isfinite(terms["total"]):
            raise FloatingPointError(f"loss is not finite at step {step}: {terms}")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        terms = shard.average(list(model.parameters()), terms)
        terms["grad_norm"] = float(torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.clip))
        opt.step()
        schedule.step()
        if target is not None:
            ema_update(target, model, cfg.objective.target_ema)
        terms["step_s"] = time.perf_counter() - t0
        history.append(terms)
        if progress:
            progress(step, terms)
    return model.eval(), history


@torch.no_grad()
def latent_windows(model: WorldModel, episodes: "Episodes", k: int) -> tuple[torch.Tensor, ...]:
    """Every (z_t, actions and dt of t+1..t+k, z_t+1..t+k) of every episode, from the model's latents."""
    z0, actions, dt, target = [], [], [], []
    for ep in episodes.episodes:
        z = model({f: torch.from_numpy(ep[f][None]) for f in TICK_FIELDS})[0][0]
        t = len(z) - k
        idx = torch.arange(t)[:, None] + torch.arange(1, k + 1)[None]  # (t, k)
        z0.append(z[:t])
        actions.append(torch.from_numpy(ep["action"])[idx])
        dt.append(model.clamp_dt(torch.from_numpy(ep["dt_eff"]).float())[idx])
        target.append(z[idx])
    return tuple(torch.cat(x) for x in (z0, actions, dt, target))


def refit_predictor(
    model: WorldModel,
    cfg: TrainConfig,
    episodes: "Episodes",
    progress: Callable[[int, dict], None] | None = None,
    shard: Shard = SINGLE,
) -> list[dict]:
    """Train the transition alone on the model's latents (encoders and belief frozen): the K-step
    prediction error, with the Hamiltonian models' conservation and stability terms. Returns the terms."""
    if not cfg.refit_steps:
        return []
    torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    obj = cfg.objective
    z0, actions, dt, target = latent_windows(model.eval(), episodes, obj.horizon)
    opt = torch.optim.Adam(model.predictor.parameters(), lr=cfg.refit_lr)
    generator = torch.Generator().manual_seed(cfg.seed)
    history = []
    for step in range(cfg.refit_steps):
        i = shard.take(torch.randint(len(z0), (cfg.refit_batch,), generator=generator))
        terms = {"refit": F.mse_loss(model.rollout(z0[i], actions[i], dt[i]), target[i])}
        loss = terms["refit"]
        if model.hamiltonian:
            terms["conservation"] = conservation(model.predictor, z0[i], dt[i])
            terms["stability"] = stability(model.predictor, z0[i], dt[i], obj.stability_margin)
            loss = loss + obj.conservation * terms["conservation"] + obj.stability * terms["stability"]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        history.append(
            shard.average(
                list(model.predictor.parameters()), {k: float(v.detach()) for k, v in terms.items()}
            )
        )
        opt.step()
        if progress:
            progress(step, history[-1])
    return history


def ema_copy(model: WorldModel) -> WorldModel:
    target = copy.deepcopy(model)
    target.requires_grad_(False)
    return target


@torch.no_grad()
def ema_update(target: WorldModel, model: WorldModel, decay: float) -> None:
    """target <- decay * target + (1 - decay) * model, parameter by parameter (BYOL, V-JEPA)."""
    for t, p in zip(target.parameters(), model.parameters(), strict=True):
        t.lerp_(p, 1.0 - decay)


def lr_factor(step: int, warmup: int, steps: int) -> float:
    """Linear warm-up, then cosine decay to a tenth."""
    if step < warmup:
        return (step + 1) / warmup
    return 0.1 + 0.45 * (1 + math.cos(math.pi * (step - warmup) / max(steps - warmup, 1)))
