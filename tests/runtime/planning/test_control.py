"""The closed loop through the world model: a short reach episode driven by latent MPC runs end to end,
every applied action within the safety limits, toward a joint goal (with integral action) or a goal image."""

import numpy as np
import pytest
import torch

from envs import manipulation_constants as C
from envs.expert import HOVER_Z_M
from runtime.planning.control import (
    ARRIVED_M,
    GRIPPER,
    INTEGRAL_LIMIT_RAD,
    PUSH_STYLE,
    RESUME_M,
    STEP_RAD,
    MPCController,
)
from runtime.planning.mpc import PlannerConfig
from runtime.world_model import checkpoint
from runtime.world_model.data import CollectConfig, collect_episode


@pytest.mark.parametrize("goal", ["joint", "image"])
def test_mpc_drives_an_episode_within_the_safety_limits(goal):
    model, _ = checkpoint.load(checkpoint.DEFAULT_CHECKPOINT)
    planner = PlannerConfig(candidates=32, horizon=4, iterations=2, elites=4, smoothness=0.5)
    controller = MPCController(model, planner, goal=goal)
    episode = collect_episode(CollectConfig(task="reach", episode_seconds=1.5), seed=7, controller=controller)
    actions = episode["action"]
    low, high = controller.low.numpy(), controller.high.numpy()
    assert np.all(np.isfinite(actions)) and np.all(actions >= low - 1e-6) and np.all(actions <= high + 1e-6)
    steps = np.abs(np.diff(actions[:, :4], axis=0))
    assert steps.max() <= STEP_RAD + 1e-5  # no target jumps, whatever the plan wanted
    assert len(controller.plan_ms) >= 10 and controller.safety.stopped is None
    if goal == "image":
        goal_q = controller.cost.goal_q
        assert goal_q.shape == (model.cfg.d_latent,) and torch.isfinite(goal_q).all()
    else:  # the IK configuration of the goal, moved by a bounded integral of the joint error
        assert controller.goal_joints.shape == (4,) and torch.isfinite(controller.cost.goal).all()
        assert (controller.cost.goal - controller.goal_joints).abs().max() <= INTEGRAL_LIMIT_RAD + 1e-6


def test_integral_action_moves_the_goal_against_a_steady_offset_and_is_bounded():
    """The arm settles 0.05 rad short on joint 0: the goal the plans aim at moves beyond it, step by step,
    never by more than the limit; an unknown goal kind is refused."""
    model, _ = checkpoint.load(checkpoint.DEFAULT_CHECKPOINT)
    controller = MPCController(model)
    controller.goal_joints = torch.tensor([0.5, 0.2, 1.0, 0.8])
    controller.integral = torch.zeros(4)
    controller.cost = type("Cost", (), {"goal": controller.goal_joints.clone()})()
    short = controller.goal_joints.numpy() - np.array([0.05, 0.0, 0.0, 0.0])
    moved = []
    for _ in range(60):
        controller._integrate(short)
        moved.append(float(controller.cost.goal[0] - controller.goal_joints[0]))
    assert moved[0] == pytest.approx(0.01) and moved[1] == pytest.approx(0.02)
    assert moved[-1] == pytest.approx(INTEGRAL_LIMIT_RAD)
    assert torch.equal(controller.cost.goal[1:], controller.goal_joints[1:])
    with pytest.raises(ValueError, match="goal"):
        MPCController(model, goal="end-effector-ish")


def test_search_ahead_refines_the_next_plan_between_control_steps():
    """With `search_ahead`, the ticks between control steps each run one search iteration on the next plan
    (two of three ticks at 10 Hz control, 30 Hz ticks), and the episode stays within the limits."""
    model, _ = checkpoint.load(checkpoint.DEFAULT_CHECKPOINT)
    planner = PlannerConfig(candidates=32, horizon=4, iterations=1, elites=4, smoothness=0.5)
    controller = MPCController(model, planner, search_ahead=True)
    refined = []
    controller.refine = lambda z, iterations=1: refined.append(z.shape) or 0.0
    episode = collect_episode(CollectConfig(task="reach", episode_seconds=1.5), seed=7, controller=controller)
    plans = len(controller.plan_ms)
    assert plans >= 10 and 1.5 * plans <= len(refined) <= 2 * plans, (plans, len(refined))
    assert np.all(np.isfinite(episode["action"])) and controller.safety.stopped is None


def test_a_push_follows_the_experts_waypoints():
    """On push, the joint goal the plans reach is the inverse kinematics of the expert's current waypoint: at
    the first planned action, the hand over the approach point behind the cube, at hover height."""
    import mujoco  # after envs, which picks the headless GL backend

    model, _ = checkpoint.load(checkpoint.DEFAULT_CHECKPOINT)
    planner = PlannerConfig(candidates=32, horizon=4, iterations=1, elites=4, smoothness=0.5)
    controller = MPCController(model, planner)
    goals, act = [], controller.act

    def recording(state, *args, **kw):
        action = act(state, *args, **kw)
        goals.append((controller.goal_joints.clone(), state["object"][:2].copy(), state["goal"][:2].copy()))
        return action

    controller.act = recording
    episode = collect_episode(CollectConfig(task="push", episode_seconds=1.0), seed=3, controller=controller)
    assert controller.pusher is not None and len(goals) >= 8
    assert np.all(episode["action"][:, -1] == GRIPPER["push"])  # the gripper closed, never searched over
    base = controller.base
    joints, cube, goal = goals[1]  # the first action holds the arm: no tick, no belief yet
    data = mujoco.MjData(base.model)
    data.qpos[base._arm_qpos] = joints.numpy()
    mujoco.mj_kinematics(base.model, data)
    hand = data.site_xpos[base.model.site(C.EE_SITE).id]
    u = (goal - cube) / np.linalg.norm(goal - cube)
    assert hand[2] == pytest.approx(HOVER_Z_M, abs=0.01)
    assert hand[:2] == pytest.approx(cube - u * PUSH_STYLE.descend_offset, abs=0.01)


def _controller_on(task: str):
    """A small planner's controller reset on a fresh episode (seed 0) of `task`: (model, controller, env)."""
    import envs

    model, _ = checkpoint.load(checkpoint.DEFAULT_CHECKPOINT)
    controller = MPCController(model, PlannerConfig(candidates=32, horizon=4, iterations=1, elites=4))
    env = envs.make("manipulation", task, image_size=64, audio=False, action_mode="absolute")
    env.reset(seed=0)
    controller.reset(env)
    return model, controller, env


def test_a_done_push_stops_the_arm_where_it_is_and_backs_off():
    """The cube within `PUSH_STYLE.done_tol` of the goal: the push is done, the integral (wound up against
    the cube) is dropped and the next plans start from the measured joints, toward the hand backed off."""
    model, controller, env = _controller_on("push")
    try:
        state = env.unwrapped.state()
        goal = np.asarray(state["goal"][:2], float)
        near = {**state, "object": np.array([goal[0] - 0.01, goal[1], 0.025, 1, 0, 0, 0])}
        controller.integral[:] = 0.2
        controller.target = torch.full((4,), 9.0)
        measured = np.asarray(state["joint"][:4], float)
        controller._follow_push(near, measured)
    finally:
        env.close()
    assert controller.pusher.phase == "done" and torch.all(controller.integral == 0)
    np.testing.assert_allclose(controller.target.numpy(), measured, atol=1e-6)
    assert controller.goal_joints.shape == (4,) and torch.isfinite(controller.goal_joints).all()


def test_a_reach_within_its_goal_tolerance_holds_until_it_drifts_out():
    """The hand closer to the goal than `ARRIVED_M`: the target in force is held, no plan runs, the integral
    rests. Moved off by less than `RESUME_M` it still holds (hysteresis); further, it plans again."""
    model, controller, env = _controller_on("reach")
    try:
        state = env.unwrapped.state()
        controller.z = torch.zeros(1, 2 * model.cfg.d_latent)
        ee, between = np.asarray(state["ee"], float), (ARRIVED_M + RESUME_M) / 2
        acts = []
        for offset in (between, 0.5 * ARRIVED_M, between, 1.2 * RESUME_M):
            controller.goal_ee = ee + np.array([offset, 0.0, 0.0])
            before = (len(controller.plan_ms), controller.integral.clone())
            action = controller.act(state)
            acts.append((controller.holding, len(controller.plan_ms) - before[0], before[1], action))
    finally:
        env.close()
    assert [(holding, plans) for holding, plans, *_ in acts] == [(False, 1), (True, 0), (True, 0), (False, 1)]
    np.testing.assert_array_equal(acts[1][3], acts[0][3])  # the command in force, unchanged
    np.testing.assert_array_equal(acts[2][3], acts[0][3])
    assert torch.equal(acts[1][2], acts[2][2]) and torch.equal(acts[2][2], acts[3][2])  # resting while held


def test_a_goal_outside_the_workspace_is_refused_with_a_clear_error():
    """A reach goal 1.5 m away: the controller says it is outside the arm's workspace, and how far the closest
    pose ends from it; a goal that is not 3 finite numbers is refused by the env."""
    import envs

    model, _ = checkpoint.load(checkpoint.DEFAULT_CHECKPOINT)
    controller = MPCController(model, PlannerConfig(candidates=32, horizon=4, iterations=1, elites=4))
    env = envs.make("manipulation", "reach", image_size=64, audio=False)
    try:
        env.reset(seed=0, options={"goal": np.array([1.5, 0.0, 0.1])})
        with pytest.raises(ValueError, match=r"outside the arm's workspace: its closest pose ends \d+\.\d"):
            controller.reset(env)
        env.reset(seed=0)  # a sampled goal is within reach
        controller.reset(env)
        with pytest.raises(ValueError, match="3 finite numbers"):
            env.reset(seed=0, options={"goal": np.array([0.3, np.nan, 0.1])})
    finally:
        env.close()
