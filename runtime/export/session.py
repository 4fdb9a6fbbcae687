"""Running an export with onnxruntime: the manifest verified, sessions made for sharing the CPU.

`load_manifest` checks the format version and the SHA-256 of every file before anything is loaded (a missing
or changed file is refused with its path and both hashes). `session` makes an onnxruntime session with
explicit thread counts and no busy-waiting: onnxruntime's worker threads spin between calls by default,
which keeps cores busy that the simulator, the sensors and the planner need. A provider that is not installed
is refused with the list of those that are.

`OrtWorldModel` runs the per-tick graph with the interface of `WorldModel.step` (state, z, aux), so the
live brain swaps it in; `OrtRollout` and `OrtActor` run the other graphs.
"""

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from runtime.export.onnx_export import FORMAT_VERSION, MANIFEST
from runtime.world_model.checkpoint import sha256
from runtime.world_model.model import TICK_FIELDS, check_tick

PRECISIONS = ("fp32", "int8")
log = logging.getLogger(__name__)


class ExportError(ValueError):
    pass


@dataclass(frozen=True)
class OnnxEngine:
    """Where an export lives and how to run it."""

    directory: Path
    provider: str = "CPUExecutionProvider"
    precision: str = "fp32"

    def __post_init__(self):
        if self.precision not in PRECISIONS:
            raise ExportError(f"`precision` must be one of {PRECISIONS}, got {self.precision!r}")

    def check(self, weights_sha256: str | None = None) -> None:
        """Everything that can refuse this engine, before anything runs: the manifest and hashes, the graph
        for the precision, the provider, and that the export was made from these weights."""
        manifest = load_manifest(self.directory)
        graph_file(manifest, "tick", self.precision)
        if self.provider not in available_providers():
            raise ExportError(
                f"execution provider {self.provider!r} is not installed; this onnxruntime has: "
                f"{', '.join(available_providers())}"
            )
        source = manifest["source"]["weights_sha256"]
        if weights_sha256 is not None and source != weights_sha256:
            raise ExportError(
                f"{self.directory} was exported from other weights (sha256 {source}) than the checkpoint "
                f"in use ({weights_sha256}): export it again"
            )


def ensure_export(directory: Path, checkpoint_dir: Path | None = None, profile: str | None = None) -> dict:
    """The export in `directory`, made first if it is absent or was made from other weights."""
    from runtime.export.onnx_export import export
    from runtime.world_model import checkpoint

    source = checkpoint.read_manifest(checkpoint_dir or checkpoint.DEFAULT_CHECKPOINT)
    try:
        manifest = load_manifest(directory)
        if manifest["source"]["weights_sha256"] == source["files"][checkpoint.WEIGHTS]:
            return manifest
        log.warning("%s was exported from other weights: exporting again", directory)
    except ExportError as exc:
        if (Path(directory) / MANIFEST).exists():
            raise  # a tampered or corrupt export is reported, not silently replaced
        log.info("no export in %s yet (%s): exporting", directory, exc)
    return export(checkpoint_dir, directory, profile=profile)


def load_manifest(directory: Path) -> dict:
    """The export's manifest, after checking its version and every file's hash; ExportError otherwise."""
    directory = Path(directory)
    path = directory / MANIFEST
    if not path.exists():
        raise ExportError(
            f"{directory} is not an ONNX export: no {MANIFEST} (make one with `python -m launch.export`)"
        )
    try:
        manifest = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ExportError(f"{path} is not valid JSON: {exc}") from None
    version = manifest.get("format_version")
    if version != FORMAT_VERSION:
        raise ExportError(f"{path} is export format {version}; this runtime reads format {FORMAT_VERSION}")
    for name, expected in manifest.get("files", {}).items():
        file = directory / name
        if not file.exists():
            raise ExportError(f"{file} is listed in {path} but missing")
        actual = sha256(file)
        if actual != expected:
            raise ExportError(
                f"{file} does not match its manifest: sha256 {actual}, manifest says {expected}; "
                "the file was changed or corrupted, refusing to load it"
            )
    return manifest


def available_providers() -> list[str]:
    import onnxruntime

    return onnxruntime.get_available_providers()


def session(path: Path, threads: int, provider: str = "CPUExecutionProvider"):
    """An onnxruntime session on `provider` with `threads` intra-op threads, one inter-op thread, and
    workers that sleep between calls instead of spinning."""
    import onnxruntime

    available = available_providers()
    if provider not in available:
        raise ExportError(
            f"execution provider {provider!r} is not installed; this onnxruntime has: {', '.join(available)}"
        )
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = onnxruntime.ExecutionMode.ORT_SEQUENTIAL
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.add_session_config_entry("session.inter_op.allow_spinning", "0")
    providers = [provider] if provider == "CPUExecutionProvider" else [provider, "CPUExecutionProvider"]
    return onnxruntime.InferenceSession(str(path), options, providers=providers)


def graph_file(manifest: dict, name: str, precision: str) -> str:
    if precision not in PRECISIONS:
        raise ExportError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    entry = manifest["graphs"].get(name)
    if entry is None:
        raise ExportError(f"the export has no {name!r} graph (it has {sorted(manifest['graphs'])})")
    if precision == "int8":
        if "int8" not in entry:
            raise ExportError(f"the export has no int8 {name!r} graph: export again with int8 on")
        return entry["int8"]
    return entry["file"]


class OrtWorldModel:
    """The per-tick graph: `step(state, tick)` as `WorldModel.step` (tick a dict of batch arrays, numpy or
    torch), returning torch tensors. dt_eff outside the stable band is clamped inside the graph and counted
    here (`dt_clamped`), as the torch path does."""

    def __init__(
        self,
        directory: Path,
        threads: int = 1,
        provider: str = "CPUExecutionProvider",
        precision: str = "fp32",
        weights_sha256: str | None = None,
    ):
        self.directory = Path(directory)
        OnnxEngine(self.directory, provider, precision).check(weights_sha256)
        self.manifest = load_manifest(self.directory)
        entry = self.manifest["graphs"]["tick"]
        self.session = session(
            self.directory / graph_file(self.manifest, "tick", precision), threads, provider
        )
        self.inputs, self.outputs = entry["inputs"], entry["outputs"]
        self.states = [tuple(s) for s in self.manifest["states"]]
        self.image_size = self.manifest["source"]["config"]["image_size"]
        self.lo, self.hi = self.manifest["dt_band_s"]
        self.dt_clamped = 0

    def initial_state(self, batch: int = 1) -> list[np.ndarray]:
        return [np.zeros((batch, *shape), np.float64) for shape in self.states]

    def step(self, state, tick: dict):
        check_tick({k: torch.as_tensor(tick[k]) for k in TICK_FIELDS}, self.image_size)
        feed = {k: _numpy(tick[k]) for k in TICK_FIELDS}
        feed["dt_eff"] = feed["dt_eff"].astype(np.float32, copy=False)
        dt = feed["dt_eff"]
        self.dt_clamped += int(np.count_nonzero(~((dt >= self.lo) & (dt <= self.hi))))
        for name, x in zip(self.inputs[len(TICK_FIELDS) :], state, strict=True):
            feed[name] = _numpy(x)
        z, energy, *new_state = self.session.run(None, feed)
        return new_state, torch.from_numpy(z), {"energy": torch.from_numpy(energy)}


class OrtRollout:
    """The rollout graph: z0 (N, 2D), actions (N, K, A), dt (N, K) -> z (N, K, 2D); K fixed at export."""

    def __init__(self, directory, threads=1, provider="CPUExecutionProvider", precision="fp32"):
        manifest = load_manifest(directory)
        self.ticks = manifest["rollout_ticks"]
        self.session = session(
            Path(directory) / graph_file(manifest, "rollout", precision), threads, provider
        )

    def __call__(self, z0, actions, dt) -> torch.Tensor:
        feed = {"z0": _numpy(z0), "actions": _numpy(actions), "dt": _numpy(dt).astype(np.float32, copy=False)}
        return torch.from_numpy(self.session.run(None, feed)[0])


class OrtActor:
    def __init__(self, directory, threads=1, provider="CPUExecutionProvider", precision="fp32"):
        manifest = load_manifest(directory)
        self.session = session(Path(directory) / graph_file(manifest, "actor", precision), threads, provider)

    def __call__(self, z, goal, measured) -> torch.Tensor:
        feed = {"z": _numpy(z), "goal": _numpy(goal), "measured": _numpy(measured)}
        return torch.from_numpy(self.session.run(None, feed)[0])


def _numpy(x) -> np.ndarray:
    return x.detach().numpy() if torch.is_tensor(x) else np.asarray(x)
