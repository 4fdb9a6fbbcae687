"""Checkpoints: a directory with `weights.pt` (a plain state dict) and `manifest.json`.

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
    tmp = directory / (MANIFEST + ".tmp")
    tmp.write_text(json.dumps(manifest, indent=2) + "\n")
    os.replace(tmp, directory / MANIFEST)
    return directory


def read_manifest(directory: Path) -> dict:
    path = Path(directory) / MANIFEST
    if not path.exists():
        raise CheckpointError(f"{directory} is not a checkpoint: no {MANIFEST}")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{path} is not valid JSON: {exc}") from None


def load(directory: Path = DEFAULT_CHECKPOINT) -> tuple[WorldModel, dict]:
    """The model (in eval mode) and its manifest; CheckpointError on any mismatch."""
    directory = Path(directory)
    manifest = read_manifest(directory)
    for name, expected in manifest.get("files", {}).items():
        path = directory / name
        if not path.exists():
            raise CheckpointError(f"{path} is listed in the manifest but missing")
        actual = sha256(path)
        if actual != expected:
            raise CheckpointError(
                f"{path} does not match its manifest (sha256 {actual[:16]}..., expected {expected[:16]}...): "
                "the file was changed or corrupted; refusing to load it"
            )
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
