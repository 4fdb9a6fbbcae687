"""Manipulation-*-v1: v0 with the policy camera on the workspace; v0 itself unchanged."""

import gymnasium as gym
import numpy as np
import pytest

import envs


def _cube_pixels(image: np.ndarray) -> int:
    """Pixels of the red cube material (0.85, 0.20, 0.15) under the scene's lighting."""
    r, g, b = (image[..., i].astype(int) for i in range(3))
    return int(((r > 150) & (g < 90) & (b < 90)).sum())


@pytest.mark.parametrize("task", ["reach", "push"])
def test_v1_is_what_make_builds(task):
    """`envs.make` builds the v1 ids; v0 stays registered for anyone who pinned it."""
    env = envs.make("manipulation", task)
    try:
        assert env.spec.id == f"Manipulation-{task.capitalize()}-v1"
        assert f"Manipulation-{task.capitalize()}-v0" in gym.registry
    finally:
        env.close()


def test_v1_sees_the_cube_larger_with_the_same_dynamics():
    """Same seed, same actions: v1's frame shows the cube over at least twice v0's pixels, and every other
    observation, the rewards and the flags are bit-identical over an episode's first steps (only the camera
    moved)."""
    v0, v1 = gym.make("Manipulation-Push-v0"), gym.make("Manipulation-Push-v1")
    try:
        for seed in range(3):
            o0, _ = v0.reset(seed=seed)
            o1, _ = v1.reset(seed=seed)
            assert _cube_pixels(o1["image"]) >= 2 * max(1, _cube_pixels(o0["image"]))
            actions = np.random.default_rng(seed).uniform(-1, 1, (15, 5)).astype(np.float32)
            for i, action in enumerate(actions):
                for key in ("joint", "ee", "object", "goal", "audio"):
                    np.testing.assert_array_equal(o0[key], o1[key], err_msg=f"seed {seed} step {i} {key}")
                o0, r0, term0, trunc0, _ = v0.step(action)
                o1, r1, term1, trunc1, _ = v1.step(action)
                assert (r0, term0, trunc0) == (r1, term1, trunc1)
    finally:
        v0.close()
        v1.close()


def test_unknown_camera_is_refused_naming_the_field():
    with pytest.raises(ValueError, match="`camera` must be one of"):
        gym.make("Manipulation-Push-v1", camera="nope")
