"""Checkpoints: a directory with `weights.pt` (a plain state dict), `manifest.json`, and files fitted to the
model afterwards (the planning readout).

The manifest holds the model version, the model config, the training config and history summary, the
command that made it, and the SHA-256 of every file. Loading verifies the hashes first (a changed byte is
refused), then the version (an error naming both versions), then loads with `torch.load(weights_only=True)`,
which unpickles tensors and plain containers only, never code.
"""

import hashlib
import json
import os
from pathlib import Path

import torch

from runtime.world_model.model import MODEL_VERSION, WorldModel, WorldModelConfig

WEIGHTS, MANIFEST = "weights.pt", "manifest.json"
DEFAULT_CHECKPOINT = Path(__file__).parent / "default"  # shipped; made by the command in its manifest


class CheckpointError(ValueError):
    pass


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def save(directory: Path, model: WorldModel, extra: dict | None = None) -> Path:
    """Writes the weights, then the manifest last (atomically): a directory with a manifest is complete."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    weights = directory / WEIGHTS
    torch.save(model.state_dict(), weights)
    manifest = {
        "model_version": MODEL_VERSION,
        "config": model.cfg.to_dict(),
        **(extra or {}),
        "files": {WEIGHTS: sha256(weights)},
    }
    _write_manifest(directory, manifest)
    return directory


def read_manifest(directory: Path) -> dict:
    path = Path(directory) / MANIFEST
    if not path.exists():
        raise CheckpointError(f"{directory} is not a checkpoint: no {MANIFEST}")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{path} is not valid JSON: {exc}") from None


def _write_manifest(directory: Path, manifest: dict) -> None:
    tmp = directory / (MANIFEST + ".tmp")
    tmp.write_text(json.dumps(manifest, indent=2) + "\n")
    os.replace(tmp, directory / MANIFEST)


def add_file(directory: Path, name: str) -> None:
    """Lists a file written into a checkpoint directory (a readout, say) in its manifest, with its hash."""
    directory = Path(directory)
    manifest = read_manifest(directory)
    manifest["files"][name] = sha256(directory / name)
    _write_manifest(directory, manifest)


def verify_file(directory: Path, name: str, manifest: dict | None = None) -> None:
    """CheckpointError unless `name` is listed in the manifest, present, and matches its hash."""
    directory = Path(directory)
    manifest = read_manifest(directory) if manifest is None else manifest
    path = directory / name
    expected = manifest.get("files", {}).get(name)
    if expected is None:
        raise CheckpointError(f"{directory / MANIFEST} lists no {name}")
    if not path.exists():
        raise CheckpointError(f"{path} is listed in the manifest but missing")
    actual = sha256(path)
    if actual != expected:
        raise CheckpointError(
            f"{path} does not match its manifest (sha256 {actual[:16]}..., expected {expected[:16]}...): "
            "the file was changed or corrupted; refusing to load it"
        )


def load(directory: Path = DEFAULT_CHECKPOINT) -> tuple[WorldModel, dict]:
    """The model (in eval mode) and its manifest; CheckpointError on any mismatch."""
    directory = Path(directory)
    manifest = read_manifest(directory)
    for name in manifest.get("files", {}):
        verify_file(directory, name, manifest)
    if WEIGHTS not in manifest.get("files", {}):
        raise CheckpointError(f"{directory / MANIFEST} lists no {WEIGHTS}")
    version = manifest.get("model_version")
    if version != MODEL_VERSION:
        raise CheckpointError(
            f"{directory} holds a version {version} world model; this runtime reads version {MODEL_VERSION}"
        )
    model = WorldModel(WorldModelConfig.from_dict(manifest["config"]))
    model.load_state_dict(torch.load(directory / WEIGHTS, weights_only=True, map_location="cpu"))
    return model.eval(), manifest
