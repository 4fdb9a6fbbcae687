"""ManipulationEnv through `envs.ENV_IDS` (Manipulation-Reach-v1 / Manipulation-Push-v1: v0 with another
policy camera): API contract, determinism, audio timing, action handling, rewards and rendering."""

import math
import warnings

import gymnasium as gym
import numpy as np
import pytest
from envs_test_helpers import (
    ENV_IDS,
    HOLD,
    NOISE_SIGMA,
    QUIET_XY,
    assert_same_transitions,
    audio_stream,
    chunk_peaks,
    expert_episode,
    noise_rms,
    run_actions,
)
from gymnasium.utils.env_checker import check_env

from envs import manipulation_constants as C
from envs.manipulation_v0 import ManipulationEnv

G = 9.81
CHUNK_S = 0.01


def _fixed_actions(n: int, seed: int = 123) -> list[np.ndarray]:
    """A reproducible action sequence that moves the arm and the gripper."""
    rng = np.random.default_rng(seed)
    return [rng.uniform(-1, 1, 5).astype(np.float32) for _ in range(n)]


# ------------------------------------------------------------------------------------------- check_env
@pytest.mark.parametrize("render_mode", [None, "rgb_array"])
@pytest.mark.parametrize("env_id", sorted(ENV_IDS.values()))
def test_check_env_passes(env_id, render_mode):
    """Gymnasium's env checker accepts every registered id, with and without rgb_array rendering. The only
    warnings tolerated are the (intentional) infinite bounds of the proprioceptive Boxes."""
    env = gym.make(env_id, render_mode=render_mode)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            check_env(env.unwrapped)
    finally:
        env.close()
    unexpected = [str(w.message) for w in caught if "infinity" not in str(w.message)]
    assert not unexpected, f"check_env warned: {unexpected}"


def test_registered_ids_build_the_right_task():
    """`import envs` registers both ids, each building a ManipulationEnv of its own task."""
    for task, env_id in ENV_IDS.items():
        assert env_id in gym.registry
        env = gym.make(env_id, observe_image=False)
        assert isinstance(env.unwrapped, ManipulationEnv)
        assert env.unwrapped.task == task
        env.close()


# ----------------------------------------------------------------------------------------- determinism
@pytest.mark.parametrize("task", ["reach", "push"])
def test_same_seed_gives_bit_identical_trajectory(make_env, task):
    """Two envs reset with the same seed and fed the same actions produce bit-identical observations (image
    and audio included), rewards and infos for 15 steps."""
    actions = _fixed_actions(15)
    a = run_actions(make_env(task), 7, actions)
    b = run_actions(make_env(task), 7, actions)
    assert_same_transitions(a, b)
    # the trajectory is not trivially constant: the arm moved and the camera saw it
    assert not np.array_equal(a[0][0]["joint"], a[-1][0]["joint"])
    assert not np.array_equal(a[0][0]["image"], a[-1][0]["image"])


@pytest.mark.parametrize("task", ["reach", "push"])
def test_reset_fully_restarts_a_used_env(make_env, task):
    """reset(seed) after an arbitrary earlier episode (cube dropped, arm moved, audio ringing) gives exactly
    the trajectory of a fresh env reset with that seed: no state leaks across episodes."""
    actions = _fixed_actions(10, seed=5)
    used = make_env(task)
    run_actions(used, 1, _fixed_actions(12, seed=9), options={"cube_pos": [0.35, 0.0, 0.12]})
    assert_same_transitions(run_actions(used, 4, actions), run_actions(make_env(task), 4, actions))


@pytest.mark.parametrize("task", ["reach", "push"])
def test_different_seeds_sample_different_scenes(make_env, task):
    """Different seeds place the cube and the goal differently."""
    env = make_env(task, observe_image=False, audio=False)
    scenes = []
    for seed in range(6):
        obs, _ = env.reset(seed=seed)
        scenes.append(np.concatenate([obs["object"][:2], obs["goal"]]))
    for i in range(len(scenes)):
        for j in range(i + 1, len(scenes)):
            assert not np.allclose(scenes[i][:2], scenes[j][:2], atol=1e-3), f"seeds {i},{j}: same cube"
            assert not np.allclose(scenes[i][2:], scenes[j][2:], atol=1e-3), f"seeds {i},{j}: same goal"


@pytest.mark.parametrize("task", ["reach", "push"])
def test_sampled_scenes_lie_in_the_documented_regions(make_env, task):
    """Reset samples the cube resting on the table (settled into its soft contact by well under 1 mm) and
    the goal inside the task's documented region."""
    env = make_env(task, observe_image=False, audio=False)
    for seed in range(30):
        obs, info = env.reset(seed=seed)
        cube, goal = obs["object"].astype(float), obs["goal"].astype(float)
        assert cube[2] == pytest.approx(C.CUBE_HALF_M, abs=5e-4)
        assert np.linalg.norm(cube[3:]) == pytest.approx(1.0, abs=1e-5)
        assert C.PUSH_CUBE_RADIUS_M[0] - 1e-4 <= np.hypot(*cube[:2]) <= C.PUSH_CUBE_RADIUS_M[1] + 1e-4
        radius, bearing = np.hypot(*goal[:2]), np.arctan2(goal[1], goal[0])
        if task == "reach":
            assert C.REACH_GOAL_RADIUS_M[0] - 1e-6 <= radius <= C.REACH_GOAL_RADIUS_M[1] + 1e-6
            assert C.REACH_GOAL_BEARING_RAD[0] - 1e-6 <= bearing <= C.REACH_GOAL_BEARING_RAD[1] + 1e-6
            assert C.REACH_GOAL_HEIGHT_M[0] - 1e-6 <= goal[2] <= C.REACH_GOAL_HEIGHT_M[1] + 1e-6
        else:
            assert C.PUSH_GOAL_RADIUS_M[0] - 1e-6 <= radius <= C.PUSH_GOAL_RADIUS_M[1] + 1e-6
            assert C.PUSH_GOAL_BEARING_RAD[0] - 1e-6 <= bearing <= C.PUSH_GOAL_BEARING_RAD[1] + 1e-6
            gap = np.linalg.norm(goal[:2] - cube[:2])
            assert C.PUSH_GOAL_DISTANCE_M[0] - 1e-4 <= gap <= C.PUSH_GOAL_DISTANCE_M[1] + 1e-4
            assert goal[2] == 0.0
        assert not info["is_success"]


def test_reset_options_override_cube_and_goal(make_env):
    """reset(options={"cube_pos", "goal"}) places the cube there (settled onto the table by < 0.5 mm) and the
    goal exactly there; a cube placed in the air is left in the air."""
    env = make_env("push", observe_image=False, audio=False)
    obs, _ = env.reset(seed=0, options={"cube_pos": [0.33, -0.05, 0.025], "goal": [0.4, 0.1, 0.0]})
    np.testing.assert_allclose(obs["object"][:3], [0.33, -0.05, 0.025], atol=5e-4)
    obs, _ = env.reset(seed=0, options={"cube_pos": [0.33, -0.05, 0.1], "goal": [0.4, 0.1, 0.0]})
    np.testing.assert_allclose(obs["object"][:3], [0.33, -0.05, 0.1], atol=1e-7)
    np.testing.assert_allclose(obs["goal"], [0.4, 0.1, 0.0], atol=1e-7)


# ------------------------------------------------------------------------------------- spaces, streams
@pytest.mark.parametrize("task", ["reach", "push"])
def test_observation_shapes_dtypes_and_space(make_env, task):
    """Observations have the documented keys, shapes and dtypes and lie in observation_space."""
    env = make_env(task)
    obs, info = env.reset(seed=0)
    expected = {
        "image": ((64, 64, 3), np.uint8),
        "joint": ((10,), np.float32),
        "ee": ((3,), np.float32),
        "object": ((7,), np.float32),
        "goal": ((3,), np.float32),
        "audio": ((10, 160), np.float32),
    }
    for o in (obs, env.step(env.action_space.sample())[0]):
        assert {k: (v.shape, v.dtype) for k, v in o.items()} == expected
        assert env.observation_space.contains(o)
    assert set(info) >= {"reward_terms", "is_success", "sim_time_s", "action_clipped"}


def test_optional_streams_can_be_turned_off(make_env):
    """observe_image=False / audio=False remove those keys from the observation and its space."""
    env = make_env("push", observe_image=False, audio=False)
    obs, _ = env.reset(seed=0)
    assert set(obs) == {"joint", "ee", "object", "goal"} == set(env.observation_space.spaces)
    assert set(env.step(HOLD)[0]) == set(obs)


@pytest.mark.parametrize("image_size", [8, 32, 96])
def test_image_size_sets_camera_resolution(make_env, image_size):
    """image_size=S gives (S, S, 3) uint8 camera images that show the scene (not a blank frame)."""
    env = make_env("push", image_size=image_size, audio=False)
    obs, _ = env.reset(seed=0)
    assert obs["image"].shape == (image_size, image_size, 3) and obs["image"].dtype == np.uint8
    assert obs["image"].std() > 5


def test_image_shows_the_scene(make_env):
    """The camera image depends on the scene: moving the cube changes it, the same scene gives the same
    image."""
    env = make_env("reach", audio=False)
    a = env.reset(seed=0, options={"cube_pos": [0.30, -0.20, 0.025]})[0]["image"]
    b = env.reset(seed=0, options={"cube_pos": [0.40, 0.20, 0.025]})[0]["image"]
    c = env.reset(seed=0, options={"cube_pos": [0.30, -0.20, 0.025]})[0]["image"]
    assert np.array_equal(a, c)
    assert np.abs(a.astype(int) - b.astype(int)).sum() > 1000


@pytest.mark.parametrize("control_hz, chunks", [(10, 10), (20, 5), (25, 4), (50, 2), (100, 1)])
def test_control_hz_sets_substeps_audio_chunks_and_sim_time(make_env, control_hz, chunks):
    """One step advances 1/control_hz s of simulated time (500/control_hz physics steps) and carries
    exactly that much audio: control_period / 10 ms chunks of 160 samples."""
    env = make_env("push", control_hz=control_hz, observe_image=False)
    obs, info = env.reset(seed=0)
    assert env.unwrapped.n_substeps == 500 // control_hz
    assert env.observation_space["audio"].shape == (chunks, 160)
    assert obs["audio"].shape == (chunks, 160) and info["sim_time_s"] == 0.0
    for k in range(1, 4):
        obs, _, _, _, info = env.step(HOLD)
        assert obs["audio"].shape == (chunks, 160) and obs["audio"].dtype == np.float32
        assert info["sim_time_s"] == pytest.approx(k / control_hz, abs=1e-9)


def test_physics_runs_at_500_hz(make_env):
    """The model's timestep is 2 ms (500 Hz physics), as the audio timing relies on."""
    assert make_env("push", observe_image=False).unwrapped.model.opt.timestep == C.PHYSICS_DT_S == 0.002


@pytest.mark.parametrize("task, steps", [("reach", 50), ("push", 120)])
def test_episode_truncates_at_its_default_length(make_env, task, steps):
    """Episodes truncate exactly when episode_seconds (reach 5 s, push 12 s) of simulated time have passed,
    and not before."""
    env = make_env(task, observe_image=False, audio=False)
    env.reset(seed=0)
    flags = [env.step(HOLD)[3] for _ in range(steps)]
    assert flags == [False] * (steps - 1) + [True]


def test_episode_seconds_and_control_hz_set_the_episode_length(make_env):
    """episode_seconds=1 at 20 Hz truncates at step 20."""
    env = make_env("reach", observe_image=False, audio=False, episode_seconds=1.0, control_hz=20)
    env.reset(seed=0)
    flags = [env.step(HOLD)[3] for _ in range(20)]
    assert flags == [False] * 19 + [True]


def test_push_terminates_when_the_cube_falls_off_the_table(make_env):
    """Push episodes terminate once the cube has fallen off the table; reach episodes never terminate."""
    for task in ("push", "reach"):
        env = make_env(task, observe_image=False, audio=False)
        env.reset(seed=0, options={"cube_pos": [0.3, 0.7, 0.1]})  # beyond the table's edge (|y| <= 0.6)
        terminated = [env.step(HOLD)[2] for _ in range(5)]
        assert any(terminated) == (task == "push")


def test_gripper_opening_observation(make_env):
    """joint[4] is the gripper opening: 2 x 29 mm when open (-1), ~0 when closed (+1); joint[9] its rate."""
    env = make_env("reach", observe_image=False, audio=False)
    obs, _ = env.reset(seed=0)
    assert obs["joint"][4] == pytest.approx(2 * C.FINGER_CLOSED_M, abs=1e-4)
    for _ in range(2):
        obs = env.step(np.array([0, 0, 0, 0, 1.0]))[0]
    assert obs["joint"][9] < 0 or obs["joint"][4] < 1e-3  # closing, or closed already
    for _ in range(6):
        obs = env.step(np.array([0, 0, 0, 0, 1.0]))[0]
    assert obs["joint"][4] == pytest.approx(0.0, abs=1e-3)


# ----------------------------------------------------------------------------------------------- audio
def _drop(make_env, control_hz=10, height=0.02, seed=1, seconds=0.3):
    env = make_env("reach", observe_image=False, control_hz=control_hz)
    obs, _ = env.reset(seed=seed, options={"cube_pos": [*QUIET_XY, C.CUBE_HALF_M + height]})
    assert np.all(obs["audio"] == 0), "reset returns silence: no time has passed yet"
    return audio_stream(env, int(round(seconds * control_hz)))


@pytest.mark.parametrize("control_hz", [10, 20, 50])
def test_cube_drop_is_heard_when_it_lands(make_env, control_hz):
    """A cube released 2 cm above the table is silent while falling and loud (> 50x the noise floor) in the
    10 ms chunk that contains the free-fall time sqrt(2 h / g) ~ 64 ms (+-1 chunk), at any control rate."""
    audio = _drop(make_env, control_hz)
    floor = noise_rms(audio)
    assert 0.5 * NOISE_SIGMA < floor < 2 * NOISE_SIGMA
    peaks = chunk_peaks(audio)
    loud = np.flatnonzero(peaks > 50 * floor)
    assert loud.size, f"no impact heard; chunk peaks {peaks}"
    expected = int(math.sqrt(2 * 0.02 / G) / CHUNK_S)
    assert abs(loud[0] - expected) <= 1, f"first loud chunk {loud[0]}, expected {expected}; peaks {peaks}"
    assert np.all(peaks[: loud[0]] < 8 * floor), f"noise before the impact: {peaks[: loud[0]]}"
    assert np.all(peaks[-5:] < 8 * floor), "the ring decays back to the noise floor"


def test_audio_stream_does_not_depend_on_control_rate(make_env):
    """Holding still, the concatenated audio stream is the same whatever the control rate: chunking is only
    a delivery detail (same seed, same physics)."""
    streams = [_drop(make_env, hz, seconds=0.2) for hz in (10, 20, 50, 100)]
    for s in streams[1:]:
        assert np.array_equal(streams[0], s)


def test_audio_is_deterministic_per_seed_and_noise_differs_across_seeds(make_env):
    """The microphone stream (noise included) is a function of the seed."""
    a, b, c = _drop(make_env, seed=3), _drop(make_env, seed=3), _drop(make_env, seed=4)
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)


def test_higher_drop_is_louder(make_env):
    """Impact loudness grows with the drop height (impulse ~ sqrt(h))."""
    peaks = [chunk_peaks(_drop(make_env, height=h)).max() for h in (0.005, 0.02, 0.06)]
    assert peaks[0] < peaks[1] < peaks[2]


def test_settled_resting_cube_is_quiet(make_env):
    """Once settled, a cube resting still on the table (nothing touching it) makes no sound."""
    env = make_env("push", observe_image=False)
    env.reset(seed=0, options={"cube_pos": [*QUIET_XY, C.CUBE_HALF_M]})
    audio_stream(env, 3)  # settle
    audio = audio_stream(env, 10)
    assert chunk_peaks(audio).max() < 8 * NOISE_SIGMA


@pytest.mark.parametrize("task", ["reach", "push"])
def test_resting_cube_is_quiet_from_the_first_step(make_env, task):
    """A freshly reset episode with the cube resting on the table (the sampled scene) is silent from the first
    chunk on: reset's contacts are the silent baseline, not an impact (contact_audio.py's contract)."""
    env = make_env(task, observe_image=False)
    clicks = {}
    for seed in range(12):
        env.reset(seed=seed)
        peak = chunk_peaks(env.step(HOLD)[0]["audio"]).max()
        if peak > 8 * NOISE_SIGMA:
            clicks[seed] = round(float(peak), 4)
    assert not clicks, f"phantom impact in the first step after reset (seed: peak): {clicks}"


# --------------------------------------------------------------------------------------- configuration
@pytest.mark.parametrize(
    "kwargs, field",
    [
        (dict(control_hz=30), "control_hz"),  # 33.3 ms is not a whole number of 10 ms chunks
        (dict(control_hz=7), "control_hz"),
        (dict(control_hz=1000), "control_hz"),  # 1 ms < one chunk
        (dict(control_hz=0), "control_hz"),
        (dict(control_hz=-10), "control_hz"),
        (dict(control_hz=float("nan")), "control_hz"),
        (dict(control_hz=float("inf")), "control_hz"),
        (dict(task="lift"), "task"),
        (dict(task="Push"), "task"),
        (dict(action_mode="velocity"), "action_mode"),
        (dict(image_size=0), "image_size"),
        (dict(image_size=4), "image_size"),
        (dict(image_size=2048), "image_size"),
        (dict(image_size=64.0), "image_size"),
        (dict(image_size="64"), "image_size"),
        (dict(max_delta_rad=0.0), "max_delta_rad"),
        (dict(max_delta_rad=-0.1), "max_delta_rad"),
        (dict(max_delta_rad=float("nan")), "max_delta_rad"),
        (dict(render_mode="human"), "render_mode"),
    ],
)
def test_invalid_configuration_raises_value_error_naming_the_field(kwargs, field):
    """Invalid constructor arguments raise ValueError naming the offending field (also via gym.make)."""
    with pytest.raises(ValueError, match=field):
        ManipulationEnv(**kwargs)
    if field != "render_mode":  # gym.make itself refuses unknown render modes, with its own error
        with pytest.raises(ValueError, match=field):
            gym.make("Manipulation-Push-v0", **kwargs)


@pytest.mark.parametrize("image_size", [481, 1024])
def test_every_accepted_image_size_renders(image_size):
    """An image_size the validation accepts (8..1024) renders at that size; one the renderer cannot do must
    be refused by a ValueError naming `image_size`, not by an OpenGL-context RuntimeError."""
    try:
        env = ManipulationEnv(task="reach", image_size=image_size, audio=False)
    except ValueError as exc:
        assert "image_size" in str(exc)
        return
    try:
        obs, _ = env.reset(seed=0)
        assert obs["image"].shape == (image_size, image_size, 3)
    finally:
        env.close()


# --------------------------------------------------------------------------------------------- actions
BAD_ACTIONS = [  # the finite entries are non-zero, so a partly applied bad action would show
    pytest.param(np.full(4, 0.5), "shape", id="too-short"),
    pytest.param(np.full(6, 0.5), "shape", id="too-long"),
    pytest.param(np.full((1, 5), 0.5), "shape", id="2d"),
    pytest.param(0.5, "shape", id="scalar"),
    pytest.param(None, "shape", id="none"),
    pytest.param("left", "action", id="string"),
    pytest.param(np.array([0.5, 0.5, np.nan, 0.5, 0.5]), "2", id="nan"),
    pytest.param(np.array([np.inf, 0.5, 0.5, 0.5, 0.5]), "0", id="inf"),
    pytest.param(np.array([0.5, 0.5, 0.5, 0.5, -np.inf]), "4", id="neg-inf"),
]


@pytest.mark.parametrize("bad, must_mention", BAD_ACTIONS)
@pytest.mark.parametrize("bad_at", [0, 3])
def test_bad_action_raises_and_leaves_the_episode_intact(make_env, bad, must_mention, bad_at):
    """An action of the wrong shape or with NaN/inf raises ValueError (saying what is wrong: the shape, or
    the index of the non-finite entry) and changes nothing: the following valid steps give exactly what a
    twin env that never saw the bad action gives (image and audio included)."""
    actions = _fixed_actions(6, seed=11)
    env, twin = make_env("push"), make_env("push")

    def inject(i, e):
        if i == bad_at:
            with pytest.raises(ValueError) as info:
                e.step(bad)
            msg = str(info.value)
            assert must_mention in msg and "action" in msg, msg
            if must_mention == "shape":
                assert "(5,)" in msg, msg
            elif isinstance(bad, np.ndarray):
                assert "finite" in msg, msg

    assert_same_transitions(run_actions(env, 2, actions, before_step=inject), run_actions(twin, 2, actions))


def test_in_range_action_is_not_reported_clipped(make_env):
    """A delta action inside [-1, 1] moves each joint target by a * max_delta_rad and is not clipped."""
    env = make_env("reach", observe_image=False, audio=False)
    env.reset(seed=0)
    before = env.unwrapped.arm_target.copy()
    info = env.step(np.array([0.5, -0.2, 0.0, 1.0, -1.0]))[4]
    assert info["action_clipped"] is False
    np.testing.assert_allclose(env.unwrapped.arm_target - before, np.array([0.5, -0.2, 0.0, 1.0]) * 0.15)


def test_out_of_range_delta_action_is_clipped(make_env):
    """Delta actions beyond [-1, 1] are clipped (target moves at most max_delta_rad) and flagged in info."""
    env = make_env("reach", observe_image=False, audio=False)
    env.reset(seed=0)
    before = env.unwrapped.arm_target.copy()
    obs, reward, _, _, info = env.step(np.array([3.0, -5.0, 0.5, 0.0, 2.0]))
    assert info["action_clipped"] is True
    np.testing.assert_allclose(env.unwrapped.arm_target - before, np.array([1.0, -1.0, 0.5, 0.0]) * 0.15)
    assert env.unwrapped.gripper_command == 1.0
    assert env.observation_space.contains(obs) and math.isfinite(reward)


def test_out_of_range_absolute_action_is_clipped_to_the_joint_range(make_env):
    """Absolute targets beyond a joint's range are clipped to the range and flagged in info."""
    env = make_env("reach", observe_image=False, audio=False, action_mode="absolute")
    env.reset(seed=0)
    u = env.unwrapped
    info = env.step(np.array([10.0, 0.3, -10.0, 0.5, -1.0]))[4]
    assert info["action_clipped"] is True
    np.testing.assert_allclose(u.arm_target, [u.joint_high[0], 0.3, u.joint_low[2], 0.5])


def test_absolute_mode_reaches_the_commanded_joint_targets(make_env):
    """In absolute mode the arm settles at the commanded joint positions (within 1 mrad after 1 s)."""
    env = make_env("reach", observe_image=False, audio=False, action_mode="absolute")
    obs, _ = env.reset(seed=0)
    target = np.array([0.5, 0.1, 1.2, 1.0])
    assert np.abs(obs["joint"][:4] - target).max() > 0.3  # it has somewhere to go
    for _ in range(10):
        obs = env.step(np.append(target, -1.0).astype(np.float32))[0]
    np.testing.assert_allclose(obs["joint"][:4], target, atol=1e-3)
    assert np.abs(obs["joint"][5:9]).max() < 1e-2  # and it is at rest there


def test_delta_mode_holds_still_without_drift(make_env):
    """Zero delta actions keep the arm where it is (targets are relative to the previous target)."""
    env = make_env("reach", observe_image=False, audio=False)
    obs0, _ = env.reset(seed=0)
    for _ in range(20):
        obs = env.step(HOLD)[0]
    np.testing.assert_allclose(obs["joint"][:4], obs0["joint"][:4], atol=1e-4)


# ---------------------------------------------------------------------------------------------- reward
@pytest.mark.parametrize("task", ["reach", "push"])
def test_reward_is_the_sum_of_its_terms(make_env, task):
    """Every step's reward equals the sum of info["reward_terms"], and the success term agrees with
    info["is_success"]."""
    env = make_env(task, observe_image=False, audio=False)
    env.reset(seed=0)
    for action in _fixed_actions(20):
        _, reward, _, _, info = env.step(action)
        terms = info["reward_terms"]
        assert reward == pytest.approx(sum(terms.values()), abs=1e-12)
        assert terms["success"] == float(info["is_success"])
        assert terms["action"] == pytest.approx(-0.01 * float(np.dot(action, action)))


def test_reach_success_when_the_ee_is_at_the_goal(make_env):
    """Reach reports success exactly when the end effector is within 2 cm of the goal: driving there with
    the scripted expert turns it on, and the reward then includes the +1 success term."""
    env = make_env("reach", observe_image=False, audio=False)
    _, transitions = expert_episode(env, seed=0, n_steps=30)
    successes = []
    for obs, _, _, _, info in transitions:
        dist = float(np.linalg.norm(obs["ee"].astype(float) - obs["goal"].astype(float)))
        assert info["is_success"] == (dist < C.REACH_SUCCESS_M) or abs(dist - C.REACH_SUCCESS_M) < 1e-6
        assert info["reward_terms"]["distance"] == pytest.approx(-dist, abs=1e-6)
        assert info["reward_terms"]["success"] == float(info["is_success"])
        successes.append(info["is_success"])
    assert not successes[0] and successes[-1]


def test_success_at_reset_when_the_goal_is_already_met(make_env):
    """A goal placed at the ee (reach) or under the cube (push) counts as success immediately."""
    reach = make_env("reach", observe_image=False, audio=False)
    ee = reach.reset(seed=0)[0]["ee"].astype(float)
    assert reach.reset(seed=0, options={"goal": ee})[1]["is_success"]
    push = make_env("push", observe_image=False, audio=False)
    cube = push.reset(seed=0)[0]["object"][:3].astype(float)
    info = push.reset(seed=0, options={"goal": [cube[0] + 0.01, cube[1], 0.0]})[1]
    assert info["is_success"] and info["reward_terms"]["success"] == 1.0


# ---------------------------------------------------------------------------------------------- render
def test_render_rgb_array(make_env):
    """render_mode="rgb_array" renders a (480, 640, 3) uint8 frame of the scene."""
    env = make_env("push", render_mode="rgb_array", audio=False)
    env.reset(seed=0)
    frame = env.render()
    assert frame.shape == (480, 640, 3) and frame.dtype == np.uint8
    assert frame.std() > 5


def test_render_without_render_mode_returns_none(make_env):
    """Without a render mode, render() returns None."""
    env = make_env("push", audio=False)
    env.reset(seed=0)
    assert env.unwrapped.render() is None


def test_render_size_beyond_the_framebuffer_is_a_clear_error(make_env):
    """A render_size the offscreen framebuffer cannot hold either renders or fails with a ValueError naming
    `render_size`, not with a misleading "could not create an OpenGL context" error."""
    try:
        env = make_env("push", render_mode="rgb_array", audio=False, render_size=(720, 1280))
        env.reset(seed=0)
        frame = env.render()
    except ValueError as exc:
        assert "render_size" in str(exc)
        return
    assert frame.shape == (720, 1280, 3)
