"""Snapshots: exact round trip; pruning to `keep`; truncated, changed and other-version files are refused
with a reason and the last good snapshot is loaded instead; bad input never reaches the disk; a writer killed
with SIGKILL at random moments always leaves the newest snapshot loadable, complete and never older."""

import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from runtime.memory import snapshot
from runtime.memory.snapshot import (
    FORMAT_VERSION,
    HEADER,
    SnapshotCorrupt,
    SnapshotError,
    SnapshotVersionError,
    list_snapshots,
    load_latest,
    read_snapshot,
    write_snapshot,
)

SNAPSHOT_PY = Path(snapshot.__file__).resolve()

# Loads snapshot.py by path, so the writer's start-up does not depend on what runtime/memory/__init__.py
# imports; announces itself once it has resumed from the newest snapshot, then writes until it is killed.
WRITER = """
import importlib.util, sys
from pathlib import Path
import numpy as np
spec = importlib.util.spec_from_file_location("snapshot", sys.argv[1])
snapshot = importlib.util.module_from_spec(spec)
sys.modules["snapshot"] = snapshot
spec.loader.exec_module(snapshot)
directory = Path(sys.argv[2])
seq = snapshot.load_latest(directory)[1]["seq"]
print("ready", flush=True)
while True:
    seq += 1
    arrays = {"fill": np.full(262144, seq, np.int64), "grid": np.full((512, 512), seq, np.float32)}
    snapshot.write_snapshot(directory, arrays, {"seq": seq}, keep=2)
"""


def state(seq: int) -> dict[str, np.ndarray]:
    """What the writer stores for `seq`: 3 MB whose every element says which snapshot it belongs to."""
    return {"fill": np.full(262144, seq, np.int64), "grid": np.full((512, 512), seq, np.float32)}


def assert_consistent(arrays: dict[str, np.ndarray], meta: dict) -> None:
    expected = state(meta["seq"])
    assert arrays.keys() == expected.keys()
    for name, array in expected.items():
        assert array.dtype == arrays[name].dtype and np.array_equal(array, arrays[name]), name


@pytest.fixture
def two(tmp_path) -> tuple[Path, Path]:
    """A directory with snapshots 1 and 2 (meta seq 1 and 2)."""
    return write_snapshot(tmp_path, state(1), {"seq": 1}), write_snapshot(tmp_path, state(2), {"seq": 2})


# ------------------------------------------------------------------------------------------ round trip
def test_round_trip_is_exact(tmp_path):
    arrays = {
        "f64": np.linspace(-1, 1, 6).reshape(2, 3),
        "f32_scalar": np.array(3.5, np.float32),
        "i8": np.array([-128, 0, 127], np.int8),
        "u16": np.arange(10, dtype=np.uint16).reshape(5, 2),
        "bool": np.array([[True, False], [False, True]]),
        "empty": np.zeros(0),
        "empty_2d": np.zeros((3, 0), np.int32),
        "c128": np.array([1 + 2j, -3j]),
        "fortran": np.asfortranarray(np.arange(12.0).reshape(3, 4)),
        "big_endian": np.arange(4, dtype=">i4"),
        "text": np.array(["a", "ünï", ""]),
    }
    meta = {"seq": 7, "name": "cell ☉", "ratio": 0.25, "flags": [True, None], "nested": {"a": [1, 2]}}
    path = write_snapshot(tmp_path, arrays, meta)
    assert path == tmp_path / "snapshot-00000001.hcm"
    loaded, loaded_meta = read_snapshot(path)
    assert loaded.keys() == arrays.keys() and loaded_meta == meta
    for name, array in arrays.items():
        assert loaded[name].dtype == array.dtype and loaded[name].shape == array.shape, name
        assert np.array_equal(loaded[name], array), name
    latest, latest_meta, report = load_latest(tmp_path)
    assert report.path == path and report.skipped == [] and latest_meta == meta
    assert np.array_equal(latest["bool"], arrays["bool"])


def test_file_layout_is_the_documented_one(tmp_path):
    data = write_snapshot(tmp_path, state(1), {"seq": 1}).read_bytes()
    magic, version, length, _ = HEADER.unpack_from(data)
    assert HEADER.size == 8 + 4 + 8 + 32 and magic == b"HCMEMSNP" and version == FORMAT_VERSION == 1
    assert length == len(data) - HEADER.size


# ------------------------------------------------------------------------------------------------ keep
def test_only_the_keep_newest_remain_and_seq_increases(tmp_path):
    paths = [write_snapshot(tmp_path, state(i), {"seq": i}, keep=2) for i in range(1, 6)]
    assert [p.name for p in paths] == [f"snapshot-{i:08d}.hcm" for i in range(1, 6)]
    assert sorted(tmp_path.iterdir()) == paths[-2:]
    assert [seq for seq, _ in list_snapshots(tmp_path)] == [4, 5]
    arrays, meta, report = load_latest(tmp_path)
    assert meta == {"seq": 5} and report.path == paths[-1]
    assert_consistent(arrays, meta)
    write_snapshot(tmp_path, state(6), {"seq": 6}, keep=1)
    assert [p.name for p in tmp_path.iterdir()] == ["snapshot-00000006.hcm"]


def test_temporary_files_are_ignored_by_loading_and_removed_by_the_next_write(tmp_path, two):
    stale = tmp_path / ".tmp-snapshot-00000003-abc"
    stale.write_bytes(b"HCMEMSNP half a snapsh")
    assert load_latest(tmp_path)[1] == {"seq": 2}
    write_snapshot(tmp_path, state(3), {"seq": 3})
    assert not stale.exists() and [seq for seq, _ in list_snapshots(tmp_path)] == [2, 3]


# ---------------------------------------------------------------------------------------- damaged files
@pytest.mark.parametrize("cut", [0, 5, 20, HEADER.size, HEADER.size + 1, "half", -1])
def test_a_truncated_newest_snapshot_is_skipped_with_a_reason(two, cut):
    older, newest = two
    data = newest.read_bytes()
    end = {"half": len(data) // 2}.get(cut, cut)
    newest.write_bytes(data[:end])
    with pytest.raises(SnapshotCorrupt, match="truncated"):
        read_snapshot(newest)
    arrays, meta, report = load_latest(newest.parent)
    assert meta == {"seq": 1} and report.path == older
    assert_consistent(arrays, meta)
    [(path, reason)] = report.skipped
    assert path == newest and "truncated" in reason and newest.name in reason


def test_one_flipped_payload_byte_is_refused_and_skipped(two):
    older, newest = two
    data = bytearray(newest.read_bytes())
    data[HEADER.size + (len(data) - HEADER.size) // 2] ^= 0x01
    newest.write_bytes(bytes(data))
    with pytest.raises(SnapshotCorrupt, match="SHA-256"):
        read_snapshot(newest)
    _, meta, report = load_latest(newest.parent)
    assert meta == {"seq": 1} and report.path == older
    assert [(p, "SHA-256" in reason) for p, reason in report.skipped] == [(newest, True)]


def test_all_snapshots_bad_is_an_error_listing_each(two):
    older, newest = two
    newest.write_bytes(newest.read_bytes()[:100])
    older.write_bytes(b"NOTASNAP" + older.read_bytes()[8:])
    with pytest.raises(SnapshotCorrupt, match="no loadable snapshot") as caught:
        load_latest(older.parent)
    message = str(caught.value)
    assert f"{newest.name}: truncated" in message and f"{older.name}: not a snapshot: magic" in message


def test_no_snapshot_at_all_is_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError):
        load_latest(tmp_path / "missing")
    (tmp_path / ".tmp-snapshot-00000001-x").write_bytes(b"")
    with pytest.raises(FileNotFoundError, match="no snapshot"):
        load_latest(tmp_path)


# ----------------------------------------------------------------------------------------------- version
def patch_version(path: Path, version: int) -> None:
    data = bytearray(path.read_bytes())
    data[8:12] = version.to_bytes(4, "little")
    path.write_bytes(bytes(data))


def test_another_format_version_is_refused_naming_both(two):
    older, newest = two
    patch_version(newest, 2)
    with pytest.raises(SnapshotVersionError, match="snapshot format 2, this build reads 1"):
        read_snapshot(newest)
    _, meta, report = load_latest(newest.parent)  # an older good one of this version: skipped and reported
    assert meta == {"seq": 1} and report.path == older
    [(path, reason)] = report.skipped
    assert path == newest and "snapshot format 2, this build reads 1" in reason
    patch_version(older, 2)
    with pytest.raises(SnapshotVersionError, match="snapshot format 2, this build reads 1"):
        load_latest(newest.parent)


def test_a_version_error_wins_over_corruption_when_nothing_loads(two):
    older, newest = two
    newest.write_bytes(b"")
    patch_version(older, 2)
    with pytest.raises(SnapshotVersionError, match=rf"{older.name}: snapshot format 2, this build reads 1"):
        load_latest(older.parent)


def test_the_errors_are_value_errors():
    assert issubclass(SnapshotCorrupt, SnapshotError) and issubclass(SnapshotVersionError, SnapshotError)
    assert issubclass(SnapshotError, ValueError)


# --------------------------------------------------------------------------------------------- bad input
def test_bad_input_is_refused_before_anything_is_written(tmp_path):
    directory = tmp_path / "mem"
    with pytest.raises(TypeError, match="'cells'"):
        write_snapshot(directory, {"ok": np.zeros(2), "cells": np.array([{}, 1], dtype=object)}, {})
    with pytest.raises(ValueError, match="'__x'"):
        write_snapshot(directory, {"__x": np.zeros(2)}, {})
    with pytest.raises(ValueError, match="keep"):
        write_snapshot(directory, {"ok": np.zeros(2)}, {}, keep=0)
    with pytest.raises(TypeError):
        write_snapshot(directory, {"ok": np.zeros(2)}, {"when": object()})
    assert not directory.exists()


# -------------------------------------------------------------------------------------- kill atomicity
@pytest.mark.timeout(120)
def test_a_writer_killed_at_random_moments_always_leaves_the_newest_snapshot_intact(tmp_path):
    """30 SIGKILLs at uniformly random moments of a writer's loop (about 9 ms for a 3 MB snapshot here, so
    the 0.2 s window covers every phase: building, writing the temporary file, fsync, rename, pruning).

    After each kill the newest snapshot file is complete (nothing skipped), self-consistent, and never older
    than before. A writer that wrote the final name in place would leave a truncated newest file behind and
    fail `skipped == []`.
    """
    rng = random.Random(6)
    directory = tmp_path / "mem"
    write_snapshot(directory, state(0), {"seq": 0})
    last_seq = 0
    for kill in range(30):
        writer = subprocess.Popen(
            [sys.executable, "-c", WRITER, str(SNAPSHOT_PY), str(directory)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            assert writer.stdout.readline() == "ready\n", writer.communicate()[1]
            time.sleep(rng.uniform(0.0, 0.2))
            assert writer.poll() is None, f"the writer died on its own: {writer.communicate()[1]}"
            writer.send_signal(signal.SIGKILL)
            writer.wait()
        finally:
            writer.kill()
            writer.communicate()
        arrays, meta, report = load_latest(directory)
        snapshots = list_snapshots(directory)
        assert report.skipped == [], f"kill {kill}: {report.skipped}"
        assert report.path == snapshots[-1][1]
        assert_consistent(arrays, meta)
        assert meta["seq"] >= last_seq, f"kill {kill}: went back from {last_seq} to {meta['seq']}"
        assert len(snapshots) <= 3  # keep=2, plus one if killed between the rename and the pruning
        for _, path in snapshots[:-1]:
            assert_consistent(*read_snapshot(path))
        last_seq = meta["seq"]
    assert last_seq >= 10, f"the writer barely wrote ({last_seq} snapshots in 30 runs): little was tested"
