"""Wire format: one envelope for every message, an ndarray payload, msgpack only (see docs/wire-format.md).

A message is one ZeroMQ frame, or two when the payload is large:

    frame 0  the topic (ASCII), one 0x00 byte, then the header: one msgpack map holding the format version,
             seq, capture and send time, source, kind, dtype, shape, and, when they are at most
             INLINE_MAX_BYTES, the payload bytes under "data". ZeroMQ SUB sockets filter on the start of
             frame 0, so a subscription to `topic + 0x00` receives exactly that topic.
    frame 1  the payload bytes (C order), only when larger than INLINE_MAX_BYTES: sent without a copy

Every ZeroMQ frame costs time on each hop; below pyzmq's zero-copy threshold (64 KiB) a frame of its own
buys nothing (pyzmq copies the bytes anyway), so audio, joints and small images are one frame.

The encoder writes the header in one canonical layout (the three ints first, as fixed-width int64, then the
parts a stream repeats). Decoding never trusts the sender: size limits before parsing, no msgpack extension
types, a dtype allowlist, and the shape must match the byte count. A `Decoder` remembers the canonical
layout of each topic's last fully checked header, and a message identical to it but for the three ints and
the payload bytes is decoded without parsing it again (see `Decoder.decode_parts`). Every failure is a
`MessageError` with a short `reason`, so a subscriber can drop the message and count it.
"""

import re
import struct
from dataclasses import dataclass
from typing import NamedTuple

import msgpack
import numpy as np

FORMAT_VERSION = 2
# Payloads up to this size ride inside frame 0: pyzmq copies frames below its zero-copy threshold anyway.
INLINE_MAX_BYTES = 65536
SEPARATOR = 0x00  # ends the topic in frame 0
TOPIC_MAX_BYTES = 128

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
_NAME_BYTES = re.compile(_NAME.pattern.encode())
_KIND = re.compile(r"[a-z][a-z0-9_]{0,31}")
_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1
_REQUIRED = ("v", "seq", "capture_ns", "send_ns", "source", "kind", "dtype", "shape")
_ABSENT = object()


class MessageError(ValueError):
    """A message that must be dropped; `reason` is a short counter key, `str()` says what was wrong."""

    def __init__(self, reason: str, detail: str):
        super().__init__(f"{reason}: {detail}")
        self.reason = reason


@dataclass(frozen=True)
class DecodeLimits:
    max_header_bytes: int = 4096  # frame 0 without the inline payload bytes: topic, 0x00 and header
    max_payload_bytes: int = 64 * 2**20  # 64 MiB: a 4K RGB frame is 25 MiB
    max_ndim: int = 8


class Message(NamedTuple):
    """One decoded message: immutable (a tuple), its `data` array read-only."""

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


# ----------------------------------------------------------------------------------------- the layout
# The canonical header starts with a fixmap byte and the three ints, each a key and a msgpack int64 (d3):
#   89|88  a3 "seq" d3 <8>  aa "capture_ns" d3 <8>  a7 "send_ns" d3 <8>
# then what a stream repeats: a1 "v" 02, "source", "kind", "dtype", "shape", and, inline, a4 "data" + bin.
_INTS = struct.Struct(">B5sq12sq9sq")
_K_SEQ, _K_CAPTURE, _K_SEND = b"\xa3seq\xd3", b"\xaacapture_ns\xd3", b"\xa7send_ns\xd3"
_INTS_END = _INTS.size  # 51 bytes after the topic's 0x00
_MAP_INLINE, _MAP_FRAME = 0x89, 0x88  # 9 entries with "data", 8 without
_pack_ints = _INTS.pack
_packer = msgpack.Packer(use_bin_type=True)


def _suffix(source: str, kind: str, dtype_name: str, shape: tuple, inline_nbytes: int | None) -> bytes:
    """The canonical header after the ints; with `inline_nbytes`, up to the first payload byte."""
    pack = _packer.pack
    out = b"\xa1v" + pack(FORMAT_VERSION) + b"\xa6source" + pack(source) + b"\xa4kind" + pack(kind)
    out += b"\xa5dtype" + pack(dtype_name) + b"\xa5shape" + pack(shape)
    if inline_nbytes is None:
        return out
    n = inline_nbytes
    head = (
        bytes((0xC4, n))
        if n < 256
        else b"\xc5" + n.to_bytes(2, "big")
        if n < 65536
        else b"\xc6" + n.to_bytes(4, "big")
    )
    return out + b"\xa4data" + head


def _dtype_name(data: np.ndarray) -> str:
    name = _DTYPE_NAMES.get(data.dtype)
    if name is None:
        raise ValueError(f"dtype {data.dtype} is not on the wire allowlist {sorted(DTYPES)}")
    return name


def _ints(map_byte: int, seq: int, capture_ns: int, send_ns: int) -> bytes:
    try:
        if seq < 0:
            raise struct.error("seq < 0")
        return _INTS.pack(map_byte, _K_SEQ, seq, _K_CAPTURE, capture_ns, _K_SEND, send_ns)
    except (struct.error, TypeError) as exc:
        raise ValueError(
            f"seq must be an int64 >= 0, timestamps int64s: got {seq!r}, {capture_ns!r}, {send_ns!r} ({exc})"
        ) from None


# ----------------------------------------------------------------------------------------- encoding
def encode(
    topic: str, seq: int, capture_ns: int, send_ns: int, source: str, kind: str, data: np.ndarray
) -> list:
    """Frames for `socket.send_multipart(frames, copy=False)`: one, or two for a payload over
    INLINE_MAX_BYTES (the second shares the array's memory). Raises ValueError for a name, kind, dtype or
    int the format cannot carry. A publisher uses a `TopicEncoder` per topic instead (cheaper)."""
    return TopicEncoder(topic).encode(seq, capture_ns, send_ns, source, kind, data)


class TopicEncoder:
    """Encodes the messages of one topic; the header bytes a stream repeats are made (and its names checked)
    once per change of source, kind, dtype or shape. `seq` is free for the caller's numbering."""

    __slots__ = ("topic", "seq", "_prefix", "_key", "_suffix", "_map_byte")

    def __init__(self, topic: str):
        self.topic = check_name("topic", topic)
        self.seq = 0
        self._prefix = topic.encode() + b"\x00"
        self._key: tuple | None = None
        self._suffix = b""
        self._map_byte = _MAP_INLINE

    def encode(
        self, seq: int, capture_ns: int, send_ns: int, source: str, kind: str, data: np.ndarray
    ) -> list:
        if not data.flags.c_contiguous:
            data = np.ascontiguousarray(data)
        if (data.dtype, data.shape, kind, source) != self._key:
            self._restream(source, kind, data)
        try:
            if seq < 0:
                raise ValueError
            ints = _pack_ints(self._map_byte, _K_SEQ, seq, _K_CAPTURE, capture_ns, _K_SEND, send_ns)
        except (struct.error, TypeError, ValueError):
            ints = _ints(self._map_byte, seq, capture_ns, send_ns)  # raises, saying what was wrong
        if self._map_byte == _MAP_INLINE:
            return [b"".join((self._prefix, ints, self._suffix, data))]  # join reads the array's bytes
        return [b"".join((self._prefix, ints, self._suffix)), data.reshape(-1).view(np.uint8)]  # no copy

    def _restream(self, source: str, kind: str, data: np.ndarray) -> None:
        check_name("source", source)
        check_kind(kind)
        name = _dtype_name(data)
        inline = data.nbytes <= INLINE_MAX_BYTES
        self._suffix = _suffix(source, kind, name, data.shape, data.nbytes if inline else None)
        self._map_byte = _MAP_INLINE if inline else _MAP_FRAME
        self._key = (data.dtype, data.shape, kind, source)


def topic_prefix(topic: str) -> bytes:
    """The start of frame 0 for `topic`: its bytes and the 0x00. Subscribe to it to receive that topic."""
    return topic.encode() + b"\x00"


# ----------------------------------------------------------------------------------------- decoding
def _no_ext(code: int, data: bytes):
    # max_ext_len=0 still lets a zero-length ext (c7 00 <type>) through as an ExtType object.
    raise ValueError(f"msgpack extension type {code} is not allowed")


def _buffer(frame) -> memoryview:
    """zmq.Frame (copy=False receives), bytes or memoryview, as a byte view without copying."""
    buf = getattr(frame, "buffer", frame)
    return buf if isinstance(buf, memoryview) else memoryview(buf)


_CACHE_MAX = 1024  # entries in each cache below: a sender inventing names cannot grow them
_TEMPLATES_MAX = 256  # topics whose last canonical layout a Decoder remembers
_topics: dict[bytes, str] = {}  # topic bytes already checked against _NAME -> the topic
_names: dict[tuple[str, str, str], np.dtype] = {}  # (source, kind, dtype) already checked -> the dtype
_unpackb = msgpack.unpackb
_ndarray = np.ndarray
_new_message = tuple.__new__
_unpack_ints = _INTS.unpack_from


class _Template(NamedTuple):
    """A topic's last fully checked canonical header: everything but the ints and the payload bytes."""

    size: int  # bytes in frame 0
    suffix: bytes  # frame 0 from the end of the ints to the payload (inline) or the end
    end: int  # where the suffix ends: the first inline payload byte, or len(frame 0)
    map_byte: int
    inline: bool
    topic: str
    source: str
    kind: str
    dtype: np.dtype
    shape: tuple
    count: int  # elements
    nbytes: int


class Decoder:
    """Decodes messages under `limits`. Keeps, per topic (bounded), the canonical layout of the last header
    it checked in full: a message identical to it but for seq, capture_ns, send_ns and the payload bytes is
    the same valid message with other numbers, and is decoded without parsing it again."""

    def __init__(self, limits: DecodeLimits | None = None):
        self.limits = limits or DecodeLimits()
        self._templates: dict[bytes, _Template] = {}
        self.full_decodes = 0  # messages parsed and checked in full (not matched to a known layout)

    def decode(self, frames: list) -> Message:
        """Validate and decode one message (a list of its frames). The payload array is read-only: a view of
        frame 0 (a bytes) or of the payload frame."""
        n = len(frames)
        if n == 1:
            return self.decode_parts(frames[0], None)
        if n == 2:
            return self.decode_parts(frames[0], frames[1])
        raise MessageError("frames", f"expected 1 or 2 frames, got {n}")

    def decode_parts(self, head, payload=None) -> Message:
        """`decode` for a message already split into frame 0 (`head`) and frame 1 (`payload`, None when the
        message had one frame). `head` is best given as bytes (what a copying receive returns)."""
        if type(head) is not bytes:  # a zmq.Frame, memoryview, ...: copied once its size is known to be sane
            view = _buffer(head)
            if view.nbytes > self.limits.max_header_bytes + INLINE_MAX_BYTES:
                limit = self.limits.max_header_bytes + INLINE_MAX_BYTES
                raise MessageError("oversize", f"frame 0 is {view.nbytes} bytes, limit {limit}")
            head = view.tobytes()
        sep = head.find(SEPARATOR, 0, TOPIC_MAX_BYTES + 1)
        t = self._templates.get(head[:sep]) if sep > 0 else None
        # Everything but the ints and the payload bytes is what was checked in full: same size (so within the
        # limits), same map, keys, version, names, dtype, shape and payload length.
        if (
            t is not None
            and len(head) == t.size
            and (payload is None) is t.inline
            and head[sep + 1 + _INTS_END : t.end] == t.suffix
        ):
            map_byte, k_seq, seq, k_capture, capture_ns, k_send, send_ns = _unpack_ints(head, sep + 1)
            if map_byte == t.map_byte and k_seq == _K_SEQ and k_capture == _K_CAPTURE and k_send == _K_SEND:
                if seq >= 0:
                    if payload is None:
                        data = _ndarray(t.shape, t.dtype, head, t.end)  # a view of the bytes: read-only
                        return _new_message(
                            Message,
                            (t.topic, seq, capture_ns, send_ns, t.source, t.kind, data, FORMAT_VERSION),
                        )
                    buf = _buffer(payload)
                    if buf.nbytes == t.nbytes:
                        data = _ndarray(t.shape, t.dtype, buf)
                        data.flags.writeable = False  # zmq frames are writable buffers
                        return _new_message(
                            Message,
                            (t.topic, seq, capture_ns, send_ns, t.source, t.kind, data, FORMAT_VERSION),
                        )
        self.full_decodes += 1
        msg = _decode(head, payload, self.limits)  # every check, in the documented order
        self._learn(head, sep, payload is None, msg)
        return msg

    def _learn(self, head: bytes, sep: int, inline: bool, msg: Message) -> None:
        """Remember `head`'s layout for its topic when it is exactly what the runtime's encoder writes."""
        data = msg.data
        map_byte = _MAP_INLINE if inline else _MAP_FRAME
        if head[sep + 1 : sep + 1 + _INTS_END] != _ints(map_byte, msg.seq, msg.capture_ns, msg.send_ns):
            return  # another encoder's layout: valid, decoded in full every time
        suffix = _suffix(
            msg.source, msg.kind, _DTYPE_NAMES[data.dtype], data.shape, data.nbytes if inline else None
        )
        end = sep + 1 + _INTS_END + len(suffix)
        if head[sep + 1 + _INTS_END : end] != suffix or len(head) != end + (data.nbytes if inline else 0):
            return
        if len(self._templates) >= _TEMPLATES_MAX:
            self._templates.clear()
        self._templates[head[:sep]] = _Template(
            len(head), suffix, end, map_byte, inline, msg.topic, msg.source, msg.kind, data.dtype, data.shape,
            data.size, data.nbytes,
        )  # fmt: skip


_default_decoder = Decoder()


def decode(frames: list, limits: DecodeLimits | None = None) -> Message:
    """Validate and decode one message (a list of its frames); see `Decoder`."""
    decoder = _default_decoder if limits is None or limits == _default_decoder.limits else Decoder(limits)
    return decoder.decode(frames)


def decode_parts(head, payload=None, limits: DecodeLimits | None = None) -> Message:
    """`decode` for frame 0 and the payload frame (None for a one-frame message); see `Decoder`."""
    decoder = _default_decoder if limits is None or limits == _default_decoder.limits else Decoder(limits)
    return decoder.decode_parts(head, payload)


def _decode(head: bytes, payload, limits: DecodeLimits) -> Message:
    """Every check, in the order docs/wire-format.md (section 7) lists, so a bad message is always refused
    for the same reason."""
    size = len(head)
    max_header = limits.max_header_bytes
    limit = max_header + INLINE_MAX_BYTES if payload is None else max_header
    if size > limit:
        raise MessageError("oversize", f"frame 0 is {size} bytes, limit {limit}")
    sep = head.find(SEPARATOR, 0, TOPIC_MAX_BYTES + 1)
    if sep <= 0:
        raise MessageError("topic", "frame 0 does not start with a topic of 1 to 128 bytes and 0x00")
    topic = _topics.get(head[:sep])
    if topic is None:
        topic = _check_topic(head[:sep])
    try:
        header = _unpackb(
            memoryview(head)[sep + 1 :],
            max_str_len=256,
            max_bin_len=INLINE_MAX_BYTES,
            max_array_len=limits.max_ndim,
            max_map_len=16,
            max_ext_len=0,  # no extension types, ever
            ext_hook=_no_ext,
        )
    except Exception as exc:  # msgpack raises several types for bad input; all mean "malformed"
        raise MessageError("malformed", f"header is not valid msgpack within limits ({exc})") from None
    if type(header) is not dict:
        raise MessageError("type", f"header must be a map, got {type(header).__name__}")
    inline = header.get("data")
    rest = size - len(inline) if type(inline) is bytes else size
    if rest > max_header:
        raise MessageError("oversize", f"frame 0 less its inline payload is {rest} bytes, limit {max_header}")
    # The version first: another version may have other keys. `type() is int`: msgpack true is a bool, == 1.
    v = header.get("v", _ABSENT)
    if v is not _ABSENT and (type(v) is not int or v != FORMAT_VERSION):
        raise MessageError("version", f"format version {v!r}, this runtime reads {FORMAT_VERSION}")
    missing = [k for k in _REQUIRED if k not in header]
    if missing:
        raise MessageError("missing", f"header lacks {missing}")
    seq, capture_ns, send_ns = header["seq"], header["capture_ns"], header["send_ns"]
    for key, value, low in (
        ("seq", seq, 0),
        ("capture_ns", capture_ns, _INT64_MIN),
        ("send_ns", send_ns, _INT64_MIN),
    ):
        if type(value) is not int or not low <= value <= _INT64_MAX:
            raise MessageError(
                "type", f"`{key}` must be an int64{' >= 0' if low == 0 else ''}, got {value!r}"
            )
    source, kind, dtype_name = header["source"], header["kind"], header["dtype"]
    try:
        dtype = _names[source, kind, dtype_name]
    except (KeyError, TypeError):  # not seen yet, or an unhashable value
        dtype = _check_names(source, kind, dtype_name)
    shape = header["shape"]
    if type(shape) is not list:
        raise MessageError("shape", f"shape must be a list of non-negative ints, got {shape!r}")
    nbytes = dtype.itemsize
    for d in shape:
        if type(d) is not int or not 0 <= d < 2**31:
            raise MessageError("shape", f"shape must be a list of ints 0 <= d < 2**31, got {shape!r}")
        nbytes *= d
    if nbytes > limits.max_payload_bytes:
        raise MessageError("oversize", f"payload of {nbytes} bytes exceeds {limits.max_payload_bytes}")
    if payload is None:
        if type(inline) is not bytes:
            raise MessageError("frames", "one frame and no inline `data` bytes")
        buf, got = inline, len(inline)
    else:
        if inline is not None:
            raise MessageError("frames", "both inline `data` and a payload frame")
        buf = _buffer(payload)
        got = buf.nbytes
        if got > limits.max_payload_bytes:
            raise MessageError("oversize", f"payload frame is {got} bytes, limit {limits.max_payload_bytes}")
    if got != nbytes:
        raise MessageError("shape", f"shape {shape} of {dtype_name} needs {nbytes} bytes, got {got}")
    try:
        data = np.frombuffer(buf, dtype).reshape(shape)
    except ValueError as exc:  # a 0-size shape whose other dimensions multiply past what numpy can index
        raise MessageError("shape", f"shape {shape} cannot be an array ({exc})") from None
    if payload is not None:
        data.flags.writeable = False  # zmq frames are writable buffers; bytes give read-only arrays already
    return _new_message(Message, (topic, seq, capture_ns, send_ns, source, kind, data, FORMAT_VERSION))


def _check_topic(topic_bytes: bytes) -> str:
    if not _NAME_BYTES.fullmatch(topic_bytes):
        raise MessageError("topic", f"bad topic {topic_bytes!r}")
    topic = topic_bytes.decode()
    if len(_topics) >= _CACHE_MAX:
        _topics.clear()
    _topics[topic_bytes] = topic
    return topic


def _check_names(source, kind, dtype_name) -> np.dtype:
    if type(source) is not str or not _NAME.fullmatch(source):
        raise MessageError("type", f"bad source {source!r}")
    if type(kind) is not str or not _KIND.fullmatch(kind):
        raise MessageError("type", f"bad kind {kind!r}")
    dtype = DTYPES.get(dtype_name) if type(dtype_name) is str else None
    if dtype is None:
        raise MessageError("dtype", f"dtype {dtype_name!r} is not on the allowlist {sorted(DTYPES)}")
    if len(_names) >= _CACHE_MAX:
        _names.clear()
    _names[source, kind, dtype_name] = dtype  # all three str: no value of another type compares equal
    return dtype
