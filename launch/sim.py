"""Run the simulated robot: `python -m launch.sim --env manipulation --seconds 20 --save-video run.mp4`.

The MuJoCo tabletop arm (task `push` by default, `--task reach`) is driven by its scripted inverse-kinematics
expert at the env's control rate, in real time, with a live one-line status (physics steps/s, episode,
reward, success). `--env gym:Pusher-v5` (or any Gymnasium id with rgb_array rendering) runs that env with
random actions instead. Ctrl-C stops it and still prints the summary.
"""

import logging
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import gymnasium
import numpy as np
import tyro
from rich.console import Console
from rich.live import Live
from rich.table import Table

import envs
from runtime.latency import LoopTimer
from runtime.video import VideoWriter

log = logging.getLogger("launch.sim")


@dataclass
class SimConfig:
    env: str = "manipulation"
    """World to simulate: `manipulation` (our MuJoCo tabletop arm) or `gym:<id>` (any Gymnasium env with
    rgb_array rendering, e.g. `gym:Pusher-v5`)."""
    task: Literal["reach", "push"] | None = None
    """Task for `--env manipulation` (default push)."""
    seconds: float | None = None
    """Stop after this many wall-clock seconds (default: run until Ctrl-C)."""
    save_video: Path | None = None
    """Write the camera stream to this .mp4 or .gif file."""
    video_scale: int = 4
    """Enlarge video frames this many times (nearest neighbour) so a 64x64 camera is watchable."""
    speed: float = 1.0
    """Simulated seconds per wall-clock second; 0 runs as fast as the machine can."""
    seed: int = 0
    """Seed of the first episode; episode i uses seed + i."""
    image_size: int = 64
    """Camera resolution (square) of the image stream."""

    def __post_init__(self):
        if self.seconds is not None and not self.seconds > 0:
            raise ValueError(f"`seconds` must be > 0, got {self.seconds}")
        if not self.speed >= 0:
            raise ValueError(f"`speed` must be >= 0, got {self.speed}")


def _status(
    episode: int,
    step: int,
    reward: float,
    successes: int,
    finished: int,
    physics_rate: float,
    control_rate: float,
    busy: float,
    audio: str,
) -> str:
    rate = f"{physics_rate:,.0f} physics steps/s" if physics_rate else f"{control_rate:,.1f} env steps/s"
    done = f"{successes}/{finished} succeeded" if finished else "none finished"
    return (
        f"{rate} ({control_rate:4.1f} Hz control, loop busy {busy:4.0%}) | episode {episode} "
        f"step {step:3d} | reward {reward:+8.2f} | {done} | audio {audio}"
    )


@dataclass
class World:
    env: object
    policy: object
    policy_name: str
    expert: object | None
    video: VideoWriter | None
    first_obs: dict
    control_hz: float
    substeps: int


def build(cfg: SimConfig) -> World:
    """Everything that can refuse bad input, before the loop starts."""
    env = envs.make(cfg.env, cfg.task, image_size=cfg.image_size)
    base = env.unwrapped
    control_hz = float(base.metadata.get("render_fps") or 10.0)
    if cfg.env == "manipulation":
        from envs.expert import ScriptedExpert

        expert = ScriptedExpert(env)
        policy, policy_name = expert.act, "scripted IK expert"
    else:
        expert = None
        env.action_space.seed(cfg.seed)
        policy, policy_name = (lambda _obs: env.action_space.sample()), "random actions"
    try:
        first_obs, _ = env.reset(seed=cfg.seed)  # the first render happens here: missing GL or renderer deps
        video = VideoWriter(cfg.save_video, fps=control_hz, scale=cfg.video_scale) if cfg.save_video else None
    except Exception:
        env.close()
        raise
    return World(
        env, policy, policy_name, expert, video, first_obs, control_hz, getattr(base, "n_substeps", 0)
    )


def main(cfg: SimConfig, world: World) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    console = Console(stderr=True)
    env, policy, expert, video = world.env, world.policy, world.expert, world.video
    control_hz, substeps = world.control_hz, world.substeps
    console.print(
        f"[bold]{env.spec.id if env.spec else cfg.env}[/] driven by {world.policy_name} at "
        f"{control_hz:g} Hz, speed x{cfg.speed:g}"
        + (f", {cfg.seconds:g} s" if cfg.seconds else ", Ctrl-C to stop")
    )

    timer = LoopTimer(rate_hz=control_hz * cfg.speed if cfg.speed > 0 else None)
    episode, step, successes, finished, episode_reward = 0, 0, 0, 0, 0.0
    obs = world.first_obs
    audio_state = "on" if "audio" in obs else "absent"
    window_start, window_steps, physics_rate, control_rate, busy = timer.elapsed_s, 0, 0.0, 0.0, 0.0
    try:
        with Live(console=console, refresh_per_second=4, transient=False) as live:
            while cfg.seconds is None or timer.elapsed_s < cfg.seconds:
                timer.tick()
                with timer.section("policy"):
                    action = policy(obs)
                with timer.section("env_step"):
                    obs, reward, terminated, truncated, info = env.step(action)
                if video is not None:
                    with timer.section("video"):
                        video.write(obs["image"])
                step += 1
                window_steps += 1
                episode_reward += reward
                now = timer.elapsed_s
                if now - window_start >= 0.5:
                    control_rate = window_steps / (now - window_start)
                    physics_rate = control_rate * substeps
                    busy = timer.iteration.summary_ms()["p50_ms"] * control_rate / 1e3
                    window_start, window_steps = now, 0
                if "audio" in obs:
                    audio_state = f"peak {np.abs(obs['audio']).max():.3f}"
                live.update(
                    _status(
                        episode,
                        step,
                        episode_reward,
                        successes,
                        finished,
                        physics_rate,
                        control_rate,
                        busy,
                        audio_state,
                    )
                )
                if terminated or truncated:
                    finished += 1
                    successes += bool(info.get("is_success", False))
                    episode += 1
                    step, episode_reward = 0, 0.0
                    obs, info = env.reset(seed=cfg.seed + episode)
                    if expert is not None:
                        expert.reset()
                timer.wait()
    except KeyboardInterrupt:
        console.print("stopped by Ctrl-C")
    finally:
        if video is not None:
            video.close()
            console.print(f"wrote {video.frames_written} frames to {cfg.save_video}")
        env.close()
        _print_summary(console, timer, finished, successes)
    return 0


def _print_summary(console: Console, timer: LoopTimer, finished: int, successes: int) -> None:
    table = Table(
        title=f"{timer.iterations} control steps in {timer.elapsed_s:.1f} s, "
        f"{finished} episodes finished, {successes} succeeded, "
        f"{timer.deadline_misses} deadline misses"
    )
    for column in ("stage", "count", "p50 ms", "p95 ms", "p99 ms", "max ms"):
        table.add_column(column, justify="right" if column != "stage" else "left")
    for name, s in timer.summary().items():
        table.add_row(
            name, str(s["count"]), *(f"{s[k]:.2f}" for k in ("p50_ms", "p95_ms", "p99_ms", "max_ms"))
        )
    console.print(table)


def cli(argv: list[str] | None = None) -> int:
    try:
        cfg = tyro.cli(SimConfig, args=argv, description=__doc__)
        world = build(cfg)
    except ValueError as exc:  # bad flag, --env, --task or video path: refused before anything starts
        print(f"launch.sim: {exc}", file=sys.stderr)
        return 2
    except (RuntimeError, gymnasium.error.DependencyNotInstalled) as exc:  # no GL context, missing renderer
        print(f"launch.sim: {exc}", file=sys.stderr)
        return 1
    return main(cfg, world)


if __name__ == "__main__":
    sys.exit(cli())
