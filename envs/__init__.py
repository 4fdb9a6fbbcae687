"""Simulated worlds: the MuJoCo tabletop manipulation environment and adapters for any Gymnasium env."""

import os

import numpy as np

from runtime.headless import GL_BACKENDS_HELP, use_headless_backends

# Before gymnasium/mujoco are imported: they pick their GL backend at import time.
use_headless_backends()

try:
    import mujoco  # noqa: E402, F401
except Exception as exc:  # e.g. MUJOCO_GL=osmesa without libOSMesa fails inside mujoco's own import
    raise ImportError(
        f"mujoco failed to import with MUJOCO_GL={os.environ.get('MUJOCO_GL', '<unset>')}: "
        f"{exc!r}. {GL_BACKENDS_HELP}"
    ) from exc
import gymnasium  # noqa: E402

ENV_IDS = {"reach": "Manipulation-Reach-v1", "push": "Manipulation-Push-v1"}  # what `make` builds
ENTRY_POINTS = {"v0": "envs.manipulation_v0:ManipulationEnv", "v1": "envs.manipulation_v1:ManipulationEnvV1"}

for _version, _entry in ENTRY_POINTS.items():
    for _task in ("reach", "push"):
        _env_id = f"Manipulation-{_task.capitalize()}-{_version}"
        if _env_id not in gymnasium.registry:
            gymnasium.register(_env_id, entry_point=_entry, kwargs={"task": _task})


PROPRIO_DIM = 13  # `proprioception`: 5 joint positions, 5 velocities, 3 tool coordinates


def proprioception(state: dict) -> np.ndarray:
    """What the arm reports about itself, (PROPRIO_DIM,) float32: joint positions and velocities (arm joints,
    then the gripper), then the tool position (m) by forward kinematics, as arm controllers report it beside
    the joints (UR's `actual_TCP_pose`, Franka's `O_T_EE`). The `sim/joint` stream and collected data carry
    this."""
    return np.concatenate((state["joint"], state["ee"])).astype(np.float32)


def check_name(env: str, task: str | None = None) -> None:
    """Refuse an unknown env or task (ValueError listing the valid ones) without building anything."""
    if env == "manipulation":
        if task is not None and task not in ENV_IDS:
            raise ValueError(
                f"unknown task {task!r} for --env manipulation; valid tasks: {', '.join(ENV_IDS)}"
            )
        return
    if env.startswith("gym:"):
        if task is not None:
            raise ValueError(f"--task applies to --env manipulation only, not {env!r}")
        env_id = env[len("gym:") :]
        if env_id not in gymnasium.registry:
            close = [k for k in gymnasium.registry if env_id.lower().split("-")[0] in k.lower()][:10]
            hint = f" Similar ids: {', '.join(close)}." if close else ""
            raise ValueError(
                f"unknown Gymnasium env id {env_id!r}.{hint} Any id in gymnasium.registry works."
            )
        return
    raise ValueError(
        f"unknown env {env!r}; valid: 'manipulation' (tasks: {', '.join(ENV_IDS)}) or "
        f"'gym:<Gymnasium id>', e.g. 'gym:Pusher-v5'"
    )


def make(env: str = "manipulation", task: str | None = None, image_size: int = 64, **kwargs) -> gymnasium.Env:
    """Build a simulated world by its command-line name.

    `manipulation` is our MuJoCo tabletop (task `push` by default, or `reach`); `gym:<id>` is any
    registered Gymnasium env with rgb_array rendering (e.g. `gym:Pusher-v5`), wrapped by `GymStreams`.
    """
    check_name(env, task)
    if env == "manipulation":
        return gymnasium.make(ENV_IDS[task or "push"], image_size=image_size, **kwargs)
    from envs.gym_streams import GymStreams, is_mujoco_env

    env_id = env[len("gym:") :]
    if is_mujoco_env(env_id):  # render straight at the stream's size instead of 480x480 then resizing
        kwargs = {"width": image_size, "height": image_size, **kwargs}
    return GymStreams(gymnasium.make(env_id, render_mode="rgb_array", **kwargs), image_size=image_size)
