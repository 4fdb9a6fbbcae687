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
    Message,
    MessageError,
    decode,
    encode,
)

DOC = Path(__file__).resolve().parents[2] / "docs" / "wire-format.md"
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
DEFAULT_LIMITS = DecodeLimits()
REASONS = {"frames", "oversize", "malformed", "type", "missing", "version", "topic", "dtype", "shape"}

names = st.from_regex(_NAME, fullmatch=True)
kinds = st.from_regex(_KIND, fullmatch=True)
dtype_names = st.sampled_from(sorted(DTYPES))
# Sides up to 40, up to 4 dimensions: empty, scalar (shape ()), inline (<= 1024 bytes) and frame-2 payloads.
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
    return msgpack.unpackb(frames[1], raw=False)


def _pack(header: dict) -> bytes:
    return msgpack.packb(header, use_bin_type=True)


def _reason(frames, limits=DEFAULT_LIMITS) -> str:
    with pytest.raises(MessageError) as info:
        decode(frames, limits)
    return info.value.reason


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
    with the payload inline iff it is at most INLINE_MAX_BYTES, and as a read-only array."""
    frames = encode(topic, seq, capture_ns, send_ns, source, kind, x)
    assert len(frames) == (2 if x.nbytes <= INLINE_MAX_BYTES else 3)
    msg = decode(frames)
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


@pytest.mark.parametrize("name", sorted(DTYPES))
@pytest.mark.parametrize("shape", [(), (0,), (3, 0, 2), (1024,), (1025,), (7, 300)])
def test_every_dtype_round_trips_at_the_edges(name, shape):
    """Each allowlisted dtype survives the trip for a scalar, empty arrays and sizes either side of the inline
    limit, and its dtype is exactly the little-endian one on the allowlist."""
    dtype = DTYPES[name]
    raw = np.random.default_rng(1).bytes(int(np.prod(shape)) * dtype.itemsize)
    x = np.frombuffer(raw, dtype).reshape(shape)
    if dtype == np.bool_:
        x = x.view(np.uint8) & 1 != 0
    msg = decode(encode("t", 0, 0, 0, "s", "k", x))
    assert msg.data.dtype == dtype and msg.data.dtype.str == dtype.str
    assert _bits(msg.data) == _bits(x)


def test_inline_limit_is_inclusive():
    """A payload of exactly INLINE_MAX_BYTES rides in the header; one byte more gets its own frame."""
    at = encode("t", 0, 0, 0, "s", "k", np.zeros(INLINE_MAX_BYTES, np.uint8))
    over = encode("t", 0, 0, 0, "s", "k", np.zeros(INLINE_MAX_BYTES + 1, np.uint8))
    assert len(at) == 2 and len(_header(at)["data"]) == INLINE_MAX_BYTES
    assert len(over) == 3 and "data" not in _header(over)
    assert memoryview(over[2]).nbytes == INLINE_MAX_BYTES + 1


def test_encode_sends_contiguous_payloads_without_a_copy():
    """A C-contiguous array above the inline limit goes out as frame 2 sharing the array's memory."""
    x = np.arange(1000, dtype=np.float32)
    payload = encode("t", 0, 0, 0, "s", "k", x)[2]
    assert np.shares_memory(np.frombuffer(payload, np.uint8), x)


def test_decoded_payload_is_a_read_only_view_of_the_received_frame():
    """Over a real ZeroMQ socket (copy=False receive) the decoded array is a view of frame 2, not a copy, and
    cannot be written even though the frame's buffer can."""
    ctx = zmq.Context()
    try:
        a, b = ctx.socket(zmq.PAIR), ctx.socket(zmq.PAIR)
        a.bind("inproc://payload-view")
        b.connect("inproc://payload-view")
        x = np.arange(4096, dtype=np.float64).reshape(64, 64)
        a.send_multipart(encode("cam", 5, 1, 2, "s", "image", x), copy=False)
        assert b.poll(2000)
        frames = b.recv_multipart(copy=False)
        msg = decode(frames)
        frame_bytes = np.frombuffer(frames[2].buffer, np.uint8)
        assert np.shares_memory(msg.data, frame_bytes)
        assert not msg.data.flags.writeable
        with pytest.raises(ValueError):
            msg.data[0, 0] = 1.0
        assert np.array_equal(msg.data, x)
    finally:
        ctx.destroy(linger=0)


def test_writable_payload_buffers_still_give_read_only_arrays():
    """A bytearray payload frame is shared, not copied, and the array over it is read-only."""
    frames = _frames(data=np.arange(600, dtype=np.int16))
    payload = bytearray(frames[2])
    msg = decode([frames[0], frames[1], payload])
    assert np.shares_memory(msg.data, np.frombuffer(payload, np.uint8))
    assert not msg.data.flags.writeable


def test_unknown_header_keys_are_ignored():
    """Extra keys (within the map-size limit) do not change the decoded message: room for additions."""
    frames = _frames()
    header = _header(frames) | {"trace_id": "abc", "extra": [1, 2], "z": {"k": 1.5}}
    msg, plain = decode([frames[0], _pack(header)]), decode(frames)
    fields = ("topic", "seq", "capture_ns", "send_ns", "source", "kind", "version")
    assert [getattr(msg, f) for f in fields] == [getattr(plain, f) for f in fields]
    assert _bits(msg.data) == _bits(plain.data)


def test_small_payload_in_its_own_frame_is_accepted():
    """Encoders put payloads <= INLINE_MAX_BYTES inline; decode also takes them as frame 2 (documented)."""
    frames = _frames()
    header = _header(frames)
    payload = header.pop("data")
    msg = decode([frames[0], _pack(header), payload])
    assert msg.data.tolist() == [0.0, 1.0, 2.0]


def test_any_msgpack_int_encoding_is_accepted():
    """seq and timestamps may use any msgpack int family (fixint, uint8..uint64, int8..int64)."""
    frames = _frames()
    header = _header(frames) | {"seq": 2**40, "capture_ns": -5, "send_ns": INT64_MIN}
    msg = decode([frames[0], _pack(header)])
    assert (msg.seq, msg.capture_ns, msg.send_ns) == (2**40, -5, INT64_MIN)


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


# -------------------------------------------------------------------------------------- decode refuses
def _with(**changes) -> list:
    frames = _frames()
    header = _header(frames)
    for key, value in changes.items():
        if value is _DELETE:
            del header[key]
        else:
            header[key] = value
    return [frames[0], _pack(header)]


_DELETE = object()

CASES = {
    # version: another number or any non-int 1
    "version 2": (_with(v=2), "version"),
    "version 0": (_with(v=0), "version"),
    "version true": (_with(v=True), "version"),
    "version 1.0": (_with(v=1.0), "version"),
    "version '1'": (_with(v="1"), "version"),
    "version 2, other keys": ([b"joint/state", _pack({"v": 2, "stream": "x"})], "version"),
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
    "topic bin": (_with(topic=b"joint/state"), "type"),
    "topic int": (_with(topic=5), "type"),
    "topic space": (_with(topic="joint state"), "type"),
    "topic empty": (_with(topic=""), "type"),
    "topic too long": (_with(topic="a" * 129), "type"),
    "source bad": (_with(source="arm!"), "type"),
    "source list": (_with(source=["arm"]), "type"),
    "kind upper": (_with(kind="Joint"), "type"),
    "kind too long": (_with(kind="k" * 33), "type"),
    # frame 0 vs header topic
    "frame 0 mismatch": ([b"joint/stat", _frames()[1]], "topic"),
    "frame 0 longer": ([b"joint/state/x", _frames()[1]], "topic"),
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
    # frames
    "no inline, no frame 2": (_with(data=_DELETE), "frames"),
    "inline str": (_with(data="\0" * 12), "frames"),
    "inline nil": (_with(data=None), "frames"),
    "both inline and frame 2": (_frames() + [b"\0" * 12], "frames"),
    "one frame": (_frames()[:1], "frames"),
    "no frames": ([], "frames"),
    "four frames": (_frames(data=np.zeros(600, np.float32)) + [b"x"], "frames"),
    # header shape
    "header array": ([b"joint/state", _pack([1, 2, 3])], "type"),
    "header int": ([b"joint/state", _pack(7)], "type"),
    "header garbage": ([b"joint/state", b"\xc1\xff\x00"], "malformed"),
    "header empty": ([b"joint/state", b""], "malformed"),
    "header truncated": ([b"joint/state", _frames()[1][:-3]], "malformed"),
    "header trailing bytes": ([b"joint/state", _frames()[1] + b"\x00"], "malformed"),
    "header bad utf-8": ([b"joint/state", _frames()[1].replace(b"arm", b"a\xffm")], "malformed"),
    "header int key": ([b"joint/state", _pack({**_header(_frames()), 1: 2})], "malformed"),
    "header 17 keys": (_with(**{f"x{i}": i for i in range(7)}), "malformed"),
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
    "ext header": ([b"joint/state", _pack(msgpack.ExtType(3, b"abc"))], "malformed"),
    "raw zero-length ext": ([b"joint/state", b"\x81\xa1x\xc7\x00\x05"], "malformed"),
}


@pytest.mark.parametrize("case", CASES, ids=list(CASES))
def test_malformed_message_is_refused_with_its_reason(case):
    """Each kind of bad message raises MessageError whose `reason` names what was wrong."""
    frames, reason = CASES[case]
    assert _reason(frames) == reason


def test_missing_v_is_missing():
    """A header without the version key is reported as missing a key."""
    assert _reason(_with(v=_DELETE)) == "missing"


def test_oversize_header_is_refused_before_parsing():
    """A header over max_header_bytes is refused as oversize, even when it is valid msgpack."""
    frames = _frames()
    assert _reason(frames, DecodeLimits(max_header_bytes=len(frames[1]) - 1)) == "oversize"
    assert decode(frames, DecodeLimits(max_header_bytes=len(frames[1])))
    assert _reason([b"t", b"\x00" * 5000]) == "oversize"  # default limit: 4096


def test_oversize_payload_from_the_shape_is_refused():
    """A shape whose byte count exceeds max_payload_bytes is oversize, before any payload is looked at."""
    frames = _frames(data=np.zeros(2000, np.uint8))
    assert _reason(frames, DecodeLimits(max_payload_bytes=1999)) == "oversize"
    assert decode(frames, DecodeLimits(max_payload_bytes=2000)).data.size == 2000
    huge = _with(shape=[2**31 - 1] * 4)
    assert _reason(huge) == "oversize"


def test_oversize_payload_frame_is_refused():
    """A payload frame bigger than max_payload_bytes is oversize, whatever the header's shape says."""
    frames = _frames(data=np.zeros(2000, np.uint8))
    assert _reason(frames[:2] + [b"\0" * 5000], DecodeLimits(max_payload_bytes=4096)) == "oversize"
    assert _reason(frames[:2] + [b"\0" * 3000], DecodeLimits(max_payload_bytes=4096)) == "shape"


def test_payload_frame_byte_count_must_match_shape():
    """A separate payload frame one byte short or long of shape x itemsize is refused as a shape mismatch."""
    frames = _frames(data=np.zeros(600, np.float32))
    assert _reason(frames[:2] + [frames[2][:-1]]) == "shape"
    assert _reason(frames[:2] + [frames[2] + b"\0"]) == "shape"
    assert _reason(frames[:2] + [frames[2][:-4]]) == "shape"


@settings(max_examples=300, deadline=None)
@given(st.lists(st.binary(max_size=200), max_size=5))
def test_random_frames_raise_only_message_error(frames):
    """Arbitrary bytes in any number of frames are either a message or a MessageError, never another error."""
    try:
        decode(frames)
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
    """Flipping bits in, truncating or extending the header of a valid message never escapes as anything but a
    MessageError."""
    frames = _frames(data=np.arange(data.draw(st.sampled_from([3, 400])), dtype=np.float32))
    header = bytearray(frames[1])
    for pos in data.draw(st.lists(st.integers(0, len(header) * 8 - 1), min_size=1, max_size=4)):
        header[pos // 8] ^= 1 << (pos % 8)
    cut = data.draw(st.integers(0, len(header)))
    header = header[:cut] + data.draw(st.binary(max_size=8))
    try:
        decode([frames[0], bytes(header), *frames[2:]])
    except MessageError as exc:
        assert exc.reason in REASONS


# ---------------------------------------------------------------------------------------- the document
def test_worked_example_in_the_doc_is_what_encode_produces():
    """The hex dump in docs/wire-format.md is byte for byte what encode() produces for the example message."""
    text = DOC.read_text()
    dumps = re.findall(r"<!-- example-frame (\d) -->\n```text\n(.*?)```", text, re.S)
    assert [i for i, _ in dumps] == ["0", "1"]
    documented = [bytes.fromhex(" ".join(line[6:] for line in dump.splitlines())) for _, dump in dumps]
    x = np.array([0.5, -1.0, 2.0], np.float32)
    assert documented == _frames("joint/state", 7, 1_234_567_890_123, 1_234_567_950_000, "arm", "joint", x)
