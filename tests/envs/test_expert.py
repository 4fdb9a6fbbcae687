"""Scripted IK expert (envs/expert.py): it solves both tasks on a handful of seeds. The 50-seed version is a
benchmark, not a test."""

import gymnasium as gym
import numpy as np
import pytest
from envs_test_helpers import ENV_IDS, expert_episode

from envs.expert import ScriptedExpert

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
