"""The world model on live V-sync ticks: one streaming step per tick, batch 1, no gradients.

Keeps the belief state and the previous latent, so each tick also scores the model's one-tick prediction
(the previous z rolled forward under this tick's action and dt) against the latent this tick gives (the
training objective's one-step term, live): the prediction error the dashboard shows. A tick the model
refuses (a wrong shape) is counted and skipped, and the belief carries on from its last state.

With an `OnlineAdapter` (runtime/adapt), the prediction is the adapted one and each tick's outcome is
observed by it (memory written, learner fed); the row then carries the memory's size, its crystallized
entries, the learner's swaps and the lock's state. With a dynamics lock, the weights are checked before the
first tick (a mismatch refuses to start) and every `recheck_ticks`; a mismatch at run time calls
`on_violation` (the brain stops the actuators) and the model stops stepping.

A brain that plans splits each tick in two: `believe` (encoders and backbone: what the plan waits for), then,
once the action is out, `adapt` (the prediction scored, the memory written, the learner's steps).
"""

import logging
import time
from pathlib import Path

import cv2
import numpy as np
import torch

from runtime.world_model import checkpoint
from runtime.world_model.data import MAX_CHUNKS, tick_fields

log = logging.getLogger(__name__)
# The backbone's oscillator energy on the simulated arm's ticks stays in the hundreds to low thousands. On
# ticks unlike its training data (an emulated Koch's joints) the first layer's selective step stretches its
# stiffest oscillators to leapfrog's stability clamp on almost every tick, and switching steps there pumps
# the energy without bound (README, "Real arms"). Past this the belief is started again (counted) instead
# of carrying numbers that mean nothing.
BELIEF_ENERGY_LIMIT = 1e6

MODEL_COLUMNS = (
    "step_ms",
    "energy",
    "pred_err",
    "z_norm",
    "dt_clamped",
    "refused",
    "memory_entries",
    "crystallized",
    "swaps",
    "lock",  # -1 no lock, 0 open, 1 locked, 2 tripped
    "adapt_ms",  # the tick's adaptation (memory, learner), after its action went out
    "extra_ms",  # encoding the tick's extra modalities (a live camera, a microphone), if any
)


class LiveWorldModel:
    def __init__(
        self,
        directory: Path | str | None = None,
        threads: int = 1,
        adapt=None,
        lock=None,
        on_violation=None,
        recheck_ticks: int = 300,
        onnx=None,
    ):
        """`adapt`: an `AdaptConfig` (None: no adaptation); `lock`: a `DynamicsLock` for the transition;
        `onnx`: an `OnnxEngine` (runtime/export/session.py) to run each tick's belief in onnxruntime instead
        of torch, from an export of this checkpoint (refused if it was made from other weights)."""
        torch.set_num_threads(threads)
        self.model, self.manifest = checkpoint.load(
            Path(directory) if directory else checkpoint.DEFAULT_CHECKPOINT
        )
        self.belief_model = self.model  # what steps the belief: the torch model or its onnxruntime export
        if onnx is not None:
            from runtime.export.session import OrtWorldModel

            self.belief_model = OrtWorldModel(
                onnx.directory,
                threads,
                onnx.provider,
                onnx.precision,
                weights_sha256=self.manifest["files"][checkpoint.WEIGHTS],
            )
        self.state = self.belief_model.initial_state(1)
        self.z = None
        self.refused = 0
        self.belief_resets = 0  # beliefs that diverged (BELIEF_ENERGY_LIMIT) and were started again
        self.ticks = 0
        self.step_ms = np.nan  # the last belief's time: encoders and backbone
        self.extra_ms = np.nan  # the last tick's extra modalities' encoding
        self._pending = None  # the last tick's (z_prev, action, dt, z, aux), until `adapt`
        self.lock, self.watch, self.adapter = lock, None, None
        if lock is not None:
            from runtime.adapt.lock import LockWatch

            lock.check(self.model.predictor)  # refuses to start from weights that are not the sealed ones
            if lock.locked:  # an open record lets the learner change the weights: nothing to watch
                stop = on_violation or (lambda _: None)
                self.watch = LockWatch(lock, self.model.predictor, stop, recheck_ticks)
        if adapt is not None:
            from runtime.adapt.online import OnlineAdapter

            self.adapter = OnlineAdapter(self.model, adapt, lock)

    def step(self, tick) -> np.ndarray:
        """One V-sync tick -> the MODEL_COLUMNS row for it (`believe`, then `adapt`)."""
        self.believe(tick)
        return self.adapt()

    def believe(self, tick) -> None:
        """The tick folded into the belief `z`: the part a plan waits for."""
        self._pending = None
        if self.watch is not None and not self.watch.tick():
            self.refused += 1  # tripped: nothing runs on weights that are not the sealed ones
            return
        fields = tick_fields(tick, self.model.cfg.image_size)
        # a message's arrays are read-only views of the received frame: copied only then (torch warns)
        x = {k: torch.from_numpy(np.require(v, requirements="W"))[None] for k, v in fields.items()}
        t0 = time.perf_counter()
        with torch.no_grad():  # not inference_mode: the learner's weights must stay trainable
            try:
                state, z, aux = self.belief_model.step(self.state, x)
            except ValueError:
                self.refused += 1
                self.z = None  # the next prediction would span two ticks with one tick's dt
                return
        self.step_ms = (time.perf_counter() - t0) * 1e3
        energy = float(aux["energy"].sum()) if "energy" in aux else 0.0
        if not (np.isfinite(energy) and energy < BELIEF_ENERGY_LIMIT and bool(torch.isfinite(z).all())):
            self.belief_resets += 1  # diverged: start the belief again rather than feed on it
            if self.belief_resets == 1 or self.belief_resets % 100 == 0:
                log.warning(
                    "world model: belief energy %.3g diverged; reset (%d so far)", energy, self.belief_resets
                )
            self.state, self.z = self.belief_model.initial_state(1), None
            return
        action, dt = x["action"], self.model.clamp_dt(x["dt_eff"].float())  # as the belief used it
        self._pending = (self.z, action, dt, z, aux)
        self.state, self.z = state, z
        self.ticks += 1

    def adapt(self) -> np.ndarray:
        """The last tick's one-step prediction scored and, with an adapter, learned from (memory written,
        learner fed): work that can wait until the tick's action is out. Returns its MODEL_COLUMNS row."""
        if self._pending is None:
            return self.row(np.nan, np.nan, np.nan, np.nan)
        z_prev, action, dt, z, aux = self._pending
        self._pending = None
        t0 = time.perf_counter()
        err = np.nan
        with torch.no_grad():
            if z_prev is not None:
                if self.adapter is not None:
                    self.adapter.observe(z_prev, action, dt, z)
                    pred = self.adapter.prediction
                else:
                    pred = self.model.rollout(z_prev, action[:, None], dt[:, None])[:, 0]
                err = float((pred - z).pow(2).mean())
        energy = float(aux["energy"].sum()) if "energy" in aux else np.nan
        adapt_ms = (time.perf_counter() - t0) * 1e3
        return self.row(self.step_ms, energy, err, float(z.norm()), adapt_ms, self.extra_ms)

    @torch.no_grad()
    def encode_extras(self, tick, kinds: tuple[str, ...]) -> np.ndarray:
        """The extra modalities of a tick (its streams after the model's four: a live camera, a microphone)
        through the encoder of their kind, (K, d_token); a row of NaN where a stream has nothing fresh.
        They are not fed to the belief: the shipped model was trained on its four streams only."""
        t0 = time.perf_counter()
        encoder, size = self.model.encoder, self.model.cfg.image_size
        out = np.full((len(kinds), encoder.mask_tokens.shape[1]), np.nan, np.float32)
        for k, kind in enumerate(kinds):
            data, fresh = tick.data[4 + k], tick.status[4 + k, 1] > 0
            if data is None or not fresh:
                continue
            if kind == "image":
                frame = np.asarray(data, np.uint8)
                if frame.shape[:2] != (size, size):
                    frame = cv2.resize(frame, (size, size), interpolation=cv2.INTER_AREA)
                token = encoder.vision(torch.from_numpy(np.ascontiguousarray(frame[..., :3]))[None])
            else:
                raw = np.asarray(data)
                scale = 1 / 32768 if raw.dtype == np.int16 else 1.0  # int16 devices: to [-1, 1)
                chunks = (raw.astype(np.float32) * scale).reshape(-1, 160)[:MAX_CHUNKS]
                audio = torch.zeros(1, MAX_CHUNKS, 160)
                audio[0, : len(chunks)] = torch.from_numpy(chunks)
                token = encoder.audio(audio, torch.tensor([len(chunks)]))
            out[k] = token[0].numpy()
        self.extra_ms = (time.perf_counter() - t0) * 1e3
        return out

    @property
    def tripped(self) -> bool:
        return self.watch is not None and self.watch.tripped is not None

    def row(self, step_ms, energy, err, z_norm, adapt_ms=np.nan, extra_ms=np.nan) -> np.ndarray:
        status = self.adapter.status() if self.adapter is not None else {}
        lock = -1 if self.lock is None else 2 if self.tripped else int(self.lock.locked)
        return np.array(
            [
                step_ms,
                energy,
                err,
                z_norm,
                self.belief_model.dt_clamped,
                self.refused,
                status.get("memory_entries", 0),
                status.get("crystallized", 0),
                status.get("swaps", 0),
                lock,
                adapt_ms,
                extra_ms,
            ],
            np.float64,
        )
