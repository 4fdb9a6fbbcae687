"""Shared helpers for the simulated-world tests (envs/)."""

import gymnasium as gym
import numpy as np
import pytest

import envs  # noqa: F401  (registers the Manipulation-* ids and picks a headless MUJOCO_GL)

ENV_IDS = {"reach": "Manipulation-Reach-v0", "push": "Manipulation-Push-v0"}
QUIET = (0.35, 0.20)  # a table spot well away from the arm's home pose and its reach while holding still


@pytest.fixture
def make_env():
    """Factory `make_env(task, **kwargs)` -> `gym.make` of that task's id; every env is closed afterwards."""
    made = []

    def _make(task: str = "push", **kwargs):
        env = gym.make(ENV_IDS[task], **kwargs)
        made.append(env)
        return env

    yield _make
    for env in made:
        env.close()


def run_actions(env, seed, actions, options=None, before_step=None):
    """Reset with `seed` and play `actions`; returns the list of (obs, reward, terminated, truncated, info),
    the reset's (obs, info) first with reward None. `before_step(i, env)` runs before action i."""
    obs, info = env.reset(seed=seed, options=options)
    out = [(obs, None, False, False, info)]
    for i, action in enumerate(actions):
        if before_step is not None:
            before_step(i, env)
        out.append(env.step(action))
    return out


def assert_same_transitions(a, b):
    """Bit-identical observations (every key), rewards, flags and infos."""
    assert len(a) == len(b)
    for i, ((oa, ra, ta, tra, ia), (ob, rb, tb, trb, ib)) in enumerate(zip(a, b, strict=True)):
        assert oa.keys() == ob.keys(), f"step {i}: observation keys differ"
        for key in oa:
            assert oa[key].dtype == ob[key].dtype, f"step {i}: dtype of {key!r} differs"
            assert np.array_equal(oa[key], ob[key]), f"step {i}: observation {key!r} differs"
        assert ra == rb, f"step {i}: reward {ra} != {rb}"
        assert (ta, tra) == (tb, trb), f"step {i}: terminated/truncated differ"
        assert ia == ib, f"step {i}: info differs: {ia} != {ib}"


def model_arrays(model) -> dict[str, np.ndarray]:
    """Copies of every numpy array field of an MjModel (masses, friction, actuator parameters, the
    derived constants such as body_invweight0, ...)."""
    arrays = {}
    for name in dir(model):
        if name.startswith("_"):
            continue
        try:
            value = getattr(model, name)
        except Exception:  # noqa: BLE001 (some accessors need arguments or are not fields)
            continue
        if isinstance(value, np.ndarray):
            arrays[name] = value.copy()
    return arrays


def diff_model_arrays(expected: dict[str, np.ndarray], model) -> list[str]:
    """Names of the arrays of `model` that are not bit-identical to `expected`."""
    now = model_arrays(model)
    return [name for name, value in expected.items()
            if value.shape != now[name].shape or not np.array_equal(value, now[name], equal_nan=True)]
