"""Adaptation to a change of the world's rules, and back, for the four variants (none, memory, learner, both).

For each shift, a run of `phase` episodes of the nominal world, `phase` with the shift, `phase` nominal again
(the scripted expert with exploration noise, as in training data; new scenes each episode). The shipped
model's encoders and belief are frozen, so the latents z of every tick are computed once; each variant then
streams them tick by tick through its own copy of the transition and its own memory:
- before tick t is observed, the one-step prediction of z_t from z_t-1 and the five-step rollout of
  z_t+4 under the actions then taken are made (the rollout reads the memory as it is at t-1);
- tick t is then observed (the memory written, the learner fed).
Errors are probe-decoded into physical units: a linear probe fitted on training episodes maps z to the
end-effector and cube positions, and a prediction's error is the distance, averaged over the two, between
the decoded prediction and the decoded z that followed (metres; the model's error, not the probe's).
Per shift and variant:
- `recovery_ticks`: ticks after the shift until the error, averaged over the last `smooth` ticks, is within
  1.2 x its pre-shift mean and stays there for the next `hold` ticks (the shifted phase's length if never).
  Sustained, because each phase starts with a new episode and the arm at rest, whose first ticks are easy
  to predict in any world. `pre_false_alarm` (details) is how often the smoothed error is above 1.2x in the
  phase before the shift: the test's rate of firing with nothing changed;
- `post_ratio`: mean error over the shifted phase / pre-shift mean;
- `forget_ratio`: mean error over the phase after shifting back / pre-shift mean.
And per shift, whether it can show in a one-step error at all (`world_change_m`, details): how far it moves
the world in one tick, from the same state under the same command, beside the model's own one-step error.
"""

import copy
from dataclasses import dataclass

import mujoco
import numpy as np
import torch

import envs
from envs.dynamics_shift import NAMED_SHIFTS, DynamicsShift
from envs.expert import ScriptedExpert
from runtime.adapt.online import VARIANTS, AdaptConfig, OnlineAdapter
from runtime.world_model import evaluation as ev
from runtime.world_model.data import CollectConfig, collect_episode
from runtime.world_model.model import TICK_FIELDS, TICK_S

SHIFTS = NAMED_SHIFTS
HORIZONS = (1, 5)


@dataclass(frozen=True)
class AdaptEvalConfig:
    phase: int = 4  # episodes per phase: nominal, shifted, nominal
    episode_seconds: float = 8.0
    smooth: int = 15  # ticks averaged for the recovery test
    hold: int = 60  # ticks the averaged error must stay recovered
    seed: int = 200_000


@torch.no_grad()
def latents(model, episode: dict) -> torch.Tensor:
    batch = {k: torch.from_numpy(episode[k][None]) for k in TICK_FIELDS}
    return model(batch)[0][0]


def fit_probe(model, episodes: list[dict]) -> ev.Probe:
    feats, truth = [], []
    for ep in episodes:
        t = ev.true_state(ep)
        ok = ~np.isnan(t).any(1)
        feats.append(latents(model, ep).numpy().astype(np.float64)[ok])
        truth.append(t[ok])
    return ev.Probe.fit(np.concatenate(feats), np.concatenate(truth))


@dataclass
class Run:
    """One shift's ticks: latents, actions and dt per episode, and which phase each episode is in."""

    z: list[torch.Tensor]
    action: list[torch.Tensor]
    dt: list[torch.Tensor]
    phase: list[int]  # 0 before the shift, 1 shifted, 2 after shifting back


def collect_run(model, shift: DynamicsShift, cfg: AdaptEvalConfig, progress=None) -> Run:
    run = Run([], [], [], [])
    collect = CollectConfig(episode_seconds=cfg.episode_seconds, random_fraction=0.0)
    for i in range(3 * cfg.phase):
        phase = i // cfg.phase
        ep = collect_episode(collect, cfg.seed + i, shift if phase == 1 else None)
        run.z.append(latents(model, ep))
        run.action.append(torch.from_numpy(ep["action"]))
        run.dt.append(torch.from_numpy(ep["dt_eff"]).float())
        run.phase.append(phase)
        if progress:
            progress()
    return run


def world_change(shift: DynamicsShift, cfg: AdaptEvalConfig) -> float:
    """How far (m) `shift` moves the world in one tick: at every control step of the first phase's scenes
    (the scripted expert acting), the nominal world's state is copied into a shifted twin, both take the
    same command for one tick, and the end-effector and cube positions are compared (their mean distance,
    as the prediction errors are). A shift that moves the world much less than the model's own one-step
    error cannot raise that error."""
    moved = []
    for i in range(cfg.phase):
        pair = [envs.make("manipulation", audio=False, action_mode="absolute") for _ in range(2)]
        try:
            for env in pair:
                env.reset(seed=cfg.seed + i)
            nominal, shifted = (env.unwrapped for env in pair)
            shifted.apply_shift(shift)
            expert, saved = ScriptedExpert(pair[0]), mujoco.MjData(nominal.model)
            tick = round(TICK_S / nominal.model.opt.timestep)
            period = round(1.0 / nominal.control_hz / nominal.model.opt.timestep)
            for _ in range(round(cfg.episode_seconds * nominal.control_hz)):
                state = nominal.state()
                action = expert.act({k: state[k] for k in ("ee", "object", "goal", "joint")})
                nominal.apply_action(action)
                mujoco.mj_copyData(shifted.data, shifted.model, nominal.data)
                shifted.apply_action(action)  # through the shift's own mapping (a flipped joint)
                mujoco.mj_copyData(saved, nominal.model, nominal.data)
                nominal.advance_physics(tick)
                shifted.advance_physics(tick)
                a, b = nominal.state(), shifted.state()
                ends = [np.r_[s["ee"], s["object"][:3]][None] for s in (a, b)]
                moved.append(distance(*ends)[0])
                mujoco.mj_copyData(nominal.data, nominal.model, saved)
                nominal.advance_physics(period)
        finally:
            for env in pair:
                env.close()
    return float(np.mean(moved))


def decode(probe: ev.Probe, z: torch.Tensor) -> np.ndarray:
    return probe(z.numpy().astype(np.float64).reshape(-1, z.shape[-1]))[:, :6]


def distance(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Mean of end-effector and cube distances (m) between decoded states (N, 6)."""
    return (np.linalg.norm(a[:, :3] - b[:, :3], axis=1) + np.linalg.norm(a[:, 3:6] - b[:, 3:6], axis=1)) / 2


@torch.no_grad()
def stream(model, run: Run, variant: str, probe: ev.Probe) -> dict:
    """One variant over a run: per-tick errors at each horizon (NaN where no prediction ended), the phase
    of each tick, and the adapter's status at the end."""
    model = copy.deepcopy(model)  # the learner changes the transition: each variant starts from the same
    adapter = OnlineAdapter(model, AdaptConfig.variant(variant))
    errs = {h: [] for h in HORIZONS}
    phases = []
    for z, action, dt, phase in zip(run.z, run.action, run.dt, run.phase, strict=True):
        t_len = len(z)
        decoded = decode(probe, z)
        ep_err = {h: np.full(t_len, np.nan) for h in HORIZONS}
        for t in range(1, t_len):
            prev, a, d = z[t - 1 : t], action[t : t + 1], dt[t : t + 1]
            end = t + HORIZONS[-1] - 1
            if end < t_len:
                roll = adapter.rollout(prev, action[None, t : end + 1], dt[None, t : end + 1])[:, -1]
                ep_err[HORIZONS[-1]][end] = distance(decode(probe, roll), decoded[end : end + 1])[0]
            adapter.observe(prev, a, d, z[t : t + 1])  # its prediction was made before tick t was known
            ep_err[1][t] = distance(decode(probe, adapter.prediction), decoded[t : t + 1])[0]
        for h in HORIZONS:
            errs[h].append(ep_err[h])
        phases.append(np.full(t_len, phase))
    return {
        "errors": {h: np.concatenate(e) for h, e in errs.items()},
        "phase": np.concatenate(phases),
        "status": adapter.status(),
    }


def scores(err: np.ndarray, phase: np.ndarray, smooth: int, hold: int) -> dict[str, float]:
    """recovery_ticks, post_ratio and forget_ratio from one horizon's per-tick errors."""
    pre = np.nanmean(err[phase == 0])
    shifted = err[phase == 1]
    filled = np.where(np.isnan(shifted), pre, shifted)  # a tick with no prediction ending there is neutral
    running = np.convolve(filled, np.ones(smooth) / smooth, mode="full")[: len(filled)]
    running[: smooth - 1] = [filled[: i + 1].mean() for i in range(smooth - 1)]
    bad = np.flatnonzero(running > 1.2 * pre)
    before = np.where(np.isnan(err[phase == 0]), pre, err[phase == 0])
    calm = np.convolve(before, np.ones(smooth) / smooth, mode="valid")
    # The first tick from which the next `hold` ticks are all recovered: after the last lapse before a
    # recovered stretch that long.
    recovered = np.ones(len(running) + 1, bool)
    recovered[bad] = False
    stretch = np.convolve(~recovered[:-1], np.ones(hold), mode="full")[hold - 1 :]  # lapses in [t, t+hold)
    ok = np.flatnonzero((stretch[: len(running)] == 0)[: max(len(running) - hold + 1, 0)])
    return {
        "recovery_ticks": float(ok[0]) if len(ok) else float(len(shifted)),
        "post_ratio": float(np.nanmean(shifted) / pre),
        "forget_ratio": float(np.nanmean(err[phase == 2]) / pre),
        "pre_error_m": float(pre),
        "post_error_m": float(np.nanmean(shifted)),
        # How often the same test fires with no shift at all: the recovery figure's noise floor.
        "pre_false_alarm": float(np.mean(calm > 1.2 * pre)),
    }


def evaluate(model, probe: ev.Probe, cfg: AdaptEvalConfig, shifts=tuple(SHIFTS), progress=None):
    """results (the issue's keys, from the 1-step errors; the 5-step figures in details) and details."""
    results, details = {}, {}
    for name in shifts:
        run = collect_run(
            model, SHIFTS[name], cfg, progress and (lambda name=name: progress(name, "collect"))
        )
        for variant in VARIANTS:
            out = stream(model, run, variant, probe)
            for h in HORIZONS:
                for key, value in scores(out["errors"][h], out["phase"], cfg.smooth, cfg.hold).items():
                    target = results if h == 1 and not key.endswith(("_m", "_alarm")) else details
                    target[f"{name}_{key}_{variant}" + ("" if h == 1 else f"_h{h}")] = value
            details[f"{name}_status_{variant}"] = out["status"]
            if progress:
                progress(name, variant)
        details[f"{name}_world_change_m"] = world_change(SHIFTS[name], cfg)
    return results, details
