"""The planner on problems with known answers: a quadratic cost's optimum, a deadline on a fake clock, the
warm start."""

import pytest
import torch

from runtime.planning.mpc import JointGoalCost, LatentGoalCost, Planner, PlannerConfig

D, A = 4, 2
B = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.5, 0.5], [0.0, -1.0]]) * 0.1


def linear_rollout(z0: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
    """z_k+1 = z_k + B a_k: the optimum of a goal cost is known in closed form."""
    return z0[:, None] + torch.cumsum(actions @ B.T, 1)


def _planner(method: str, **kw) -> Planner:
    cfg = PlannerConfig(method=method, candidates=256, horizon=5, iterations=kw.pop("iterations", 12), **kw)
    return Planner(cfg, linear_rollout, torch.full((A,), -1.0), torch.full((A,), 1.0), **kw_clock(kw))


def kw_clock(kw):
    return {"clock": kw["clock"]} if "clock" in kw else {}


@pytest.mark.parametrize("method", ["cem", "mppi"])
def test_the_planner_finds_the_optimum_of_a_quadratic_cost(method):
    """Cost sum_k |z_k - g|^2 for a linear system: the optimum is the least-squares solution over all 5 x 2
    actions (inside the action bounds for this goal). The plan's cost is within 2 % of it and its first
    action close to the optimum's. Within 2 % means: 2 % of the way from the optimum to doing nothing.
    The goal is off the actions' reachable subspace, so the optimum's cost is not zero."""
    z0 = torch.zeros(D)
    goal = torch.tensor([0.06, -0.04, 0.05, 0.0])
    cost = LatentGoalCost(goal, d_latent=D, action=0.0, rate=0.0)
    h = 5
    m = torch.zeros(h * D, h * A)
    for k in range(h):
        for j in range(k + 1):
            m[k * D : (k + 1) * D, j * A : (j + 1) * A] = B
    target = (goal - z0).repeat(h)
    best = torch.linalg.lstsq(m, target[:, None]).solution[:, 0].reshape(h, A)
    assert best.abs().max() <= 1.0
    optimum = float(cost(linear_rollout(z0[None], best[None]), best[None])[0])
    planner = _planner(method, iterations=30)
    plan = planner.plan(z0, cost)
    idle = torch.zeros(1, h, A)
    nothing = float(cost(linear_rollout(z0[None], idle), idle)[0])
    assert optimum > 1e-4 and plan.cost - optimum <= 0.02 * (nothing - optimum), (plan.cost, optimum, nothing)
    assert torch.allclose(plan.actions[0], best[0], atol=0.15)


def test_the_deadline_is_kept_and_a_plan_is_ready():
    """Each rollout advances a fake clock by 1 ms; with a 3.5 ms deadline 3 iterations run (a 4th would end
    at 4 ms), not 12, and the best plan so far comes back before the deadline."""
    now = [0.0]

    def rollout(z0, actions):
        now[0] += 1e-3
        return linear_rollout(z0, actions)

    cfg = PlannerConfig(candidates=64, horizon=5, iterations=12, elites=8)
    planner = Planner(cfg, rollout, torch.full((A,), -1.0), torch.full((A,), 1.0), clock=lambda: now[0])
    plan = planner.plan(torch.zeros(D), LatentGoalCost(torch.ones(D) * 0.2, d_latent=D), deadline_s=3.5e-3)
    assert plan.iterations == 3 and plan.seconds == pytest.approx(3e-3) and plan.seconds <= 3.5e-3
    assert plan.actions.shape == (5, A) and torch.isfinite(plan.actions).all() and plan.cost < float("inf")


def test_the_warm_start_lowers_the_cost_of_the_next_tick():
    """One iteration per tick: the second tick, started from the first's plan, ends lower than a cold
    start with the same random draws."""
    z0, goal = torch.zeros(D), torch.tensor([0.3, -0.2, 0.05, 0.2])
    cost = LatentGoalCost(goal, d_latent=D)
    cfg = PlannerConfig(candidates=64, horizon=5, iterations=1, elites=8, seed=3)
    warm = Planner(cfg, linear_rollout, torch.full((A,), -1.0), torch.full((A,), 1.0))
    first = warm.plan(z0, cost)
    warm.mean = torch.cat((first.actions[:1], first.actions[:-1]), 0)  # undo the shift: same state again
    second = warm.plan(z0, cost)
    cold = Planner(
        PlannerConfig(**{**cfg.__dict__, "seed": 4}), linear_rollout, -torch.ones(A), torch.ones(A)
    )
    assert second.cost < first.cost and second.cost < cold.plan(z0, cost).cost


def test_bad_planner_configs_are_refused():
    with pytest.raises(ValueError, match="method"):
        PlannerConfig(method="random-shooting")
    with pytest.raises(ValueError, match="elites"):
        PlannerConfig(candidates=8, elites=16)
    with pytest.raises(ValueError, match="smoothness"):
        PlannerConfig(smoothness=1.0)


def test_coloured_noise_is_correlated_along_the_horizon_with_unit_variance():
    """smoothness b: neighbouring steps' noise correlates by b, every step keeps variance 1."""
    planner = Planner(PlannerConfig(candidates=4096, horizon=8, smoothness=0.8), linear_rollout, -1, 1)
    noise = planner._noise((8, A), 4096)
    assert torch.allclose(noise.var(0), torch.ones(8, A), atol=0.08)
    corr = (noise[:, 1:] * noise[:, :-1]).mean(0)
    assert torch.allclose(corr, torch.full_like(corr, 0.8), atol=0.05)
    white = Planner(PlannerConfig(candidates=4096, horizon=8), linear_rollout, -1, 1)._noise((8, A), 4096)
    assert (white[:, 1:] * white[:, :-1]).mean(0).abs().max() < 0.06


@pytest.mark.parametrize("smoothness", [0.0, 0.8])
def test_a_joint_goal_read_through_a_readout_is_reached(smoothness):
    """JointGoalCost through a linear readout of a linear system: the plan's end state reads as the goal,
    with or without coloured noise."""
    readout = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.0, 0.0], [0.0, 0.0]])  # the first two coordinates
    goal = torch.tensor([0.2, -0.15])
    cost = JointGoalCost(goal, lambda z: z @ readout, step=0.0)
    cfg = PlannerConfig(candidates=256, horizon=5, iterations=20, smoothness=smoothness)
    planner = Planner(cfg, linear_rollout, torch.full((A,), -1.0), torch.full((A,), 1.0))
    plan = planner.plan(torch.zeros(D), cost)
    end = linear_rollout(torch.zeros(1, D), plan.actions[None])[0, -1] @ readout
    assert torch.allclose(end, goal, atol=0.03), end


@pytest.mark.parametrize("method", ["cem", "mppi"])
def test_refining_ahead_lets_a_short_final_pass_match_a_full_plan(method):
    """Four iterations of `refine` before the plan is due, then one pass of 32 candidates, end about where a
    plan of five iterations of 256 at once does, and well below one cold pass of 32: the search can run
    before the frame arrives, and only a short pass after it."""
    z0 = torch.zeros(D)
    cost = LatentGoalCost(torch.tensor([0.06, -0.04, 0.05, 0.0]), d_latent=D, action=0.0, rate=0.0)
    full = _planner(method).plan(z0, cost, iterations=5).cost
    cold = _planner(method).plan(z0, cost, iterations=1, candidates=32).cost
    ahead = _planner(method)
    for _ in range(4):
        ahead.refine(z0, cost)
    final = ahead.plan(z0, cost, iterations=1, candidates=32)
    assert final.iterations == 1 and final.actions.shape == (5, A)
    assert final.cost <= full + 0.1 * (cold - full), (final.cost, full, cold)


def _optimum(goal: torch.Tensor, h: int = 5) -> torch.Tensor:
    """The least-squares plan (h, A) of the linear system toward `goal` from 0."""
    m = torch.zeros(h * D, h * A)
    for k in range(h):
        for j in range(k + 1):
            m[k * D : (k + 1) * D, j * A : (j + 1) * A] = B
    return torch.linalg.lstsq(m, goal.repeat(h)[:, None]).solution[:, 0].reshape(h, A)


def test_the_plan_is_the_elites_mean_not_the_luckiest_sample():
    """With a cost whose noise is as large as its spread, the last iteration's best sample is mostly the
    luckiest draw; the elites' mean averages the noise out and costs less under the true cost."""
    goal = torch.tensor([0.06, -0.04, 0.05, 0.0])
    exact = LatentGoalCost(goal, d_latent=D, action=0.0, rate=0.0)
    noise = torch.Generator().manual_seed(7)

    def noisy(z, actions):
        clean = exact(z, actions)
        costs.append(clean + clean.std() * torch.randn(clean.shape, generator=noise))
        return costs[-1]

    costs, seen = [], []
    planner = _planner("cem", iterations=10)
    rollout = planner.rollout
    planner.rollout = lambda z0, actions: seen.append(actions.clone()) or rollout(z0, actions)
    plan = planner.plan(torch.zeros(D), noisy)
    luckiest = seen[-1][int(torch.argmin(costs[-1]))]  # the last iteration's best sample

    def true_cost(actions):
        return float(exact(rollout(torch.zeros(1, D), actions[None]), actions[None])[0])

    assert plan.cost == pytest.approx(min(float(c.min()) for c in costs))
    assert true_cost(plan.actions) < true_cost(luckiest)


def test_a_prior_step_starts_the_search_and_stays_a_candidate():
    """One iteration of 16 candidates: started from a policy's proposal of the optimum's first step, the
    plan's first step lands nearer the optimum than without it (same random draws), and the proposal is
    among the candidates rolled out."""
    goal = torch.tensor([0.3, -0.2, 0.05, 0.2])
    cost = LatentGoalCost(goal, d_latent=D, action=0.0, rate=0.0)
    first = _optimum(goal)[0].clamp(-1, 1)

    def one_pass(prior):
        planner = Planner(
            PlannerConfig(candidates=16, horizon=5, iterations=1, elites=4, seed=5),
            linear_rollout,
            torch.full((A,), -1.0),
            torch.full((A,), 1.0),
        )
        seen = []
        planner.rollout = lambda z0, actions: seen.append(actions.clone()) or linear_rollout(z0, actions)
        return planner.plan(torch.zeros(D), cost, prior=prior), seen[0]

    without, _ = one_pass(None)
    with_prior, candidates = one_pass(first)
    assert (with_prior.actions[0] - first).norm() < (without.actions[0] - first).norm()
    assert torch.isclose(candidates[:, 0], first).all(-1).any()


def test_a_pass_scoring_the_first_steps_keeps_the_plans_tail():
    """`scored=2` on a horizon of 5: the candidates rolled out are 2 steps long, and the plan's later steps
    come back as the mean held them (shifted by the warm start), while its first steps move toward the
    optimum."""
    goal = torch.tensor([0.3, -0.2, 0.05, 0.2])
    cost = LatentGoalCost(goal, d_latent=D, action=0.0, rate=0.0)
    planner = Planner(
        PlannerConfig(candidates=64, horizon=5, iterations=3, elites=8, seed=2),
        linear_rollout,
        torch.full((A,), -1.0),
        torch.full((A,), 1.0),
    )
    planner.plan(torch.zeros(D), cost)
    tail = torch.cat((planner.mean[1:], planner.mean[-1:]), 0)[2:].clone()  # what the warm start shifts in
    seen = []
    planner.rollout = lambda z0, actions: seen.append(actions.shape) or linear_rollout(z0, actions)
    plan = planner.plan(torch.zeros(D), cost, iterations=1, candidates=16, scored=2)
    assert seen == [(16, 2, A)] and planner.path.shape == (2, D)
    assert torch.equal(plan.actions[2:], tail) and plan.actions.shape == (5, A)
