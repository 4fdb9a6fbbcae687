"""The world model on live V-sync ticks: one streaming step per tick, batch 1, no gradients.

Keeps the belief state and the previous latent, so each tick also scores the model's one-tick prediction
(the previous z rolled forward under this tick's action and dt) against the latent this tick gives (the
training objective's one-step term, live): the prediction error the dashboard shows. A tick the model
refuses (a wrong shape) is counted and skipped, and the belief carries on from its last state.
"""

import time
from pathlib import Path

import numpy as np
import torch

from runtime.world_model import checkpoint
from runtime.world_model.data import tick_fields

MODEL_COLUMNS = ("step_ms", "energy", "pred_err", "z_norm", "dt_clamped", "refused")


class LiveWorldModel:
    def __init__(self, directory: Path | str | None = None, threads: int = 1):
        torch.set_num_threads(threads)
        self.model, self.manifest = checkpoint.load(
            Path(directory) if directory else checkpoint.DEFAULT_CHECKPOINT
        )
        self.state = self.model.initial_state(1)
        self.z = None
        self.refused = 0
        self.ticks = 0

    def step(self, tick) -> np.ndarray:
        """One V-sync tick -> the MODEL_COLUMNS row for it."""
        fields = tick_fields(tick, self.model.cfg.image_size)
        x = {k: torch.from_numpy(np.asarray(v))[None] for k, v in fields.items()}
        t0 = time.perf_counter()
        with torch.inference_mode():
            try:
                state, z, aux = self.model.step(self.state, x)
            except ValueError:
                self.refused += 1
                return self.row(np.nan, np.nan, np.nan, np.nan)
            err = np.nan
            if self.z is not None:
                pred = self.model.rollout(self.z, x["action"][:, None], x["dt_eff"][:, None].float())[:, 0]
                err = float((pred - z).pow(2).mean())
        self.state, self.z = state, z
        self.ticks += 1
        energy = float(aux["energy"].sum()) if "energy" in aux else np.nan
        return self.row((time.perf_counter() - t0) * 1e3, energy, err, float(z.norm()))

    def row(self, step_ms: float, energy: float, err: float, z_norm: float) -> np.ndarray:
        return np.array([step_ms, energy, err, z_norm, self.model.dt_clamped, self.refused], np.float64)
