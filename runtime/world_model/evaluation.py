"""Evaluation of trained world models on held-out episodes, in physical units.

Every model is read the same way. A belief z_t comes from the window of `window` ticks ending at t, from the
initial state (the length the models were trained on). Linear probes (ridge) are fitted from latents to the
simulator's true state on training episodes and scored on held-out ones: R^2 per quantity. Open-loop
rollouts start from z_t, follow the actions actually taken with their dt, and are decoded by the same
model's probe at each horizon, so models with different latent spaces are compared in metres and radians.
"""

import math
from dataclasses import dataclass

import numpy as np
import torch

from runtime.world_model.model import TICK_FIELDS, WorldModel

QUANTITIES = {"ee": 3, "object": 3, "joint": 5}  # metres, metres, radians (arm joints and gripper)
HORIZONS = (1, 5, 10, 30)


@dataclass
class Probe:
    """Ridge regression from features to the true state; `r2` per quantity on other data."""

    weight: np.ndarray
    mean: np.ndarray

    @classmethod
    def fit(cls, features: np.ndarray, targets: np.ndarray, ridge: float = 1e-3) -> "Probe":
        mean = features.mean(0)
        x = np.hstack((features - mean, np.ones((len(features), 1))))
        reg = ridge * len(x) * np.eye(x.shape[1])
        reg[-1, -1] = 0.0
        return cls(np.linalg.solve(x.T @ x + reg, x.T @ targets), mean)

    def __call__(self, features: np.ndarray) -> np.ndarray:
        x = np.hstack((features - self.mean, np.ones((len(features), 1))))
        return x @ self.weight


def true_state(episode: dict) -> np.ndarray:
    """(T, 11): end-effector position, cube position, arm joint angles and gripper; NaN without a frame."""
    return np.hstack((episode["true_ee"], episode["true_object"][:, :3], episode["true_joint"][:, :5]))


def r2(pred: np.ndarray, true: np.ndarray) -> dict[str, float]:
    out, i = {}, 0
    for name, n in QUANTITIES.items():
        p, t = pred[:, i : i + n], true[:, i : i + n]
        out[name] = float(1 - ((p - t) ** 2).sum() / ((t - t.mean(0)) ** 2).sum())
        i += n
    return out


def errors(pred: np.ndarray, true: np.ndarray) -> dict[str, float]:
    """Mean Euclidean error per quantity (m for ee and object, rad for the joints)."""
    out, i = {}, 0
    for name, n in QUANTITIES.items():
        out[name] = float(np.linalg.norm(pred[:, i : i + n] - true[:, i : i + n], axis=1).mean())
        i += n
    return out


@dataclass
class Starts:
    """Rollout starts: for each, its window of ticks, the next actions and dts, and the true states after."""

    batch: dict[str, torch.Tensor]  # (N, window, ...)
    actions: torch.Tensor  # (N, H, A)
    dt: torch.Tensor  # (N, H)
    truth_now: np.ndarray  # (N, 11)
    truth_after: np.ndarray  # (N, H, 11)


def starts(episodes: list[dict], window: int, horizon: int, stride: int) -> Starts:
    parts = {k: [] for k in TICK_FIELDS}
    actions, dts, now, after = [], [], [], []
    for e in episodes:
        truth = true_state(e)
        for t in range(window - 1, len(e["dt_eff"]) - horizon, stride):
            if np.isnan(truth[t]).any():
                continue
            for k in TICK_FIELDS:
                parts[k].append(e[k][t - window + 1 : t + 1])
            actions.append(e["action"][t + 1 : t + 1 + horizon])
            dts.append(e["dt_eff"][t + 1 : t + 1 + horizon])
            now.append(truth[t])
            after.append(truth[t + 1 : t + 1 + horizon])
    if not now:
        raise ValueError(f"no rollout starts: episodes shorter than {window + horizon} ticks")
    batch = {k: torch.from_numpy(np.stack(v)) for k, v in parts.items()}
    return Starts(
        batch,
        torch.from_numpy(np.stack(actions)),
        torch.from_numpy(np.stack(dts)).float(),
        np.stack(now),
        np.stack(after),
    )


@torch.no_grad()
def beliefs(model: WorldModel, batch: dict, chunk: int = 64) -> torch.Tensor:
    """z at the last tick of each window, (N, 2D)."""
    out = []
    n = batch["joint"].shape[0]
    for i in range(0, n, chunk):
        z, _, _ = model({k: v[i : i + chunk] for k, v in batch.items()})
        out.append(z[:, -1])
    return torch.cat(out)


def features(model: WorldModel, z: torch.Tensor, q_only: bool) -> np.ndarray:
    return (z[..., : model.cfg.d_latent] if q_only else z).numpy().astype(np.float64)


@torch.no_grad()
def rollout_errors(model: WorldModel, probe: Probe, s: Starts, z0: torch.Tensor, dt=None) -> dict:
    """Probe-decoded open-loop errors at each horizon: {h: {quantity: error}}."""
    dt = s.dt if dt is None else dt
    pred = model.rollout(z0, s.actions, dt)  # (N, H, 2D)
    out = {}
    for h in HORIZONS:
        if h <= pred.shape[1]:
            decoded = probe(features(model, pred[:, h - 1], q_only=False))
            out[h] = errors(decoded, s.truth_after[:, h - 1])
    return out


@torch.no_grad()
def energy_drift(model: WorldModel, z0: torch.Tensor, steps: int = 1000, dt: float = 1 / 30) -> float:
    """Median relative |H_T - H_0| / |H_0| of `steps` undriven, undamped transition steps."""
    predictor = model.predictor
    mix = predictor.mix(z0)
    q, p = (x.double() for x in predictor.canonical(z0))
    transition = predictor.transition.double()
    mix = mix.double()
    h0 = transition.energy(q, p, mix)
    for _ in range(steps):
        q, p = transition.step(q, p, None, predictor.ticks(dt), mix, damped=False)
    drift = ((transition.energy(q, p, mix) - h0).abs() / h0.abs().clamp_min(1e-12)).numpy()
    predictor.transition.float()
    drift = np.where(np.isfinite(drift), drift, np.inf)
    return float(np.median(drift))


@torch.no_grad()
def scan_step_error(model: WorldModel, episode: dict, ticks: int = 300) -> tuple[float, float]:
    """Max |z_scan - z_step| over one episode's ticks (fp32): (the belief's parallel scan against its
    tick-by-tick steps on the same encoder outputs, the same end to end from the raw ticks).

    End to end adds the encoders run on the whole sequence at once against one tick at a time: a batched
    matrix product and a single-row one sum in different orders (the fuse layer alone differs by 2e-6), and
    the belief carries that difference on. The first figure is the scan's own agreement with the step."""
    t = min(ticks, len(episode["dt_eff"]))
    seq = {k: torch.from_numpy(episode[k][None, :t]) for k in TICK_FIELDS}
    tokens = model.tokens(seq)  # once, shared by both paths
    u = model.encoder.fuse(tokens.flatten(2))
    u_world = model.world_input(tokens, u)
    dt = model.clamp_dt(seq["dt_eff"].float())
    y_scan, _, _ = model.belief(u, dt)
    z_scan = model.latent(u, y_scan, u_world)
    state, belief_worst = model.initial_state(1), 0.0
    for i in range(t):
        y, state, _ = model.belief.step(u[:, i], dt[:, i], state)
        belief_worst = max(
            belief_worst, float((model.latent(u[:, i], y, u_world[:, i]) - z_scan[:, i]).abs().max())
        )
    z_seq, _, _ = model(seq)
    state, worst = model.initial_state(1), 0.0
    for i in range(t):
        state, z, _ = model.step(state, {k: v[:, i] for k, v in seq.items()})
        worst = max(worst, float((z - z_seq[:, i]).abs().max()))
    finite = lambda x: x if math.isfinite(x) else math.inf  # noqa: E731
    return finite(belief_worst), finite(worst)


def jitter_episode(episode: dict, rng: np.random.Generator, drop: float) -> dict:
    """The episode as a stream whose ticks jitter: a random share `drop` of ticks is lost, so the spacing of
    the rest varies (33, 67, 100 ms, ...); dt_eff becomes the true time since the previous kept tick."""
    n = len(episode["dt_eff"])
    keep = rng.random(n) >= drop
    keep[0] = True
    elapsed = np.cumsum(episode["dt_eff"])
    out = {k: v[keep] for k, v in episode.items() if getattr(v, "ndim", 0) and len(v) == n}
    kept = elapsed[keep]
    out["dt_eff"] = np.diff(kept, prepend=kept[0] - episode["dt_eff"][0])
    return out


def dt_for_mode(dt: torch.Tensor, mode: str) -> torch.Tensor:
    """The dt a model is given under a V-sync dt_eff mode: the true spacing (`measured`), the clock's mean
    period over the window (`phase`: what a phase-tracking clock reports) or the nominal 1/30 s (`fixed`)."""
    if mode == "measured":
        return dt
    if mode == "phase":
        return dt.mean(-1, keepdim=True).expand_as(dt)
    if mode == "fixed":
        return torch.full_like(dt, 1 / 30)
    raise ValueError(f"unknown dt_eff mode {mode!r}")
