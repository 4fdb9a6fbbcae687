"""Property-based tests (hypothesis) of dynamics shifts and the contact microphone."""

import math

import gymnasium as gym
import numpy as np
import pytest
from envs_test_helpers import (
    HOLD,
    NOISE_SIGMA,
    QUIET_XY,
    assert_same_transitions,
    audio_stream,
    chunk_peaks,
    diff_model_arrays,
    model_arrays,
    run_actions,
)
from hypothesis import given, settings
from hypothesis import strategies as st

from envs import manipulation_constants as C
from envs.dynamics_shift import DynamicsShift

SETTINGS = settings(max_examples=20, deadline=None, database=None)
scales = st.floats(min_value=1e-2, max_value=1e2, allow_nan=False, allow_infinity=False)
shifts = st.builds(
    DynamicsShift,
    cube_mass_scale=scales,
    friction_scale=scales,
    actuator_gain_scale=scales,
    action_sign=st.tuples(*[st.sampled_from([-1.0, 1.0])] * 4),
)
ACTIONS = [np.array([0.7, -0.5, 0.6, 0.4, 1.0])] * 3 + [np.array([-0.6, 0.4, -0.3, -0.5, -1.0])] * 2


@SETTINGS
@given(shift=shifts, steps_under_shift=st.integers(0, 4), seed=st.integers(0, 2**16))
def test_any_shift_then_revert_is_the_nominal_world(shift, steps_under_shift, seed):
    """For any valid shift, acting under it for a while and then reverting restores every model array
    bit-exactly, and the next episode is bit-identical to one in a world that was never shifted."""
    env = gym.make("Manipulation-Push-v0", observe_image=False)
    twin = gym.make("Manipulation-Push-v0", observe_image=False)
    try:
        env.reset(seed=seed)
        nominal = model_arrays(env.unwrapped.model)
        env.unwrapped.apply_shift(shift)
        for action in ACTIONS[:steps_under_shift]:
            env.step(action)
        env.unwrapped.revert_shift()
        assert diff_model_arrays(nominal, env.unwrapped.model) == []
        assert_same_transitions(run_actions(env, seed, ACTIONS), run_actions(twin, seed, ACTIONS))
    finally:
        env.close()
        twin.close()


@SETTINGS
@given(
    field=st.sampled_from(["cube_mass_scale", "friction_scale", "actuator_gain_scale"]),
    value=st.one_of(st.floats(max_value=0.0), st.sampled_from([math.nan, math.inf, -math.inf])),
)
def test_any_non_positive_or_non_finite_scale_is_rejected(field, value):
    """Every scale that is <= 0, NaN or infinite is refused with a ValueError naming the field."""
    with pytest.raises(ValueError, match=field):
        DynamicsShift(**{field: value})


@SETTINGS
@given(sign=st.tuples(*[st.floats()] * 4).filter(lambda s: any(v not in (-1.0, 1.0) for v in s)))
def test_any_action_sign_other_than_plus_minus_one_is_rejected(sign):
    """An action_sign entry other than +1/-1 is refused."""
    with pytest.raises(ValueError, match="action_sign"):
        DynamicsShift(action_sign=sign)


def _drop_audio(height: float, seed: int, control_hz: float = 10, seconds: float = 0.2) -> np.ndarray:
    env = gym.make("Manipulation-Reach-v0", observe_image=False, control_hz=control_hz)
    try:
        env.reset(seed=seed, options={"cube_pos": [*QUIET_XY, C.CUBE_HALF_M + height]})
        return audio_stream(env, int(round(seconds * control_hz)), HOLD)
    finally:
        env.close()


@SETTINGS
@given(height=st.floats(min_value=0.003, max_value=0.08), seed=st.integers(0, 2**16))
def test_drop_is_heard_at_the_free_fall_time(height, seed):
    """For any drop height, the microphone is at its noise floor until the cube lands, and the first loud
    chunk (> 50x noise) is the 10 ms chunk containing sqrt(2 h / g) (+-1)."""
    audio = _drop_audio(height, seed)
    peaks = chunk_peaks(audio)
    loud = np.flatnonzero(peaks > 50 * NOISE_SIGMA)
    expected = int(math.sqrt(2 * height / 9.81) / 0.01)
    assert loud.size and abs(loud[0] - expected) <= 1, (expected, peaks.round(4))
    assert np.all(peaks[: loud[0]] < 8 * NOISE_SIGMA), peaks.round(4)


@SETTINGS
@given(
    low=st.floats(min_value=0.003, max_value=0.04),
    ratio=st.floats(min_value=1.5, max_value=3.0),
    seed=st.integers(0, 2**16),
)
def test_higher_drops_are_louder(low, ratio, seed):
    """Dropping from a clearly higher point (>= 1.5x) gives a louder impact."""
    assert chunk_peaks(_drop_audio(low * ratio, seed)).max() > chunk_peaks(_drop_audio(low, seed)).max()


@SETTINGS
@given(
    control_hz=st.sampled_from([10, 20, 25, 50]),
    height=st.floats(min_value=0.003, max_value=0.05),
    seed=st.integers(0, 2**16),
)
def test_audio_stream_is_independent_of_chunk_delivery(control_hz, height, seed):
    """The concatenated audio stream of the same physics (same seed, holding still) is bit-identical whether
    delivered in 1 chunk per step (100 Hz) or in 100/control_hz chunks per step."""
    reference = _drop_audio(height, seed, control_hz=100)
    stream = _drop_audio(height, seed, control_hz=control_hz)
    assert np.array_equal(stream, reference[: len(stream)])
