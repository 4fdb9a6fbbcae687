"""The planning readout: fitted on a model's latents it reads the arm's joints; it is saved into the
checkpoint with its hash, and a changed or missing file is refused."""

import shutil

import numpy as np
import pytest
import torch

from runtime.world_model import checkpoint, readout
from runtime.world_model.data import CollectConfig, collect_episode


def test_the_shipped_readout_reads_the_joints_of_a_fresh_episode():
    """An episode the readout never saw (a new seed): joints read from the shipped model's latents to within
    0.1 rad on average."""
    model, _ = checkpoint.load(checkpoint.DEFAULT_CHECKPOINT)
    joints = readout.load()
    episode = collect_episode(CollectConfig(episode_seconds=2.0), seed=123_456)
    batch = {k: torch.from_numpy(episode[k])[None] for k in readout.TICK_FIELDS}
    with torch.no_grad():
        z = model(batch)[0][0]
    truth = episode["true_joint"][:, :4]
    ok = ~np.isnan(truth).any(1)
    error = np.abs(joints(z).numpy()[ok] - truth[ok]).mean()
    assert error < 0.1, error


def test_fit_recovers_a_linear_map_and_the_saved_file_is_checked(tmp_path):
    rng = np.random.default_rng(0)
    z = rng.normal(size=(500, 8))
    w, b = rng.normal(size=(8, 4)), rng.normal(size=4)
    fitted = readout.JointReadout.fit(z, z @ w + b, ridge=1e-9)
    assert np.allclose(fitted.weight.numpy(), w, atol=1e-4) and np.allclose(fitted.bias.numpy(), b, atol=1e-4)

    directory = tmp_path / "ckpt"
    shutil.copytree(checkpoint.DEFAULT_CHECKPOINT, directory)
    fitted.save(directory)
    loaded = readout.load(directory)
    assert torch.equal(loaded.weight, fitted.weight)
    checkpoint.load(directory)  # the manifest stays valid for the model too
    with open(directory / readout.READOUT, "r+b") as f:  # one changed byte
        f.seek(-1, 2)
        last = f.read(1)
        f.seek(-1, 2)
        f.write(bytes([last[0] ^ 1]))
    with pytest.raises(checkpoint.CheckpointError, match="does not match"):
        readout.load(directory)
    (directory / readout.READOUT).unlink()
    with pytest.raises(checkpoint.CheckpointError, match="missing"):
        readout.load(directory)


def test_a_checkpoint_without_a_readout_is_refused_by_name(tmp_path):
    directory = tmp_path / "ckpt"
    shutil.copytree(checkpoint.DEFAULT_CHECKPOINT, directory, ignore=shutil.ignore_patterns(readout.READOUT))
    manifest = checkpoint.read_manifest(directory)
    manifest["files"].pop(readout.READOUT)
    checkpoint._write_manifest(directory, manifest)
    with pytest.raises(checkpoint.CheckpointError, match="lists no readout.npz"):
        readout.load(directory)
