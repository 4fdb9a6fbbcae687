"""The world model's per-tick step in torch and in onnxruntime (fp32 and int8), measured in one run.

What the brain calls is timed: `WorldModel.step` (inference mode) against `OrtWorldModel.step` (the export's
tick graph, tick checks and array conversion included), on the same tick, with the profile's thread count.
The runtimes take turns in blocks, so a slow spell of the machine falls on all of them alike.

int8's cost in accuracy: a linear probe (ridge, as in runtime/world_model/evaluation.py) is fitted from the
fp32 export's latents to the simulator's true state (end-effector, cube, joints) on real episodes from our
simulator, and scored on held-out episodes on the fp32 and the int8 latents. `int8_probe_r2_drop` is the
drop of the mean R^2 with that same probe (a deployed planner reads int8 latents through a readout fitted
on fp32 ones); `int8_probe_r2_drop_refit` (details) fits a probe on the int8 latents themselves.
"""

import time

import numpy as np
import torch

from runtime.world_model import evaluation as ev
from runtime.world_model.model import TICK_FIELDS

BLOCK = 100  # steps per turn


def step_times(steppers: dict, tick: dict, steps: int, warmup: int = 200) -> dict[str, np.ndarray]:
    """Per-step times (ms) of each `stepper.step(state, tick)`, the runtimes taking turns in blocks."""
    states = {name: s.initial_state(1) for name, s in steppers.items()}
    for name, s in steppers.items():
        for _ in range(warmup):
            states[name] = s.step(states[name], tick)[0]
    out = {name: [] for name in steppers}
    for _ in range(max(steps // BLOCK, 1)):
        for name, s in steppers.items():
            state, times = states[name], out[name]
            for _ in range(BLOCK):
                t0 = time.perf_counter()
                state = s.step(state, tick)[0]
                times.append(time.perf_counter() - t0)
            states[name] = state
    return {name: np.asarray(t) * 1e3 for name, t in out.items()}


def episode_latents(stepper, episode: dict) -> np.ndarray:
    """The streaming latents of one episode, tick by tick from the initial state, (T, 2D)."""
    state, out = stepper.initial_state(1), []
    for t in range(len(episode["joint"])):
        tick = {k: torch.from_numpy(np.asarray(episode[k][t : t + 1])) for k in TICK_FIELDS}
        state, z, _ = stepper.step(state, tick)
        out.append(z[0].numpy())
    return np.asarray(out, np.float64)


def probe_r2(
    fit_z: list, fit_truth: list, test_z: list, test_truth: list, probe=None
) -> tuple[float, object]:
    """Mean R^2 over (ee, object, joint) of a probe on held-out ticks (ticks without a frame left out)."""

    def stack(zs, truths):
        z, t = np.concatenate(zs), np.concatenate(truths)
        ok = ~np.isnan(t).any(1)
        return z[ok], t[ok]

    if probe is None:
        probe = ev.Probe.fit(*stack(fit_z, fit_truth))
    z, truth = stack(test_z, test_truth)
    return float(np.mean(list(ev.r2(probe(z), truth).values()))), probe


def int8_accuracy(fp32, int8, episodes: list[dict], held_out: int) -> dict[str, float]:
    """fp32 and int8 probe R^2 on the last `held_out` episodes, the probe fitted on the others' fp32 z."""
    z32 = [episode_latents(fp32, e) for e in episodes]
    z8 = [episode_latents(int8, e) for e in episodes]
    truth = [ev.true_state(e) for e in episodes]
    fit, test = slice(0, len(episodes) - held_out), slice(len(episodes) - held_out, None)
    r2_fp32, probe = probe_r2(z32[fit], truth[fit], z32[test], truth[test])
    r2_int8, _ = probe_r2(z8[fit], truth[fit], z8[test], truth[test], probe)
    r2_refit, _ = probe_r2(z8[fit], truth[fit], z8[test], truth[test])
    gap = max(float(np.abs(a - b).max()) for a, b in zip(z32, z8, strict=True))
    return {
        "probe_r2_fp32": r2_fp32,
        "probe_r2_int8": r2_int8,
        "int8_probe_r2_drop": r2_fp32 - r2_int8,
        "int8_probe_r2_drop_refit": r2_fp32 - r2_refit,
        "int8_latent_max_abs_diff": gap,
    }
