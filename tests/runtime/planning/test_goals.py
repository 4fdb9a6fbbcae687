"""Named goals recalled from memory: stored and found by name, refused when unknown or malformed, and
reached by the planner in closed loop."""

import numpy as np
import pytest

import envs
from envs.expert import InverseKinematics
from runtime.memory.store import MemoryInputError
from runtime.planning.actor import load as load_actor
from runtime.planning.control import MPCController
from runtime.planning.goals import GoalBook
from runtime.world_model import checkpoint
from runtime.world_model.data import CollectConfig, collect_episode


def test_goals_are_recalled_by_name_and_reading_changes_nothing():
    book = GoalBook()
    home, bin_ = np.array([0.0, 0.3, 1.2, 0.9]), np.array([1.1, -0.2, 0.8, 0.5])
    book.remember("home", home)
    book.remember("over-the-bin", bin_)
    before = book.store.state()
    np.testing.assert_allclose(book.recall("home"), home, atol=1e-6)
    np.testing.assert_allclose(book.recall("over-the-bin"), bin_, atol=1e-6)
    after = book.store.state()
    assert all(np.array_equal(before[k], after[k]) for k in before)  # a recall is a probe
    book.remember("home", bin_)  # stored again: the new pose
    np.testing.assert_allclose(book.recall("home"), bin_, atol=1e-6)
    assert sorted(book.names) == ["home", "over-the-bin"] and len(book.store) == 2


def test_an_unknown_name_or_a_bad_goal_is_refused_and_the_book_is_unchanged():
    book = GoalBook()
    with pytest.raises(KeyError, match="no goals are stored"):
        book.recall("home")
    book.remember("home", np.zeros(4))
    with pytest.raises(KeyError, match="no goal named 'homme'; stored: home"):
        book.recall("homme")
    for bad in (np.array([0.0, np.nan, 0.0, 0.0]), np.zeros(3)):
        with pytest.raises(MemoryInputError):
            book.remember("broken", bad)
    with pytest.raises(MemoryInputError, match="non-empty string"):
        book.remember("", np.zeros(4))
    assert book.names == ["home"] and len(book.store) == 1


@pytest.fixture(scope="module")
def model():
    return checkpoint.load(checkpoint.DEFAULT_CHECKPOINT)[0]


def test_the_planner_reaches_a_goal_recalled_by_name(model):
    """A pose stored as "over-the-bin" (the inverse kinematics of a point 25 cm out), reached from another
    scene's start: the hand ends within the reach test's 2 cm of where that pose puts it."""
    env = envs.make("manipulation", "reach", image_size=64, audio=False)
    try:
        env.reset(seed=0)
        ik = InverseKinematics(env.unwrapped.model)
        pose = ik.solve(np.array([0.25, 0.1, 0.12]), env.unwrapped.arm_target, iterations=100)
    finally:
        env.close()
    book = GoalBook()
    book.remember("over-the-bin", pose)
    source = checkpoint.DEFAULT_CHECKPOINT
    controller = MPCController(
        model, deadline_s=None, prior=load_actor(source), goals=book, goal_name="over-the-bin"
    )
    hands, act = [], controller.act

    def tracked(state, *args, **kw):
        hands.append(np.asarray(state["ee"], float))
        return act(state, *args, **kw)

    controller.act = tracked
    collect = CollectConfig(task="reach", episode_seconds=5.0, noise_rad=0.0)
    collect_episode(collect, seed=3, controller=controller)
    goal_ee = ik.position(pose)
    assert np.linalg.norm(hands[0] - goal_ee) > 0.05  # it had somewhere to go
    assert np.linalg.norm(hands[-1] - goal_ee) < 0.02, (hands[-1], goal_ee)
    np.testing.assert_allclose(controller.goal_joints.numpy(), pose, atol=1e-5)


def test_a_named_goal_the_arm_cannot_take_or_a_push_is_refused(model):
    book = GoalBook()
    book.remember("folded-back", np.array([0.0, 0.0, 9.0, 0.0]))
    book.remember("home", np.array([0.0, 0.3, 1.2, 0.9]))
    for task, name, message in (
        ("reach", "folded-back", "outside the arm's joint ranges"),
        ("push", "home", "an arm pose to reach, not a push goal"),
    ):
        env = envs.make("manipulation", task, image_size=64, audio=False, action_mode="absolute")
        try:
            env.reset(seed=0)
            with pytest.raises(ValueError, match=message):
                MPCController(model, goals=book, goal_name=name).reset(env)
        finally:
            env.close()
    with pytest.raises(ValueError, match="needs `goals`"):
        MPCController(model, goal_name="home")
