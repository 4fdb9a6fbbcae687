"""Benchmark reports: one JSON schema for every benchmark, plus a table for people."""

import json
import os
import platform
import subprocess
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table


def machine_info() -> dict:
    """What the figures were measured on; a benchmark number means nothing without it."""
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), cpu)
    except OSError:
        pass
    try:
        commit = (
            subprocess.run(
                ["git", "rev-parse", "--short", "HEAD"],
                capture_output=True,
                text=True,
                timeout=5,
                cwd=Path(__file__).parent,
            ).stdout.strip()
            or None
        )
    except (OSError, subprocess.SubprocessError):
        commit = None
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "platform": platform.platform(),
        "commit": commit,
    }


def summarize_samples(values_ms) -> dict:
    """Count, p50, p95, p99 and max of one latency series in ms; non-finite values are left out."""
    values = np.asarray(values_ms, dtype=float)
    values = values[np.isfinite(values)]
    if values.size == 0:
        return {"count": 0, "p50": None, "p95": None, "p99": None, "max": None}
    p50, p95, p99 = np.percentile(values, [50, 95, 99])
    return {
        "count": int(values.size),
        "p50": float(p50),
        "p95": float(p95),
        "p99": float(p99),
        "max": float(values.max()),
    }


@dataclass
class Report:
    benchmark: str
    config: dict
    results: dict = field(default_factory=dict)
    targets: dict = field(default_factory=dict)  # key -> (">=" | "<=", value)
    details: dict = field(default_factory=dict)
    machine: dict = field(default_factory=machine_info)
    created_unix_s: float = field(default_factory=time.time)
    # Per-frame latencies (ms) in time order, by series name; summarised, not dumped, in the JSON
    # because a series can hold 100k values.
    samples: dict[str, list[float]] = field(default_factory=dict)
    stages: dict[str, dict[str, float]] = field(default_factory=dict)  # group -> ordered {stage: p50 ms}
    budget_ms: float | None = None  # per-frame budget: drawn on the plots, miss rates counted against it

    def met(self) -> dict[str, bool]:
        out = {}
        for key, (op, value) in self.targets.items():
            got = self.results.get(key)
            out[key] = got is not None and (got >= value if op == ">=" else got <= value)
        return out

    def write_json(self, path: Path) -> None:
        payload = asdict(replace(self, samples={}))  # replace first: asdict would deep-copy every sample
        del payload["samples"]
        payload["samples_summary"] = {
            name: summarize_samples(values) for name, values in self.samples.items()
        }
        payload["targets"] = {k: {"op": op, "value": v} for k, (op, v) in self.targets.items()}
        payload["targets_met"] = self.met()
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(payload, indent=2) + "\n")

    def print_table(self, console: Console | None = None) -> None:
        console = console or Console()
        table = Table(
            title=f"benchmark {self.benchmark} on {self.machine['cpu']} ({self.machine['cores']} cores)"
        )
        for column in ("result", "value", "target", "met"):
            table.add_column(column, justify="left" if column == "result" else "right")
        met = self.met()
        for key, value in self.results.items():
            target = self.targets.get(key)
            shown = f"{value:,.3f}" if isinstance(value, float) else str(value)
            table.add_row(
                key,
                shown,
                f"{target[0]} {target[1]:,}" if target else "",
                ("yes" if met[key] else "[red]NO[/]") if target else "",
            )
        console.print(table)
