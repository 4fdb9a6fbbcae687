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
from runtime.world_model.checkpoint import WEIGHTS, sha256
from runtime.world_model.model import TICK_FIELDS, check_tick

PRECISIONS = ("fp32", "int8")
log = logging.getLogger(__name__)


class ExportError(ValueError):
    pass


class StaleExport(ExportError):
    """An export in another format than this runtime's: made by an older one, and made again when asked."""


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
        if exported_from(manifest, source):
            return manifest
        log.warning("%s was exported from other weights or another actor: exporting again", directory)
    except StaleExport as exc:  # made by an older runtime: its graphs are not ours
        log.warning("%s: exporting again", exc)
    except ExportError as exc:
        if (Path(directory) / MANIFEST).exists():
            raise  # a tampered or corrupt export is reported, not silently replaced
        log.info("no export in %s yet (%s): exporting", directory, exc)
    return export(checkpoint_dir, directory, profile=profile)


def exported_from(manifest: dict, source: dict) -> bool:
    """Whether an export's graphs were made from this checkpoint (its manifest `source`): the world model's
    weights and the distilled actor both."""
    made, files = manifest["source"], source["files"]
    return made["weights_sha256"] == files[WEIGHTS] and made.get("actor_sha256") == files.get("actor.pt")


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
        raise StaleExport(f"{path} is export format {version}; this runtime reads format {FORMAT_VERSION}")
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
    """The rollout graphs, one per exported horizon: `(z0 (N, 2D), actions (N, K, A), dt (N, K), residual
    (1 or N, 2D) or None, residual_ticks) -> z (N, K, 2D)`, the signature of `WorldModel.rollout`. K ticks
    run in the shortest graph of at least K, the ticks past K of dt 0 (identity steps). With `model` (the
    torch model the export was made from), what no graph can do rolls out in torch instead and is counted
    in `fallbacks`: a horizon past the longest graph, a correction over other ticks than the export's, and
    everything once the model's transition weights changed (a learner's swap): the graphs hold the exported
    weights as constants."""

    def __init__(self, directory, threads=1, provider="CPUExecutionProvider", precision="fp32", model=None):
        manifest = load_manifest(directory)
        self.ticks = manifest["rollout_ticks"]  # the full plan's horizon
        self.corrected = manifest["rollout_corrected_ticks"]
        self.sessions = {
            int(k): session(Path(directory) / graph_file(manifest, name, precision), threads, provider)
            for k, name in manifest["rollouts"].items()
        }
        self.d_z = 2 * manifest["source"]["config"]["d_latent"]
        self.model = model
        self.reasons: dict[str, int] = {}  # fallbacks by reason, each logged the first time
        # the transition's parameters: a swap copies into these same tensors (load_state_dict)
        self._params = [] if model is None else list(model.predictor.parameters())
        self._exported = [p.detach().clone() for p in self._params]  # the weights the graphs hold
        self._versions, self._same = [p._version for p in self._params], True

    @property
    def fallbacks(self) -> int:
        return sum(self.reasons.values())

    def _weights_exported(self) -> bool:
        """Whether the transition's weights are the export's: a swap changes them in place (bumping their
        versions), a rollback may bring them back, so a changed version compares the values."""
        versions = [p._version for p in self._params]
        if versions != self._versions:
            self._versions = versions
            self._same = all(torch.equal(p, e) for p, e in zip(self._params, self._exported, strict=True))
        return self._same

    def __call__(self, z0, actions, dt, residual=None, residual_ticks=None) -> torch.Tensor:
        k = actions.shape[1]
        if residual is not None and (residual.ndim != 2 or residual.shape[0] not in (1, len(z0))):
            raise ValueError(f"residual must be (1 or N, 2D), got {tuple(residual.shape)}")
        graph = min((g for g in self.sessions if g >= k), default=None)
        reason = why = None
        if graph is None:
            reason = "horizon"
            why = f"no graph for a {k}-tick rollout (the export has {sorted(self.sessions)})"
        elif residual is not None and min(residual_ticks or k, k) != min(self.corrected, k):
            reason = "correction"
            why = f"a correction over {residual_ticks} ticks (the export's: {self.corrected})"
        elif not self._weights_exported():
            reason, why = "weights", "the transition's weights are not the export's (a learner's swap)"
        if why is not None:
            if self.model is None:
                raise ExportError(f"cannot roll out in onnxruntime: {why}")
            if reason not in self.reasons:  # said once per reason; the brain logs the counts at exit
                log.warning("rollouts run in torch instead of onnxruntime where: %s", why)
            self.reasons[reason] = self.reasons.get(reason, 0) + 1
            return self.model.rollout(z0, actions, dt, residual, residual_ticks)
        if residual is None:
            residual = np.zeros((1, self.d_z), np.float32)
        actions, dt = _numpy(actions), _numpy(dt).astype(np.float32, copy=False)
        if graph > k:  # the extra ticks hold the last action for no time
            actions = np.concatenate((actions, np.repeat(actions[:, -1:], graph - k, 1)), 1)
            dt = np.concatenate((dt, np.zeros((len(dt), graph - k), np.float32)), 1)
        feed = {
            "z0": np.ascontiguousarray(_numpy(z0)),
            "actions": np.ascontiguousarray(actions),  # an expanded tensor's view has zero strides
            "dt": np.ascontiguousarray(dt),
            "residual": np.ascontiguousarray(_numpy(residual), np.float32),
        }
        return torch.from_numpy(self.sessions[graph].run(None, feed)[0][:, :k])


class OrtActor:
    def __init__(self, directory, threads=1, provider="CPUExecutionProvider", precision="fp32"):
        manifest = load_manifest(directory)
        self.session = session(Path(directory) / graph_file(manifest, "actor", precision), threads, provider)

    def __call__(self, z, goal, measured) -> torch.Tensor:
        feed = {"z": _numpy(z), "goal": _numpy(goal), "measured": _numpy(measured)}
        return torch.from_numpy(self.session.run(None, feed)[0])


def _numpy(x) -> np.ndarray:
    return x.detach().numpy() if torch.is_tensor(x) else np.asarray(x)
