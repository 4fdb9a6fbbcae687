"""The closed-loop policies by name, built from checkpoints: what `launch.eval control` scores and what
`launch.collect --policy` collects with, in this process or inside each Ray worker (runtime/distributed).

- `mpc_hssm`: latent MPC through the Hamiltonian model (the shipped checkpoint by default), searching
  around the distilled actor's step if the checkpoint has one (`prior="actor"`);
- `mpc_gru`: the same planner through the GRU baseline (`checkpoints/gru`);
- `actor`: the policy distilled from the hssm planner, one forward pass per control step;
- `expert`, `random`: the env's scripted expert and random walk (no controller: `collect_episode` runs them).
"""

from dataclasses import replace
from pathlib import Path

from runtime.world_model import checkpoint

POLICIES = ("mpc_hssm", "mpc_gru", "actor", "expert", "random")


def planner_config(candidates: int = 256, horizon: int = 10, iterations: int = 3):
    """The default planner with its search resized; elites scale with the candidates (32 of 256)."""
    from runtime.planning.control import PLANNER

    elites = min(32, max(2, candidates // 8))
    return replace(PLANNER, candidates=candidates, horizon=horizon, iterations=iterations, elites=elites)


def build(
    policy: str,
    source: Path | None = None,
    checkpoints: Path = Path("results/checkpoints"),
    planner=None,
    prior: str = "actor",
    search_ahead: bool = True,
    deadline: bool = True,
):
    """(controller, note): the controller of `policy` (None for `expert` and `random`) from the checkpoint at
    `source` (default: the shipped one), and a note where it runs with less than asked (no actor to search
    around). checkpoint.CheckpointError where its checkpoint is missing; ValueError for an unknown policy.

    `deadline`: the planner stops its search at the live loop's deadline (wall-clock: how far it gets varies
    with the machine's load) or, without, runs every iteration (an episode then depends on its seed alone)."""
    from runtime.planning.control import PLAN_DEADLINE_S, MPCController
    from runtime.world_model import readout

    if policy not in POLICIES:
        raise ValueError(f"unknown policy {policy!r}; valid: {', '.join(POLICIES)}")
    source = source or checkpoint.DEFAULT_CHECKPOINT
    if policy == "actor":
        from runtime.planning import actor

        model, _ = checkpoint.load(source)
        return actor.ActorController(model, actor.load(source), readout=readout.load(source)), None
    if not policy.startswith("mpc_"):
        return None, None
    if policy == "mpc_gru":
        source = checkpoints / "gru"
    model, _ = checkpoint.load(source)
    joints = readout.load(source)
    found, note = None, None  # the actor distilled from the hssm planner proposes its first steps
    if policy == "mpc_hssm" and prior == "actor":
        from runtime.planning import actor

        try:
            found = actor.load(source)
        except checkpoint.CheckpointError as exc:
            note = f"searching without a policy prior ({exc})"
    controller = MPCController(
        model,
        planner or planner_config(),
        deadline_s=PLAN_DEADLINE_S if deadline else None,
        readout=joints,
        prior=found,
        search_ahead=search_ahead,
    )
    return controller, note


def controller(policy: str, **kw):
    """`build`'s controller alone: what a Ray worker calls, through `functools.partial`, to make its own."""
    return build(policy, **kw)[0]


def outcome(episode: dict, controller) -> dict:
    """What a Ray worker sends back of a scored episode: its success and the plans' times (then cleared)."""
    plan_ms = list(controller.plan_ms) if controller is not None else []
    if controller is not None:
        controller.plan_ms.clear()
    return {"success": bool(episode["success"]), "plan_ms": plan_ms}
