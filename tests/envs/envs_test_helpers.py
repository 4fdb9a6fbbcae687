"""Helpers shared by the tests in tests/envs (imported as a plain module; see conftest.py)."""

import numpy as np

import envs  # noqa: F401  (registers the Manipulation-* ids and picks a headless MUJOCO_GL)

ENV_IDS = envs.ENV_IDS
QUIET_XY = (0.35, 0.20)  # a table spot away from the arm's home pose: nothing touches a cube here
NOISE_SIGMA = 2e-4  # ContactMicrophone's default noise floor (standard deviation)


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
    return [
        name
        for name, value in expected.items()
        if value.shape != now[name].shape or not np.array_equal(value, now[name], equal_nan=True)
    ]


HOLD = np.zeros(5, np.float32)  # delta mode: keep every joint target where it is


def audio_stream(env, n_steps: int, action=HOLD) -> np.ndarray:
    """Concatenated contact-microphone chunks of `n_steps` control steps, shape (chunks, 160)."""
    return np.concatenate([env.step(action)[0]["audio"] for _ in range(n_steps)])


def chunk_peaks(audio: np.ndarray) -> np.ndarray:
    return np.abs(audio).max(axis=1)


def noise_rms(audio: np.ndarray) -> float:
    """The stream's noise floor: the median over chunks of each chunk's RMS (most chunks are silent)."""
    return float(np.median(np.sqrt(np.mean(audio.astype(np.float64) ** 2, axis=1))))


def expert_episode(env, seed: int, n_steps: int | None = None, before_step=None):
    """Drive `env` with a fresh ScriptedExpert from reset(seed); returns (actions, transitions) as in
    `run_actions`. Stops at termination/truncation or after `n_steps`."""
    from envs.expert import ScriptedExpert

    expert = ScriptedExpert(env)
    obs, info = env.reset(seed=seed)
    transitions, actions = [(obs, None, False, False, info)], []
    i = 0
    while n_steps is None or i < n_steps:
        if before_step is not None:
            before_step(i, env)
        action = expert.act(obs)
        actions.append(action)
        step = env.step(action)
        transitions.append(step)
        obs = step[0]
        i += 1
        if step[2] or step[3]:
            break
    return actions, transitions
