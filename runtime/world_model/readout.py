"""The planning readout: a linear map from the planning state z = (q, p) to the arm's joint angles.

The planner's joint-state goals are costed in joint space: the latent goal (a goal image folded into q)
weighs every direction of q alike, and most of them hold the scene (lighting, the cube, the table), so a
plan that left the arm where it was could score better than one that reached. A ridge regression from z to
the arm joints, fitted on the training episodes, picks the directions that say where the arm is; it reads
joints to about 0.01-0.03 rad on held-out episodes. It is a probe of a frozen model, not part of its training.
It reads p as well as q: read from q alone, the closed loop reached 3 of 8 goals where it reached 8 of 8.

Saved in the checkpoint as `readout.npz` with its SHA-256 in the manifest (a changed byte is refused like the
weights). `python -m launch.train --readout-only` fits it for an existing checkpoint.
"""

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from runtime.world_model import checkpoint
from runtime.world_model.model import TICK_FIELDS

READOUT = "readout.npz"
JOINTS = 4  # the arm's joints (the gripper is commanded, not planned toward)


@dataclass(frozen=True)
class JointReadout:
    weight: torch.Tensor  # (2 d_latent, JOINTS)
    bias: torch.Tensor  # (JOINTS,)

    def __call__(self, z: torch.Tensor) -> torch.Tensor:
        """z (..., 2 d_latent) -> joint angles (..., JOINTS), radians."""
        return z @ self.weight + self.bias

    @classmethod
    def fit(cls, z: np.ndarray, joints: np.ndarray, ridge: float = 1e-3) -> "JointReadout":
        """z (N, 2 d_latent), joints (N, JOINTS): ridge regression, the bias unpenalized."""
        x = np.hstack((z, np.ones((len(z), 1))))
        reg = ridge * len(x) * np.eye(x.shape[1])
        reg[-1, -1] = 0.0
        w = np.linalg.solve(x.T @ x + reg, x.T @ joints)
        return cls(torch.from_numpy(w[:-1]).float(), torch.from_numpy(w[-1]).float())

    def save(self, directory: Path) -> Path:
        path = Path(directory) / READOUT
        np.savez(path, weight=self.weight.numpy(), bias=self.bias.numpy())
        checkpoint.add_file(directory, READOUT)
        return path


@torch.no_grad()
def fit_on_episodes(model, episodes) -> tuple[JointReadout, float]:
    """The readout of `model` fitted on episodes (dicts of tick arrays with `true_joint`), and its mean
    absolute error on them (radians)."""
    zs, joints = [], []
    for ep in episodes:
        batch = {k: torch.from_numpy(np.asarray(ep[k]))[None] for k in TICK_FIELDS}
        z = model(batch)[0][0]
        truth = np.asarray(ep["true_joint"])[:, :JOINTS]
        ok = ~np.isnan(truth).any(1)
        zs.append(z.numpy().astype(np.float64)[ok])
        joints.append(truth[ok])
    z, j = np.concatenate(zs), np.concatenate(joints)
    readout = JointReadout.fit(z, j)
    error = float(np.abs(readout(torch.from_numpy(z).float()).numpy() - j).mean())
    return readout, error


def load(directory: Path = checkpoint.DEFAULT_CHECKPOINT) -> JointReadout:
    """The checkpoint's readout, its hash checked against the manifest; CheckpointError if absent or
    changed."""
    directory = Path(directory)
    checkpoint.verify_file(directory, READOUT)
    with np.load(directory / READOUT) as f:
        return JointReadout(torch.from_numpy(f["weight"]).float(), torch.from_numpy(f["bias"]).float())
