"""Checkpoints: weights round-trip exactly; a changed byte, another model version, a missing file or a missing
manifest are refused with an error that says which; the shipped default checkpoint loads and is small."""

import json

import pytest
import torch

from runtime.world_model import checkpoint
from runtime.world_model.model import MODEL_VERSION, WorldModel, WorldModelConfig

SMALL = dict(d_model=32, d_token=16, d_latent=8, experts=4, d_state=8, channels=(4, 8), keypoints=4)


@pytest.fixture
def saved(tmp_path):
    torch.manual_seed(0)
    model = WorldModel(WorldModelConfig(**SMALL))
    checkpoint.save(tmp_path / "ck", model, {"command": "python -m launch.train"})
    return tmp_path / "ck", model


def test_round_trip_is_exact_and_the_manifest_describes_it(saved):
    directory, model = saved
    loaded, manifest = checkpoint.load(directory)
    for (name, a), (_, b) in zip(model.state_dict().items(), loaded.state_dict().items(), strict=True):
        assert torch.equal(a, b), name
    assert manifest["model_version"] == MODEL_VERSION and manifest["command"] == "python -m launch.train"
    assert manifest["files"][checkpoint.WEIGHTS] == checkpoint.sha256(directory / checkpoint.WEIGHTS)
    assert not loaded.training


def test_one_changed_byte_is_refused(saved):
    directory, _ = saved
    weights = directory / checkpoint.WEIGHTS
    data = bytearray(weights.read_bytes())
    data[len(data) // 2] ^= 0x01
    weights.write_bytes(bytes(data))
    with pytest.raises(checkpoint.CheckpointError, match="does not match its manifest"):
        checkpoint.load(directory)


def test_another_model_version_is_refused_naming_both(saved):
    directory, _ = saved
    path = directory / checkpoint.MANIFEST
    manifest = json.loads(path.read_text())
    manifest["model_version"] = 999
    path.write_text(json.dumps(manifest))
    with pytest.raises(checkpoint.CheckpointError, match=rf"version 999 .* version {MODEL_VERSION}"):
        checkpoint.load(directory)


def test_missing_pieces_are_refused(saved, tmp_path):
    directory, _ = saved
    with pytest.raises(checkpoint.CheckpointError, match="no manifest.json"):
        checkpoint.load(tmp_path / "empty")
    (directory / checkpoint.WEIGHTS).unlink()
    with pytest.raises(checkpoint.CheckpointError, match="missing"):
        checkpoint.load(directory)


def test_the_shipped_checkpoint_loads_records_its_command_and_is_small():
    """`launch.sim` runs the shipped checkpoint: it must verify, carry the command that made it, and stay far
    under the 20 MB the repository allows."""
    model, manifest = checkpoint.load()
    assert manifest["command"].startswith("python -m launch.train")
    size = sum(p.stat().st_size for p in checkpoint.DEFAULT_CHECKPOINT.iterdir())
    assert size < 20 * 2**20
    assert model.cfg.model == "hssm"
