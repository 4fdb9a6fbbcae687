"""The closed loop through the world model: a short reach episode driven by latent MPC runs end to end,
every applied action within the safety limits, and the goal latent is the one a goal image gives."""

import numpy as np
import torch

from runtime.planning.control import STEP_RAD, MPCController
from runtime.planning.mpc import PlannerConfig
from runtime.world_model import checkpoint
from runtime.world_model.data import CollectConfig, collect_episode


def test_mpc_drives_an_episode_within_the_safety_limits():
    model, _ = checkpoint.load(checkpoint.DEFAULT_CHECKPOINT)
    controller = MPCController(model, PlannerConfig(candidates=32, horizon=4, iterations=2, elites=4))
    episode = collect_episode(CollectConfig(task="reach", episode_seconds=1.5), seed=7, controller=controller)
    actions = episode["action"]
    low, high = controller.low.numpy(), controller.high.numpy()
    assert np.all(np.isfinite(actions)) and np.all(actions >= low - 1e-6) and np.all(actions <= high + 1e-6)
    steps = np.abs(np.diff(actions[:, :4], axis=0))
    assert steps.max() <= STEP_RAD + 1e-5  # no target jumps, whatever the plan wanted
    assert len(controller.plan_ms) >= 10 and controller.safety.stopped is None
    goal = controller.cost.goal_q
    assert goal.shape == (model.cfg.d_latent,) and torch.isfinite(goal).all()
