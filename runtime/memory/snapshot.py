"""Snapshots of an in-memory state (named numpy arrays plus a JSON-able metadata dict) that survive crashes.

One snapshot is one file, `snapshot-<seq:08d>.hcm`, laid out as

    MAGIC (8 bytes, b"HCMEMSNP")
    format version (4 bytes, little-endian unsigned)
    payload length (8 bytes, little-endian unsigned)
    SHA-256 of the payload (32 bytes)
    payload: an uncompressed `.npz` (`np.savez`) with the arrays and one uint8 array `__meta__`,
             the UTF-8 JSON of the metadata

The magic and the version keep their place in every format version, so that a file of another version is
recognised as such (and refused with both versions named) before anything else is parsed.

Guarantees:
- A snapshot is written to a `.tmp-*` file in the same directory, flushed, fsynced, renamed over its final
  name with `os.replace` (atomic on POSIX), and then the directory is fsynced. A process killed at any moment
  leaves either the new complete snapshot or none of it, never a partial file under a snapshot name; the
  previous snapshots are only deleted (beyond `keep`) after the new one is durable.
- Reading checks the magic, the format version, the length and the hash before parsing, and parses with
  `allow_pickle=False` (no code is ever unpickled). A truncated or changed file is `SnapshotCorrupt`; a file
  of another format version is `SnapshotVersionError`, naming both versions.
- `load_latest` returns the newest snapshot that verifies and reports the newer ones it skipped, and why.

One writer per directory is assumed: a second concurrent writer could pick the same sequence number.
Metadata comes back as `json.loads` returns it (tuples as lists, dict keys as strings).
"""

import hashlib
import io
import json
import os
import re
import struct
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

FORMAT_VERSION = 1
MAGIC = b"HCMEMSNP"
HEADER = struct.Struct("<8sIQ32s")  # magic, format version, payload length, SHA-256 of the payload
META_KEY = "__meta__"
SUFFIX = ".hcm"
TMP_PREFIX = ".tmp-"
_NAME = re.compile(r"snapshot-(\d{8,})\.hcm")


class SnapshotError(ValueError):
    """Base of every refusal to load a snapshot, so callers can catch one type."""


class SnapshotCorrupt(SnapshotError):
    """The file is not an intact snapshot: bad magic, bad hash, truncated, or an unreadable payload."""


class SnapshotVersionError(SnapshotError):
    """The file is a snapshot of another format version, which this build cannot read."""


@dataclass
class LoadReport:
    """What `load_latest` did, so a caller can log the snapshots it had to pass over."""

    path: Path | None  # the snapshot that was loaded (None if none)
    skipped: list[tuple[Path, str]] = field(default_factory=list)  # newer snapshots that failed, and why


def snapshot_name(seq: int) -> str:
    """The file name of snapshot number `seq`; zero-padded so names sort like their numbers."""
    return f"snapshot-{seq:08d}{SUFFIX}"


def list_snapshots(directory: Path) -> list[tuple[int, Path]]:
    """(seq, path) of every snapshot file in `directory`, oldest first; `.tmp-*` files are not snapshots."""
    found = []
    for path in Path(directory).iterdir():
        match = _NAME.fullmatch(path.name)
        if match:
            found.append((int(match.group(1)), path))
    return sorted(found)


def _payload(arrays: dict[str, np.ndarray], meta: dict) -> bytes:
    """The `.npz` bytes; validates everything first so that a bad input never touches the disk."""
    if not isinstance(meta, dict):
        raise TypeError(f"meta must be a dict, got {type(meta).__name__}")
    checked = {}
    for name, value in arrays.items():
        if not isinstance(name, str) or not name:
            raise ValueError(f"array names must be non-empty strings, got {name!r}")
        if name.startswith("__"):
            raise ValueError(f"array name {name!r} starts with '__', which is reserved for the format")
        array = np.asarray(value)
        if array.dtype.hasobject:
            raise TypeError(
                f"array {name!r} has dtype {array.dtype}, which holds Python objects and cannot "
                "be stored without pickle"
            )
        checked[name] = array
    meta_bytes = np.frombuffer(json.dumps(meta).encode("utf-8"), dtype=np.uint8)
    buffer = io.BytesIO()
    np.savez(buffer, **checked, **{META_KEY: meta_bytes})
    return buffer.getvalue()


def _fsync_directory(directory: Path) -> None:
    """Makes the rename itself durable: a new directory entry is only on disk once the directory is synced."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_snapshot(directory: Path, arrays: dict[str, np.ndarray], meta: dict, keep: int = 2) -> Path:
    """Writes a new snapshot atomically and durably, then prunes; returns its path.

    Afterwards only the `keep` newest snapshots remain (keep >= 1), and stale `.tmp-*` files left by killed
    writers are removed.
    """
    if keep < 1:
        raise ValueError(f"keep must be at least 1 (the snapshot just written), got {keep}")
    payload = _payload(arrays, meta)
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    existing = list_snapshots(directory)
    final = directory / snapshot_name(existing[-1][0] + 1 if existing else 1)
    header = HEADER.pack(MAGIC, FORMAT_VERSION, len(payload), hashlib.sha256(payload).digest())
    fd, tmp_name = tempfile.mkstemp(prefix=f"{TMP_PREFIX}{final.stem}-", dir=directory)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(header)
            f.write(payload)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, final)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_directory(directory)
    for _, old in list_snapshots(directory)[:-keep]:
        old.unlink(missing_ok=True)
    for stale in directory.glob(f"{TMP_PREFIX}*"):
        stale.unlink(missing_ok=True)
    return final


def read_snapshot(path: Path) -> tuple[dict[str, np.ndarray], dict]:
    """The arrays and metadata of one snapshot file; SnapshotCorrupt or SnapshotVersionError if it is not
    an intact snapshot of this format version (OSError if it cannot be read at all)."""
    path = Path(path)
    data = path.read_bytes()
    if len(data) < HEADER.size:
        raise SnapshotCorrupt(
            f"{path}: truncated: {len(data)} bytes, shorter than the {HEADER.size}-byte header"
        )
    magic, version, length, digest = HEADER.unpack_from(data)
    if magic != MAGIC:
        raise SnapshotCorrupt(f"{path}: not a snapshot: magic {magic!r}, expected {MAGIC!r}")
    if version != FORMAT_VERSION:
        raise SnapshotVersionError(f"{path}: snapshot format {version}, this build reads {FORMAT_VERSION}")
    payload = memoryview(data)[HEADER.size :]
    if len(payload) != length:
        problem = "truncated" if len(payload) < length else "trailing bytes"
        raise SnapshotCorrupt(
            f"{path}: {problem}: header says {length} payload bytes, file has {len(payload)}"
        )
    if hashlib.sha256(payload).digest() != digest:
        raise SnapshotCorrupt(
            f"{path}: payload does not match its SHA-256: the file was changed or corrupted"
        )
    try:
        with np.load(io.BytesIO(payload), allow_pickle=False) as npz:
            arrays = {name: npz[name] for name in npz.files}
        meta = json.loads(arrays.pop(META_KEY).tobytes().decode("utf-8"))
    except Exception as exc:  # a payload that hashes right but does not parse: written by a broken writer
        raise SnapshotCorrupt(f"{path}: unreadable payload: {type(exc).__name__}: {exc}") from exc
    if not isinstance(meta, dict):
        raise SnapshotCorrupt(f"{path}: unreadable payload: metadata is a {type(meta).__name__}, not a dict")
    return arrays, meta


def load_latest(directory: Path) -> tuple[dict[str, np.ndarray], dict, LoadReport]:
    """The newest snapshot in `directory` that verifies, with a report of the newer ones passed over.

    FileNotFoundError if there is no snapshot at all. If none verifies: SnapshotVersionError when any of them
    is of another format version (a build mismatch, not damage, and falling back further would not help),
    otherwise SnapshotCorrupt; either message lists every file and its reason.
    """
    directory = Path(directory)
    snapshots = list_snapshots(directory) if directory.is_dir() else []
    if not snapshots:
        raise FileNotFoundError(f"no snapshot in {directory}")
    report = LoadReport(path=None)
    version_mismatch = False
    for _, path in reversed(snapshots):
        try:
            arrays, meta = read_snapshot(path)
        except SnapshotError as exc:
            version_mismatch |= isinstance(exc, SnapshotVersionError)
            report.skipped.append((path, str(exc)))
        except OSError as exc:  # unreadable, or deleted by a writer's pruning since it was listed
            report.skipped.append((path, str(exc)))
        else:
            report.path = path
            return arrays, meta, report
    reasons = "\n".join(f"  {reason}" for _, reason in report.skipped)  # each reason names its file
    error = SnapshotVersionError if version_mismatch else SnapshotCorrupt
    raise error(f"no loadable snapshot in {directory}:\n{reasons}")
