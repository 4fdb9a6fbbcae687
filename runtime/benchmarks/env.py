"""`python -m launch.bench env`: simulator speed and scripted-expert success on this machine."""

import time
from dataclasses import dataclass

import mujoco
import numpy as np
from rich.progress import Progress

import envs
from envs.expert import ScriptedExpert
from envs.rendering import CameraRenderer
from runtime.benchmarks.report import Report
from runtime.latency import LatencyStats

TARGETS = {
    "physics_steps_per_s": (">=", 40_000),
    "render_fps_64": (">=", 300),
    "expert_success_reach": (">=", 0.95),
    "expert_success_push": (">=", 0.80),
}


@dataclass
class EnvBenchConfig:
    seeds: int = 50
    """Episodes per task for the scripted-expert success rates."""
    physics_seconds: float = 20.0
    """Simulated seconds of physics to time (500 steps each)."""
    render_frames: int = 1000
    """Camera frames to time."""
    control_steps: int = 1000
    """Env steps (10 Hz, no camera) to time."""


def _expert_episode(env, seed: int) -> bool:
    expert = ScriptedExpert(env)
    obs, _ = env.reset(seed=seed)
    while True:
        obs, _, terminated, truncated, info = env.step(expert.act(obs))
        if terminated or truncated:
            return bool(info["is_success"])


def run(cfg: EnvBenchConfig) -> Report:
    report = Report("env", config=vars(cfg).copy(), targets=TARGETS)
    env = envs.make("manipulation", "push", observe_image=False)
    base = env.unwrapped
    expert = ScriptedExpert(env)

    # Physics with the contact microphone (what an env step pays for), timed in 1 s blocks while the expert
    # pushes the cube, so contacts are live; the expert's own time is outside the blocks.
    obs, _ = env.reset(seed=0)
    steps_per_block = int(round(1.0 / base.model.opt.timestep))
    physics = LatencyStats()
    for _ in range(int(cfg.physics_seconds)):
        base._write_ctrl()
        t = time.perf_counter()
        base.advance_physics(steps_per_block)
        physics.add(time.perf_counter() - t)
        base.microphone.pull()
        obs = base._observation(None)
        base.arm_target = np.clip(
            base.arm_target + expert.act(obs)[:4] * base.max_delta_rad, base.joint_low, base.joint_high
        )
    block_s = physics.summary_ms()["p50_ms"] / 1e3
    report.results["physics_steps_per_s"] = steps_per_block / block_s

    raw = LatencyStats()  # MuJoCo alone (mj_step in C, no microphone), for reference
    for _ in range(int(cfg.physics_seconds)):
        t = time.perf_counter()
        mujoco.mj_step(base.model, base.data, nstep=steps_per_block)
        raw.add(time.perf_counter() - t)
    report.details["physics_steps_per_s_mujoco_only"] = steps_per_block / (raw.summary_ms()["p50_ms"] / 1e3)

    camera = CameraRenderer(base.model, "front", 64, 64)
    frames = LatencyStats(cfg.render_frames)
    env.reset(seed=1)
    for i in range(cfg.render_frames):
        if i % 10 == 0:
            mujoco.mj_step(base.model, base.data, nstep=5)  # a moving scene, not one cached frame
        t = time.perf_counter()
        camera.render(base.data)
        frames.add(time.perf_counter() - t)
    camera.close()
    frame = frames.summary_ms()
    report.results["render_fps_64"] = 1e3 / frame["p50_ms"]
    report.details["render_64_ms"] = frame

    control = LatencyStats(cfg.control_steps)
    obs, _ = env.reset(seed=2)
    expert.reset()
    t_all = time.perf_counter()
    for _ in range(cfg.control_steps):
        action = expert.act(obs)
        t = time.perf_counter()
        obs, _, terminated, truncated, _ = env.step(action)
        control.add(time.perf_counter() - t)
        if terminated or truncated:
            obs, _ = env.reset()
            expert.reset()
    report.results["control_steps_per_s"] = 1e3 / control.summary_ms()["p50_ms"]
    report.details["control_step_ms"] = control.summary_ms()
    report.details["control_loop_s_including_expert"] = time.perf_counter() - t_all
    env.close()

    with Progress(transient=True) as progress:
        for task in ("reach", "push"):
            env = envs.make("manipulation", task, observe_image=False)
            bar = progress.add_task(f"expert {task}", total=cfg.seeds)
            wins = []
            for seed in range(cfg.seeds):
                wins.append(_expert_episode(env, seed))
                progress.advance(bar)
            env.close()
            report.results[f"expert_success_{task}"] = float(np.mean(wins))
            report.details[f"expert_failed_seeds_{task}"] = [s for s, w in enumerate(wins) if not w]
    report.details["note"] = (
        "Rates are medians: physics over 1 s blocks, render and control over single calls "
        "(steps/s = 1 / median duration)."
    )
    return report
