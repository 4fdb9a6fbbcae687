"""The slow path of online adaptation: fine-tune the transition on recent ticks, keep it only if it is better.

A replay window holds the last `window` ticks' (z_t, a, dt, z_t+1) from the frozen encoders and belief;
every `holdout_every`-th tick is kept out for validation. A round copies the live predictor, fine-tunes the
copy for `steps` Adam steps on the rest (one-step prediction error in z), and scores both on the held-out
ticks:
- the candidate is swapped in only if its validation error is below `accept` x that of the predictions the
  runtime makes now (`reference`: the live predictor with the memory's corrections, when there is memory;
  a learner judged against the bare predictor swapped in what the memory already corrected, and the two
  together did worse on the flip shift than the memory alone);
- otherwise it is discarded (`rejected`);
- a swapped-in predictor that scores worse than the one it replaced at a later round, on ticks neither
  trained on, is rolled back to it (`rolled_back`).
Weights change only in `apply`, which the runtime calls between ticks, and never under a dynamics lock
(`locked`). `rounds()` is a round as a generator of Adam steps, so the live loop runs a few per tick, after
the tick's prediction (inside its step time): a learner thread, tried first, fought the tick for the GIL and
the 2 cores (tick p99 86 ms against 8 ms without it).
"""

import copy
from collections import deque
from dataclasses import dataclass

import torch
from torch.nn import functional as F


@dataclass(frozen=True)
class LearnerConfig:
    window: int = 900  # ticks kept (30 s at 30 Hz)
    holdout_every: int = 4  # every 4th tick validates, the rest train
    min_ticks: int = 60  # a round needs this many ticks in the window
    every: int = 30  # ticks between rounds
    steps: int = 30  # Adam steps per round
    batch: int = 128
    lr: float = 1e-2  # 30 steps of 1e-2 beat 60 of 5e-3 and of 2e-2 on the flip shift's one-step error
    accept: float = 0.98  # a candidate must beat the live predictor by 2 % on held-out ticks
    # Parameters the learner leaves alone (by name prefix): the transition's coordinate system. A change of
    # the world (a heavier cube, a weaker or reversed motor) is a change of forces, masses and gains.
    frozen: tuple[str, ...] = ("basis", "center")

    def __post_init__(self):
        for name in ("window", "holdout_every", "min_ticks", "every", "steps", "batch"):
            if getattr(self, name) < 1:
                raise ValueError(f"`{name}` must be >= 1, got {getattr(self, name)}")
        if self.holdout_every < 2:
            raise ValueError("`holdout_every` must be >= 2 (some ticks must train)")


@dataclass
class LearnerEvent:
    kind: str  # "swapped", "rejected", "rolled_back", "locked"
    tick: int
    live_error: float
    candidate_error: float


class SlowLearner:
    def __init__(self, model, cfg: LearnerConfig = LearnerConfig(), seed: int = 0):
        self.model, self.cfg = model, cfg
        self.replay: deque = deque(maxlen=cfg.window)
        self.ticks = 0
        self.previous = None  # the weights the last swap replaced, for a rollback
        self.generator = torch.Generator().manual_seed(seed)

    def observe(self, z_prev: torch.Tensor, action: torch.Tensor, dt: torch.Tensor, z_now: torch.Tensor):
        row = (z_prev[0].detach(), action[0].detach(), dt[0].detach().float(), z_now[0].detach())
        self.replay.append((self.ticks, row))
        self.ticks += 1

    def due(self) -> bool:
        return len(self.replay) >= self.cfg.min_ticks and self.ticks % self.cfg.every == 0

    def _split(self):
        items = list(self.replay)
        z, a, dt, nxt = (torch.stack(c) for c in zip(*(row for _, row in items), strict=True))
        # By the tick's own number, so a held-out tick stays held out in every round it is in the window.
        held = torch.tensor([i % self.cfg.holdout_every == 0 for i, _ in items])
        return (z[~held], a[~held], dt[~held], nxt[~held]), (z[held], a[held], dt[held], nxt[held])

    @staticmethod
    @torch.no_grad()
    def error(step, data) -> float:
        """One-step error of `step` (z, a, dt) -> z_next on (z, a, dt, z_next)."""
        z, a, dt, nxt = data
        return float(F.mse_loss(step(z, a, dt), nxt))

    def round(self, reference=None) -> tuple[LearnerEvent, dict | None]:
        """A whole round at once (evaluation, tests): see `rounds`."""
        steps = self.rounds(reference)
        while True:
            try:
                next(steps)
            except StopIteration as done:
                return done.value

    def rounds(self, reference=None):
        """One round as a generator that yields after every Adam step, so the runtime can spread it over
        several ticks; its return value is the event and the weights to swap in (or None). `reference`
        (z, a, dt) -> z_next is what the candidate must beat (default: the live predictor).
        It reads the live predictor and never writes it."""
        train, held = self._split()
        live = self.model.predictor
        if self.previous is not None:  # is the last swap still better than what it replaced?
            before = copy.deepcopy(live)
            before.load_state_dict(self.previous)
            live_err, before_err = self.error(live.step, held), self.error(before.step, held)
            if before_err < self.cfg.accept * live_err:  # the same margin a swap had to clear
                return LearnerEvent("rolled_back", self.ticks, live_err, before_err), self.previous
        candidate = copy.deepcopy(live)
        candidate.train()
        trained = [p for name, p in candidate.named_parameters() if not name.startswith(self.cfg.frozen)]
        opt = torch.optim.Adam(trained, lr=self.cfg.lr)
        n = len(train[0])
        for _ in range(self.cfg.steps):
            idx = torch.randint(0, n, (min(self.cfg.batch, n),), generator=self.generator)
            z, a, dt, nxt = (t[idx] for t in train)
            with torch.enable_grad():  # callers stream ticks under no_grad
                loss = F.mse_loss(candidate.step(z, a, dt), nxt)
                opt.zero_grad()
                loss.backward()
            opt.step()
            yield
        candidate.eval()
        live_err, cand_err = self.error(reference or live.step, held), self.error(candidate.step, held)
        if cand_err < self.cfg.accept * live_err:
            return LearnerEvent("swapped", self.ticks, live_err, cand_err), candidate.state_dict()
        return LearnerEvent("rejected", self.ticks, live_err, cand_err), None

    def apply(self, event: LearnerEvent, weights: dict | None, locked: bool) -> LearnerEvent:
        """Between ticks: swap `weights` in (recording what they replace) unless the dynamics are locked."""
        if weights is not None and locked:
            event = LearnerEvent("locked", event.tick, event.live_error, event.candidate_error)
        elif weights is not None:
            replaced = copy.deepcopy(self.model.predictor.state_dict())
            self.model.predictor.load_state_dict(weights)
            self.previous = None if event.kind == "rolled_back" else replaced
        return event
