"""Evaluations on held-out data: `python -m launch.eval worldmodel --json results/eval-worldmodel.json`,
`python -m launch.eval memory --json results/eval-memory.json`,
`python -m launch.eval adapt --json results/eval-adapt.json`,
`python -m launch.eval control --task reach --episodes 50 --json results/eval-control-reach.json`.

worldmodel:

Reads every model's checkpoint from `--checkpoints/<model>` (made by `python -m launch.train --model all`),
fits each model's linear probes on training episodes and scores everything on held-out episodes
(runtime/world_model/evaluation.py):
- `probe_r2_ee`, `probe_r2_object`, `probe_r2_joint`: hssm's probe from the latent q, R^2;
- `rollout_err_h{1,5,10,30}_<model>`: open-loop rollouts under the actions taken, decoded by that model's
  probe (from its whole latent), mean Euclidean error of end-effector and cube positions, metres;
- `energy_drift_leapfrog`, `energy_drift_euler`: 1,000 undriven, undamped transition steps (hssm's, and the
  Euler model's), median relative |H_T - H_0| / |H_0|;
- `scan_step_max_abs_err`: hssm, one held-out episode, the belief's parallel scan against its tick-by-tick
  steps on the same encoder outputs (fp32); details `scan_step_max_abs_err_end_to_end`: the same from the raw
  ticks, the encoders batched against one tick at a time;
- `dt_ablation_h{10,30}_<mode>`: hssm on held-out episodes with a third of the ticks lost (so tick spacing
  jitters), dt_eff given as measured, phase (the mean period) or fixed (nominal).
"""

import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import tyro
from rich.console import Console

from runtime.benchmarks.report import Report
from runtime.planning import policies as closed_loop
from runtime.world_model import checkpoint
from runtime.world_model import evaluation as ev
from runtime.world_model.model import MODELS
from runtime.world_model.training import Episodes

TARGETS = {
    "probe_r2_ee": (">=", 0.95),
    "probe_r2_object": (">=", 0.9),
    "rollout_h30_hssm_over_best_baseline": ("<=", 0.8),
    "energy_drift_leapfrog": ("<=", 0.01),
    "scan_step_max_abs_err": ("<=", 1e-5),
}


@dataclass
class WorldModelEval:
    """World models on held-out episodes: probes, rollouts in metres, energy drift, scan vs step, dt_eff."""

    json: Path | None = None
    """Write the report here."""
    checkpoints: Path = Path("results/checkpoints")
    """Directory holding one checkpoint per model (launch.train --model all)."""
    models: tuple[str, ...] = MODELS
    """Models to evaluate (hssm is always among them; the rollout ratio needs at least one baseline)."""
    train_data: Path = Path("data/train")
    """Episodes the probes are fitted on."""
    heldout: Path = Path("data/heldout")
    """Held-out episodes everything is scored on (launch.collect --seed 100000 --out data/heldout)."""
    probe_episodes: int | None = None
    """Fit the probes on the first N training episodes (default: all; each has its own cube position)."""
    fit_stride: int = 8
    """Ticks between the windows the probes are fitted on."""
    stride: int = 4
    """Ticks between held-out rollout starts."""
    drop: float = 1 / 3
    """Share of ticks lost for the dt_eff ablation."""
    seed: int = 0


def run(cfg: WorldModelEval, console: Console) -> Report:
    torch.set_num_threads(2)
    unknown = sorted(set(cfg.models) - set(MODELS))
    if unknown:
        raise SystemExit(f"launch.eval: unknown model(s) {', '.join(unknown)}; valid: {', '.join(MODELS)}")
    models = {}
    for name in ("hssm", *(m for m in MODELS if m in cfg.models and m != "hssm")):
        try:
            models[name] = checkpoint.load(cfg.checkpoints / name)
        except checkpoint.CheckpointError as exc:
            raise SystemExit(
                f"launch.eval: {exc}\n  train them with `python -m launch.train --model all`"
            ) from None
    fit_eps = Episodes(cfg.train_data, cfg.probe_episodes).episodes
    test_eps = Episodes(cfg.heldout).episodes
    report = Report("eval-worldmodel", config={k: str(v) for k, v in vars(cfg).items()}, targets=TARGETS)
    res, det = report.results, report.details
    horizon = max(ev.HORIZONS)
    for name, (model, manifest) in models.items():
        window = manifest["train"]["window"]
        fit = ev.starts(fit_eps, window, horizon, cfg.fit_stride)
        test = ev.starts(test_eps, window, horizon, cfg.stride)
        z_fit, z_test = ev.beliefs(model, fit.batch), ev.beliefs(model, test.batch)
        for q_only in (True, False):  # from q (the issue's probe), and from all of z (the rollouts' decoder)
            probe = ev.Probe.fit(ev.features(model, z_fit, q_only), fit.truth_now)
            scores = ev.r2(probe(ev.features(model, z_test, q_only)), test.truth_now)
            for quantity, value in scores.items():
                det[f"probe_r2_{quantity}_{name}_{'q' if q_only else 'z'}"] = value
        errs = ev.rollout_errors(model, probe, test, z_test)
        for h, e in errs.items():
            res[f"rollout_err_h{h}_{name}"] = (e["ee"] + e["object"]) / 2
            det[f"rollout_joint_rad_h{h}_{name}"] = e["joint"]
        console.print(f"{name}: probe and rollouts on {len(z_test)} held-out starts")
        if name == "hssm":
            for quantity in ev.QUANTITIES:
                res[f"probe_r2_{quantity}"] = det[f"probe_r2_{quantity}_hssm_q"]
            res["energy_drift_leapfrog"] = ev.energy_drift(model, z_test)
            res["scan_step_max_abs_err"], det["scan_step_max_abs_err_end_to_end"] = ev.scan_step_error(
                model, test_eps[0]
            )
            _dt_ablation(model, probe, test_eps, window, cfg, res)
        if name == "euler":
            res["energy_drift_euler"] = ev.energy_drift(model, z_test)
        # what "nothing moves" scores: the probe's reading of now, held for h ticks
        for h in ev.HORIZONS:
            still = ev.errors(probe(ev.features(model, z_test, False)), test.truth_after[:, h - 1])
            det[f"hold_err_h{h}_{name}"] = (still["ee"] + still["object"]) / 2
    baselines = [m for m in models if m != "hssm"]
    if baselines:
        best = min(res[f"rollout_err_h30_{m}"] for m in baselines)
        res["rollout_h30_hssm_over_best_baseline"] = res["rollout_err_h30_hssm"] / best
    return report


def _dt_ablation(model, probe, episodes, window, cfg, res) -> None:
    rng = np.random.default_rng(cfg.seed)
    jittered = [ev.jitter_episode(e, rng, cfg.drop) for e in episodes]
    s = ev.starts(jittered, window, max(ev.HORIZONS), cfg.stride)
    true_dt = s.batch["dt_eff"]
    for mode in ("measured", "phase", "fixed"):
        s.batch["dt_eff"] = ev.dt_for_mode(true_dt.float(), mode).double()
        z = ev.beliefs(model, s.batch)
        errs = ev.rollout_errors(model, probe, s, z, ev.dt_for_mode(s.dt, mode))
        for h in (10, 30):
            res[f"dt_ablation_h{h}_{mode}"] = (errs[h]["ee"] + errs[h]["object"]) / 2
    s.batch["dt_eff"] = true_dt


@dataclass
class OnOneModel:
    """Options of the evaluations that run one world model."""

    json: Path | None = None
    """Write the report here."""
    checkpoint: Path | None = None
    """World-model checkpoint (default: the shipped one)."""


@dataclass
class OnRay:
    """Options of the evaluations that scale out on Ray (runtime/distributed)."""

    workers: int = 1
    """Ray workers (1 without --address: everything in this process). adapt: one shift per worker at a time,
    learning on one thread (figures may differ from the in-process run's in the last digits); control: one
    simulator and controller per worker, the same seeded episodes."""
    address: str | None = None
    """Ray cluster to join: `auto` or HOST:PORT of a head node (default: Ray started locally)."""

    def __post_init__(self):
        if self.workers < 1:
            raise ValueError(f"`workers` must be >= 1, got {self.workers}")

    @property
    def on_ray(self) -> bool:
        return self.workers > 1 or self.address is not None


@dataclass
class MemoryEval(OnOneModel):
    """A cell's store against exact nearest-neighbour and modern-Hopfield stores: recall from partial cues,
    capacity, audio-only cues for stored camera latents (runtime/memory/evaluation.py)."""

    heldout: Path = Path("data/heldout")
    """Episodes the entries come from."""
    capacity: int = 4096
    """Entries per cell (C)."""
    cues: int = 512
    """Cues scored per figure."""
    seed: int = 0


def run_memory(cfg: MemoryEval, console: Console) -> Report:
    from runtime.memory import evaluation as mem

    torch.set_num_threads(2)
    model, manifest = checkpoint.load(cfg.checkpoint or checkpoint.DEFAULT_CHECKPOINT)
    entries = mem.entries_from_episodes(model, Episodes(cfg.heldout).episodes)
    console.print(
        f"memory: {len(entries.keys)} entries from {cfg.heldout}, {int(entries.audible.sum())} audible"
    )
    report = Report("eval-memory", config={k: str(v) for k, v in vars(cfg).items()})
    results, details = mem.recall_scores(entries, cfg.capacity, np.random.default_rng(cfg.seed), cfg.cues)
    report.results.update(results)
    report.details.update(details, checkpoint_command=manifest.get("command"))
    return report


@dataclass
class AdaptEval(OnRay, OnOneModel):
    """Prediction error through a change of the world's rules and back (action sign flip on the shoulder,
    cube mass x4, friction x0.3, actuator gain x0.5), for no adaptation, memory only, learner only and both
    (runtime/adapt/evaluation.py)."""

    train_data: Path = Path("data/train")
    """Episodes the decoding probe is fitted on."""
    probe_episodes: int = 40
    phase: int = 4
    """Episodes per phase (nominal, shifted, nominal), each `episode_seconds` long."""
    episode_seconds: float = 8.0
    shifts: tuple[str, ...] = ("flip", "mass", "friction", "gain")
    seed: int = 200_000


ADAPT_TARGETS = {
    **{f"{s}_recovery_ticks_both": ("<=", 50.0) for s in ("flip", "mass")},
    **{f"{s}_post_ratio_both": ("<=", 1.5) for s in ("flip", "mass", "friction", "gain")},
    **{f"{s}_forget_ratio_both": ("<=", 1.2) for s in ("flip", "mass", "friction", "gain")},
    **{f"{s}_none_over_both_post": (">=", 2.0) for s in ("flip", "mass", "friction", "gain")},
}


def run_adapt(cfg: AdaptEval, console: Console) -> Report:
    from rich.progress import Progress

    from runtime.adapt import evaluation as adapt

    unknown = sorted(set(cfg.shifts) - set(adapt.SHIFTS))
    if unknown:
        raise SystemExit(f"launch.eval adapt: unknown shifts {unknown}; valid: {', '.join(adapt.SHIFTS)}")
    torch.set_num_threads(2)
    model, manifest = checkpoint.load(cfg.checkpoint or checkpoint.DEFAULT_CHECKPOINT)
    probe = adapt.fit_probe(model, Episodes(cfg.train_data, cfg.probe_episodes).episodes)
    ecfg = adapt.AdaptEvalConfig(phase=cfg.phase, episode_seconds=cfg.episode_seconds, seed=cfg.seed)
    targets = {k: v for k, v in ADAPT_TARGETS.items() if k.split("_")[0] in cfg.shifts}
    report = Report("eval-adapt", config={k: str(v) for k, v in vars(cfg).items()}, targets=targets)
    with Progress(console=console, transient=True) as bar:
        if cfg.on_ray:  # one shift per task: a worker runs its own simulator, model and learner
            from functools import partial

            from runtime.distributed import cluster, tasks

            cluster.start(cfg.workers, cfg.address)
            task = bar.add_task("adaptation: shifts on Ray", total=len(cfg.shifts))
            source = cfg.checkpoint or checkpoint.DEFAULT_CHECKPOINT
            done = lambda shift, _: bar.update(task, advance=1, description=f"{shift}: done")  # noqa: E731
            parts = tasks.run_all(partial(_score_shift, source, probe, ecfg), cfg.shifts, cfg.workers, done)
            results = {k: v for part in parts for k, v in part[0].items()}
            details = {k: v for part in parts for k, v in part[1].items()}
        else:
            task = bar.add_task("adaptation", total=len(cfg.shifts) * (3 * cfg.phase + len(adapt.VARIANTS)))
            results, details = adapt.evaluate(
                model,
                probe,
                ecfg,
                cfg.shifts,
                lambda shift, what: bar.update(task, advance=1, description=f"{shift}: {what}"),
            )
    for shift in cfg.shifts:  # the shifted phase's errors themselves, not each variant's own ratio
        none, both = details[f"{shift}_post_error_m_none"], details[f"{shift}_post_error_m_both"]
        results[f"{shift}_none_over_both_post"] = none / both
    report.results.update(results)
    report.details.update(details, checkpoint_command=manifest.get("command"))
    return report


def _score_shift(source: Path, probe, ecfg, shift: str) -> tuple[dict, dict]:
    """One shift's results and details, on a Ray worker: the model loaded there, the probe sent along."""
    from runtime.adapt import evaluation as adapt

    model, _ = checkpoint.load(source)
    return adapt.evaluate(model, probe, ecfg, (shift,))


@dataclass
class ControlEval(OnRay, OnOneModel):
    """Task success of each policy in closed loop on the manipulation env, in virtual time: latent MPC
    through the shipped hssm (`mpc_hssm`) and through the GRU baseline (`mpc_gru`, from
    `--checkpoints/gru`), the actor distilled from the hssm planner (`actor`, runtime/planning/actor.py),
    the scripted expert, a random walk of joint targets; and the planner's time."""

    task: str = "reach"
    episodes: int = 50
    episode_seconds: float | None = None
    """Default: 5 s for reach, 10 s for push."""
    policies: tuple[str, ...] = closed_loop.POLICIES
    checkpoints: Path = Path("results/checkpoints")
    """Where `mpc_gru` finds the GRU baseline (launch.train --model all)."""
    candidates: int = 256
    horizon: int = 10
    iterations: int = 3
    search_ahead: bool = True
    """The planners search on the next plan on the ticks between control steps, as the live brain does."""
    prior: str = "actor"
    """`mpc_hssm` searches around the distilled actor's step (`actor`, if the checkpoint has one) or not
    (`none`)."""
    seed: int = 300_000


def _policy_options(cfg: "ControlEval") -> dict:
    return {
        "source": cfg.checkpoint,
        "checkpoints": cfg.checkpoints,
        "planner": closed_loop.planner_config(cfg.candidates, cfg.horizon, cfg.iterations),
        "prior": cfg.prior,
        "search_ahead": cfg.search_ahead,
    }


def run_control(cfg: ControlEval, console: Console) -> Report:
    from functools import partial

    from rich.progress import Progress

    from runtime.world_model.data import CollectConfig, collect_episode

    unknown = sorted(set(cfg.policies) - set(closed_loop.POLICIES))
    if unknown or cfg.task not in ("reach", "push") or cfg.prior not in ("actor", "none"):
        raise SystemExit(
            "launch.eval control: task must be reach or push, prior actor or none, policies among "
            + ", ".join(closed_loop.POLICIES)
        )
    torch.set_num_threads(2)
    seconds = cfg.episode_seconds or (5.0 if cfg.task == "reach" else 10.0)
    report = Report(
        f"eval-control-{cfg.task}",
        config={k: str(v) for k, v in vars(cfg).items()},
        targets={
            "success_mpc_hssm": (">=", 0.9 if cfg.task == "reach" else 0.6),
            "plan_p99_ms": ("<=", 25.0),
        },
    )
    if cfg.on_ray:
        from runtime.distributed import cluster
        from runtime.distributed import collect as distributed

        cluster.start(cfg.workers, cfg.address)
    plan_ms = []
    seeds = range(cfg.seed, cfg.seed + cfg.episodes)
    with Progress(console=console, transient=True) as bar:
        task = bar.add_task("control", total=len(cfg.policies) * cfg.episodes)
        for policy in cfg.policies:
            try:
                controller, note = closed_loop.build(policy, **_policy_options(cfg))
            except checkpoint.CheckpointError as exc:
                console.print(f"{policy}: skipped ({exc})")
                bar.advance(task, cfg.episodes)
                continue
            if note:
                console.print(f"{policy}: {note}")
            if policy == "mpc_hssm":
                report.details["prior_mpc_hssm"] = "actor" if controller.prior is not None else None
            collect = CollectConfig(  # the expert as it is, without the exploration noise of training data
                task=cfg.task,
                episode_seconds=seconds,
                random_fraction=1.0 if policy == "random" else 0.0,
                noise_rad=0.0,
            )
            outcomes = []

            def keep(seed: int, outcome: dict, outcomes=outcomes, policy=policy) -> None:
                outcomes.append(outcome)
                wins = sum(o["success"] for o in outcomes)
                bar.update(task, advance=1, description=f"{policy}: {wins}/{len(outcomes)}")

            if cfg.on_ray:  # each worker builds its own controller: one simulator and one model each
                build = partial(closed_loop.controller, policy, **_policy_options(cfg))
                throughput = distributed.collect(
                    collect, seeds, cfg.workers, keep, controller=build, summarize=closed_loop.outcome
                )
                report.details[f"workers_{policy}"] = throughput
                for w in throughput:
                    console.print(
                        f"{policy}, worker {w['worker']}: {w['episodes']} episodes, "
                        f"{w['episodes_per_s']:.2f} episodes/s"
                    )
            else:
                for seed in seeds:
                    episode = collect_episode(collect, seed, controller=controller)
                    keep(seed, closed_loop.outcome(episode, controller))
            report.results[f"success_{policy}"] = sum(o["success"] for o in outcomes) / cfg.episodes
            if controller is not None:
                ms = [m for o in outcomes for m in o["plan_ms"]]
                report.details[f"plan_ms_p50_{policy}"] = float(np.median(ms))
                plan_ms += ms if policy == "mpc_hssm" else []
    if plan_ms:
        report.results["plan_p99_ms"] = float(np.percentile(plan_ms, 99))
    report.details["planner"] = {
        "candidates": cfg.candidates,
        "horizon": cfg.horizon,
        "iterations": cfg.iterations,
    }
    return report


COMMANDS = {"worldmodel": WorldModelEval, "memory": MemoryEval, "adapt": AdaptEval, "control": ControlEval}
RUNNERS = {WorldModelEval: run, MemoryEval: run_memory, AdaptEval: run_adapt, ControlEval: run_control}


def main(argv: list[str] | None = None) -> int:
    cmd = tyro.extras.subcommand_cli_from_dict(COMMANDS, args=argv, description=__doc__)
    console = Console(stderr=True)
    report = RUNNERS[type(cmd)](cmd, console)
    report.print_table()
    if cmd.json is not None:
        report.write_json(cmd.json)
        print(f"wrote {cmd.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
