"""Wire format (runtime.messages): bit-exact round trips for every allowlisted dtype; every refusal."""

import re
from pathlib import Path

import msgpack
import numpy as np
import pytest
import zmq
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from runtime.messages import (
    _KIND,
    _NAME,
    _REQUIRED,
    DTYPES,
    FORMAT_VERSION,
    INLINE_MAX_BYTES,
    DecodeLimits,
    Decoder,
    Message,
    MessageError,
    TopicEncoder,
    decode,
    encode,
)

DOC = Path(__file__).resolve().parents[2] / "docs" / "wire-format.md"
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
DEFAULT_LIMITS = DecodeLimits()
REASONS = {"frames", "oversize", "malformed", "type", "missing", "version", "topic", "dtype", "shape"}
TOPIC = b"joint/state\x00"

names = st.from_regex(_NAME, fullmatch=True)
kinds = st.from_regex(_KIND, fullmatch=True)
dtype_names = st.sampled_from(sorted(DTYPES))
# Sides up to 40, up to 4 dimensions: empty, scalar (shape ()), inline (<= 64 KiB) and payload-frame arrays.
shapes = hnp.array_shapes(min_dims=0, max_dims=4, min_side=0, max_side=40)


@st.composite
def arrays(draw) -> np.ndarray:
    """Any allowlisted dtype and shape, with arbitrary bit patterns (NaN payloads, -0.0, bool bytes 0/1),
    sometimes handed over as a non-contiguous view."""
    dtype = DTYPES[draw(dtype_names)]
    shape = draw(shapes)
    count = int(np.prod(shape, dtype=np.int64))
    if count <= 64 and draw(st.booleans()):  # hypothesis's own "interesting" values: inf, nan, extremes
        x = draw(hnp.arrays(dtype, shape))
    else:  # raw random bits: every float bit pattern, NaNs with random payloads included
        seed = draw(st.integers(0, 2**32 - 1))
        raw = np.random.default_rng(seed).bytes(count * dtype.itemsize)
        x = np.frombuffer(raw, dtype=dtype).reshape(shape).copy()
        if dtype == np.bool_:
            x = x.view(np.uint8) & 1 != 0  # numpy bools are the bytes 0 and 1
    layout = draw(st.sampled_from(["c", "fortran", "transposed", "strided"]))
    if layout == "fortran":
        x = np.asfortranarray(x)
    elif layout == "transposed":
        x = x.T
    elif layout == "strided" and x.ndim:
        x = np.repeat(x, 2, axis=0)[::2]  # same values, every other row: not contiguous
    return x


def _bits(a: np.ndarray) -> tuple:
    return a.dtype.str, a.shape, np.ascontiguousarray(a).tobytes()


def _frames(
    topic="joint/state", seq=3, capture_ns=10, send_ns=20, source="arm", kind="joint", data=None
) -> list:
    data = np.arange(3, dtype=np.float32) if data is None else data
    return [bytes(f) for f in encode(topic, seq, capture_ns, send_ns, source, kind, data)]


def _header(frames) -> dict:
    """The header map of frame 0 (after the topic and its 0x00)."""
    return msgpack.unpackb(frames[0][frames[0].index(0) + 1 :], raw=False)


def _pack(header) -> bytes:
    return msgpack.packb(header, use_bin_type=True)


def _reason(frames, limits=DEFAULT_LIMITS) -> str:
    with pytest.raises(MessageError) as info:
        Decoder(limits).decode(frames)
    return info.value.reason


def _outcome(decoder: Decoder, frames) -> tuple:
    """What a decoder makes of frames: the message's fields and payload bits, or the refusal's reason."""
    try:
        msg = decoder.decode(frames)
    except MessageError as exc:
        return ("refused", exc.reason)
    return (
        msg.topic,
        msg.seq,
        msg.capture_ns,
        msg.send_ns,
        msg.source,
        msg.kind,
        msg.version,
        _bits(msg.data),
    )


# ------------------------------------------------------------------------------------------ round trip
@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    x=arrays(),
    topic=names,
    source=names,
    kind=kinds,
    seq=st.integers(0, INT64_MAX),
    capture_ns=st.integers(INT64_MIN, INT64_MAX),
    send_ns=st.integers(INT64_MIN, INT64_MAX),
)
def test_round_trip_is_bit_exact(x, topic, source, kind, seq, capture_ns, send_ns):
    """decode(encode(x)) gives back every header field and the array bit for bit (NaN payloads included),
    in one frame iff the payload is at most INLINE_MAX_BYTES, and as a read-only array."""
    frames = encode(topic, seq, capture_ns, send_ns, source, kind, x)
    assert len(frames) == (1 if x.nbytes <= INLINE_MAX_BYTES else 2)
    assert bytes(frames[0]).startswith(topic.encode() + b"\x00")
    msg = Decoder().decode(frames)
    assert (msg.topic, msg.seq, msg.capture_ns, msg.send_ns, msg.source, msg.kind, msg.version) == (
        topic,
        seq,
        capture_ns,
        send_ns,
        source,
        kind,
        FORMAT_VERSION,
    )
    assert _bits(msg.data) == _bits(x)
    assert not msg.data.flags.writeable


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    x=arrays(),
    seqs=st.lists(st.integers(0, INT64_MAX), min_size=2, max_size=4),
    stamps=st.lists(st.integers(INT64_MIN, INT64_MAX), min_size=8, max_size=8),
)
def test_known_layout_decodes_exactly_like_a_full_decode(x, seqs, stamps):
    """A Decoder that has checked a stream's first message in full decodes the stream's next messages (other
    seq, timestamps and payload bits) without parsing them again, to exactly what a fresh decoder gives."""
    decoder, encoder = Decoder(), TopicEncoder("cam/rgb")
    for i, seq in enumerate(seqs):
        y = np.ascontiguousarray(x).copy()
        y.reshape(-1).view(np.uint8)[: min(8, y.nbytes)] = i  # every message's payload differs
        frames = [bytes(f) for f in encoder.encode(seq, stamps[2 * i], stamps[2 * i + 1], "cam", "image", y)]
        assert _outcome(decoder, frames) == _outcome(Decoder(), frames)
        assert _bits(decoder.decode(frames).data) == _bits(y)
    assert decoder.full_decodes == 1  # the first message; the others matched its layout


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    side=st.sampled_from([1, 3, 40, 160]),
    dtype=dtype_names,
    mutation=st.sampled_from(["flip", "overwrite", "truncate", "extend", "payload frame"]),
    data=st.data(),
)
def test_known_layout_never_accepts_what_a_full_decode_refuses(side, dtype, mutation, data):
    """After a Decoder has learned a stream's layout, any corruption of a message of that stream (bit flips
    or bytes overwritten anywhere, frame 0 cut or extended, a payload frame added or resized) decodes to
    exactly what a fresh decoder decides: the same message, or a refusal for the same reason."""
    x = np.zeros((side, side), DTYPES[dtype])
    decoder = Decoder()
    decoder.decode(_frames("cam/rgb", 1, 2, 3, "cam", "image", x))
    frames = _frames("cam/rgb", 7, -8, 9, "cam", "image", x)
    head = bytearray(frames[0])
    if mutation == "flip":
        for bit in data.draw(st.lists(st.integers(0, len(head) * 8 - 1), min_size=1, max_size=3)):
            head[bit // 8] ^= 1 << (bit % 8)
    elif mutation == "overwrite":
        pos = data.draw(st.integers(0, len(head) - 1))
        head[pos : pos + 8] = data.draw(st.binary(min_size=1, max_size=8))
    elif mutation == "truncate":
        del head[data.draw(st.integers(0, len(head) - 1)) :]
    elif mutation == "extend":
        head += data.draw(st.binary(min_size=1, max_size=8))
    frames[0] = bytes(head)
    if mutation == "payload frame" or len(frames) == 2 and data.draw(st.booleans()):
        frames[1:] = [data.draw(st.binary(max_size=64)) if len(frames) == 1 else frames[1][:-1]]
    assert _outcome(decoder, frames) == _outcome(Decoder(), frames)


@pytest.mark.parametrize("name", sorted(DTYPES))
@pytest.mark.parametrize("shape", [(), (0,), (3, 0, 2), (1024,), (7, 300), (130, 130)])
def test_every_dtype_round_trips(name, shape):
    """Each allowlisted dtype survives the trip for a scalar, empty arrays, inline and payload-frame sizes,
    and its dtype is exactly the little-endian one on the allowlist."""
    dtype = DTYPES[name]
    raw = np.random.default_rng(1).bytes(int(np.prod(shape)) * dtype.itemsize)
    x = np.frombuffer(raw, dtype).reshape(shape)
    if dtype == np.bool_:
        x = x.view(np.uint8) & 1 != 0
    msg = decode(encode("t", 0, 0, 0, "s", "k", x))
    assert msg.data.dtype == dtype and msg.data.dtype.str == dtype.str
    assert _bits(msg.data) == _bits(x)


@pytest.mark.parametrize("name", sorted(DTYPES))
def test_inline_limit_is_inclusive(name):
    """A payload of exactly INLINE_MAX_BYTES rides in frame 0 (one frame); one element more gets a frame of
    its own and the header no `data` key."""
    dtype = DTYPES[name]
    n = INLINE_MAX_BYTES // dtype.itemsize
    at = encode("t", 0, 0, 0, "s", "k", np.zeros(n, dtype))
    over = encode("t", 0, 0, 0, "s", "k", np.zeros(n + 1, dtype))
    assert len(at) == 1 and len(_header(at)["data"]) == INLINE_MAX_BYTES
    assert len(over) == 2 and "data" not in _header(over)
    assert memoryview(over[1]).nbytes == INLINE_MAX_BYTES + dtype.itemsize
    assert decode(at).data.size == n and decode(over).data.size == n + 1


def test_encode_sends_large_contiguous_payloads_without_a_copy():
    """A C-contiguous array above the inline limit goes out as frame 1 sharing the array's memory."""
    x = np.arange(20_000, dtype=np.float32)
    payload = encode("t", 0, 0, 0, "s", "k", x)[1]
    assert np.shares_memory(np.frombuffer(payload, np.uint8), x)


def test_decoded_payloads_are_read_only_views_of_the_received_frames():
    """Over a real ZeroMQ socket the decoded array is a view of what was received, not a copy: of frame 1
    for a large payload (copy=False receive, a writable buffer), of frame 0's bytes for an inline one; both
    read-only."""
    ctx = zmq.Context()
    try:
        a, b = ctx.socket(zmq.PAIR), ctx.socket(zmq.PAIR)
        a.bind("inproc://payload-view")
        b.connect("inproc://payload-view")
        x = np.arange(16384, dtype=np.float64).reshape(128, 128)
        a.send_multipart(encode("cam", 5, 1, 2, "s", "image", x), copy=False)
        assert b.poll(2000)
        frames = b.recv_multipart(copy=False)
        msg = decode(frames)
        assert np.shares_memory(msg.data, np.frombuffer(frames[1].buffer, np.uint8))
        assert not msg.data.flags.writeable
        with pytest.raises(ValueError):
            msg.data[0, 0] = 1.0
        assert np.array_equal(msg.data, x)

        small = np.arange(12, dtype=np.int16).reshape(3, 4)
        decoder = Decoder()
        for seq in range(2):  # the first is checked in full, the second matched to its layout
            a.send_multipart(encode("joint", seq, 1, 2, "s", "joint", small))
            assert b.poll(2000)
            (head,) = b.recv_multipart()
            msg = decoder.decode([head])
            assert np.shares_memory(msg.data, np.frombuffer(head, np.uint8)) or seq == 0
            assert not msg.data.flags.writeable and np.array_equal(msg.data, small)
        assert decoder.full_decodes == 1
    finally:
        ctx.destroy(linger=0)


def test_writable_payload_buffers_still_give_read_only_arrays():
    """A bytearray payload frame is shared, not copied, and the array over it is read-only (on the full
    path and on the known-layout one)."""
    frames = _frames(data=np.arange(40_000, dtype=np.int16))
    decoder = Decoder()
    for _ in range(2):
        payload = bytearray(frames[1])
        msg = decoder.decode([frames[0], payload])
        assert np.shares_memory(msg.data, np.frombuffer(payload, np.uint8))
        assert not msg.data.flags.writeable
    assert decoder.full_decodes == 1


def test_unknown_header_keys_are_ignored():
    """Extra keys (within the map-size limit) do not change the decoded message: room for additions."""
    frames = _frames()
    header = _header(frames) | {"trace_id": "abc", "extra": [1, 2], "z": {"k": 1.5}, "topic": "other"}
    msg, plain = decode([TOPIC + _pack(header)]), decode(frames)
    fields = ("topic", "seq", "capture_ns", "send_ns", "source", "kind", "version")
    assert [getattr(msg, f) for f in fields] == [getattr(plain, f) for f in fields]
    assert _bits(msg.data) == _bits(plain.data)


def test_any_key_order_and_small_payload_in_its_own_frame_are_accepted():
    """Another encoder's choices are accepted: keys in any order, and a payload <= INLINE_MAX_BYTES as frame 1
    (with `data` absent, or nil)."""
    header = _header(_frames())
    payload = header.pop("data")
    reordered = dict(reversed(list(header.items())))
    for frames in ([TOPIC + _pack(reordered), payload], [TOPIC + _pack(header | {"data": None}), payload]):
        assert decode(frames).data.tolist() == [0.0, 1.0, 2.0]
    assert decode([TOPIC + _pack(reordered | {"data": payload})]).data.tolist() == [0.0, 1.0, 2.0]


def test_any_msgpack_int_encoding_is_accepted():
    """seq and timestamps may use any msgpack int family (fixint, uint8..uint64, int8..int64)."""
    header = _header(_frames()) | {"seq": 2**40, "capture_ns": -5, "send_ns": INT64_MIN}
    msg = decode([TOPIC + _pack(header)])
    assert (msg.seq, msg.capture_ns, msg.send_ns) == (2**40, -5, INT64_MIN)
    header = _header(_frames()) | {"seq": 2**63 - 1, "capture_ns": 2**63 - 1, "send_ns": 0}  # uint64 (cf)
    assert decode([TOPIC + _pack(header)]).seq == 2**63 - 1


# -------------------------------------------------------------------------------------- encode refuses
REFUSED_DTYPES = [">f4", ">i2", ">f8", ">u4", "uint64", "complex64", "float128", "object", "U3"]


@pytest.mark.parametrize("dtype", REFUSED_DTYPES)
def test_encode_refuses_dtypes_off_the_allowlist(dtype):
    """Big-endian and non-allowlisted dtypes are refused at encode time: the wire is little-endian only."""
    try:
        x = np.zeros(3, dtype=dtype)
    except TypeError:
        pytest.skip(f"{dtype} does not exist on this platform")
    with pytest.raises(ValueError, match="allowlist"):
        encode("t", 0, 0, 0, "s", "k", x)


@pytest.mark.parametrize(
    "args",
    [
        ("bad topic", 0, 0, 0, "s", "k"),
        ("t", 0, 0, 0, "bad source", "k"),
        ("t", 0, 0, 0, "s", "Kind"),
        ("t", -1, 0, 0, "s", "k"),
        ("t", 2**63, 0, 0, "s", "k"),
        ("t", 0, 2**63, 0, "s", "k"),
        ("t", 0, 0, -(2**63) - 1, "s", "k"),
        ("t", 1.0, 0, 0, "s", "k"),
    ],
    ids=[
        "topic",
        "source",
        "kind",
        "seq -1",
        "seq 2**63",
        "capture_ns 2**63",
        "send_ns < int64",
        "seq float",
    ],
)
def test_encode_refuses_what_no_decoder_would_accept(args):
    """Names off the regexes, a negative seq and ints beyond int64 are a ValueError at encode time, not a
    message every subscriber drops."""
    with pytest.raises(ValueError):
        encode(*args, np.zeros(3, np.float32))


# -------------------------------------------------------------------------------------- decode refuses
_DELETE = object()


def _with(**changes) -> list:
    """The default message with header fields replaced (or deleted), re-packed by msgpack (one frame)."""
    header = _header(_frames())
    for key, value in changes.items():
        if value is _DELETE:
            del header[key]
        else:
            header[key] = value
    return [TOPIC + _pack(header)]


_HEADER = _pack(_header(_frames()))

CASES = {
    # frame 0 before the header: the topic and its 0x00
    "no separator": ([b"joint/state" + _HEADER.replace(b"\x00", b"\x01")], "topic"),
    "empty topic": ([b"\x00" + _HEADER], "topic"),
    "topic space": ([b"joint state\x00" + _HEADER], "topic"),
    "topic non-ascii": ([b"joint/\xc3\xa9\x00" + _HEADER], "topic"),
    "topic too long": ([b"a" * 129 + b"\x00" + _HEADER], "topic"),
    "topic only": ([TOPIC], "malformed"),
    # version: another number or any non-int 2
    "version 1": (_with(v=1), "version"),
    "version 3": (_with(v=3), "version"),
    "version 0": (_with(v=0), "version"),
    "version 2.0": (_with(v=2.0), "version"),
    "version '2'": (_with(v="2"), "version"),
    "version nil": (_with(v=None), "version"),
    "version 3, other keys": ([TOPIC + _pack({"v": 3, "stream": "x"})], "version"),
    # int fields: bools (msgpack true decodes as a Python bool), floats, strings, negatives, beyond int64
    "seq true": (_with(seq=True), "type"),
    "seq false": (_with(seq=False), "type"),
    "capture_ns true": (_with(capture_ns=True), "type"),
    "send_ns false": (_with(send_ns=False), "type"),
    "seq float": (_with(seq=1.0), "type"),
    "seq str": (_with(seq="1"), "type"),
    "seq nil": (_with(seq=None), "type"),
    "seq negative": (_with(seq=-1), "type"),
    "seq uint64": (_with(seq=2**63), "type"),
    "capture_ns uint64": (_with(capture_ns=2**64 - 1), "type"),
    "send_ns beyond int64": (_with(send_ns=2**63), "type"),
    # names
    "source bad": (_with(source="arm!"), "type"),
    "source bin": (_with(source=b"arm"), "type"),
    "source list": (_with(source=["arm"]), "type"),
    "source too long": (_with(source="a" * 129), "type"),
    "kind upper": (_with(kind="Joint"), "type"),
    "kind too long": (_with(kind="k" * 33), "type"),
    "kind int": (_with(kind=5), "type"),
    # dtype allowlist
    "dtype uint64": (_with(dtype="uint64"), "dtype"),
    "dtype big-endian": (_with(dtype=">f4"), "dtype"),
    "dtype numpy str": (_with(dtype="<f4"), "dtype"),
    "dtype bin": (_with(dtype=b"float32"), "dtype"),
    "dtype int": (_with(dtype=5), "dtype"),
    "dtype nil": (_with(dtype=None), "dtype"),
    # shape
    "shape mismatch": (_with(shape=[4]), "shape"),
    "shape 2d mismatch": (_with(shape=[2, 2]), "shape"),
    "shape negative": (_with(shape=[-3]), "shape"),
    "shape float": (_with(shape=[3.0]), "shape"),
    "shape bool": (_with(shape=[True, 3]), "shape"),
    "shape str": (_with(shape="3"), "shape"),
    "shape int": (_with(shape=3), "shape"),
    "shape 2**31": (_with(shape=[2**31]), "shape"),
    "shape zero-size but huge": (_with(shape=[0] + [2**31 - 1] * 4, data=b""), "shape"),
    "inline too short": (_with(data=b"\0" * 11), "shape"),
    "inline too long": (_with(data=b"\0" * 13), "shape"),
    # frames, and where the payload is
    "no inline, no frame 1": (_with(data=_DELETE), "frames"),
    "inline str": (_with(data="\0" * 12), "frames"),
    "inline nil": (_with(data=None), "frames"),
    "both inline and frame 1": (_frames() + [b"\0" * 12], "frames"),
    "no frames": ([], "frames"),
    "three frames": (_frames(data=np.zeros(20_000, np.float32)) + [b"x"], "frames"),
    # the header itself
    "header array": ([TOPIC + _pack([1, 2, 3])], "type"),
    "header int": ([TOPIC + _pack(7)], "type"),
    "header bin": ([TOPIC + _pack(b"abc")], "type"),
    "header garbage": ([TOPIC + b"\xc1\xff\x00"], "malformed"),
    "header truncated": ([TOPIC + _HEADER[:-3]], "malformed"),
    "header trailing bytes": ([TOPIC + _HEADER + b"\x00"], "malformed"),
    "header bad utf-8": ([TOPIC + _HEADER.replace(b"arm", b"a\xffm")], "malformed"),
    "header int key": ([TOPIC + _pack({**_header(_frames()), 1: 2})], "malformed"),
    "header 17 keys": (_with(**{f"x{i}": i for i in range(8)}), "malformed"),
    "header long str": (_with(extra="x" * 257), "malformed"),
    "header long array": (_with(extra=list(range(9))), "malformed"),
    "shape 9 dims": (_with(shape=[1] * 9), "malformed"),
    "inline over limit": (_with(data=b"\0" * (INLINE_MAX_BYTES + 1)), "malformed"),
    # missing keys (v present and right)
    **{f"missing {k}": (_with(**{k: _DELETE}), "missing") for k in _REQUIRED},
    # extension types, anywhere
    "ext in extra key": (_with(extra=msgpack.ExtType(1, b"x")), "malformed"),
    "zero-length ext": (_with(extra=msgpack.ExtType(5, b"")), "malformed"),
    "ext as seq": (_with(seq=msgpack.ExtType(0, b"\x01\x02")), "malformed"),
    "timestamp ext": (_with(capture_ns=msgpack.Timestamp(1, 2)), "malformed"),
    "ext header": ([TOPIC + _pack(msgpack.ExtType(3, b"abc"))], "malformed"),
    "raw zero-length ext": ([TOPIC + b"\x81\xa1x\xc7\x00\x05"], "malformed"),
    # sizes
    "frame 0 over the limit": ([TOPIC + b"\x00" * (4096 + INLINE_MAX_BYTES)], "oversize"),
    "header without payload over the limit": (_with(extra=b"\0" * 4096), "oversize"),
}


@pytest.mark.parametrize("case", CASES, ids=list(CASES))
def test_malformed_message_is_refused_with_its_reason(case):
    """Each kind of bad message raises MessageError whose `reason` names what was wrong."""
    frames, reason = CASES[case]
    assert _reason(frames) == reason


def test_every_reason_has_a_case():
    """The refusal table above exercises every reason a decoder can give."""
    assert {reason for _, reason in CASES.values()} == REASONS


def test_missing_v_is_missing():
    """A header without the version key is reported as missing a key."""
    assert _reason(_with(v=_DELETE)) == "missing"


def test_oversize_frame_0_is_refused_before_parsing():
    """Frame 0 longer than max_header_bytes plus INLINE_MAX_BYTES (one frame), or than max_header_bytes (when
    a payload frame follows) is refused as oversize, even when it is a valid message."""
    big = _frames(data=np.zeros(INLINE_MAX_BYTES, np.uint8))  # frame 0: the header plus 64 KiB
    assert _reason(big, DecodeLimits(max_header_bytes=len(big[0]) - INLINE_MAX_BYTES - 1)) == "oversize"
    assert Decoder(DecodeLimits(max_header_bytes=len(big[0]) - INLINE_MAX_BYTES)).decode(big)
    framed = _frames(data=np.zeros(INLINE_MAX_BYTES + 1, np.uint8))
    assert _reason(framed, DecodeLimits(max_header_bytes=len(framed[0]) - 1)) == "oversize"
    assert Decoder(DecodeLimits(max_header_bytes=len(framed[0]))).decode(framed)
    garbage = [TOPIC + b"\xc1" * 5000, b"\0" * 10]  # not msgpack either: the size is checked first
    assert _reason(garbage) == "oversize"


def test_oversize_header_counts_everything_but_the_payload():
    """max_header_bytes bounds frame 0 without its inline payload bytes: a header padded past it with an
    unknown key is oversize, however small its payload."""
    (head,) = _frames()
    rest = len(head) - 12  # 12 payload bytes
    assert _reason([head], DecodeLimits(max_header_bytes=rest - 1)) == "oversize"
    assert Decoder(DecodeLimits(max_header_bytes=rest)).decode([head])
    padded = _with(extra=b"\0" * 300)
    assert _reason(padded, DecodeLimits(max_header_bytes=300)) == "oversize"


def test_oversize_payload_from_the_shape_is_refused():
    """A shape whose byte count exceeds max_payload_bytes is oversize, before any payload is looked at."""
    frames = _frames(data=np.zeros(2000, np.uint8))
    assert _reason(frames, DecodeLimits(max_payload_bytes=1999)) == "oversize"
    assert Decoder(DecodeLimits(max_payload_bytes=2000)).decode(frames).data.size == 2000
    huge = _with(shape=[2**31 - 1] * 4)
    assert _reason(huge) == "oversize"


def test_oversize_payload_frame_is_refused():
    """A payload frame bigger than max_payload_bytes is oversize, whatever the header's shape says."""
    header = _header(_frames(data=np.zeros(2000, np.uint8)))
    del header["data"]
    head = TOPIC + _pack(header)
    assert _reason([head, b"\0" * 5000], DecodeLimits(max_payload_bytes=4096)) == "oversize"
    assert _reason([head, b"\0" * 3000], DecodeLimits(max_payload_bytes=4096)) == "shape"


def test_payload_frame_byte_count_must_match_shape():
    """A payload frame one byte short or long of shape x itemsize is refused as a shape mismatch, by a fresh
    decoder and by one that knows the stream's layout."""
    frames = _frames(data=np.zeros(20_000, np.float32))
    decoder = Decoder()
    decoder.decode(frames)
    for payload in (frames[1][:-1], frames[1] + b"\0", frames[1][:-4]):
        assert _reason([frames[0], payload]) == "shape"
        assert _outcome(decoder, [frames[0], payload]) == ("refused", "shape")


@settings(max_examples=300, deadline=None)
@given(st.lists(st.binary(max_size=200), max_size=3))
def test_random_frames_raise_only_message_error(frames):
    """Arbitrary bytes in any number of frames are either a message or a MessageError, never another error."""
    try:
        decode(frames)
    except MessageError as exc:
        assert exc.reason in REASONS


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200), st.lists(st.binary(max_size=64), max_size=2))
def test_random_headers_after_a_topic_raise_only_message_error(header, extra):
    """Arbitrary bytes after a valid topic and 0x00 (and optional further frames) are a message or a
    MessageError, never another error."""
    try:
        decode([TOPIC + header, *extra])
    except MessageError as exc:
        assert exc.reason in REASONS


msgpack_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(INT64_MIN, 2**64 - 1)
    | st.floats()
    | st.text(max_size=20)
    | st.binary(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)


@settings(max_examples=300, deadline=None)
@given(
    key=st.sampled_from([*_REQUIRED, "data"]),
    value=msgpack_values | st.sampled_from([*sorted(DTYPES), [3], [1, 3], [], "arm", "joint"]),
    extra=st.lists(st.binary(max_size=16), max_size=2),
)
def test_one_mutated_field_raises_only_message_error(key, value, extra):
    """A valid header with one field replaced by any msgpack value (and optional extra frames) decodes to a
    message whose fields are that header's, or raises MessageError: nothing else escapes."""
    frames = _with(**{key: value}) + extra
    try:
        msg = decode(frames)
    except MessageError as exc:
        assert exc.reason in REASONS
        return
    assert isinstance(msg, Message) and msg.topic == "joint/state" and msg.data.size * msg.data.itemsize <= 12


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_bit_flips_raise_only_message_error(data):
    """Flipping bits in, truncating or extending frame 0 of a valid message never escapes as anything but a
    MessageError."""
    frames = _frames(data=np.arange(data.draw(st.sampled_from([3, 400, 20_000])), dtype=np.float32))
    head = bytearray(frames[0])
    for pos in data.draw(st.lists(st.integers(0, min(len(head), 400) * 8 - 1), min_size=1, max_size=4)):
        head[pos // 8] ^= 1 << (pos % 8)
    cut = data.draw(st.integers(0, len(head)))
    head = head[:cut] + data.draw(st.binary(max_size=8))
    try:
        decode([bytes(head), *frames[1:]])
    except MessageError as exc:
        assert exc.reason in REASONS


# ---------------------------------------------------------------------------------------- the document
def test_worked_example_in_the_doc_is_what_encode_produces():
    """The hex dump in docs/wire-format.md is byte for byte what encode() produces for the example message."""
    text = DOC.read_text()
    dumps = re.findall(r"<!-- example-frame (\d) -->\n```text\n(.*?)```", text, re.S)
    assert [i for i, _ in dumps] == ["0"]
    documented = [bytes.fromhex(" ".join(line[6:] for line in dump.splitlines())) for _, dump in dumps]
    x = np.array([0.5, -1.0, 2.0], np.float32)
    assert documented == _frames("joint/state", 7, 1_234_567_890_123, 1_234_567_950_000, "arm", "joint", x)
