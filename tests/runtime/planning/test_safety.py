"""The safety filter: random, huge and NaN actions never leave the limits; NaN is a protective stop."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from runtime.planning.safety import SafetyFilter, SafetyLimits

LOW = np.array([-2.6, -1.6, -2.4, -1.8, -1.0])
HIGH = np.array([2.6, 1.6, 2.4, 1.8, 1.0])
LIMITS = SafetyLimits(LOW, HIGH, max_velocity=np.full(4, 2.0), max_relative_target=0.3)
DT = 0.1

anything = arrays(np.float64, 5, elements=st.floats(allow_nan=True, allow_infinity=True, width=64))
inside = arrays(np.float64, 4, elements=st.floats(-1.5, 1.5))
sensed = arrays(np.float64, 4, elements=st.floats(allow_nan=True, allow_infinity=True, width=64))


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(anything, inside, sensed, st.booleans()), min_size=1, max_size=20), inside)
def test_no_action_ever_leaves_the_limits(steps, start):
    """Whatever the policy sends and whatever the sensors say (moving, NaN, infinite), the applied action is
    finite, within the position limits, and moves each joint by at most max_velocity * dt from the last one
    (from the measured start for the first); within max_relative_target of a valid measurement whenever
    that is reachable within the velocity limit."""
    safety = SafetyFilter(LIMITS, DT)
    previous = None
    for i, (action, position, garbage, broken) in enumerate(steps):
        measured = start if i == 0 else (garbage if broken else position)
        out = safety.send_action(action, measured)
        assert np.all(np.isfinite(out)) and np.all(out >= LOW) and np.all(out <= HIGH)
        ref = start if previous is None else previous[:4]
        assert np.all(np.abs(out[:4] - ref) <= 2.0 * DT + 1e-9)
        if safety.stopped is None and np.all(np.isfinite(measured)) and np.all(np.abs(ref - measured) <= 0.1):
            assert np.all(np.abs(out[:4] - measured) <= 0.3 + 1e-9)
        previous = out
        if not np.all(np.isfinite(action)):
            assert safety.stopped is not None


def test_nan_is_a_protective_stop_that_holds_until_reset():
    safety = SafetyFilter(LIMITS, DT)
    here = np.zeros(4)
    first = safety.send_action(np.array([0.1, 0.1, 0.1, 0.1, 1.0]), here)
    held = safety.send_action(np.array([np.nan, 0, 0, 0, 0]), here)
    assert safety.stopped and np.array_equal(held, first)
    assert np.array_equal(safety.send_action(np.array([0.2, 0.2, 0.2, 0.2, 0.0]), here), first)  # refused
    assert safety.clamps["refused"] == 2
    safety.reset()
    assert safety.stopped is None
    assert not np.array_equal(safety.send_action(np.array([0.2, 0.2, 0.2, 0.2, 0.0]), here), first)


def test_a_far_target_is_approached_in_bounded_steps():
    safety = SafetyFilter(LIMITS, DT)
    position = np.zeros(4)
    far = np.array([2.0, 0.0, 0.0, 0.0, 0.0])
    path = []
    for _ in range(15):
        out = safety.send_action(far, position)
        position = out[:4].copy()  # the arm follows its command
        path.append(out[0])
    steps = np.diff([0.0, *path])
    assert np.all(steps <= 0.2 + 1e-12) and path[-1] == pytest.approx(2.0)
    assert safety.clamps["velocity"] > 0


def test_bad_limits_are_refused():
    with pytest.raises(ValueError, match="low"):
        SafetyLimits(HIGH, LOW, np.ones(4))
    with pytest.raises(ValueError, match="max_velocity"):
        SafetyLimits(LOW, HIGH, np.ones(3))
