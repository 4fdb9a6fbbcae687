"""The world model: tick encoders, a belief over the tick stream, a latent phase-space state, a predictor.

    u_t = encode(tick_t)                 (encoders.py: vision, audio, joints, action, mask embeddings)
    y_t = belief(u_1..t, dt_eff)          (the Hamiltonian SSM backbone, or a baseline's GRU / Transformer)
    z_t = (q_t, p_t) = head(u_t, y_t)     (the latent phase-space state that probes and planners read)
    z_t+k ~ predictor(z_t, a_t+1..t+k, dt) (leapfrog on a learned Hamiltonian, or a baseline's predictor)

Five models share the encoders, the head and the training objective, and differ in belief and predictor
(`MODELS`): `hssm` (Hamiltonian experts + leapfrog), `euler` (the same, explicit Euler), `mlp_pred` (the same
backbone, an MLP predictor), `gru` (GRU belief, GRU-cell prior: RSSM-like) and `transformer` (causal
Transformer with a key/value cache, MLP predictor). A baseline's `width` is sized so that its parameter count
matches hssm's (within 10 %), unless given.

`step(state, tick)` is the streaming path: one tick in, the new belief state and z out, with the tick checked
first (shapes, finite values; NaN inputs are masked) and dt_eff clamped into the band every layer can step
stably (clamps are counted in `dt_clamped`).
"""

import math
from dataclasses import asdict, dataclass, replace

import torch
from torch import nn
from torch.nn import functional as F

from runtime.world_model.backbone import Backbone
from runtime.world_model.baselines import GRUBelief, GRUPredictor, MLPPredictor, TransformerBelief
from runtime.world_model.encoders import CHUNK, TickEncoder
from runtime.world_model.oscillators import STABLE_OMEGA_DT
from runtime.world_model.transition import Transition

MODEL_VERSION = 4  # bump when a change makes old checkpoints unloadable
MODELS = ("hssm", "euler", "mlp_pred", "gru", "transformer")
HEAD_INPUTS = ("both", "belief", "split", "state")
TICK_S = 1 / 30  # the latent transition's time unit: one camera tick
# the action's place among the tick's tokens (encoders.TickEncoder: camera, audio, joint, action)
ACTION_TOKEN = 3
DT_MIN_S, DT_MAX_S = 1e-3, 0.25  # a tick shorter than 1 ms or longer than 250 ms is clamped (and counted)
JOINT_DIM, ACTION_DIM, MAX_CHUNKS = 13, 5, 6  # joint: envs.proprioception (joints, velocities, tool)
# The latent transition starts as a critically damped servo (damping ratio gamma / 2 omega = 1, 95 % settled
# after about 16 ticks, 0.5 s): under a held action (a joint target, pushing as a constant force) q goes to a
# nearby equilibrium instead of swinging for a 2 s period, as it did from omega 0.1 and little damping. A
# stiffer start (omega 0.5) predicted better at first but left leapfrog's energy error at omega * dt = 0.5
# above 1 % (it grows as (omega dt)^2), and lost the cube from q.
INIT_OMEGA_PER_TICK, INIT_GAMMA_PER_TICK = 0.3, 0.6


@dataclass(frozen=True)
class WorldModelConfig:
    model: str = "hssm"
    d_model: int = 64  # width of u_t and y_t
    d_token: int = 32  # per-modality token
    channels: tuple[int, ...] = (16, 32)  # vision conv widths, 64 -> 16 pixels
    keypoints: int = 16  # spatial-softmax keypoints of the vision encoder
    d_latent: int = 32  # q dimensions; z = (q, p) has twice that (16 left the tool position out of q)
    layers: int = 2
    experts: int = 8
    top_k: int = 2
    d_state: int = 16  # oscillators per expert
    potential_hidden: int = 16  # units per expert potential of the transition
    width: int = 0  # a baseline's size (GRU hidden, Transformer feed-forward, MLP hidden); 0 = match hssm
    image_size: int = 64
    # "state": q from u_t without its action token, p from [u_t, y_t]; "split": q from the whole u_t; or z
    # from "both" or from y_t ("belief")
    head_input: str = "state"

    def __post_init__(self):
        if self.model not in MODELS:
            raise ValueError(f"`model` must be one of {MODELS}, got {self.model!r}")
        for name in ("d_model", "d_token", "d_latent", "layers", "experts", "d_state", "potential_hidden"):
            if getattr(self, name) < 1:
                raise ValueError(f"`{name}` must be >= 1, got {getattr(self, name)}")
        if not 1 <= self.top_k <= self.experts:
            raise ValueError(f"`top_k` must be between 1 and `experts` ({self.experts}), got {self.top_k}")
        if self.head_input not in HEAD_INPUTS:
            raise ValueError(f"`head_input` must be one of {HEAD_INPUTS}, got {self.head_input!r}")
        if self.image_size % 2 ** len(self.channels):
            raise ValueError(f"`image_size` must be divisible by {2 ** len(self.channels)}")

    def to_dict(self) -> dict:
        return {**asdict(self), "channels": list(self.channels)}

    @classmethod
    def from_dict(cls, raw: dict) -> "WorldModelConfig":
        unknown = set(raw) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"unknown world-model config fields: {sorted(unknown)}")
        raw = dict(raw)
        if "channels" in raw:
            raw["channels"] = tuple(raw["channels"])
        return cls(**raw)


class HamiltonianBelief(nn.Module):
    """The backbone behind the belief interface: aux carries layer energies and the load-balancing loss."""

    def __init__(self, cfg: WorldModelConfig):
        super().__init__()
        self.backbone = Backbone(cfg.d_model, cfg.d_state, cfg.layers, cfg.experts, cfg.top_k)

    def initial_state(self, batch: int):
        return self.backbone.initial_state(batch)

    def forward(self, u, dt_eff, state=None):
        y, finals, energy, balance = self.backbone(u, dt_eff, state)
        return y, finals, {"energy": energy, "balance": balance}

    def step(self, u, dt_eff, state):
        y, state, energy = self.backbone.step(u, dt_eff, state)
        return y, state, {"energy": energy}

    def max_stable_dt(self) -> float:
        k = max(float(layer.stiffness.detach().max()) for layer in self.backbone.layers)
        return STABLE_OMEGA_DT / math.sqrt(k)


class LeapfrogPredictor(nn.Module):
    """The Hamiltonian transition as a predictor on z = (q, p); the expert mix comes from z at the start of a
    rollout and stays fixed along it.

    The transition runs in learned canonical coordinates: x = (q~, p~) = T (z - c), with T an invertible
    2D x 2D matrix (identity to start) and c a centre, and maps back with T^-1. The belief's z is what the
    encoders and the backbone make of the sensors; nothing makes its halves a conjugate position and momentum,
    or centres its resting state at 0 (the quadratic base pulls every coordinate towards 0). Read directly, a
    leapfrog transition fitted to a trained model's latents predicted the next q worse than holding q still
    (mean error 0.36 against 0.39); with a learned basis the flow is still a damped, driven Hamiltonian flow,
    in coordinates the model picks.

    The latent's clock runs in ticks (dt / TICK_S, about 1 per tick), so that q can move by its own scale in a
    tick (q' = q + dt p with p of unit scale); in seconds a fast arm would need momenta 30 times the scale of
    the positions. The base starts as a critically damped servo (INIT_OMEGA_PER_TICK, INIT_GAMMA_PER_TICK)."""

    def __init__(self, cfg: WorldModelConfig, integrator: str):
        super().__init__()
        self.d_latent = cfg.d_latent
        self.transition = Transition(cfg.d_latent, ACTION_DIM, cfg.experts, cfg.potential_hidden, integrator)
        with torch.no_grad():
            self.transition.log_k.fill_(2 * math.log(INIT_OMEGA_PER_TICK))
            self.transition.raw_gamma.fill_(math.log(math.expm1(INIT_GAMMA_PER_TICK)))
        self.router = nn.Linear(2 * cfg.d_latent, cfg.experts)
        self.basis = nn.Parameter(torch.eye(2 * cfg.d_latent))
        self.center = nn.Parameter(torch.zeros(2 * cfg.d_latent))
        self._back_key, self._back_cached = None, None  # inv(basis)^T and the weights it was taken of

    def canonical(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """z (..., 2D) -> the transition's (q~, p~)."""
        x = (z - self.center) @ self.basis.T
        return x[..., : self.d_latent], x[..., self.d_latent :]

    def latent(self, q: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
        """The transition's (q~, p~) -> z."""
        return torch.linalg.solve(self.basis, torch.cat((q, p), -1).unsqueeze(-1)).squeeze(-1) + self.center

    @staticmethod
    def ticks(dt: torch.Tensor | float):
        """Seconds -> the latent clock."""
        return dt / TICK_S

    def mix(self, z: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.router(z), -1)

    def step(self, z, action, dt, mix=None):
        mix = self.mix(z) if mix is None else mix
        q, p = self.transition.step(*self.canonical(z), action, self.ticks(dt), mix)
        return self.latent(q, p)

    def energy(self, z, mix=None) -> torch.Tensor:
        mix = self.mix(z) if mix is None else mix
        return self.transition.energy(*self.canonical(z), mix)

    def rollout(
        self, z0: torch.Tensor, actions: torch.Tensor, dt: torch.Tensor, residual=None, residual_ticks=None
    ) -> torch.Tensor:
        """`step` K times, in the transition's coordinates between steps: z0 (N, 2D), actions (N, K, A), dt
        (N, K) seconds -> (N, K, 2D). The basis is inverted once, not solved per step. `residual` (N or 1,
        2D): a correction of z per tick, held along the rollout or its first `residual_ticks` ticks
        (Transition)."""
        if residual is not None:  # a difference of latents: the centre cancels
            r = residual @ self.basis.T
            residual = (r[..., : self.d_latent], r[..., self.d_latent :])
        qs, ps = self.transition.rollout(
            *self.canonical(z0), actions, self.ticks(dt), self.mix(z0), residual, residual_ticks
        )
        back = self._back()  # z = (q~, p~) back^T + centre, without concatenating q~ and p~
        return qs @ back[: self.d_latent] + ps @ back[self.d_latent :] + self.center

    def _back(self) -> torch.Tensor:
        """inv(basis)^T; kept between calls when no gradient flows to the basis (planning: its inverse cost
        0.3 ms a rollout), recomputed when the weights change (a learner's swap, a load)."""
        if torch.is_grad_enabled() and self.basis.requires_grad:
            return torch.linalg.inv(self.basis).T
        key = (self.basis.data_ptr(), self.basis._version)
        if self._back_key != key:
            self._back_cached, self._back_key = torch.linalg.inv(self.basis.detach()).T, key
        return self._back_cached


class WorldModel(nn.Module):
    def __init__(self, cfg: WorldModelConfig):
        super().__init__()
        if cfg.model != "hssm" and cfg.model != "euler" and cfg.width == 0:
            cfg = replace(cfg, width=matched_width(cfg))
        self.cfg = cfg
        self.encoder = TickEncoder(
            cfg.d_model, cfg.d_token, JOINT_DIM, ACTION_DIM, MAX_CHUNKS, cfg.channels, cfg.keypoints
        )
        if cfg.model in ("hssm", "euler", "mlp_pred"):
            self.belief = HamiltonianBelief(cfg)
        elif cfg.model == "gru":
            self.belief = GRUBelief(cfg.d_model, cfg.width, cfg.layers)
        else:
            self.belief = TransformerBelief(cfg.d_model, cfg.width, cfg.layers)
        if cfg.head_input in ("split", "state"):
            self.head = nn.Linear(cfg.d_model, cfg.d_latent)
            self.head_p = nn.Linear(2 * cfg.d_model, cfg.d_latent)
        else:
            self.head = nn.Linear(cfg.d_model * (2 if cfg.head_input == "both" else 1), 2 * cfg.d_latent)
        if cfg.model in ("hssm", "euler"):
            self.predictor = LeapfrogPredictor(cfg, "leapfrog" if cfg.model == "hssm" else "euler")
        elif cfg.model == "gru":
            self.predictor = GRUPredictor(cfg.d_latent, ACTION_DIM)
        else:
            self.predictor = MLPPredictor(cfg.d_latent, ACTION_DIM, cfg.width)
        self.token_readout = nn.Linear(cfg.d_latent, 2 * cfg.d_token)  # q -> camera and joint tokens (JEPA)
        self.dt_clamped = 0  # ticks whose dt_eff was outside the stable band
        self._band = None

    @property
    def hamiltonian(self) -> bool:
        return isinstance(self.predictor, LeapfrogPredictor)

    # ---- dt and input checks -------------------------------------------------------------------------------
    def dt_band(self) -> tuple[float, float]:
        """dt_eff's allowed range: the upper end is where the stiffest backbone oscillator stays stable.
        Cached between parameter updates (it costs a few tensor operations per tick otherwise)."""
        key = self._stiffness_version()
        if self._band is None or self._band[0] != key:
            hi = DT_MAX_S
            if isinstance(self.belief, HamiltonianBelief):
                hi = min(hi, self.belief.max_stable_dt())
            self._band = (key, (DT_MIN_S, hi))
        return self._band[1]

    def _stiffness_version(self):
        if not isinstance(self.belief, HamiltonianBelief):
            return None
        return tuple((id(layer.log_k), layer.log_k._version) for layer in self.belief.backbone.layers)

    def clamp_dt(self, dt_eff: torch.Tensor) -> torch.Tensor:
        lo, hi = self.dt_band()
        bad = ~((dt_eff >= lo) & (dt_eff <= hi))  # NaN counts as outside
        if bool(bad.any()):
            self.dt_clamped += int(bad.sum())
            dt_eff = torch.nan_to_num(dt_eff, nan=1 / 30).clamp(lo, hi)
        return dt_eff

    # ---- sequences (training, evaluation) ------------------------------------------------------------------
    def encode(self, batch: dict) -> torch.Tensor:
        """Tick arrays (B, T, ...) -> u (B, T, d_model)."""
        return self.encoder.fuse(self.tokens(batch).flatten(2))

    def world_input(self, tokens: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        """u as if the action were unknown (its token replaced by the mask embedding): what the sensors say
        about the world alone. The fuse layer is linear, so this is u less the action token's share."""
        fuse, action = self.encoder.fuse, tokens[..., ACTION_TOKEN, :]
        width = action.shape[-1]
        share = fuse.weight[:, ACTION_TOKEN * width : (ACTION_TOKEN + 1) * width]
        return u - F.linear(action - self.encoder.mask_tokens[ACTION_TOKEN], share)

    def _encode(self, x: dict) -> tuple[torch.Tensor, torch.Tensor]:
        """Tick arrays (N, ...) -> u (N, d_model) and its world part (`world_input`)."""
        tokens = self.encoder.tokens(*(x[k] for k in ENCODER_INPUTS))
        u = self.encoder.fuse(tokens.flatten(1))
        return u, self.world_input(tokens, u)

    def tokens(self, batch: dict) -> torch.Tensor:
        """Tick arrays (B, T, ...) -> the per-modality tokens (B, T, 4, d_token) that u is fused from."""
        b, t = batch["joint"].shape[:2]
        flat = (batch[k].reshape(b * t, *batch[k].shape[2:]) for k in ENCODER_INPUTS)
        out = self.encoder.tokens(*flat)
        return out.view(b, t, *out.shape[1:])

    def forward(self, batch: dict, state=None):
        """Tick arrays (B, T, ...) -> z (B, T, 2 d_latent), final belief state, aux (energy, balance, and the
        modality tokens for the objective's per-modality terms)."""
        tokens = self.tokens(batch)
        u = self.encoder.fuse(tokens.flatten(2))
        y, final, aux = self.belief(u, self.clamp_dt(batch["dt_eff"].float()), state)
        return self.latent(u, y, self.world_input(tokens, u)), final, {**aux, "tokens": tokens}

    def latent(self, u: torch.Tensor, y: torch.Tensor, u_world: torch.Tensor) -> torch.Tensor:
        """z from u_t (the tick's encoding), y_t (the belief) and u_world (u_t without the action), by
        `head_input`. "state" and "split" read q from the tick's encoding, so what the sensors give now cannot
        be lost on the way through the backbone (from y alone, probes found a third of the joint information
        gone), and p from u_t and y_t. "state" leaves the commanded action out of q: the action is an input
        of the transition, not part of the world's state, and when q held it, q jumped each time the command
        changed (the change of command alone explained 58 % of the variance of q's tick-to-tick change), a
        jump a transition that acts through the momenta cannot make in one tick."""
        if self.cfg.head_input in ("split", "state"):
            q = self.head(u_world if self.cfg.head_input == "state" else u)
            return torch.cat((q, self.head_p(torch.cat((u, y), -1))), -1)
        return self.head(torch.cat((u, y), -1) if self.cfg.head_input == "both" else y)

    def rollout(
        self, z0: torch.Tensor, actions: torch.Tensor, dt: torch.Tensor, residual=None, residual_ticks=None
    ) -> torch.Tensor:
        """Open loop: z0 (N, 2D), actions (N, K, A), dt (N, K) seconds (negative: backwards) -> (N, K, 2D).
        `residual` (N or 1, 2D): a correction per tick on the first `residual_ticks` ticks (the memory's,
        runtime/adapt/fast.py; the leapfrog predictor only)."""
        if isinstance(self.predictor, LeapfrogPredictor):
            return self.predictor.rollout(z0, actions, dt, residual, residual_ticks)
        if residual is not None:
            raise ValueError("a held residual needs the leapfrog predictor (fast.py steps the others)")
        mix = self.predictor.mix(z0)
        out, z = [], z0
        for k in range(actions.shape[1]):
            z = self.predictor.step(z, actions[:, k], dt[:, k], mix)
            out.append(z)
        return torch.stack(out, 1)

    # ---- streaming -----------------------------------------------------------------------------------------
    def initial_state(self, batch: int = 1):
        return self.belief.initial_state(batch)

    def step(self, state, tick: dict):
        """One tick: tick arrays (B, ...) -> new state, z (B, 2D), aux (layer energies where there are)."""
        check_tick(tick, self.cfg.image_size)
        u, u_world = self._encode(tick)
        y, state, aux = self.belief.step(u, self.clamp_dt(tick["dt_eff"].float()), state)
        return state, self.latent(u, y, u_world), aux


TICK_FIELDS = ("image", "audio", "audio_chunks", "joint", "action", "mask", "dt_eff")
ENCODER_INPUTS = TICK_FIELDS[:-1]  # TickEncoder's arguments, in order


def check_tick(tick: dict, image_size: int) -> None:
    """Shapes before anything runs: a wrong one is a clear error naming the field, not a broadcast."""
    missing = [k for k in TICK_FIELDS if k not in tick]
    if missing:
        raise ValueError(f"tick is missing {missing}")
    b = tick["joint"].shape[0]
    expect = {
        "audio": (b, MAX_CHUNKS, CHUNK),
        "audio_chunks": (b,),
        "joint": (b, JOINT_DIM),
        "action": (b, ACTION_DIM),
        "mask": (b, 4),
        "dt_eff": (b,),
    }
    for name, shape in expect.items():
        if tuple(tick[name].shape) != shape:
            raise ValueError(f"tick field `{name}` has shape {tuple(tick[name].shape)}, expected {shape}")
    image = tick["image"]
    if image.dim() != 4 or image.shape[0] != b or image.shape[-1] != 3:
        raise ValueError(f"tick field `image` has shape {tuple(image.shape)}, expected ({b}, H, W, 3)")
    if tick["mask"].dtype != torch.bool:
        raise ValueError(f"tick field `mask` must be bool, got {tick['mask'].dtype}")


def parameter_count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def matched_width(cfg: WorldModelConfig) -> int:
    """The baseline width whose total parameter count is closest to hssm's with the same config."""
    target = parameter_count(WorldModel(replace(cfg, model="hssm", width=0)))
    best, best_gap = 1, math.inf
    lo, hi = 1, 4096
    while lo <= hi:  # parameter count grows with width: bisect
        mid = (lo + hi) // 2
        count = parameter_count(WorldModel(replace(cfg, width=mid)))
        if abs(count - target) < best_gap:
            best, best_gap = mid, abs(count - target)
        lo, hi = (mid + 1, hi) if count < target else (lo, mid - 1)
    return best
