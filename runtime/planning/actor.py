"""The actor: a small policy distilled from the planner, for profiles whose budget cannot afford planning.

It maps what the planner sees, the belief z, the joint goal the plans aim at (integral action included) and
the measured joints, to what the planner chose: the first step of its plan (joint-target steps of at most
`STEP_RAD`, and the gripper). One forward pass of a two-layer MLP replaces a few hundred rollouts.

`ActorController` is the closed loop of `MPCController` (the same goal, belief, integral action and safety
filter) with the actor in place of the search. `distill` runs the planner as the teacher in collection
episodes and fits the actor to its choices (behaviour cloning). The teacher's executed actions carry a little
noise while its labels do not, so the actor also sees states a little off the teacher's path and learns the
way back. Saved in the checkpoint as `actor.pt` (weights only), its SHA-256 in the manifest;
`python -m launch.train --actor-only DIR` distills one for an existing checkpoint.
"""

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from runtime.planning.control import PLANNER, STEP_RAD, MPCController
from runtime.world_model import checkpoint

ACTOR = "actor.pt"
JOINTS = 4


class Actor(nn.Module):
    def __init__(self, d_z: int, hidden: int = 128):
        super().__init__()
        self.d_z, self.hidden = d_z, hidden
        self.net = nn.Sequential(
            nn.Linear(d_z + 2 * JOINTS, hidden),
            nn.SiLU(),
            nn.Linear(hidden, hidden),
            nn.SiLU(),
            nn.Linear(hidden, 5),
        )
        self.register_buffer("limit", torch.tensor([STEP_RAD] * JOINTS + [1.0]))

    def forward(self, z: torch.Tensor, goal: torch.Tensor, measured: torch.Tensor) -> torch.Tensor:
        """z (N, d_z), goal and measured joints (N, 4) -> the step (N, 5): 4 joint-target steps, gripper."""
        x = torch.cat((z, goal - measured, measured), -1)  # the goal as an offset: what is left to move
        return torch.tanh(self.net(x)) * self.limit

    def save(self, directory: Path) -> Path:
        path = Path(directory) / ACTOR
        torch.save({"d_z": self.d_z, "hidden": self.hidden, "state": self.state_dict()}, path)
        checkpoint.add_file(directory, ACTOR)
        return path


def load(directory: Path = checkpoint.DEFAULT_CHECKPOINT) -> Actor:
    """The checkpoint's actor, its hash checked against the manifest; CheckpointError if absent or changed."""
    directory = Path(directory)
    checkpoint.verify_file(directory, ACTOR)
    saved = torch.load(directory / ACTOR, weights_only=True)  # tensors and numbers only: nothing executes
    actor = Actor(int(saved["d_z"]), int(saved["hidden"]))
    actor.load_state_dict(saved["state"])
    return actor.eval()


class ActorController(MPCController):
    """`MPCController` with the actor choosing each step instead of the planner."""

    def __init__(self, model, actor: Actor, adapter=None, readout=None, rollout=None):
        """`actor`: the policy, or anything called as it is (runtime/export/session.py `OrtActor`);
        `rollout`: what carries the belief ahead (MPCController)."""
        super().__init__(model, PLANNER, adapter, None, readout=readout, rollout=rollout)
        self.actor = actor

    @torch.no_grad()
    def _first_step(self, z: torch.Tensor, measured: np.ndarray, iterations, candidates, scored=None):
        """The actor's step (A,) in place of a plan's first (its pass is timed where the plan would be)."""
        return self.actor(z, self.cost.goal[None], torch.as_tensor(measured, dtype=torch.float32)[None])[0]


class _Teacher(MPCController):
    """The planner, recording (z, goal, measured joints) and the first step it chose at every control step;
    what it executes carries Gaussian noise of `noise_rad` on the joint steps."""

    def __init__(self, *args, noise_rad: float, seed: int, **kw):
        super().__init__(*args, **kw)
        self.samples: list[tuple] = []
        self.noise_rad, self.rng = noise_rad, np.random.default_rng(seed)

    def act(self, state: dict, *args, **kw) -> np.ndarray:
        if self.z is None:
            return super().act(state, *args, **kw)
        measured = np.asarray(state["joint"][:JOINTS], float)
        z = self.z[0].clone()
        action = super().act(state, *args, **kw)
        if self.holding:  # within the goal tolerance: no plan chose this step
            return action
        step = self.planner.mean[0].clone()  # the plan just chosen; its first step was applied
        self.samples.append((z, self.cost.goal.clone(), torch.as_tensor(measured, dtype=torch.float32), step))
        noisy = action.copy()
        noisy[:JOINTS] += self.rng.normal(0.0, self.noise_rad, JOINTS)
        self.prev = self.safety.send_action(noisy, measured)
        self.target = torch.as_tensor(self.prev[:-1], dtype=torch.float32)
        return self.prev


@dataclass(frozen=True)
class DistillConfig:
    episodes: int = 40  # teacher episodes per task
    tasks: tuple[str, ...] = ("reach", "push")
    noise_rad: float = 0.05  # on the teacher's executed joint steps (its labels stay clean)
    steps: int = 3000  # Adam steps
    batch: int = 256
    lr: float = 1e-3
    seed: int = 0  # episodes use seeds seed, seed + 1, ... (launch.eval control holds out 300,000 on)


def distill(model, readout, cfg: DistillConfig = DistillConfig(), progress=None) -> tuple[Actor, dict]:
    """An actor fitted to the planner's choices in `cfg.episodes` teacher episodes per task. Returns it and
    its fit: mean absolute error of its steps against the teacher's on held-out samples (every 5th)."""
    from runtime.world_model.data import CollectConfig, collect_episode

    torch.manual_seed(cfg.seed)
    samples = []
    for task in cfg.tasks:
        seconds = 5.0 if task == "reach" else 10.0
        collect = CollectConfig(task=task, episode_seconds=seconds, random_fraction=0.0, noise_rad=0.0)
        for i in range(cfg.episodes):
            teacher = _Teacher(model, PLANNER, None, None, readout=readout, noise_rad=cfg.noise_rad, seed=i)
            collect_episode(collect, cfg.seed + i, controller=teacher)
            samples += teacher.samples
            if progress is not None:
                progress(task, i + 1, len(samples))
    z, goal, measured, step = (torch.stack(c) for c in zip(*samples, strict=True))
    held = torch.arange(len(z)) % 5 == 0
    actor = Actor(z.shape[1])
    opt = torch.optim.Adam(actor.parameters(), lr=cfg.lr)
    train = torch.nonzero(~held)[:, 0]
    for _ in range(cfg.steps):
        idx = train[torch.randint(0, len(train), (min(cfg.batch, len(train)),))]
        loss = F.mse_loss(actor(z[idx], goal[idx], measured[idx]), step[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    actor.eval()
    with torch.no_grad():
        error = (actor(z[held], goal[held], measured[held]) - step[held]).abs()[:, :JOINTS].mean()
    return actor, {"samples": len(z), "held_out_step_error_rad": float(error)}
