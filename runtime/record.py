"""Recordings: every message of a run in one MCAP file, readable without ZeroMQ, and replayable bit-exactly.

File layout (the `mcap` library, https://mcap.dev):

- one channel per topic, registered when its first message arrives; message encoding `msgpack`;
- one schema per channel, encoding `jsonschema`, describing the envelope (the same for every channel but
  the `topic` constant; the channel's metadata holds the kind, dtype, shape and source it started with);
- each MCAP message's data is the whole envelope as one self-contained msgpack map: the wire header fields
  (`v, seq, capture_ns, send_ns, source, kind, dtype, shape`), the `topic` (on the wire it is the start of
  frame 0, not a header key) and the payload bytes under `data` (always inline here, however large); `v` is
  the wire format version when it was recorded (this map is the same for versions 1 and 2: both are read);
  `log_time` is the recorder's `time.monotonic_ns()` at receipt, `publish_time` is `capture_ns`, `sequence`
  is `seq` (truncated to 32 bits, as MCAP stores it);
- chunked, zstd-compressed; a chunk is closed and handed to the kernel when it reaches `chunk_size` bytes
  and at least every `flush_interval_s`, so a writer that is killed loses at most its unfinished chunk
  (about one second of data). A finished file has MCAP's summary and footer.

`read_recording` reads the records in file order and stops cleanly at an incomplete tail (a killed writer):
every complete chunk is returned, and the incomplete tail is described in a `ReadReport` (or logged when no
report is passed), never raised. A file that is not an MCAP recording, or a complete chunk that fails its
CRC, raises `RecordingError`.

Recording and replaying over ZeroMQ use the transport's own API: `Subscriber(..., every=Policy.LOSSLESS)`
and `Publisher(..., nodrop=True).republish(msg)` (see launch/record.py and launch/replay.py).
"""

from __future__ import annotations

import io
import json
import logging
import struct
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, NamedTuple

import msgpack
import numpy as np
from mcap import records as mcap_records
from mcap.data_stream import ReadDataStream
from mcap.exceptions import McapError
from mcap.opcode import Opcode
from mcap.reader import make_reader
from mcap.stream_reader import breakup_chunk
from mcap.writer import CompressionType, Writer
from mcap.writer import __version__ as MCAP_VERSION

from runtime.messages import (
    DTYPES,
    FORMAT_VERSION,
    INLINE_MAX_BYTES,
    DecodeLimits,
    Message,
    MessageError,
    decode,
    topic_prefix,
)

log = logging.getLogger(__name__)

MESSAGE_ENCODING = "msgpack"
SCHEMA_ENCODING = "jsonschema"
SCHEMA_NAME = "hamrt.Envelope"
LIBRARY = f"hamrt.record (mcap-python {MCAP_VERSION})"
COMPRESSIONS = {"zstd": CompressionType.ZSTD, "lz4": CompressionType.LZ4, "none": CompressionType.NONE}
_MAGIC = bytes([137, 77, 67, 65, 80, 48, 13, 10])  # "\x89MCAP0\r\n"
_RECORD_HEAD = struct.Struct("<BQ")  # opcode, length
_MAX_RECORD_BYTES = 2**30  # a chunk is ~chunk_size plus one message (payloads are <= 64 MiB)
_LIMITS = DecodeLimits()
_DTYPE_NAMES = {dtype: name for name, dtype in DTYPES.items()}
_RECORDED_VERSIONS = (1, FORMAT_VERSION)  # wire versions whose recorded envelope map is this one
_ENVELOPE_KEYS = ("v", "topic", "seq", "capture_ns", "send_ns", "source", "kind", "dtype", "shape", "data")


class RecordingError(ValueError):
    """A file that cannot be read as a recording: not MCAP, not this runtime's envelope, or corrupt inside."""


def envelope_schema(topic: str) -> dict:
    """JSON schema of one recorded envelope on `topic` (msgpack map; `data` is a msgpack bin)."""
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": f"hamrt envelope v{FORMAT_VERSION} on {topic}",
        "description": "A runtime message as it crossed the wire, payload inline: a msgpack map. `data` is a "
        "msgpack bin holding the payload array in C order, little-endian `dtype`, of `shape`.",
        "type": "object",
        "properties": {
            "v": {"type": "integer", "const": FORMAT_VERSION},
            "topic": {"type": "string", "const": topic},
            "seq": {"type": "integer", "minimum": 0, "description": "per-topic number from the publisher"},
            "capture_ns": {"type": "integer", "description": "capturing host's monotonic clock, ns"},
            "send_ns": {"type": "integer", "description": "same clock, when it was handed to the socket"},
            "source": {"type": "string", "description": "the node that published it"},
            "kind": {"type": "string", "description": "image, audio, joint, action, ..."},
            "dtype": {"type": "string", "enum": sorted(DTYPES)},
            "shape": {"type": "array", "items": {"type": "integer", "minimum": 0}},
            "data": {"contentMediaType": "application/octet-stream", "description": "payload (msgpack bin)"},
        },
        "required": list(_ENVELOPE_KEYS),
        "additionalProperties": False,
    }


# ----------------------------------------------------------------------------------------- envelopes
_packer = msgpack.Packer(use_bin_type=True)


def pack_envelope(msg: Message) -> bytes:
    """The recorded form of `msg`: one msgpack map with the payload bytes inline."""
    name = _DTYPE_NAMES.get(msg.data.dtype)
    if name is None:
        raise ValueError(f"dtype {msg.data.dtype} is not on the wire allowlist {sorted(DTYPES)}")
    payload = np.ascontiguousarray(msg.data).reshape(-1).view(np.uint8)
    return _packer.pack(
        {
            "v": msg.version,
            "topic": msg.topic,
            "seq": msg.seq,
            "capture_ns": msg.capture_ns,
            "send_ns": msg.send_ns,
            "source": msg.source,
            "kind": msg.kind,
            "dtype": name,
            "shape": list(msg.data.shape),
            "data": memoryview(payload),
        }
    )


def unpack_envelope(data: bytes, limits: DecodeLimits = _LIMITS) -> Message:
    """Inverse of `pack_envelope`, with every check the wire decoder makes (`MessageError` on bad input)."""
    try:
        envelope = msgpack.unpackb(
            data,
            raw=False,
            strict_map_key=True,
            max_str_len=256,
            max_bin_len=limits.max_payload_bytes,
            max_array_len=limits.max_ndim,
            max_map_len=16,
            max_ext_len=0,
        )
    except Exception as exc:  # msgpack raises several types for bad input
        raise MessageError("malformed", f"envelope is not valid msgpack within limits ({exc})") from None
    if not isinstance(envelope, dict):
        raise MessageError("type", f"envelope must be a map, got {type(envelope).__name__}")
    payload = envelope.pop("data", None)
    if not isinstance(payload, bytes):
        raise MessageError("missing", "envelope has no `data` bytes")
    if type(envelope.get("v")) is int and envelope["v"] in _RECORDED_VERSIONS:
        envelope["v"] = FORMAT_VERSION  # an older recording: the same map; replayed in today's format
    topic = envelope.pop("topic", None)
    if not isinstance(topic, str):
        raise MessageError("topic", f"envelope topic must be a str, got {topic!r}")
    # Re-frame as the wire would carry it, so the one decoder validates recordings too (it refuses a topic
    # that is not a name, a 0x00 in it included).
    if len(payload) <= INLINE_MAX_BYTES:
        envelope["data"] = payload
        return decode([topic_prefix(topic) + _packer.pack(envelope)], limits)
    return decode([topic_prefix(topic) + _packer.pack(envelope), payload], limits)


# ----------------------------------------------------------------------------------------- writing
@dataclass
class TopicCounts:
    messages: int = 0
    bytes: int = 0  # envelope bytes before compression
    first_seq: int = -1
    last_seq: int = -1


class Recorder:
    """Writes messages to an MCAP file. `write()` per message, `maybe_flush()` when idle, `close()` to finish.

    Not thread-safe: one thread owns it.
    """

    def __init__(
        self,
        path: str | Path,
        *,
        chunk_size: int = 1 << 20,
        flush_interval_s: float = 1.0,
        compression: str = "zstd",
        metadata: dict[str, str] | None = None,
    ):
        if compression not in COMPRESSIONS:
            raise ValueError(f"`compression` must be one of {sorted(COMPRESSIONS)}, got {compression!r}")
        if not chunk_size > 0:
            raise ValueError(f"`chunk_size` must be > 0, got {chunk_size}")
        if not flush_interval_s > 0:
            raise ValueError(f"`flush_interval_s` must be > 0, got {flush_interval_s}")
        self.path = Path(path)
        self.flush_interval_s = flush_interval_s
        # Our own buffered file: mcap writes a finished chunk into it, and we flush it to the kernel after
        # every write call (free when nothing is pending), so a SIGKILL loses only the chunk being built.
        self._file: IO[bytes] = open(self.path, "wb")  # noqa: SIM115 - closed in close()
        try:
            self._writer = Writer(self._file, chunk_size=chunk_size, compression=COMPRESSIONS[compression])
            self._writer.start(profile="", library=LIBRARY)
            self._writer.add_metadata(
                "hamrt",
                {
                    "format_version": str(FORMAT_VERSION),
                    "log_time": "recorder's time.monotonic_ns() when the message was received",
                    "publish_time": "capture_ns of the message (the capturing host's monotonic clock)",
                    **(metadata or {}),
                },
            )
            self._file.flush()
        except BaseException:
            self._file.close()
            raise
        self._channels: dict[str, int] = {}
        self.topics: dict[str, TopicCounts] = {}
        self.messages = 0
        self.flushes = 0
        self.closed = False
        self._pending = 0  # messages in the chunk being built
        self._last_flush = time.monotonic()

    def write(self, msg: Message, log_time_ns: int) -> None:
        """Add one message; `log_time_ns` is when it was received (the recorder's monotonic clock)."""
        if self.closed:
            raise RuntimeError(f"{self.path}: recorder is closed")
        channel = self._channels.get(msg.topic)
        if channel is None:
            channel = self._register(msg)
        data = pack_envelope(msg)
        self._writer.add_message(
            channel_id=channel,
            log_time=log_time_ns,
            data=data,
            publish_time=msg.capture_ns,
            sequence=msg.seq & 0xFFFFFFFF,
        )
        self._file.flush()  # a chunk mcap just closed goes to the kernel now; a no-op otherwise
        counts = self.topics[msg.topic]
        if not counts.messages:
            counts.first_seq = msg.seq
        counts.last_seq = msg.seq
        counts.messages += 1
        counts.bytes += len(data)
        self.messages += 1
        self._pending += 1
        self.maybe_flush()

    def _register(self, msg: Message) -> int:
        schema = self._writer.register_schema(
            name=SCHEMA_NAME,
            encoding=SCHEMA_ENCODING,
            data=json.dumps(envelope_schema(msg.topic), indent=1).encode(),
        )
        channel = self._writer.register_channel(
            topic=msg.topic,
            message_encoding=MESSAGE_ENCODING,
            schema_id=schema,
            metadata={
                "kind": msg.kind,
                "dtype": _DTYPE_NAMES.get(msg.data.dtype, str(msg.data.dtype)),
                "shape": json.dumps(list(msg.data.shape)),
                "source": msg.source,
            },
        )
        self._channels[msg.topic] = channel
        self.topics[msg.topic] = TopicCounts()
        return channel

    def maybe_flush(self) -> None:
        """Close the chunk in progress if it is older than `flush_interval_s`; call when idle too."""
        if self._pending and time.monotonic() - self._last_flush >= self.flush_interval_s:
            self.flush()

    def flush(self) -> None:
        """Close the chunk in progress and hand everything to the kernel (no fsync)."""
        self._writer.flush()
        self._pending = 0
        self.flushes += 1
        self._last_flush = time.monotonic()

    def close(self) -> None:
        """Finish the file: last chunk, summary, footer. Idempotent."""
        if self.closed:
            return
        self.closed = True
        try:
            self._writer.finish()
        finally:
            self._file.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


# ----------------------------------------------------------------------------------------- reading
@dataclass
class ReadReport:
    """What `read_recording` found, filled in as it reads (final once the iterator is exhausted)."""

    complete: bool = False  # the footer was reached: the writer finished the file
    messages: int = 0
    chunks: int = 0
    tail_bytes: int = 0  # bytes after the last complete record (an unfinished chunk), not read
    tail: str = ""  # why reading stopped before a footer, when it did
    topics: Counter = field(default_factory=Counter)


class Recorded(NamedTuple):
    log_time_ns: int  # when the recorder received it (the recorder's monotonic clock)
    message: Message


def iter_recording(
    path: str | Path, report: ReadReport | None = None, limits: DecodeLimits = _LIMITS
) -> Iterator[Recorded]:
    """Every message of a recording in file (= receive) order, with its receive time.

    Reads record by record, so a recording whose writer was killed yields every message of its complete
    chunks; the incomplete tail is described in `report` when one is given (the caller reports it), and
    logged as a warning otherwise, never raised. Raises `RecordingError` for a file that is not an MCAP
    recording of this runtime, or a complete chunk that is corrupt.
    """
    warn = report is None
    report = report if report is not None else ReadReport()
    path = Path(path)
    with open(path, "rb") as f:
        size = f.seek(0, io.SEEK_END)
        f.seek(0)
        if f.read(len(_MAGIC)) != _MAGIC:
            raise RecordingError(f"{path}: not an MCAP file (no MCAP magic at the start)")
        channels: dict[int, mcap_records.Channel] = {}
        in_summary = False
        while True:
            offset = f.tell()
            head = f.read(_RECORD_HEAD.size)
            if len(head) < _RECORD_HEAD.size:
                _incomplete(path, report, size - offset, "the file ends without a footer", warn)
                return
            opcode, length = _RECORD_HEAD.unpack(head)
            if length > size - offset - _RECORD_HEAD.size:
                _incomplete(path, report, size - offset, "the last record is cut off", warn)
                return
            if length > _MAX_RECORD_BYTES:
                raise RecordingError(f"{path}: record of {length} bytes at offset {offset} (corrupt file)")
            body = f.read(length)
            if opcode == Opcode.FOOTER:
                if f.read(len(_MAGIC)) != _MAGIC:
                    _incomplete(path, report, 0, "the closing MCAP magic is missing", warn)
                    return
                report.complete = True
                return
            if in_summary:
                continue  # summary records repeat what the data section said
            if opcode == Opcode.DATA_END:
                in_summary = True
                continue
            if opcode == Opcode.CHUNK:
                try:
                    chunk = mcap_records.Chunk.read(_stream(body))
                    inner = breakup_chunk(chunk, validate_crc=True)
                except Exception as exc:  # zstd/lz4/struct/CRC errors: a complete record that is damaged
                    raise RecordingError(f"{path}: chunk at offset {offset} is corrupt ({exc})") from None
                report.chunks += 1
                for record in inner:
                    out = _take(path, record, channels, limits, report)
                    if out is not None:
                        yield out
            elif opcode in (Opcode.CHANNEL, Opcode.MESSAGE):
                record = (
                    mcap_records.Channel.read(_stream(body))
                    if opcode == Opcode.CHANNEL
                    else mcap_records.Message.read(_stream(body), length)
                )
                out = _take(path, record, channels, limits, report)
                if out is not None:
                    yield out
            # Header, schemas, metadata, indexes and unknown records carry nothing to replay.


def read_recording(
    path: str | Path, report: ReadReport | None = None, limits: DecodeLimits = _LIMITS
) -> Iterator[Message]:
    """Every message of a recording in file order; see `iter_recording`."""
    for item in iter_recording(path, report, limits):
        yield item.message


def _stream(body: bytes) -> ReadDataStream:
    return ReadDataStream(io.BytesIO(body))


def _take(
    path: Path,
    record,
    channels: dict[int, mcap_records.Channel],
    limits: DecodeLimits,
    report: ReadReport,
) -> Recorded | None:
    if isinstance(record, mcap_records.Channel):
        if record.message_encoding != MESSAGE_ENCODING:
            raise RecordingError(
                f"{path}: channel {record.topic!r} has message encoding {record.message_encoding!r}, "
                f"not {MESSAGE_ENCODING!r}: not a recording of this runtime"
            )
        channels[record.id] = record
        return None
    if not isinstance(record, mcap_records.Message):
        return None
    channel = channels.get(record.channel_id)
    if channel is None:
        raise RecordingError(f"{path}: message on unknown channel {record.channel_id}")
    try:
        msg = unpack_envelope(record.data, limits)
    except MessageError as exc:
        raise RecordingError(f"{path}: bad envelope on {channel.topic!r}: {exc}") from None
    if msg.topic != channel.topic:
        raise RecordingError(f"{path}: message for {msg.topic!r} on channel {channel.topic!r}")
    report.messages += 1
    report.topics[msg.topic] += 1
    return Recorded(record.log_time, msg)


def _incomplete(path: Path, report: ReadReport, tail_bytes: int, why: str, warn: bool) -> None:
    report.complete = False
    report.tail_bytes = tail_bytes
    report.tail = why
    if warn:
        log.warning(
            "%s: incomplete recording (%s; writer killed?): read %d messages in %d complete chunks, "
            "skipped %d bytes of unfinished tail",
            path,
            why,
            report.messages,
            report.chunks,
            tail_bytes,
        )


@dataclass
class RecordingSummary:
    """From a finished file's MCAP summary (no message is read)."""

    messages: int
    topics: dict[str, int]  # messages per topic
    start_ns: int  # first and last log time (receive time)
    end_ns: int

    @property
    def duration_s(self) -> float:
        return (self.end_ns - self.start_ns) / 1e9


def recording_summary(path: str | Path) -> RecordingSummary | None:
    """The summary of a finished recording, or None when it has none (writer killed) or is not MCAP."""
    try:
        with open(path, "rb") as f:
            summary = make_reader(f).get_summary()
    except (McapError, struct.error, ValueError, OSError, EOFError):
        return None
    if summary is None or summary.statistics is None:
        return None
    stats = summary.statistics
    topics = {
        summary.channels[cid].topic: count
        for cid, count in stats.channel_message_counts.items()
        if cid in summary.channels
    }
    return RecordingSummary(stats.message_count, topics, stats.message_start_time, stats.message_end_time)
