"""World-model data: episodes collected in virtual time through the V-sync scheduler, stored as npz."""

import numpy as np
import pytest

from runtime.world_model.data import (
    MAX_CHUNKS,
    STREAMS,
    CollectConfig,
    collect_episode,
    load_episode,
    save_episode,
)
from runtime.world_model.model import JOINT_DIM
from runtime.world_model.training import Episodes

SECONDS = 3.0


@pytest.fixture(scope="module")
def episode():
    return collect_episode(CollectConfig(episode_seconds=SECONDS, random_fraction=0.0), seed=3)


def test_episode_ticks_are_aligned_at_the_camera_rate(episode):
    """One tick per camera frame (30 Hz over the episode), every stream present once running, 3.3 audio
    chunks per tick on average (frames come on the 10 ms loop's grid, so windows vary by a chunk), `measured`
    dt_eff near 1/30 s, and the true state recorded wherever there is a frame."""
    n = len(episode["dt_eff"])
    assert abs(n - SECONDS * 30) <= 3, n
    for key in (
        "image",
        "audio",
        "audio_chunks",
        "joint",
        "action",
        "mask",
        "ages",
        "true_ee",
        "true_object",
    ):
        assert len(episode[key]) == n, key
    inner = slice(2, n - 2)  # the first and last ticks see the streams start and stop
    assert episode["mask"][inner].all(), episode["mask"][inner].mean(axis=0)
    chunks = episode["audio_chunks"][inner]
    assert chunks.min() >= 2 and chunks.max() <= 5 and 3.1 < chunks.mean() < 3.6, np.bincount(chunks)
    assert episode["audio"].shape[1:] == (MAX_CHUNKS, 160)
    assert abs(np.median(episode["dt_eff"][1:]) - 1 / 30) < 1e-3
    framed = episode["mask"][:, STREAMS.index("camera")]
    assert np.isfinite(episode["true_ee"][framed]).all() and np.isfinite(episode["true_object"][framed]).all()
    assert episode["image"][framed].max() > 0  # rendered, not blank
    assert np.isfinite(episode["action"]).all() and np.isfinite(episode["joint"]).all()


def test_proprioception_carries_joints_and_the_tool_position(episode):
    """The joint stream is what the arm reports: at a tick with a frame, its joint positions and its tool
    position are those of the simulator at that frame, up to the 10 ms between the two samples."""
    framed = episode["mask"][:, STREAMS.index("camera")]
    joint = episode["joint"][framed]
    assert joint.shape[1] == JOINT_DIM  # what the world model reads
    assert np.abs(joint[:, :5] - episode["true_joint"][framed][:, :5]).max() < 0.05  # rad
    assert np.linalg.norm(joint[:, 10:] - episode["true_ee"][framed], axis=1).max() < 0.01  # m
    assert np.ptp(joint[:, 10:], axis=0).max() > 0.05  # the tool moved


def test_same_seed_same_episode(episode):
    """Collection is deterministic: the same seed gives the same arrays."""
    again = collect_episode(CollectConfig(episode_seconds=SECONDS, random_fraction=0.0), seed=3)
    for key, value in episode.items():
        np.testing.assert_array_equal(value, again[key], err_msg=key)


def test_save_load_round_trip(tmp_path, episode):
    """An episode saved and loaded is the same arrays, and no temporary file is left behind."""
    path = tmp_path / "episode_3.npz"
    save_episode(path, episode)
    loaded = load_episode(path)
    assert set(loaded) == set(episode)
    for key, value in episode.items():
        np.testing.assert_array_equal(value, loaded[key], err_msg=key)
    assert [p.name for p in tmp_path.iterdir()] == ["episode_3.npz"]


def test_bad_collect_config_is_refused():
    """A negative noise or a random share outside [0, 1] is refused, naming the field."""
    with pytest.raises(ValueError, match="noise_rad"):
        CollectConfig(noise_rad=-1.0)
    with pytest.raises(ValueError, match="random_fraction"):
        CollectConfig(random_fraction=1.5)


def test_episodes_from_an_older_proprioception_are_refused(episode, tmp_path):
    """Data collected before the tool position joined proprioception is refused by name, with what to do."""
    old = dict(episode, joint=episode["joint"][:, :10])
    save_episode(tmp_path / "episode_0.npz", old)
    with pytest.raises(ValueError, match=r"episode_0\.npz.*collect it again"):
        Episodes(tmp_path)
