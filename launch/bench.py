"""Benchmarks on the machine they run on: `python -m launch.bench env --json results/env.json`.

Each benchmark prints a table and, with `--json PATH`, writes a report whose `results` hold the keys its
issue names, with the targets, whether each was met, and the machine it ran on.
"""

import sys
from dataclasses import dataclass
from pathlib import Path

import tyro

from runtime.benchmarks.env import EnvBenchConfig
from runtime.benchmarks.memory import MemoryBenchConfig
from runtime.benchmarks.model import ModelBenchConfig
from runtime.benchmarks.pipeline import PipelineBenchConfig
from runtime.benchmarks.transport import TransportBenchConfig
from runtime.benchmarks.vsync import VSyncBenchConfig


@dataclass
class EnvBench(EnvBenchConfig):
    """Simulator speed (physics, 64x64 camera, 10 Hz control steps) and scripted-expert success rates."""

    json: Path | None = None
    """Write the report here."""


def run_env(cmd: EnvBench) -> int:
    from runtime.benchmarks import env

    config = EnvBenchConfig(**{k: v for k, v in vars(cmd).items() if k != "json"})
    return _finish(env.run(config), cmd.json)


@dataclass
class TransportBench(TransportBenchConfig):
    """Capture-to-receive latency of camera frames between processes (ours vs bare pyzmq), audio rate."""

    json: Path | None = None
    """Write the report here."""


def run_transport(cmd: TransportBench) -> int:
    from runtime.benchmarks import transport

    config = TransportBenchConfig(**{k: v for k, v in vars(cmd).items() if k != "json"})
    return _finish(transport.run(config), cmd.json)


@dataclass
class VSyncBench(VSyncBenchConfig):
    """V-sync alignment error against naive latest-sampling and ROS-style approximate time; tick latency;
    scheduler throughput. Synthetic streams with ground-truth capture times."""

    json: Path | None = None
    """Write the report here."""


def run_vsync(cmd: VSyncBench) -> int:
    from runtime.benchmarks import vsync

    config = VSyncBenchConfig(**{k: v for k, v in vars(cmd).items() if k != "json"})
    return _finish(vsync.run(config), cmd.json)


@dataclass
class ModelBench(ModelBenchConfig):
    """World-model tick cost, batch 1: hssm (encoders + backbone) against the Transformer baseline with a
    key/value cache of 64, 512 and 4096 ticks; resident memory over 10,000 ticks."""

    json: Path | None = None
    """Write the report here."""


def run_model(cmd: ModelBench) -> int:
    from runtime.benchmarks import model

    config = ModelBenchConfig(**{k: v for k, v in vars(cmd).items() if k != "json"})
    return _finish(model.run(config), cmd.json)


@dataclass
class MemoryBench(MemoryBenchConfig):
    """A full memory cell (C = 4096): one recall plus one write, p50 and p99; planning reads; maintenance."""

    json: Path | None = None
    """Write the report here."""


def run_memory(cmd: MemoryBench) -> int:
    from runtime.benchmarks import memory

    config = MemoryBenchConfig(**{k: v for k, v in vars(cmd).items() if k != "json"})
    return _finish(memory.run(config), cmd.json)


@dataclass
class PipelineBench(PipelineBenchConfig):
    """The live loop as processes (sim, brain planning, actuator): capture of a camera frame to the action it
    caused, p50/p95/p99, the share later than 33 ms, and per stage."""

    json: Path | None = None
    """Write the report here."""


def run_pipeline(cmd: PipelineBench) -> int:
    from runtime.benchmarks import pipeline

    config = PipelineBenchConfig(**{k: v for k, v in vars(cmd).items() if k != "json"})
    return _finish(pipeline.run(config), cmd.json)


def _finish(report, json_path: Path | None) -> int:
    report.print_table()
    if json_path is not None:
        report.write_json(json_path)
        print(f"wrote {json_path}")
    return 0


COMMANDS = {
    "env": EnvBench,
    "transport": TransportBench,
    "vsync": VSyncBench,
    "model": ModelBench,
    "memory": MemoryBench,
    "pipeline": PipelineBench,
}
RUNNERS = {
    EnvBench: run_env,
    TransportBench: run_transport,
    VSyncBench: run_vsync,
    ModelBench: run_model,
    MemoryBench: run_memory,
    PipelineBench: run_pipeline,
}


def main(argv: list[str] | None = None) -> int:
    cmd = tyro.extras.subcommand_cli_from_dict(COMMANDS, args=argv, description=__doc__)
    return RUNNERS[type(cmd)](cmd)


if __name__ == "__main__":
    sys.exit(main())
