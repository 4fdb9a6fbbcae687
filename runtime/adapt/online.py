"""Online adaptation, both speeds behind one object the runtime calls once per tick.

`observe(z_prev, a, dt, z_now)` after each tick: the fast path writes the memory (fast.py), the slow learner
records the tick and, when a round is due, runs it: whole (evaluation), or `steps_per_tick` Adam steps per
tick (live; within the tick's step, after its prediction is made). A finished round's weights are applied
here, between ticks, and the memory's residuals re-based onto the new transition. Under a dynamics lock no
round runs at all.
`predict` and `rollout` are what the planner and the dashboard use.
`status()` is what the live status shows.
"""

import copy
from dataclasses import dataclass, field

import torch

from runtime.adapt.fast import FastAdapter, FastConfig
from runtime.adapt.learner import LearnerConfig, LearnerEvent, SlowLearner
from runtime.adapt.lock import DynamicsLock

VARIANTS = {"none": (False, False), "memory": (True, False), "learner": (False, True), "both": (True, True)}


@dataclass(frozen=True)
class AdaptConfig:
    memory: bool = True
    learner: bool = True
    steps_per_tick: int = 0  # learner Adam steps per tick (live); 0 runs a due round whole (evaluation)
    defer_steps: bool = (
        False  # the steps wait for `learn()` instead of running in `observe` (a planning brain)
    )
    fast: FastConfig = field(default_factory=FastConfig)
    slow: LearnerConfig = field(default_factory=LearnerConfig)

    @classmethod
    def variant(cls, name: str, **kw) -> "AdaptConfig":
        if name not in VARIANTS:
            raise ValueError(f"unknown adaptation variant {name!r}; valid: {', '.join(VARIANTS)}")
        memory, learner = VARIANTS[name]
        return cls(memory=memory, learner=learner, **kw)


class OnlineAdapter:
    def __init__(self, model, cfg: AdaptConfig = AdaptConfig(), lock: DynamicsLock | None = None):
        self.model, self.cfg, self.lock = model, cfg, lock
        self.fast = FastAdapter(model, cfg.fast) if cfg.memory else None
        self.learner = SlowLearner(model, cfg.slow) if cfg.learner else None
        self._round = None  # the round in progress, live
        self.prediction: torch.Tensor | None = None  # the last observed tick's one-step prediction
        self.counts = dict.fromkeys(("swapped", "rejected", "rolled_back", "locked"), 0)

    @property
    def memory_writes(self) -> bool:
        return self.lock is None or not self.lock.locked or self.lock.memory_writes

    def observe(self, z_prev: torch.Tensor, action: torch.Tensor, dt: torch.Tensor, z_now: torch.Tensor):
        """One tick's outcome (batch 1). Returns the learner event applied this tick, if any; `prediction`
        is then the one-step prediction of z_now that was made before it was known (the same as `predict`
        would have given, without computing it twice on the tick's path)."""
        if self.fast is not None and self.memory_writes:
            self.prediction = self.fast.observe(z_prev, action, dt, z_now)
        else:
            self.prediction = self.predict(z_prev, action, dt)
        if self.learner is None:
            return None
        self.learner.observe(z_prev, action, dt, z_now)
        if self.lock is not None and not self.lock.permits_weight_change:
            return None  # a locked runtime applies no weight changes: no round is worth its time
        if not self.cfg.steps_per_tick:
            return self._apply(*self.learner.round(self._reference())) if self.learner.due() else None
        if self._round is None and self.learner.due():
            self._round = self.learner.rounds(self._reference())
        return None if self.cfg.defer_steps else self.learn()

    def learn(self):
        """`steps_per_tick` steps of the round in progress, if any; the learner event when it ends (live, a
        brain calls this in what is left of a tick once its action is out and the planner has searched)."""
        if self._round is None:
            return None
        try:
            for _ in range(self.cfg.steps_per_tick):
                next(self._round)
        except StopIteration as done:
            self._round = None
            return self._apply(*done.value)
        return None

    def _reference(self):
        """What a learner's candidate must beat: the predictions made now, memory corrections included."""
        return self.fast.predict if self.fast is not None else None

    def _apply(self, event: LearnerEvent, weights) -> LearnerEvent:
        locked = self.lock is not None and not self.lock.permits_weight_change
        old = copy.deepcopy(self.model.predictor) if weights is not None and not locked else None
        event = self.learner.apply(event, weights, locked)
        if old is not None and self.fast is not None:
            self.fast.rebase(old.step, self.model.predictor.step)
        self.counts[event.kind] += 1
        return event

    @torch.no_grad()
    def predict(self, z: torch.Tensor, action: torch.Tensor, dt: torch.Tensor) -> torch.Tensor:
        if self.fast is not None:
            return self.fast.predict(z, action, dt)
        return self.model.predictor.step(z, action, dt)

    @torch.no_grad()
    def rollout(self, z0: torch.Tensor, actions: torch.Tensor, dt: torch.Tensor, held=None, engine=None):
        """`held` (A,): the action in force; the memory's correction is recalled for it once and held
        (planning; fast.py). `engine`: what rolls out (fast.py; default the model's rollout)."""
        if self.fast is not None:
            return self.fast.rollout(z0, actions, dt, held, engine)
        return (engine or self.model.rollout)(z0, actions, dt)

    def status(self) -> dict:
        memory = self.fast.memory if self.fast is not None else None
        return {
            "memory_entries": len(memory) if memory else 0,
            "trust": round(self.fast.trust, 3) if self.fast is not None else 0.0,
            "crystallized": memory.crystallized if memory else 0,
            "cells": len(memory.cells) if memory else 0,
            "splits": memory.splits if memory else 0,
            "swaps": self.counts["swapped"],
            "rejected": self.counts["rejected"],
            "rolled_back": self.counts["rolled_back"],
            "refused_locked": self.counts["locked"],
            "lock": "none" if self.lock is None else ("locked" if self.lock.locked else "open"),
        }
