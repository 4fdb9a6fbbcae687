"""The fast path of online adaptation: memory corrections of the latent transition, no gradients.

Every tick, once z_t+1 is known, the transition's own prediction f(z_t, a) is compared with it and the
residual z_t+1 - f(z_t, a) is written to the cell memory under the key (z_t, a). Every prediction, one step
or a rollout's every step, adds what the memory recalls for its (z, a): the blended residual of the entries
whose keys are close, or, when none is close yet, the active cell's local correction (its mean residual),
scaled down by how far the nearest entry is. A correction therefore acts from the tick its residual is
written. After a shift the residuals become systematic, the memory learns them within a few ticks, and the
cell splits off the new regime (cells.py), so shifting back finds the old entries where they were.

Reads made for predictions are probes; only the tick's own one-step prediction is credited, with how much
the correction reduced its error.

Corrections are applied in proportion to `trust`: a running average of how much the memory's correction
reduced each tick's one-step error (relative, clipped to [-1, 1]), over `trust_margin`. Residuals in a
steady world are mostly noise the model cannot predict, and adding recalled noise made predictions worse
(post-shift error 1.25x against 1.09x without memory on the flip shift); a trust that falls when the
corrections stop helping switches them off, and it returns as soon as they help again (after a shift, the
residuals become systematic). Every tick's correction is still scored, applied or not.
"""

from dataclasses import dataclass

import numpy as np
import torch

from runtime.memory.cells import CellMemory, MemoryConfig
from runtime.memory.store import StoreConfig
from runtime.world_model.model import ACTION_DIM, TICK_S, LeapfrogPredictor


@dataclass(frozen=True)
class FastConfig:
    capacity: int = 4096  # entries per cell
    close: float = 0.9  # a recall this similar (cosine over z and a) is used as it is
    floor: float = 0.5  # below this similarity only the cell's mean residual is used (scaled by it / floor)
    maintenance_s: float = 0.0005  # per tick, for the memory's maintenance (inside the tick's step time)
    trust_margin: float = 0.1  # corrections that cut the one-step error by this share on average: full trust
    trust_decay: float = 0.95  # of the running average of that share (about 20 ticks)
    # Plans take the correction for their first control step only (3 ticks at 10 Hz): held over a 30-tick
    # horizon it biased every candidate's end state, and reaching fell (in-process, 10 episodes: 3 of 10 held
    # for 30 ticks, 4 for 3 ticks; 20 episodes at 3 ticks: 6 against 9 without memory).
    plan_correction_ticks: int = 3
    recency_writes: float = 0.0  # the store's preference for newer entries (store.py; 0: content alone)

    def __post_init__(self):
        if not 0 <= self.floor < self.close <= 1:
            raise ValueError(f"need 0 <= floor < close <= 1, got floor {self.floor}, close {self.close}")
        if not (self.trust_margin > 0 and 0 <= self.trust_decay < 1):
            raise ValueError("need trust_margin > 0 and 0 <= trust_decay < 1")


class FastAdapter:
    def __init__(self, model, cfg: FastConfig = FastConfig(), memory: CellMemory | None = None):
        self.model, self.cfg = model, cfg
        self.d = 2 * model.cfg.d_latent
        self.memory = memory or CellMemory(
            MemoryConfig(
                StoreConfig(
                    key_dim=self.d + ACTION_DIM,
                    value_dim=self.d,
                    capacity=cfg.capacity,
                    recency_writes=cfg.recency_writes,
                )
            )
        )
        self.writes = 0
        self.skipped_writes = 0  # residuals that were not finite
        self.benefit = cfg.trust_margin  # running relative error reduction; optimistic start: full trust

    @property
    def trust(self) -> float:
        return float(np.clip(self.benefit / self.cfg.trust_margin, 0.0, 1.0))

    @staticmethod
    def key(z: torch.Tensor, action: torch.Tensor) -> np.ndarray:
        return torch.cat((z, action), -1).detach().numpy().astype(np.float32)

    def correction(self, z: torch.Tensor, action: torch.Tensor, probe: bool = True):
        """(B, d) corrections for (z, a) before `trust` scales them, the recall behind them (or None) and the
        cell it came from."""
        if not len(self.memory):
            return torch.zeros_like(z), None, None
        cell, got = self.memory.recall(self.key(z, action), probe=probe)
        best = got.similarity.max(-1, keepdims=True)
        blend = np.clip((best - self.cfg.floor) / (self.cfg.close - self.cfg.floor), 0.0, 1.0)
        reach = np.clip(
            best / self.cfg.floor, 0.0, 1.0
        )  # the cell's mean fades for keys far from all entries
        corr = blend * got.value + (1.0 - blend) * reach * cell.correction[None]
        return torch.from_numpy(corr.astype(np.float32)), got, cell

    @torch.no_grad()
    def predict(self, z: torch.Tensor, action: torch.Tensor, dt: torch.Tensor, mix=None) -> torch.Tensor:
        """One corrected step: z (B, d), action (B, A), dt (B,) seconds -> (B, d). `mix`: the expert mix
        (default: from z, as a one-step prediction does)."""
        base = self.model.predictor.step(z, action, dt, mix)
        trust = self.trust
        return base + trust * self.correction(z, action)[0] if trust else base

    @torch.no_grad()
    def rollout(self, z0: torch.Tensor, actions: torch.Tensor, dt: torch.Tensor, held=None, engine=None):
        """Corrected open-loop rollout: z0 (B, d), actions (B, K, A), dt (B, K) -> (B, K, d). `engine`: what
        rolls out, `(z0, actions, dt, residual, residual_ticks) -> z` (default the model's; an onnxruntime
        export's, runtime/export/session.py `OrtRollout`).

        By default every step recalls its own correction. `held` (planning) recalls once, at z0 under
        `held` (A,), the action in force, and holds that correction for the first `plan_correction_ticks`,
        the same for every candidate: a batched recall per step made a plan of 256 candidates over 30 ticks
        take 87 ms (6 ms without memory), and a recall per candidate's own first action let the optimizer
        pick candidates for their recalled noise (reach 2 of 10 against 6 of 10 without memory)."""
        trust, engine = self.trust, engine or self.model.rollout
        if not trust or not len(self.memory):
            return engine(z0, actions, dt)
        if held is not None and isinstance(self.model.predictor, LeapfrogPredictor):
            corr = trust * self.correction(z0[:1], held.reshape(1, -1))[0]  # (1, d) per tick, as stored
            n = self.cfg.plan_correction_ticks  # one rollout, the correction on its first n ticks
            return engine(z0, actions, dt, corr, n)  # the same for every candidate
        mix = self.model.predictor.mix(z0)  # fixed along the rollout, as WorldModel.rollout does
        out, z = [], z0
        for k in range(actions.shape[1]):
            z = self.predict(z, actions[:, k], dt[:, k], mix)
            out.append(z)
        return torch.stack(out, 1)

    @torch.no_grad()
    def observe(self, z_prev: torch.Tensor, action: torch.Tensor, dt: torch.Tensor, z_now: torch.Tensor):
        """The tick's outcome (batch 1): credit the correction made for it, update the trust, store
        the residual. Returns the one-step prediction of z_now made before it was known (memory and trust
        as they were)."""
        base = self.model.predictor.step(z_prev, action, dt)
        corr, got, cell = self.correction(z_prev, action, probe=False)
        prediction = base + self.trust * corr
        base_err = float((base - z_now).pow(2).mean())
        corr_err = float((base + corr - z_now).pow(2).mean())
        if got is not None and np.isfinite(base_err) and np.isfinite(corr_err):
            gain = (base_err - corr_err) / (base_err + 1e-9)
            self.memory.credit(cell, got, max(0.0, gain))
            decay = self.cfg.trust_decay
            self.benefit = decay * self.benefit + (1 - decay) * float(np.clip(gain, -1.0, 1.0))
        residual = (z_now - base)[0].numpy()
        if not np.all(
            np.isfinite(residual)
        ):  # a prediction that overflowed teaches nothing: skipped, counted
            self.skipped_writes += 1
            return prediction
        self.memory.write(self.key(z_prev, action)[0], residual)
        self.memory.tick()
        self.memory.maintain(self.cfg.maintenance_s)
        self.writes += 1
        return prediction

    @torch.no_grad()
    def rebase(self, old_step, new_step) -> None:
        """The transition changed (the slow learner swapped weights in): stored residuals were relative to
        the old one, so each becomes z_next - f_new = r + f_old - f_new at its key (at the nominal tick)."""
        d = self.d
        for cell in self.memory.leaves():
            store = cell.store
            slots = np.flatnonzero(store.used)
            if not len(slots):
                continue
            keys = torch.from_numpy(store.keys[slots])
            z, a = keys[:, :d], keys[:, d:]
            dt = torch.full((len(slots),), TICK_S)
            shift = (old_step(z, a, dt) - new_step(z, a, dt)).numpy()
            store.values[slots] += shift
            cell.correction += shift.mean(0)
