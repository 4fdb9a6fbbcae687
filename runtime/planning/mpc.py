"""Latent model-predictive control: CEM and MPPI over action sequences, batched, anytime, warm-started.

`Planner.plan(z0, cost)` samples `candidates` action sequences of `horizon` steps around a mean plan, rolls
them all out at once through the model's latent transition (`rollout(z0 (N, d), actions (N, H, A)) ->
(N, H, d)`), scores them with `cost(z (N, H, d), actions (N, H, A)) -> (N,)`, and refits:
- CEM: mean and std of the `elites` best;
- MPPI: the exponentially weighted mean (temperature `temperature` on the cost's spread) and its std.
It stops after `iterations`, or before an iteration that would end past its deadline (judged by the last
one's duration, with a margin), and returns the search's estimate when it stops (anytime): the refit mean,
the elites' average, not the single best sample, which is the one whose noise best fit the model's errors
(in-process reaching with the 25 ms deadline, 10 episodes: 0 reached with the best sample, 9 with the mean).
The first iteration always runs: a plan is ready by the deadline unless one iteration alone is longer than
it. Candidates whose cost is not finite lose to every finite one. The next call starts from this plan
shifted by one step (warm start), so a tick refines rather than restarts. A `prior`, a policy's proposal for
the first step (TD-MPC2's policy prior; here the distilled actor's), starts the search's mean there and is
a candidate, with the mean's later steps, in every iteration. `smoothness` correlates the sampling noise
along the horizon (iCEM's coloured noise). Costs: `LatentGoalCost`, the distance of the predicted q to a goal
latent, action magnitude, action rate, and optionally energy; `JointGoalCost`, a joint-state goal read from
the predicted state through the planning readout.
"""

import time
from collections.abc import Callable
from dataclasses import dataclass
from math import inf

import torch

METHODS = ("cem", "mppi")
DEADLINE_MARGIN = 1.2  # an iteration may run this much longer than the last one did (p99 26 ms at 25 without)


@dataclass(frozen=True)
class PlannerConfig:
    method: str = "cem"
    candidates: int = 256
    horizon: int = 10
    iterations: int = 4
    elites: int = 32  # CEM
    temperature: float = 0.1  # MPPI, in units of the candidates' cost spread
    init_std: float = 0.5
    min_std: float = 0.05
    smoothness: float = 0.0  # AR(1) correlation of the noise along the horizon (iCEM's coloured noise)
    seed: int = 0

    def __post_init__(self):
        if self.method not in METHODS:
            raise ValueError(f"`method` must be one of {METHODS}, got {self.method!r}")
        for name in ("candidates", "horizon", "iterations", "elites"):
            if getattr(self, name) < 1:
                raise ValueError(f"`{name}` must be >= 1, got {getattr(self, name)}")
        if self.method == "cem" and self.elites < 2:
            raise ValueError(f"CEM needs `elites` >= 2 (a spread to refit), got {self.elites}")
        if self.elites > self.candidates:
            raise ValueError(f"`elites` ({self.elites}) must not exceed `candidates` ({self.candidates})")
        if not (self.temperature > 0 and self.init_std > 0 and 0 < self.min_std <= self.init_std):
            raise ValueError("need temperature > 0 and 0 < min_std <= init_std")
        if not 0 <= self.smoothness < 1:
            raise ValueError(f"`smoothness` must be in [0, 1), got {self.smoothness}")


@dataclass
class Plan:
    actions: torch.Tensor  # (H, A): the search's estimate (the refit mean); actions[0] is the one to apply
    cost: float  # the lowest cost sampled
    iterations: int  # completed before the deadline
    seconds: float


class Planner:
    def __init__(
        self,
        cfg: PlannerConfig,
        rollout: Callable,
        low: torch.Tensor,
        high: torch.Tensor,
        clock: Callable[[], float] = time.perf_counter,
    ):
        self.cfg, self.rollout, self.clock = cfg, rollout, clock
        self.low, self.high = (
            torch.as_tensor(low, dtype=torch.float32),
            torch.as_tensor(high, dtype=torch.float32),
        )
        self.generator = torch.Generator().manual_seed(cfg.seed)
        self.mean: torch.Tensor | None = None  # the previous plan (warm start), or the refined next one
        self.std: torch.Tensor | None = None  # where `refine` left the search's spread
        self._shift = False  # the mean is the plan just applied: shift it by a step before searching
        # (H, d): the last iteration's mean as the model predicts it (its first `scored` steps after a pass
        # that scored only those)
        self.path: torch.Tensor | None = None

    def reset(self) -> None:
        self.mean, self.std, self._shift, self.path = None, None, False, None

    def _begin(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The mean and std a call starts from: the last plan shifted by the step just taken (warm start), or
        where refinement left them; the std is reset for a new plan."""
        h = self.cfg.horizon
        if self.mean is None:
            mean = ((self.low + self.high) / 2).expand(h, -1).clone()
        elif self._shift:
            mean = torch.cat((self.mean[1:], self.mean[-1:]), 0)
        else:
            mean = self.mean
        self._shift = False
        if self.std is not None:
            return mean, self.std
        return mean, torch.full_like(mean, self.cfg.init_std) * (self.high - self.low) / 2

    @torch.no_grad()
    def plan(
        self,
        z0: torch.Tensor,
        cost: Callable,
        deadline_s: float | None = None,
        iterations: int | None = None,
        candidates: int | None = None,
        prior: torch.Tensor | None = None,
        scored: int | None = None,
    ) -> Plan:
        """z0 (d,) the latent now -> the plan by the deadline (seconds from now; None: no deadline).
        `iterations` and `candidates` override the config's for this call (a short final pass after
        `refine` did the bulk of the search); `prior` (A,): a policy's first step to search around;
        `scored`: only the plan's first that many steps are varied, rolled out and costed, its later steps
        kept as they are (a final pass re-ranking the next steps from a fresh belief, in a fraction of a
        full rollout's time)."""
        t0 = self.clock()
        end = None if deadline_s is None else t0 + deadline_s
        mean, std = self._begin()
        n, k = iterations or self.cfg.iterations, candidates or self.cfg.candidates
        h = min(scored or self.cfg.horizon, self.cfg.horizon)
        best_cost, head, _, done = self._search(z0, cost, mean[:h], std[:h], n, k, end, prior)
        mean = torch.cat((head, mean[h:]), 0)
        self.mean, self.std, self._shift = mean, None, True
        return Plan(mean, best_cost, done, self.clock() - t0)

    @torch.no_grad()
    def refine(self, z0: torch.Tensor, cost: Callable, iterations: int = 1) -> float:
        """Search on the next plan before it is due, from z0, the latent predicted for when it will be: the
        mean and the narrowed std carry over to the next `plan`, which then needs little time after its
        frame arrives. Returns the best cost found."""
        mean, std = self._begin()
        best_cost, self.mean, self.std, _ = self._search(
            z0, cost, mean, std, iterations, self.cfg.candidates, None
        )  # the search goes on from its refit, as one plan's iterations do
        return best_cost

    def _search(self, z0, cost, mean, std, iterations: int, candidates: int, end: float | None, prior=None):
        """CEM or MPPI iterations from (mean, std); stops before one that would end past `end`. Returns the
        lowest cost sampled, the refit mean and std, and the iterations run."""
        best_cost, done, last = float("inf"), 0, 0.0
        z = z0.reshape(1, -1).expand(candidates, -1)
        if prior is not None:
            mean = torch.cat((prior.reshape(1, -1), mean[1:]), 0)
        for _ in range(iterations):
            started = self.clock()
            if done and end is not None and started + DEADLINE_MARGIN * last > end:
                break  # the next iteration would end past the deadline
            noise = self._noise(mean.shape, candidates)
            actions = torch.maximum(torch.minimum(mean + std * noise, self.high), self.low)
            actions[0] = mean  # the current mean is always a candidate: a refit never loses it
            if prior is not None and candidates > 1:
                actions[1, 0], actions[1, 1:] = prior, mean[1:]
            rolled = self.rollout(z, actions)
            self.path = rolled[0]  # the predicted states of the mean this iteration started from (a view)
            costs = torch.nan_to_num(cost(rolled, actions), nan=inf, posinf=inf)
            best_cost = min(best_cost, float(costs.min()))
            mean, std = self._refit(actions, costs, std)
            done += 1
            last = self.clock() - started
        return best_cost, mean, std, done

    def _noise(self, shape, candidates: int) -> torch.Tensor:
        """(candidates, H, A) unit-variance noise, correlated along the horizon by `smoothness`: a long plan
        of white noise is mostly jitter, and its cost then says little about where it goes."""
        noise = torch.randn((candidates, *shape), generator=self.generator)
        beta = self.cfg.smoothness
        if beta:
            keep = (1 - beta * beta) ** 0.5
            for k in range(1, shape[0]):
                noise[:, k] = beta * noise[:, k - 1] + keep * noise[:, k]
        return noise

    def _refit(self, actions: torch.Tensor, costs: torch.Tensor, std: torch.Tensor):
        cfg = self.cfg
        floor = cfg.min_std * (self.high - self.low) / 2
        if cfg.method == "cem":
            elite = actions[torch.topk(costs, min(cfg.elites, len(costs)), largest=False).indices]
            return elite.mean(0), torch.maximum(elite.std(0), floor)
        spread = (costs.max() - costs.min()).clamp(min=1e-9)
        w = torch.softmax(-(costs - costs.min()) / (cfg.temperature * spread), 0)[:, None, None]
        mean = (w * actions).sum(0)
        var = (w * (actions - mean) ** 2).sum(0)
        return mean, torch.maximum(var.sqrt(), floor)


@dataclass
class LatentGoalCost:
    """Sum over the horizon of |q_k - goal_q|^2 (weight `goal`), |a_k|^2 (`action`), |a_k - a_k-1|^2
    (`rate`, the first step against `previous`, the action in force), and an energy term (`energy` times
    `energy_fn(z)`, e.g. the transition's Hamiltonian), per candidate."""

    goal_q: torch.Tensor  # (d_latent,)
    d_latent: int
    goal: float = 1.0
    action: float = 0.01
    rate: float = 0.01
    energy: float = 0.0
    previous: torch.Tensor | None = None
    energy_fn: Callable | None = None

    def __call__(self, z: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        q = z[..., : self.d_latent]
        out = self.goal * (q - self.goal_q).pow(2).sum(-1).sum(-1)
        out = out + self.action * actions.pow(2).sum(-1).sum(-1)
        prev = actions[:, :1] if self.previous is None else self.previous.expand_as(actions[:, :1])
        steps = torch.cat((prev, actions), 1).diff(dim=1)
        out = out + self.rate * steps.pow(2).sum(-1).sum(-1)
        if self.energy and self.energy_fn is not None:
            out = out + self.energy * self.energy_fn(z.reshape(-1, z.shape[-1])).reshape(z.shape[:2]).sum(-1)
        return out


@dataclass
class JointGoalCost:
    """A joint-state goal: sum over the horizon of |readout(z_k) - goal|^2, the arm joints read from each
    predicted state by the checkpoint's planning readout (runtime/world_model/readout.py), plus `step` times
    the plan's squared joint-target steps (candidates are plans of steps: it keeps the arm from wandering
    where the model is least sure). `goal` may move between plans (the controller's integral action)."""

    goal: torch.Tensor  # (J,) radians
    readout: Callable  # z (..., 2 d_latent) -> joints (..., J)
    step: float = 3.0  # 1.0 reached 4-8 of 12 goals (the arm drifting about the goal), 3.0 9 of 12

    def __call__(self, z: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        out = (self.readout(z) - self.goal).pow(2).sum(-1).sum(-1)
        return out + self.step * actions[..., : self.goal.shape[0]].pow(2).sum(-1).sum(-1)
