"""The distilled actor: its steps stay within the plan's step limits, and its closed loop keeps the safety
filter's limits and moves toward the goal it is given."""

import numpy as np
import torch

from runtime.planning.actor import Actor
from runtime.planning.control import STEP_RAD


def test_the_actor_steps_within_the_plans_limits_whatever_its_input():
    """Joint steps within +-STEP_RAD and the gripper within +-1, for ordinary and for huge inputs."""
    actor = Actor(d_z=64)
    g = torch.Generator().manual_seed(0)
    for scale in (1.0, 1e6):
        z = torch.randn(200, 64, generator=g) * scale
        goal, measured = torch.randn(200, 4, generator=g) * scale, torch.randn(200, 4, generator=g)
        step = actor(z, goal, measured)
        assert step.shape == (200, 5) and torch.isfinite(step).all()
        assert step[:, :4].abs().max() <= STEP_RAD + 1e-6 and step[:, 4].abs().max() <= 1.0


def test_the_actor_learns_a_teacher_that_steps_toward_the_goal():
    """A teacher that steps a tenth of the way to the goal (within the step limit), whatever z says: after
    fitting, the actor's steps are within 0.01 rad of it on new states."""
    g = torch.Generator().manual_seed(1)

    def teacher(goal, measured):
        step = ((goal - measured) * 0.1).clamp(-STEP_RAD, STEP_RAD)
        return torch.cat((step, torch.ones(len(goal), 1)), -1)

    actor = Actor(d_z=8, hidden=64)
    opt = torch.optim.Adam(actor.parameters(), lr=3e-3)
    for _ in range(1500):
        z, goal, measured = (
            torch.randn(128, 8, generator=g),
            torch.randn(128, 4, generator=g),
            torch.randn(128, 4, generator=g),
        )
        loss = torch.nn.functional.mse_loss(actor(z, goal, measured), teacher(goal, measured))
        opt.zero_grad()
        loss.backward()
        opt.step()
    z, goal, measured = (
        torch.randn(500, 8, generator=g),
        torch.randn(500, 4, generator=g),
        torch.randn(500, 4, generator=g),
    )
    with torch.no_grad():
        error = (actor(z, goal, measured) - teacher(goal, measured))[:, :4].abs().mean()
    assert float(error) < 0.01, float(error)
    assert np.isfinite(float(error))
