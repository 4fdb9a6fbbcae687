"""Scripted IK expert (envs/expert.py): it solves both tasks on a handful of seeds. The 50-seed version is a
benchmark, not a test."""

import gymnasium as gym
import numpy as np
import pytest
from envs_test_helpers import ENV_IDS, expert_episode

from envs.expert import PushStyle, ScriptedExpert

N_SEEDS = 20


def _success_rate(task: str, seeds, **kwargs) -> tuple[float, list[int]]:
    env = gym.make(ENV_IDS[task], observe_image=False, audio=False, **kwargs)
    failures = []
    try:
        for seed in seeds:
            _, transitions = expert_episode(env, seed)
            if not transitions[-1][4]["is_success"]:  # success held at the end of the full episode
                failures.append(seed)
    finally:
        env.close()
    return 1 - len(failures) / len(seeds), failures


@pytest.mark.parametrize("task, threshold", [("reach", 0.95), ("push", 0.80)])
def test_expert_success_rate(task, threshold):
    """Over 20 seeds, the expert ends >= 95% of reach and >= 80% of push episodes in success (episodes run to
    their time limit, so the success must also be held)."""
    rate, failures = _success_rate(task, range(1000, 1000 + N_SEEDS))
    assert rate >= threshold, f"{task}: success {rate:.0%} < {threshold:.0%}; failed seeds {failures}"


@pytest.mark.parametrize("task", ["reach", "push"])
def test_expert_works_in_absolute_mode_and_at_20_hz(task):
    """The expert speaks the env's action mode and rate: absolute targets and 20 Hz control work too."""
    for kwargs in (dict(action_mode="absolute"), dict(control_hz=20)):
        rate, failures = _success_rate(task, range(5), **kwargs)
        assert rate >= 0.8, f"{task} {kwargs}: failed seeds {failures}"


def test_expert_actions_are_valid_and_deterministic():
    """Expert actions lie in the action space, and the expert is a deterministic function of the episode."""
    runs = []
    for _ in range(2):
        env = gym.make(ENV_IDS["push"], observe_image=False, audio=False)
        actions, _ = expert_episode(env, 4, n_steps=30)
        assert all(env.action_space.contains(np.asarray(a, np.float32)) for a in actions)
        runs.append(np.array(actions))
        env.close()
    np.testing.assert_array_equal(runs[0], runs[1])


def test_expert_reset_makes_it_reusable_across_episodes():
    """One expert object, reset() between episodes, acts exactly like a fresh expert in each episode."""
    env = gym.make(ENV_IDS["push"], observe_image=False, audio=False)
    fresh, _ = expert_episode(env, 8, n_steps=25)
    expert = ScriptedExpert(env)
    for seed in (2, 8):
        obs, _ = env.reset(seed=seed)
        expert.reset()
        actions = []
        for _ in range(25):
            actions.append(expert.act(obs))
            obs = env.step(actions[-1])[0]
    env.close()
    np.testing.assert_array_equal(np.array(actions), np.array(fresh))


def test_a_push_with_done_tol_backs_off_once_the_cube_is_there_and_waits():
    """With `done_tol`, the cube that close to the goal ends the push: the waypoint is the hand backed off
    along the push line, away from the cube, at its height, and it stays there if the cube moves on. The
    expert's own style never ends a push early."""
    env = gym.make(ENV_IDS["push"], observe_image=False, audio=False)
    expert = ScriptedExpert(env)
    cube = np.array([0.29, 0.05, 0.025, 1, 0, 0, 0])
    obs = {"ee": np.array([0.2, 0.0, 0.03]), "object": cube, "goal": np.array([0.30, 0.05, 0.025])}
    style = PushStyle(done_tol=0.015, back_off=0.03)
    assert expert.push_waypoint(obs, obs["ee"], PushStyle())[2] > 0.05  # the expert's style: approach
    assert expert.phase == "approach"
    rest = expert.push_waypoint(obs, obs["ee"], style)
    assert expert.phase == "done"
    np.testing.assert_allclose(rest, [0.17, 0.0, 0.03], atol=1e-9)  # 3 cm back along +x, the push line
    moved = {**obs, "object": np.array([0.2, 0.1, 0.025, 1, 0, 0, 0])}
    np.testing.assert_array_equal(expert.push_waypoint(moved, obs["ee"], style), rest)
    expert.reset()
    assert expert.phase == "approach" and expert.push_waypoint(moved, obs["ee"], style)[2] > 0.05
    env.close()
