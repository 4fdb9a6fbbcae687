"""Dynamics shifts (envs/dynamics_shift.py): each one changes the world measurably, applies mid-episode,
reverts exactly, and DynamicsShift refuses invalid values."""

import math

import gymnasium as gym
import mujoco
import numpy as np
import pytest
from envs_test_helpers import (
    HOLD,
    assert_same_transitions,
    diff_model_arrays,
    expert_episode,
    model_arrays,
    run_actions,
)

from envs import manipulation_constants as C
from envs.dynamics_shift import DynamicsShift

PUSH_SEED = 3
SHIFTS = {
    "mass_x3": DynamicsShift(cube_mass_scale=3.0),
    "friction_x0.3": DynamicsShift(friction_scale=0.3),
    "gain_x0.3": DynamicsShift(actuator_gain_scale=0.3),
    "flip_elbow": DynamicsShift(action_sign=(1.0, 1.0, -1.0, 1.0)),
}
TOUCHED = (
    "body_mass",
    "body_inertia",
    "geom_friction",
    "actuator_gainprm",
    "actuator_biasprm",
    "actuator_forcerange",
)


@pytest.fixture(scope="module")
def nominal_push():
    """The scripted expert's actions on push (seed PUSH_SEED, 40 steps: it reaches the cube and pushes it),
    and the nominal cube and joint trajectories they produce."""
    env = gym.make("Manipulation-Push-v0", observe_image=False, audio=False)
    actions, transitions = expert_episode(env, PUSH_SEED, n_steps=40)
    env.close()
    cube = np.array([t[0]["object"][:3] for t in transitions], float)
    assert np.linalg.norm(cube[-1, :2] - cube[0, :2]) > 0.03, "the nominal run must push the cube"
    return actions, transitions


def _replay(env, actions, shift=None, at=0):
    def before(i, e):
        if shift is not None and i == at:
            e.unwrapped.apply_shift(shift)

    return run_actions(env, PUSH_SEED, actions, before_step=before)


def _track(transitions, key, cols=slice(None)):
    return np.array([t[0][key][cols] for t in transitions], float)


@pytest.mark.parametrize("name", ["mass_x3", "friction_x0.3"])
def test_object_shifts_change_the_pushed_cube_trajectory(make_env, nominal_push, name):
    """A heavier cube or lower friction changes where the cube goes when the nominal run's actions (the
    expert pushing it) are replayed, by more than 2 mm somewhere along the way."""
    actions, nominal = nominal_push
    shifted = _replay(make_env("push", observe_image=False, audio=False), actions, SHIFTS[name])
    gap = np.abs(_track(shifted, "object", slice(0, 3)) - _track(nominal, "object", slice(0, 3))).max()
    assert gap > 2e-3, f"{name}: cube trajectory moved by only {gap * 1e3:.2f} mm"


def test_weaker_servos_lag_behind_a_step_command(make_env):
    """actuator_gain_scale=0.3 makes every arm joint respond more slowly to a step in its absolute target:
    40 ms after the command each joint has covered a clearly smaller fraction of the way (>= 5 points)."""
    progress = {}
    for gain in (1.0, 0.3):
        env = make_env("push", observe_image=False, audio=False, action_mode="absolute", control_hz=50)
        obs, _ = env.reset(seed=0)
        env.unwrapped.apply_shift(DynamicsShift(actuator_gain_scale=gain))
        start = obs["joint"][:4].astype(float)
        target = start + np.array([0.6, -0.3, 0.3, -0.4])
        for _ in range(2):
            obs = env.step(np.append(target, 1.0))[0]
        progress[gain] = (obs["joint"][:4] - start) / (target - start)
    assert np.all(progress[0.3] < progress[1.0] - 0.05), progress


@pytest.mark.parametrize("joint", range(4))
def test_action_sign_flip_reverses_that_joint_only(make_env, joint):
    """action_sign -1 on one joint makes a positive delta command move that joint the other way (by the
    same amount), while the other joints' targets are unaffected."""
    sign = [1.0] * 4
    sign[joint] = -1.0
    action = np.array([0.8, 0.8, 0.8, 0.8, 1.0])
    moved = {}
    for flip in (False, True):
        env = make_env("push", observe_image=False, audio=False)
        obs0, _ = env.reset(seed=0, options={"cube_pos": [0.35, 0.2, C.CUBE_HALF_M]})
        if flip:
            env.unwrapped.apply_shift(DynamicsShift(action_sign=tuple(sign)))
        for _ in range(3):
            obs = env.step(action)[0]
        moved[flip] = (obs["joint"][:4] - obs0["joint"][:4]).astype(float)
        targets = env.unwrapped.arm_target - np.array(C.HOME_ARM_QPOS)
        expected = np.full(4, 3 * 0.8 * 0.15)
        if flip:
            expected[joint] *= -1
        np.testing.assert_allclose(targets, expected, atol=1e-9)
    assert moved[False][joint] > 0.2 and moved[True][joint] < -0.2, moved


def test_action_sign_flip_mirrors_absolute_targets(make_env):
    """In absolute mode a flipped joint goes to the mirrored target (-q)."""
    env = make_env("reach", observe_image=False, audio=False, action_mode="absolute")
    env.reset(seed=0)
    env.unwrapped.apply_shift(DynamicsShift(action_sign=(-1.0, 1.0, 1.0, 1.0)))
    for _ in range(10):
        obs = env.step(np.array([0.5, 0.4, 1.4, 1.2, -1.0]))[0]
    np.testing.assert_allclose(obs["joint"][:4], [-0.5, 0.4, 1.4, 1.2], atol=2e-3)


def test_shifts_scale_the_documented_parameters(make_env):
    """Each shift scales exactly its documented parameters, at once: the cube's mass and inertia (no other
    body), every geom's friction, the arm servos' stiffness, damping and force limit (not the fingers');
    action_sign leaves the model alone and acts on commands."""
    env = make_env("push", observe_image=False, audio=False)
    env.reset(seed=0)
    u = env.unwrapped
    m = u.model
    nom = model_arrays(m)
    cube = m.body(C.CUBE_BODY).id
    arm = [m.actuator(a).id for a in C.ARM_ACTUATORS]
    fingers = [m.actuator(a).id for a in C.FINGER_ACTUATORS]

    u.apply_shift(DynamicsShift(cube_mass_scale=3.0))
    np.testing.assert_allclose(m.body_mass[cube], 3 * nom["body_mass"][cube], rtol=1e-12)
    np.testing.assert_allclose(m.body_inertia[cube], 3 * nom["body_inertia"][cube], rtol=1e-12)
    others = np.arange(m.nbody) != cube
    np.testing.assert_array_equal(m.body_mass[others], nom["body_mass"][others])

    u.apply_shift(DynamicsShift(friction_scale=0.3))
    np.testing.assert_array_equal(m.body_mass, nom["body_mass"])  # a new shift replaces the previous one
    np.testing.assert_allclose(m.geom_friction, 0.3 * nom["geom_friction"], rtol=1e-12)

    u.apply_shift(DynamicsShift(actuator_gain_scale=0.3))
    np.testing.assert_array_equal(m.geom_friction, nom["geom_friction"])
    np.testing.assert_allclose(m.actuator_gainprm[arm, 0], 0.3 * nom["actuator_gainprm"][arm, 0], rtol=1e-12)
    np.testing.assert_allclose(
        m.actuator_biasprm[arm, 1:3], 0.3 * nom["actuator_biasprm"][arm, 1:3], rtol=1e-12
    )
    np.testing.assert_allclose(m.actuator_forcerange[arm], 0.3 * nom["actuator_forcerange"][arm], rtol=1e-12)
    for field in ("actuator_gainprm", "actuator_biasprm", "actuator_forcerange"):
        np.testing.assert_array_equal(getattr(m, field)[fingers], nom[field][fingers], err_msg=field)

    u.apply_shift(DynamicsShift(action_sign=(1.0, 1.0, -1.0, 1.0)))
    assert diff_model_arrays(nom, m) == []
    np.testing.assert_array_equal(u.shifts.action_sign, [1, 1, -1, 1])


@pytest.mark.parametrize("name", list(SHIFTS))
def test_revert_restores_every_model_array_bit_exactly(make_env, name):
    """apply_shift, some physics, then revert_shift leaves every array of the MjModel bit-identical to the
    nominal model, which itself equals a freshly compiled one in the touched arrays."""
    env = make_env("push", observe_image=False, audio=False)
    env.reset(seed=0)
    model = env.unwrapped.model
    nominal = model_arrays(model)
    fresh = mujoco.MjModel.from_xml_path(str(C.XML_PATH))
    for field in TOUCHED:
        np.testing.assert_array_equal(getattr(model, field), getattr(fresh, field), err_msg=field)
    env.unwrapped.apply_shift(SHIFTS[name])
    for _ in range(3):
        env.step(np.array([0.5, -0.5, 0.5, 0.5, 1.0]))
    env.unwrapped.revert_shift()
    assert diff_model_arrays(nominal, model) == []
    np.testing.assert_array_equal(env.unwrapped.shifts.action_sign, [1, 1, 1, 1])


def test_stacked_shifts_revert_to_nominal(make_env):
    """Applying several shifts in a row (each replaces the previous) and then reverting once restores the
    nominal model; re-applying the same shift gives the same arrays (no compounding)."""
    env = make_env("push", observe_image=False, audio=False)
    env.reset(seed=0)
    model = env.unwrapped.model
    nominal = model_arrays(model)
    env.unwrapped.apply_shift(SHIFTS["mass_x3"])
    once = model_arrays(model)
    env.unwrapped.apply_shift(SHIFTS["friction_x0.3"])
    env.unwrapped.apply_shift(SHIFTS["mass_x3"])
    assert diff_model_arrays(once, model) == []
    env.unwrapped.apply_shift(SHIFTS["gain_x0.3"])
    env.unwrapped.revert_shift()
    assert diff_model_arrays(nominal, model) == []


@pytest.mark.parametrize("name", list(SHIFTS))
def test_trajectory_after_apply_and_revert_equals_nominal(make_env, name):
    """A shift applied and reverted before acting leaves no trace: the episode is bit-identical to one that
    never saw it (image and audio included)."""
    actions = [np.array([0.6, -0.4, 0.7, 0.3, 1.0])] * 4 + [np.array([-0.5, 0.5, -0.2, 0.0, -1.0])] * 4

    def shift_and_revert(i, env):
        if i == 0:
            env.unwrapped.apply_shift(SHIFTS[name])
            env.unwrapped.revert_shift()

    shifted = run_actions(make_env("push"), 5, actions, before_step=shift_and_revert)
    assert_same_transitions(shifted, run_actions(make_env("push"), 5, actions))


@pytest.mark.parametrize("name", list(SHIFTS))
def test_shift_applies_mid_episode_without_reset(make_env, nominal_push, name):
    """A shift applied mid-episode keeps the episode going (same state, same clock) and changes what happens
    from then on; before it, the run is identical to the nominal one."""
    actions, nominal = nominal_push
    at = 6  # the expert reaches the cube around here and then pushes it
    env = make_env("push", observe_image=False, audio=False)
    state = {}

    def before(i, e):
        if i == at:
            d = e.unwrapped.data
            state["before"] = (d.time, d.qpos.copy(), d.qvel.copy())
            e.unwrapped.apply_shift(SHIFTS[name])
            state["after"] = (d.time, d.qpos.copy(), d.qvel.copy())

    shifted = run_actions(env, PUSH_SEED, actions, before_step=before)
    t0, q0, v0 = state["before"]
    t1, q1, v1 = state["after"]
    assert t0 == t1 == pytest.approx(at / 10) and np.array_equal(q0, q1) and np.array_equal(v0, v1)
    assert_same_transitions(shifted[: at + 1], nominal[: at + 1])
    assert shifted[at + 1][4]["sim_time_s"] == pytest.approx((at + 1) / 10)  # the clock just goes on
    after = lambda tr: np.hstack([_track(tr, "joint"), _track(tr, "object")])[at + 1 :]  # noqa: E731
    gap = np.abs(after(shifted) - after(nominal)).max()
    assert gap > 1e-3, f"{name} applied mid-episode changed nothing measurable (max gap {gap})"


@pytest.mark.parametrize("name", ["mass_x3", "friction_x0.3", "gain_x0.3"])
def test_shifted_world_stays_physically_plausible(make_env, name):
    """With a shift applied, the expert pushing the cube still produces sane physics: the cube never moves
    faster than 1 m/s (the hand moves at <= 0.4 m/s; nominal pushes stay under 0.3 m/s) and stays on the
    table. A heavier cube must not be launched by the fingers."""
    env = make_env("push", observe_image=False, audio=False)
    u = env.unwrapped
    v = u._cube_qvel
    for seed in range(3):
        worst = {"speed": 0.0}

        def before(i, e, worst=worst):
            if i == 0:
                e.unwrapped.apply_shift(SHIFTS[name])
            worst["speed"] = max(worst["speed"], float(np.linalg.norm(u.data.qvel[v : v + 3])))

        _, transitions = expert_episode(env, seed, n_steps=60, before_step=before)
        u.revert_shift()
        terminated = any(t[2] for t in transitions)
        assert worst["speed"] < 1.0 and not terminated, (
            f"{name}, seed {seed}: cube reached {worst['speed']:.1f} m/s, fell off the table: {terminated}"
        )


def test_reset_keeps_the_shift_until_reverted(make_env):
    """A shift survives reset (it is a property of the world, not of the episode) until revert_shift."""
    env = make_env("push", observe_image=False, audio=False)
    env.reset(seed=0)
    env.unwrapped.apply_shift(SHIFTS["friction_x0.3"])
    env.reset(seed=1)
    cube_geom = env.unwrapped.model.geom("cube").id
    assert env.unwrapped.model.geom_friction[cube_geom, 0] == pytest.approx(0.6 * 0.3)
    env.unwrapped.revert_shift()
    assert env.unwrapped.model.geom_friction[cube_geom, 0] == 0.6


# ------------------------------------------------------------------------------------------ validation
@pytest.mark.parametrize("field", ["cube_mass_scale", "friction_scale", "actuator_gain_scale"])
@pytest.mark.parametrize("value", [0.0, -1.0, -0.0, math.nan, math.inf, -math.inf])
def test_invalid_scale_is_rejected(field, value):
    """Scales must be finite and > 0: anything else raises ValueError naming the field."""
    with pytest.raises(ValueError, match=field):
        DynamicsShift(**{field: value})


@pytest.mark.parametrize(
    "sign", [(1, 1, 0.5, 1), (1, 0, 1, 1), (2, 1, 1, 1), (1, 1, 1, math.nan), (-0.5,) * 4]
)
def test_invalid_action_sign_is_rejected(sign):
    """action_sign entries must be exactly +1 or -1."""
    with pytest.raises(ValueError, match="action_sign"):
        DynamicsShift(action_sign=sign)


def test_wrong_length_action_sign_is_refused_without_touching_the_model(make_env):
    """An action_sign with the wrong number of joints is refused at apply time, before anything changes."""
    env = make_env("push", observe_image=False, audio=False)
    env.reset(seed=0)
    before = model_arrays(env.unwrapped.model)
    with pytest.raises(ValueError, match="action_sign"):
        env.unwrapped.apply_shift(DynamicsShift(cube_mass_scale=2.0, action_sign=(1.0, -1.0)))
    assert diff_model_arrays(before, env.unwrapped.model) == []
    np.testing.assert_array_equal(env.unwrapped.shifts.action_sign, [1, 1, 1, 1])
    env.step(HOLD)  # still usable


def test_default_shift_is_the_nominal_world(make_env):
    """DynamicsShift() changes nothing."""
    env = make_env("push", observe_image=False, audio=False)
    env.reset(seed=0)
    before = model_arrays(env.unwrapped.model)
    env.unwrapped.apply_shift(DynamicsShift())
    assert diff_model_arrays(before, env.unwrapped.model) == []
