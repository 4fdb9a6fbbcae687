"""Export the world model to ONNX for a device: `python -m launch.export --profile host-x86-2core --out DIR`.

Writes the per-tick graph (encoders, backbone step, head) and its parts, the batched transition rollout and
the distilled actor as ONNX (opset 17, dynamic batch), each checked with `onnx.checker` and compared with
torch on random inputs; int8 versions by onnxruntime's dynamic quantization; and `manifest.json` with the
SHA-256 of every file, which onnxruntime loading verifies (runtime/export/session.py). The brain and
`launch.bench --runtime onnxruntime` run the result.
"""

import logging
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import tyro
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from runtime.profiles import ProfileError, load_device


@dataclass
class ExportConfig:
    profile: str = "host-x86-2core"
    """Device profile (firmware_profiles/devices/<name>.toml): its threads and provider check the export."""
    out: Path = Path("results/export/host-x86-2core")
    """Directory to write the graphs and manifest into."""
    checkpoint: Path | None = None
    """World-model checkpoint (default: the shipped one)."""
    int8: bool = True
    """Also write int8 versions (dynamic quantization of MatMul/Gemm weights)."""
    check: bool = True
    """Run every graph once in onnxruntime against torch and report the largest difference."""


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    cfg = tyro.cli(ExportConfig, args=argv, description=__doc__)
    console = Console()
    try:
        profile = load_device(cfg.profile)
    except ProfileError as exc:
        console.print(f"[red]refused:[/red] {exc}")
        return 2
    from runtime.export.onnx_export import MANIFEST, ROLLOUTS, example_inputs, export, graphs
    from runtime.export.session import ExportError, session
    from runtime.world_model import checkpoint

    names = ["tick", "encoders", "backbone_step", *ROLLOUTS.values(), "actor"]  # the actor if trained
    t0 = time.perf_counter()
    with Progress(console=console, transient=True) as bar:
        task = bar.add_task("exporting", total=len(names))
        manifest = export(
            cfg.checkpoint, cfg.out, int8=cfg.int8, profile=profile.name, progress=lambda n: bar.advance(task)
        )
    table = Table(title=f"ONNX export for {profile.name} in {time.perf_counter() - t0:.1f} s: {cfg.out}")
    for column in ("graph", "file", "KiB", "max |ort - torch|"):
        table.add_column(column, justify="left" if column in ("graph", "file") else "right")
    model = None
    if cfg.check:
        model, _ = checkpoint.load(cfg.checkpoint or checkpoint.DEFAULT_CHECKPOINT)
        model.directory = cfg.checkpoint or checkpoint.DEFAULT_CHECKPOINT
        parts = graphs(model, "actor" in manifest["graphs"])
    for name, entry in manifest["graphs"].items():
        for file in filter(None, (entry["file"], entry.get("int8"))):
            gap = ""
            if model is not None and file == entry["file"]:
                graph, module = parts[name]
                x = example_inputs(model, name, seed=1)
                try:
                    got = session(cfg.out / file, profile.compute.threads).run(None, x)
                except ExportError as exc:
                    console.print(f"[red]refused:[/red] {exc}")
                    return 2
                with torch.no_grad():
                    want = module(*(torch.from_numpy(x[k]) for k in graph.inputs))
                want = want if isinstance(want, tuple | list) else (want,)
                pairs = [(g, w) for n, g, w in zip(graph.outputs, got, want, strict=True) if n != "energy"]
                gap = f"{max(float(np.abs(g - w.numpy()).max()) for g, w in pairs):.1e}"
            table.add_row(name, file, f"{(cfg.out / file).stat().st_size / 1024:.0f}", gap)
    console.print(table)
    console.print(f"manifest: {cfg.out / MANIFEST} (SHA-256 of every file, verified on load)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
