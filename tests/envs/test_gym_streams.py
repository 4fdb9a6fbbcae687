"""`envs.make` and GymStreams: any Gymnasium env presented with the manipulation env's streams."""

import warnings

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

import envs
from envs.gym_streams import GymStreams


@pytest.fixture
def pusher():
    env = envs.make("gym:Pusher-v5")
    yield env
    env.close()


def test_pusher_streams(pusher):
    """gym:Pusher-v5 gives {image (64,64,3) uint8, joint (D,) float32}, no audio, has_audio False; the
    observations lie in observation_space, and the image shows the scene."""
    obs, _ = pusher.reset(seed=0)
    assert set(obs) == {"image", "joint"} == set(pusher.observation_space.spaces)
    assert obs["image"].shape == (64, 64, 3) and obs["image"].dtype == np.uint8
    assert obs["joint"].dtype == np.float32
    assert obs["joint"].shape == (gym.spaces.flatdim(pusher.unwrapped.observation_space),)
    assert pusher.has_audio is False and "audio" not in obs
    assert pusher.observation_space.contains(obs)
    assert obs["image"].std() > 5
    pusher.action_space.seed(0)
    for _ in range(5):
        obs, reward, terminated, truncated, _ = pusher.step(pusher.action_space.sample())
        assert pusher.observation_space.contains(obs)
        assert np.isfinite(reward) and isinstance(terminated, bool) and isinstance(truncated, bool)


def test_joint_is_the_flattened_env_observation(pusher):
    """`joint` is the wrapped env's own observation, flattened, as float32."""
    obs, _ = pusher.reset(seed=3)
    raw = pusher.unwrapped._get_obs()
    np.testing.assert_array_equal(obs["joint"], raw.astype(np.float32))


def test_pusher_is_deterministic_per_seed():
    """Same seed and actions -> identical image and joint streams."""
    runs = []
    for _ in range(2):
        env = envs.make("gym:Pusher-v5")
        env.action_space.seed(1)
        obs, _ = env.reset(seed=1)
        trace = [obs]
        for _ in range(3):
            trace.append(env.step(env.action_space.sample())[0])
        runs.append(trace)
        env.close()
    for a, b in zip(*runs, strict=True):
        assert np.array_equal(a["image"], b["image"]) and np.array_equal(a["joint"], b["joint"])


@pytest.mark.parametrize("image_size", [32, 96])
def test_gym_image_size(image_size):
    """image_size sets the image stream's resolution for gym envs too."""
    env = envs.make("gym:Pusher-v5", image_size=image_size)
    obs, _ = env.reset(seed=0)
    env.close()
    assert obs["image"].shape == (image_size, image_size, 3)
    assert env.observation_space["image"].shape == (image_size, image_size, 3)


def test_check_env_passes_on_gym_streams(pusher):
    """Gymnasium's env checker accepts the wrapped env's spaces, reset and step (its render and close checks
    rebuild the env from its spec, tested separately below)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        check_env(pusher, skip_render_check=True, skip_close_check=True)
    tolerated = ("infinity", "different from the unwrapped", "symmetric and normalized")
    unexpected = [str(w.message) for w in caught if not any(t in str(w.message) for t in tolerated)]
    assert not unexpected, unexpected


def test_gym_streams_env_can_be_rebuilt_from_its_spec(pusher):
    """gymnasium.make(env.spec) rebuilds the GymStreams env (as check_env's render/close checks, vector envs
    and spec-based tooling do), with the same streams."""
    rebuilt = gym.make(pusher.spec)
    try:
        obs, _ = rebuilt.reset(seed=0)
        assert set(obs) == {"image", "joint"} and obs["image"].shape == (64, 64, 3)
    finally:
        rebuilt.close()


def test_gym_streams_requires_rgb_array_rendering():
    """Wrapping an env made without render_mode="rgb_array" is refused with a clear ValueError."""
    inner = gym.make("Pusher-v5")
    with pytest.raises(ValueError, match="rgb_array"):
        GymStreams(inner)
    inner.close()


# ------------------------------------------------------------------------------------------- envs.make
def test_make_manipulation_defaults_to_push():
    """envs.make() is the manipulation push task at 64x64; task="reach" and kwargs pass through."""
    env = envs.make()
    assert env.unwrapped.task == "push" and env.observation_space["image"].shape == (64, 64, 3)
    env.close()
    env = envs.make("manipulation", "reach", image_size=32, control_hz=20)
    assert env.unwrapped.task == "reach" and env.unwrapped.control_hz == 20
    assert env.observation_space["image"].shape == (32, 32, 3)
    env.close()


@pytest.mark.parametrize(
    "name, must_list",
    [
        ("gym:pusher-v5", ["pusher-v5", "Pusher-v5"]),  # wrong case: the similar ids are suggested
        ("gym:Nope-v0", ["Nope-v0", "gymnasium.registry"]),
        ("mujoco", ["mujoco", "manipulation", "gym:"]),
        ("gym", ["manipulation", "gym:"]),
        ("", ["manipulation", "gym:"]),
    ],
)
def test_make_unknown_env_lists_valid_options(name, must_list):
    """An unknown env or Gymnasium id raises ValueError naming it and saying what is valid."""
    with pytest.raises(ValueError) as info:
        envs.make(name)
    for text in must_list:
        assert text in str(info.value), str(info.value)


@pytest.mark.parametrize("task", ["lift", "Push", "pick"])
def test_make_unknown_task_lists_valid_tasks(task):
    """An unknown task raises ValueError listing reach and push."""
    with pytest.raises(ValueError) as info:
        envs.make("manipulation", task)
    assert "reach" in str(info.value) and "push" in str(info.value)


def test_make_task_with_gym_env_is_refused():
    """--task only applies to the manipulation env."""
    with pytest.raises(ValueError, match="task"):
        envs.make("gym:Pusher-v5", task="push")


@pytest.mark.parametrize("image_size", [0, 4.5])
def test_make_gym_rejects_invalid_image_size(image_size):
    """An invalid image_size is refused up front with a ValueError naming it, as for the manipulation env."""
    with pytest.raises(ValueError, match="image_size"):
        env = envs.make("gym:Pusher-v5", image_size=image_size)
        env.reset(seed=0)
