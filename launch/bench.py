"""Benchmarks on the machine they run on: `python -m launch.bench env --json results/env.json`.

Each benchmark prints a table and, with `--json PATH`, writes a report whose `results` hold the keys its
issue names, with the targets, whether each was met, and the machine it ran on; `--report DIR` writes the
same as a Markdown page with plots (latency histogram, per-stage bars, latency over time).

On an edge device, run the deployment suites with its profile (firmware_profiles/devices):
    python -m launch.bench all --profile raspberry-pi-5 --runtime both --json pi5.json --report pi5/
`model` (the per-tick step in torch and onnxruntime fp32/int8), `planner` (plan time per control step in
closed loop), `pipeline` (the live graph, frame to action), `all` (the three in turn, one report).
"""

import importlib
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import tyro

from runtime.benchmarks.distributed import DistributedBenchConfig
from runtime.benchmarks.env import EnvBenchConfig
from runtime.benchmarks.hardware import HardwareBenchConfig
from runtime.benchmarks.memory import MemoryBenchConfig
from runtime.benchmarks.model import ModelBenchConfig
from runtime.benchmarks.pipeline import PipelineBenchConfig
from runtime.benchmarks.planner import PlannerBenchConfig
from runtime.benchmarks.transport import TransportBenchConfig
from runtime.benchmarks.vsync import VSyncBenchConfig


@dataclass
class Outputs:
    json: Path | None = None
    """Write the report here."""
    report: Path | None = None
    """Write a Markdown report with PNG plots into this directory."""


@dataclass
class EnvBench(EnvBenchConfig, Outputs):
    """Simulator speed (physics, 64x64 camera, 10 Hz control steps) and scripted-expert success rates."""


@dataclass
class TransportBench(TransportBenchConfig, Outputs):
    """Capture-to-receive latency of camera frames between processes (ours vs bare pyzmq), audio rate."""


@dataclass
class VSyncBench(VSyncBenchConfig, Outputs):
    """V-sync alignment error against naive latest-sampling and ROS-style approximate time; tick latency;
    scheduler throughput. Synthetic streams with ground-truth capture times."""


@dataclass
class ModelBench(ModelBenchConfig, Outputs):
    """World-model tick cost, batch 1, with a device profile's threads: torch against the ONNX export in
    onnxruntime, fp32 and int8 (`--runtime both`); or (`--runtime torch`) hssm against the Transformer
    baseline with a key/value cache of 64, 512 and 4096 ticks, and resident memory over 10,000 ticks."""


@dataclass
class MemoryBench(MemoryBenchConfig, Outputs):
    """A full memory cell (C = 4096): one recall plus one write, p50 and p99; planning reads; maintenance."""


@dataclass
class PipelineBench(PipelineBenchConfig, Outputs):
    """The live loop as processes (sim, brain planning, actuator): capture of a camera frame to the action it
    caused, p50/p95/p99, the share later than the budget, per stage, peak memory per node; `--profile` runs
    the brain as a device profile says."""


@dataclass
class PlannerBench(PlannerBenchConfig, Outputs):
    """The planner's time per control step in closed loop (reach, held-out seeds) with the profile's budget,
    its rollouts in torch and in onnxruntime; one batched rollout timed in turns."""


@dataclass
class HardwareBench(HardwareBenchConfig, Outputs):
    """A real arm's loop: bus round trip (sync-write + sync-read of every joint), the launch.hw graph's
    frame-to-action latency, and the watchdog after the brain is killed; `--port emulator` for the protocol
    emulator."""


@dataclass
class DistributedBench(DistributedBenchConfig, Outputs):
    """Collection on Ray: episodes per second with 1 and 2 workers on the same seeds, and their ratio."""


# suite -> (its module in runtime/benchmarks, its config); the deployment suites take a progress callback
SUITES = {
    EnvBench: ("env", EnvBenchConfig),
    TransportBench: ("transport", TransportBenchConfig),
    VSyncBench: ("vsync", VSyncBenchConfig),
    ModelBench: ("model", ModelBenchConfig),
    MemoryBench: ("memory", MemoryBenchConfig),
    PipelineBench: ("pipeline", PipelineBenchConfig),
    PlannerBench: ("planner", PlannerBenchConfig),
    HardwareBench: ("hardware", HardwareBenchConfig),
    DistributedBench: ("distributed", DistributedBenchConfig),
}
WITH_PROGRESS = ("model", "planner", "hardware", "distributed")  # the others draw their own progress bars


def run_suite(cmd) -> int:
    name, config = SUITES[type(cmd)]
    module = importlib.import_module(f"runtime.benchmarks.{name}")
    cfg = config(**{k: v for k, v in vars(cmd).items() if k not in ("json", "report")})
    if name in WITH_PROGRESS:
        with _Progress(name) as progress:
            report = module.run(cfg, progress)
    else:
        report = module.run(cfg)
    return _finish(report, cmd, getattr(cmd, "profile", None))


@dataclass
class AllBench(Outputs):
    """The deployment suites in turn with one profile: model, planner, pipeline; one JSON and one report
    (each suite's results prefixed by its name)."""

    profile: str = "host-x86-2core"
    """Device profile (firmware_profiles/devices/<name>.toml)."""
    runtime: Literal["torch", "onnxruntime", "both"] = "both"
    """Runtime(s) for the model and planner suites; the pipeline runs the profile's."""
    seconds: float = 60.0
    """Measured seconds of the pipeline suite."""
    export_dir: Path = Path("results/export")
    """Where the profile's ONNX export lives (<dir>/<profile>), made first if absent."""


def run_all(cmd: AllBench) -> int:
    from runtime.benchmarks import model, pipeline, planner
    from runtime.benchmarks.report import Report

    common = {"profile": cmd.profile, "export_dir": cmd.export_dir}
    with _Progress("all") as progress:
        parts = {
            "model": model.run(ModelBenchConfig(runtime=cmd.runtime, baselines=False, **common), progress),
            "planner": planner.run(PlannerBenchConfig(runtime=cmd.runtime, **common), progress),
            "pipeline": pipeline.run(PipelineBenchConfig(seconds=cmd.seconds, **common), progress),
        }
    report = Report("all", config={k: str(v) for k, v in vars(cmd).items()})
    report.budget_ms = parts["pipeline"].budget_ms
    for suite, part in parts.items():
        report.results.update({f"{suite}.{k}": v for k, v in part.results.items()})
        report.targets.update({f"{suite}.{k}": v for k, v in part.targets.items()})
        report.details.update({f"{suite}.{k}": v for k, v in part.details.items()})
        report.samples.update({f"{suite}: {k}": v for k, v in part.samples.items()})
        report.stages.update({f"{suite}: {k}": v for k, v in part.stages.items()})
    return _finish(report, cmd, cmd.profile)


class _Progress:
    """A progress line while a suite runs: `progress(what)` moves it on."""

    def __init__(self, suite: str):
        from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

        self.bar = Progress(
            SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(), transient=True
        )
        self.task = self.bar.add_task(suite)
        self.suite = suite

    def __enter__(self):
        self.bar.__enter__()
        return lambda what: self.bar.update(self.task, description=f"{self.suite}: {what}")

    def __exit__(self, *exc):
        return self.bar.__exit__(*exc)


def _finish(report, cmd, profile: str | None = None) -> int:
    report.config["command"] = ["python", "-m", "launch.bench", *sys.argv[1:]]
    report.print_table()
    if cmd.json is not None:
        report.write_json(cmd.json)
        print(f"wrote {cmd.json}")
    if cmd.report is not None:
        from runtime.benchmarks.plots import write_report
        from runtime.profiles import load_device

        if profile is None:
            summary = None
        elif isinstance(cmd, HardwareBench):  # a robot, not an edge computer
            from runtime.profiles import load_robot

            summary = load_robot(profile).summary()
        else:
            summary = load_device(profile).summary()
        print(f"wrote {write_report(report, cmd.report, summary, type(cmd).__doc__)}")
    return 0


COMMANDS = {
    "env": EnvBench,
    "transport": TransportBench,
    "vsync": VSyncBench,
    "model": ModelBench,
    "memory": MemoryBench,
    "pipeline": PipelineBench,
    "planner": PlannerBench,
    "all": AllBench,
    "hardware": HardwareBench,
    "distributed": DistributedBench,
}


def main(argv: list[str] | None = None) -> int:
    cmd = tyro.extras.subcommand_cli_from_dict(COMMANDS, args=argv, description=__doc__)
    return run_all(cmd) if isinstance(cmd, AllBench) else run_suite(cmd)


if __name__ == "__main__":
    sys.exit(main())
