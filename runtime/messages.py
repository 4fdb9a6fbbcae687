"""Wire format: one envelope for every message, an ndarray payload, msgpack only (see docs/wire-format.md).

A message is a ZeroMQ multipart message of two or three frames:

    frame 0  topic, UTF-8 (ZeroMQ SUB sockets filter on its prefix)
    frame 1  header, a msgpack map (format version, topic, seq, capture/send time, source, kind, dtype, shape,
             and the payload bytes inline under "data" when they are small)
    frame 2  payload bytes, C order, when they are not inline (sent without a copy into the header)

Decoding never trusts the sender: size limits before parsing, no msgpack extension types, a dtype allowlist,
and the shape must match the byte count. Every failure is a `MessageError` with a short `reason`, so a
subscriber can drop the message and count it.
"""

import re
from dataclasses import dataclass

import msgpack
import numpy as np

FORMAT_VERSION = 1
INLINE_MAX_BYTES = 1024  # payloads up to this size ride in the header: one frame fewer for audio and joints

# Little-endian only: the byte order is part of the format, not negotiated.
DTYPES = {
    "bool": np.dtype("bool"),
    "uint8": np.dtype("<u1"),
    "int8": np.dtype("<i1"),
    "uint16": np.dtype("<u2"),
    "int16": np.dtype("<i2"),
    "uint32": np.dtype("<u4"),
    "int32": np.dtype("<i4"),
    "int64": np.dtype("<i8"),
    "float16": np.dtype("<f2"),
    "float32": np.dtype("<f4"),
    "float64": np.dtype("<f8"),
}
_DTYPE_NAMES = {dtype: name for name, dtype in DTYPES.items()}
_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_./-]{0,127}")  # topics and sources
_KIND = re.compile(r"[a-z][a-z0-9_]{0,31}")
_INT64 = (-(2**63), 2**63 - 1)
_REQUIRED = ("v", "topic", "seq", "capture_ns", "send_ns", "source", "kind", "dtype", "shape")


class MessageError(ValueError):
    """A message that must be dropped; `reason` is a short counter key, `str()` says what was wrong."""

    def __init__(self, reason: str, detail: str):
        super().__init__(f"{reason}: {detail}")
        self.reason = reason


@dataclass(frozen=True)
class DecodeLimits:
    max_header_bytes: int = 4096
    max_payload_bytes: int = 64 * 2**20  # 64 MiB: a 4K RGB frame is 25 MiB
    max_ndim: int = 8


@dataclass(frozen=True, slots=True)
class Message:
    topic: str
    seq: int
    capture_ns: int  # monotonic clock of the capturing host, when the sample came into existence
    send_ns: int  # same clock, when it was handed to the socket
    source: str  # the node that published it
    kind: str  # image, audio, joint, action, heartbeat, ...
    data: np.ndarray
    version: int = FORMAT_VERSION


def check_name(what: str, value: str) -> str:
    if not isinstance(value, str) or not _NAME.fullmatch(value):
        raise ValueError(f"`{what}` must match {_NAME.pattern} (letters, digits, _ . / -), got {value!r}")
    return value


def check_kind(value: str) -> str:
    if not isinstance(value, str) or not _KIND.fullmatch(value):
        raise ValueError(f"`kind` must match {_KIND.pattern}, got {value!r}")
    return value


_packer = msgpack.Packer(use_bin_type=True)


def encode(
    topic: str, seq: int, capture_ns: int, send_ns: int, source: str, kind: str, data: np.ndarray
) -> list:
    """Frames for `socket.send_multipart(frames, copy=False)`. Names are assumed checked by the caller
    (publishers check them once, not per message)."""
    name = _DTYPE_NAMES.get(data.dtype)
    if name is None:
        raise ValueError(f"dtype {data.dtype} is not on the wire allowlist {sorted(DTYPES)}")
    if not data.flags.c_contiguous:
        data = np.ascontiguousarray(data)
    header = {
        "v": FORMAT_VERSION,
        "topic": topic,
        "seq": seq,
        "capture_ns": capture_ns,
        "send_ns": send_ns,
        "source": source,
        "kind": kind,
        "dtype": name,
        "shape": data.shape,
    }
    topic_bytes = topic.encode()
    if data.nbytes <= INLINE_MAX_BYTES:
        header["data"] = data.tobytes()
        return [topic_bytes, _packer.pack(header)]
    return [topic_bytes, _packer.pack(header), memoryview(data).cast("B")]


def _no_ext(code: int, data: bytes):
    # max_ext_len=0 still lets a zero-length ext (c7 00 <type>) through as an ExtType object.
    raise ValueError(f"msgpack extension type {code} is not allowed")


def _buffer(frame) -> memoryview:
    """zmq.Frame (copy=False receives), bytes or memoryview, as a byte view without copying."""
    buf = getattr(frame, "buffer", frame)
    return buf if isinstance(buf, memoryview) else memoryview(buf)


def decode(frames: list, limits: DecodeLimits = DecodeLimits()) -> Message:
    """Validate and decode one multipart message. The payload array is a read-only view of the frame."""
    if not 2 <= len(frames) <= 3:
        raise MessageError("frames", f"expected 2 or 3 frames, got {len(frames)}")
    header_buf = _buffer(frames[1])
    if header_buf.nbytes > limits.max_header_bytes:
        raise MessageError(
            "oversize", f"header is {header_buf.nbytes} bytes, limit {limits.max_header_bytes}"
        )
    try:
        header = msgpack.unpackb(
            header_buf,
            raw=False,
            strict_map_key=True,
            use_list=True,
            max_str_len=256,
            max_bin_len=INLINE_MAX_BYTES,
            max_array_len=limits.max_ndim,
            max_map_len=16,
            max_ext_len=0,  # no extension types, ever
            ext_hook=_no_ext,
        )
    except Exception as exc:  # msgpack raises several types for bad input; all mean "malformed"
        raise MessageError("malformed", f"header is not valid msgpack within limits ({exc})") from None
    if not isinstance(header, dict):
        raise MessageError("type", f"header must be a map, got {type(header).__name__}")
    # The version first: another version may have other keys. `type() is int`: msgpack true is a bool, == 1.
    if "v" in header and (type(header["v"]) is not int or header["v"] != FORMAT_VERSION):
        raise MessageError("version", f"format version {header['v']!r}, this runtime reads {FORMAT_VERSION}")
    missing = [k for k in _REQUIRED if k not in header]
    if missing:
        raise MessageError("missing", f"header lacks {missing}")
    for key in ("seq", "capture_ns", "send_ns"):
        value = header[key]
        if type(value) is not int or not _INT64[0] <= value <= _INT64[1] or (key == "seq" and value < 0):
            raise MessageError(
                "type", f"`{key}` must be an int64{' >= 0' if key == 'seq' else ''}, got {value!r}"
            )
    topic, source, kind = header["topic"], header["source"], header["kind"]
    if not (isinstance(topic, str) and _NAME.fullmatch(topic)):
        raise MessageError("type", f"bad topic {topic!r}")
    if not (isinstance(source, str) and _NAME.fullmatch(source)):
        raise MessageError("type", f"bad source {source!r}")
    if not (isinstance(kind, str) and _KIND.fullmatch(kind)):
        raise MessageError("type", f"bad kind {kind!r}")
    if _buffer(frames[0]).tobytes() != topic.encode():
        raise MessageError("topic", f"frame 0 does not match header topic {topic!r}")
    dtype = DTYPES.get(header["dtype"]) if isinstance(header["dtype"], str) else None
    if dtype is None:
        raise MessageError("dtype", f"dtype {header['dtype']!r} is not on the allowlist {sorted(DTYPES)}")
    shape = header["shape"]
    if not isinstance(shape, list) or not all(type(d) is int and 0 <= d < 2**31 for d in shape):
        raise MessageError("shape", f"shape must be a list of non-negative ints, got {shape!r}")
    count = 1
    for d in shape:
        count *= d
    nbytes = count * dtype.itemsize
    if nbytes > limits.max_payload_bytes:
        raise MessageError("oversize", f"payload of {nbytes} bytes exceeds {limits.max_payload_bytes}")
    inline = header.get("data")
    if len(frames) == 2:
        if not isinstance(inline, bytes):
            raise MessageError("frames", "no payload frame and no inline `data`")
        payload = memoryview(inline)
    else:
        if inline is not None:
            raise MessageError("frames", "both inline `data` and a payload frame")
        payload = _buffer(frames[2])
        if payload.nbytes > limits.max_payload_bytes:
            raise MessageError(
                "oversize", f"payload frame is {payload.nbytes} bytes, limit {limits.max_payload_bytes}"
            )
    if payload.nbytes != nbytes:
        raise MessageError(
            "shape", f"shape {shape} of {header['dtype']} needs {nbytes} bytes, got {payload.nbytes}"
        )
    try:
        data = np.frombuffer(payload, dtype=dtype).reshape(shape)
    except ValueError as exc:  # a 0-size shape whose other dimensions multiply past what numpy can index
        raise MessageError("shape", f"shape {shape} cannot be an array ({exc})") from None
    data.flags.writeable = False  # zmq frames are writable buffers; the docstring promises a read-only view
    return Message(topic, header["seq"], header["capture_ns"], header["send_ns"], source, kind, data)
