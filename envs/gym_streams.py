"""Any Gymnasium environment with `rgb_array` rendering, presented with the manipulation env's streams."""

import cv2
import gymnasium as gym
import mujoco
import numpy as np
from gymnasium import spaces

from envs.rendering import check_image_size


def is_mujoco_env(env_id: str) -> bool:
    """True for Gymnasium's own MuJoCo envs (Pusher, Reacher, Ant...), which take `width`/`height`."""
    entry = gym.spec(env_id).entry_point
    return isinstance(entry, str) and entry.startswith("gymnasium.envs.mujoco")


class GymStreams(gym.ObservationWrapper, gym.utils.RecordConstructorArgs):
    """Observation becomes `{"image": (S, S, 3) uint8, "joint": (D,) float32}`.

    `image` is the env's own `render()` resized to S x S; `joint` is the env's flattened observation, which
    for MuJoCo control tasks (Pusher, Reacher, ...) holds joint positions and velocities. These envs have no
    contact microphone: `audio` is absent from the observation and `has_audio` is False.
    """

    has_audio = False

    def __init__(self, env: gym.Env, image_size: int = 64):
        check_image_size("image_size", image_size)
        gym.utils.RecordConstructorArgs.__init__(self, image_size=image_size)
        if env.render_mode != "rgb_array":
            raise ValueError(
                f"{env.spec.id if env.spec else env} must be made with render_mode='rgb_array', "
                f"got {env.render_mode!r}"
            )
        super().__init__(env)
        self.image_size = image_size
        model = getattr(env.unwrapped, "model", None)
        if isinstance(model, mujoco.MjModel):
            # Same reason as envs.rendering: software GL is ~5x faster without shadows and reflections.
            # Visual-only fields; the physics is untouched. Must precede the first render (context creation).
            model.vis.quality.shadowsize = 0
            model.mat_reflectance[:] = 0
        joint_dim = spaces.flatdim(env.observation_space)
        self.observation_space = spaces.Dict(
            {
                "image": spaces.Box(0, 255, (image_size, image_size, 3), np.uint8),
                "joint": spaces.Box(-np.inf, np.inf, (joint_dim,), np.float32),
            }
        )

    def observation(self, observation):
        frame = self.env.render()
        image = cv2.resize(frame, (self.image_size, self.image_size), interpolation=cv2.INTER_AREA)
        joint = spaces.flatten(self.env.observation_space, observation).astype(np.float32)
        return {"image": np.ascontiguousarray(image), "joint": joint}
