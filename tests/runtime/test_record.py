"""Record and replay: real processes over ZeroMQ (ipc), `launch.record` and `launch.replay` as subprocesses.

The issue's claim is zero sequence gaps over a 60 s run with camera, audio and proprioception; CI runs the
same test for `HAMRT_RECORD_SECONDS` seconds (default 5). Run the claim with
`HAMRT_RECORD_SECONDS=60 python -m pytest tests/runtime/test_record.py -k native_rates`.
"""

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import zmq
from mcap.reader import make_reader

from runtime.messages import Message, decode
from runtime.record import (
    ReadReport,
    Recorder,
    RecordingError,
    iter_recording,
    read_recording,
    recording_summary,
)
from runtime.transport import Policy, Publisher, Subscriber

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests"))  # `import fakes` under any --import-mode
from fakes.record_sensors import RATES_HZ, sample  # noqa: E402

SENSORS = ROOT / "tests" / "fakes" / "record_sensors.py"
TOPICS = sorted(RATES_HZ)
MAGIC = b"\x89MCAP0\r\n"
NATIVE_SECONDS = float(os.environ.get("HAMRT_RECORD_SECONDS", "5"))


# ----------------------------------------------------------------------------------------- helpers
@pytest.fixture(scope="module")
def short_dir():
    """ipc:// paths must stay under ~107 bytes; pytest's tmp_path can be longer."""
    path = Path(tempfile.mkdtemp(prefix="rec", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def _fields(msg: Message) -> tuple:
    return (
        msg.topic,
        msg.seq,
        msg.capture_ns,
        msg.send_ns,
        msg.source,
        msg.kind,
        msg.data.dtype.str,
        msg.data.shape,
        msg.data.tobytes(),
    )


class Session:
    """A sensor publisher and a `launch.record` subprocess recording it to `out`."""

    def __init__(self, workdir: Path, name: str, seconds: float, camera: str = "64x64"):
        self.dir = workdir / name
        self.dir.mkdir()
        self.out = self.dir / "run.mcap"
        self.go = self.dir / "go"
        self.log = self.dir / "record.log"
        self.camera_shape = tuple(int(v) for v in camera.split("x"))
        endpoint = f"ipc://{self.dir}/s.sock"
        self.sensors = subprocess.Popen(
            [sys.executable, str(SENSORS), "--endpoint", endpoint, "--seconds", str(seconds)]
            + ["--go-file", str(self.go), "--camera", camera],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            text=True,
        )
        with open(self.log, "w") as log:
            self.recorder = subprocess.Popen(
                [sys.executable, "-m", "launch.record", "--out", str(self.out), "--endpoints", endpoint],
                cwd=ROOT,
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    def start(self) -> float:
        """Wait until the recorder's subscription is live, then let the sensors go; returns the go time."""
        deadline = time.monotonic() + 30
        while "recording every topic" not in self.log.read_text():
            assert self.recorder.poll() is None, self.log.read_text()
            assert time.monotonic() < deadline, f"recorder never became ready: {self.log.read_text()}"
            time.sleep(0.02)
        assert "not every publisher answered" not in self.log.read_text()
        self.go.touch()
        return time.monotonic()

    def sent(self, timeout: float) -> dict[str, int]:
        out, _ = self.sensors.communicate(timeout=timeout)
        assert self.sensors.returncode == 0
        return json.loads(out.strip().splitlines()[-1])

    def stop(self, sig: int = signal.SIGINT) -> str:
        self.recorder.send_signal(sig)
        self.recorder.wait(timeout=20)
        return self.log.read_text()

    def kill(self) -> None:
        for proc in (self.recorder, self.sensors):
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)


def _check_against_sensors(messages: list[Message], camera_shape) -> dict[str, list[Message]]:
    """Per topic: consecutive sequence numbers from 0, and each payload is exactly what was published."""
    by_topic: dict[str, list[Message]] = {t: [] for t in TOPICS}
    for msg in messages:
        by_topic[msg.topic].append(msg)
    for topic, msgs in by_topic.items():
        assert [m.seq for m in msgs] == list(range(len(msgs))), f"{topic}: sequence not contiguous from 0"
        captures = [m.capture_ns for m in msgs]
        assert captures == sorted(captures), f"{topic}: out of capture order"
        for m in msgs:
            expected = sample(topic, m.seq, camera_shape)
            assert m.source == "sensors" and m.data.dtype == expected.dtype and m.data.shape == expected.shape
            assert m.data.tobytes() == expected.tobytes(), f"{topic} seq {m.seq}: payload differs"
    return by_topic


def _replay(path: Path, workdir: Path, speed: float) -> tuple[list[tuple[int, Message]], str]:
    """Run `launch.replay` into a Subscriber that does what a node does (handshake, then poll)."""
    endpoint = f"ipc://{workdir}/replay-{speed:g}.sock"
    sub = Subscriber([endpoint], {t: Policy.LOSSLESS for t in TOPICS}, name="check")
    proc = subprocess.Popen(
        [sys.executable, "-m", "launch.replay", str(path), "--speed", str(speed), "--endpoint", endpoint]
        + ["--drain-s", "0.3"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert sub.wait_ready(30), "replay never answered the handshake"
        got: list[tuple[int, Message]] = []
        deadline = time.monotonic() + 60
        while proc.poll() is None and time.monotonic() < deadline:
            for msg in sub.poll(0.005):
                got.append((time.monotonic_ns(), msg))
        while msgs := sub.poll(0.2):
            got.extend((time.monotonic_ns(), m) for m in msgs)
        out, _ = proc.communicate(timeout=10)
        assert proc.returncode == 0, out
        assert not sub.stats.dropped
        return got, out
    finally:
        sub.close()
        if proc.poll() is None:
            proc.kill()
            proc.wait()


# ----------------------------------------------------------------------------------------- round trip
@pytest.fixture(scope="module")
def recorded(short_dir):
    """3 s of camera (64x64x3 uint8, 30 Hz), audio (160 float32, 100 Hz), joints (10 float32, 100 Hz),
    recorded by `launch.record` and stopped with Ctrl-C (SIGINT)."""
    session = Session(short_dir, "roundtrip", seconds=3.0)
    try:
        session.start()
        sent = session.sent(timeout=30)
        log = session.stop(signal.SIGINT)
        assert session.recorder.returncode == 0, log
    finally:
        session.kill()
    return session, sent, log


@pytest.mark.timeout(60)
def test_recording_holds_every_published_message_exactly(recorded):
    """Every message the sensors sent is in the file, in order, bit-exact, and the file is finished."""
    session, sent, log = recorded
    report = ReadReport()
    messages = list(read_recording(session.out, report))
    assert report.complete and report.tail_bytes == 0
    assert dict(report.topics) == sent and all(n > 0 for n in sent.values())
    _check_against_sensors(messages, session.camera_shape)
    assert "0 lost in gaps" in log


@pytest.mark.timeout(60)
def test_file_layout_is_plain_mcap(recorded):
    """mcap's own reader reads it: one msgpack channel per topic, a JSON schema each, summary counts."""
    session, sent, _ = recorded
    with open(session.out, "rb") as f:
        reader = make_reader(f)
        summary = reader.get_summary()
        channels = {c.topic: c for c in summary.channels.values()}
        assert sorted(channels) == TOPICS
        for channel in channels.values():
            schema = summary.schemas[channel.schema_id]
            assert channel.message_encoding == "msgpack" and schema.encoding == "jsonschema"
            assert json.loads(schema.data)["properties"]["topic"]["const"] == channel.topic
        counts = {summary.channels[c].topic: n for c, n in summary.statistics.channel_message_counts.items()}
        assert counts == sent
        for _schema, channel, message in reader.iter_messages(log_time_order=False):
            assert message.sequence >= 0 and message.publish_time > 0 and channel.topic in TOPICS
    assert recording_summary(session.out).topics == sent


def _timing_faults(got, recorded_by_topic, speed: float) -> list[str]:
    """Per topic, the replayed spacing follows the capture spacing divided by `speed`: arrival times minus
    expected times are a constant (the hop) within a few ms for most messages, and that constant does not
    drift between the first and last quarter of the replay. Returns what is wrong, empty when nothing is.

    Robust statistics on purpose: a loaded 2-core CI machine can deschedule the replay or this test's
    receiving loop for a few hundred ms, which makes one burst of late arrivals. A pacing bug (wrong sleep,
    drift, bursts, a wrong speed factor) moves most messages or the trend, which these checks catch."""
    faults = []
    for topic, original in recorded_by_topic.items():
        recv = np.array([t for t, m in got if m.topic == topic], dtype=np.int64)
        capture = np.array([m.capture_ns for m in original], dtype=np.int64)
        expected = (capture - capture[0]) / speed
        error = (recv - recv[0] - expected) / 1e6
        jitter_ms = np.abs(error - np.median(error))
        if np.median(jitter_ms) >= 3:
            faults.append(f"{topic}: median timing error {np.median(jitter_ms):.1f} ms")
        on_time = float(np.mean(jitter_ms < 10))
        if on_time < 0.75:
            faults.append(f"{topic}: only {on_time:.0%} of messages within 10 ms of their slot")
        quarter = max(len(error) // 4, 1)
        drift_ms = np.median(error[-quarter:]) - np.median(error[:quarter])
        want_ms = expected[-1] / 1e6
        if abs(drift_ms) >= 0.02 * want_ms + 5:
            faults.append(f"{topic}: drifted {drift_ms:.1f} ms over {want_ms:.0f} ms")
    return faults


@pytest.mark.timeout(90)
@pytest.mark.parametrize("speed", [1.0, 4.0])
def test_replay_is_bit_exact_with_original_timing(recorded, short_dir, speed):
    """`launch.replay` republishes every recorded message unchanged (topic, seq, capture_ns, send_ns, source,
    kind, dtype, shape, payload), in order per topic, with capture spacing scaled by 1/speed.

    Timing gets a second replay if the first one misses: CI twice stalled this 2-core machine for up to
    0.9 s in the middle of a 3 s replay (a third of the joint messages late in one burst). A stall does not
    come back on cue; a pacing bug is deterministic and fails both replays."""
    session, _, _ = recorded
    original = list(read_recording(session.out))
    by_topic = {t: [m for m in original if m.topic == t] for t in TOPICS}
    faults: list[list[str]] = []
    for _attempt in range(2):
        got, out = _replay(session.out, short_dir, speed)
        assert len(got) == len(original), out
        for topic in TOPICS:
            replayed = [_fields(m) for _, m in got if m.topic == topic]
            assert replayed == [_fields(m) for m in by_topic[topic]], f"{topic}: replay differs"
        faults.append(_timing_faults(got, by_topic, speed))
        if not faults[-1]:
            break
    assert not faults[-1], f"timing off in both replays: {faults}"


@pytest.mark.timeout(60)
def test_replay_speed_zero_is_lossless_and_fast(recorded, short_dir):
    """As fast as possible still delivers every message, and much faster than real time."""
    session, sent, _ = recorded
    t0 = time.monotonic()
    got, out = _replay(session.out, short_dir, 0.0)
    assert sorted(m.topic for _, m in got) == sorted(t for t, n in sent.items() for _ in range(n))
    span = (got[-1][0] - got[0][0]) / 1e9
    assert span < 1.0, f"3 s of recording took {span:.2f} s at speed 0"
    assert time.monotonic() - t0 < 20


@pytest.mark.timeout(60)
def test_replay_publisher_waits_for_a_slow_subscriber(short_dir):
    """A reader that stalls while 3000 messages are replayed into small queues still gets every one, in
    order: with `nodrop`, `republish` waits on a full queue instead of dropping (a plain XPUB drops
    silently). The reader is a bare SUB socket, so only the publisher side is under test."""
    endpoint = f"ipc://{short_dir}/slow.sock"
    pub = Publisher(endpoint, "replay", nodrop=True, sndhwm=10)
    sock = zmq.Context.instance().socket(zmq.SUB)
    try:
        sock.setsockopt(zmq.RCVHWM, 10)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.SUBSCRIBE, b"t")
        sock.connect(endpoint)
        deadline = time.monotonic() + 10
        while not pub.covered("t"):
            assert time.monotonic() < deadline, f"subscription never arrived: {dict(pub.prefixes)}"
            pub.service()
            time.sleep(0.005)
        n, results = 3000, []

        def replay():
            for i in range(n):
                results.append(
                    pub.republish(Message("t", i, i, i, "rec", "joint", np.full(200, i, np.float32)))
                )

        sender = threading.Thread(target=replay)
        sender.start()
        time.sleep(0.5)  # stalled: the queues fill and republish has to wait
        seqs = []
        while len(seqs) < n and sock.poll(5000):
            msg = decode(sock.recv_multipart())
            assert msg.data[0] == msg.seq
            seqs.append(msg.seq)
            if len(seqs) % 50 == 0:
                time.sleep(0.001)  # a slow reader
        sender.join(30)
        assert len(results) == n and all(results)
        assert seqs == list(range(n))
        assert pub.blocked_s > 0.3
    finally:
        sock.close()
        pub.close()


# ----------------------------------------------------------------------------------------- native rates
@pytest.mark.timeout(NATIVE_SECONDS + 60)
def test_zero_gaps_at_native_rates(short_dir):
    """Nothing is lost at native rates: 640x480 camera at 30 Hz, audio and joints at 100 Hz, for
    HAMRT_RECORD_SECONDS (the issue's claim is 60 s): every sent message is recorded, none missing."""
    session = Session(short_dir, "native", seconds=NATIVE_SECONDS, camera="480x640")
    try:
        session.start()
        sent = session.sent(timeout=NATIVE_SECONDS + 30)
        log = session.stop(signal.SIGINT)
    finally:
        session.kill()
    report = ReadReport()
    messages = list(read_recording(session.out, report))
    assert report.complete
    assert dict(report.topics) == sent
    assert sent["cam/image"] >= 30 * NATIVE_SECONDS * 0.95
    _check_against_sensors(messages, session.camera_shape)
    assert "0 lost in gaps" in log


# ----------------------------------------------------------------------------------------- stopping
@pytest.mark.timeout(60)
def test_killed_recorder_keeps_every_complete_chunk(short_dir):
    """SIGKILL mid-run leaves no footer; every message in complete chunks reads back, contiguous from seq 0
    and bit-exact, the incomplete tail is reported (not raised), and at most ~one flush interval is lost."""
    session = Session(short_dir, "killed", seconds=4.0)
    try:
        go = session.start()
        time.sleep(max(0.0, go + 3.0 - time.monotonic()))
        killed_ns = time.monotonic_ns()
        session.recorder.send_signal(signal.SIGKILL)
        session.recorder.wait(10)
        sent = session.sent(timeout=30)
    finally:
        session.kill()
    assert recording_summary(session.out) is None  # no footer
    report = ReadReport()
    messages = list(read_recording(session.out, report))
    assert not report.complete and report.tail
    assert report.chunks >= 2 and report.messages == len(messages) > 0
    by_topic = _check_against_sensors(messages, session.camera_shape)
    for topic, msgs in by_topic.items():
        assert 0 < len(msgs) < sent[topic]
        lost_s = (killed_ns - msgs[-1].capture_ns) / 1e9
        assert lost_s < 1.0 + 0.6, f"{topic}: last {lost_s:.2f} s before the kill are missing"


@pytest.mark.timeout(60)
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_signal_while_recording_finishes_the_file(short_dir, sig):
    """SIGTERM or Ctrl-C in the middle of the data stream: exit 0 and a finished file (summary, footer)."""
    session = Session(short_dir, f"signal-{sig.name}", seconds=3.0)
    try:
        session.start()
        time.sleep(1.5)
        log = session.stop(sig)
        assert session.recorder.returncode == 0, log
        assert f"stopped by {sig.name}" in log
    finally:
        session.kill()
    summary = recording_summary(session.out)
    assert summary is not None and summary.messages > 0
    report = ReadReport()
    messages = list(read_recording(session.out, report))
    assert report.complete and len(messages) == summary.messages
    _check_against_sensors(messages, session.camera_shape)


# ----------------------------------------------------------------------------------------- in-process
def _synthetic(n: int = 200) -> list[Message]:
    rng = np.random.default_rng(1)
    out = []
    for i in range(n):
        out.append(
            Message("cam", i, 10 * i, 10 * i + 1, "a", "image", rng.integers(0, 256, (32, 32, 3), np.uint8))
        )
        out.append(
            Message("mic", i, 10 * i + 2, 10 * i + 3, "b", "audio", rng.standard_normal(160, np.float32))
        )
    out.append(Message("odd", 0, 1, 2, "c", "x", np.zeros((0, 3), np.float16)))
    out.append(Message("odd", 1, 3, 4, "c", "x", np.array(7, np.int64)))
    out.append(Message("odd", 2, 5, 6, "c", "x", np.ones((2, 2), bool)))
    return out


@pytest.mark.timeout(30)
def test_truncated_file_yields_exactly_the_complete_chunks(tmp_path):
    """Cut a recording anywhere: reading returns a prefix of the messages, every one from a chunk that was
    complete before the cut, and reports the incomplete tail instead of raising."""
    path = tmp_path / "full.mcap"
    messages = _synthetic()
    with Recorder(path, chunk_size=20_000) as rec:
        for i, msg in enumerate(messages):
            rec.write(msg, i)
    data = path.read_bytes()
    full = [_fields(m) for m in read_recording(path)]
    assert full == [_fields(m) for m in messages]
    with open(path, "rb") as f:
        chunks = make_reader(f).get_summary().chunk_indexes
    assert len(chunks) > 10
    # log_time is the message index, so a chunk's last log_time + 1 is how many messages precede its end.
    ends = [(c.chunk_start_offset + c.chunk_length, c.message_end_time + 1) for c in chunks]
    for cut in sorted({*np.linspace(9, len(data) - 1, 60).astype(int), *(end for end, _ in ends)}):
        cut_path = tmp_path / "cut.mcap"
        cut_path.write_bytes(data[:cut])
        report = ReadReport()
        got = [_fields(m) for m in read_recording(cut_path, report)]
        assert not report.complete and report.tail
        expected = max((n for end, n in ends if end <= cut), default=0)
        assert got == full[:expected], f"cut at {cut}: {len(got)} messages, expected {expected}"


@pytest.mark.timeout(30)
def test_log_time_and_sequence_are_stored(tmp_path):
    """MCAP log_time is the receive time given to write(), publish_time the capture time, sequence the seq."""
    path = tmp_path / "t.mcap"
    messages = _synthetic(5)
    with Recorder(path) as rec:
        for i, msg in enumerate(messages):
            rec.write(msg, 1000 + i)
    items = list(iter_recording(path))
    assert [r.log_time_ns for r in items] == [1000 + i for i in range(len(messages))]
    with open(path, "rb") as f:
        for (_, _, raw), msg in zip(
            make_reader(f).iter_messages(log_time_order=False), messages, strict=True
        ):
            assert raw.publish_time == msg.capture_ns and raw.sequence == msg.seq


@pytest.mark.timeout(30)
def test_recordings_of_format_1_still_read_and_unknown_versions_do_not(tmp_path):
    """A recording made with wire format 1 (the same envelope map, `v` = 1) reads back bit-exactly, as
    format-2 messages; an envelope of an unknown version (3) is a RecordingError, not a message."""
    messages = _synthetic(5)
    for version, readable in ((1, True), (3, False)):
        path = tmp_path / f"v{version}.mcap"
        with Recorder(path) as rec:
            for i, msg in enumerate(messages):
                rec.write(msg._replace(version=version), i)
        if readable:
            got = list(read_recording(path))
            assert [_fields(m) for m in got] == [_fields(m) for m in messages]
            assert {m.version for m in got} == {2}
        else:
            with pytest.raises(RecordingError, match="version"):
                list(read_recording(path))


@pytest.mark.timeout(30)
@pytest.mark.parametrize(
    "content",
    [
        b"",
        b"\x89MCA",
        np.random.default_rng(0).bytes(4096),
        b"\x89MCAP0\r\n" + np.random.default_rng(1).bytes(64),
    ],
    ids=["empty", "short", "random", "magic-then-junk"],
)
def test_garbage_is_a_clear_error(tmp_path, content):
    """A file that is not a recording raises RecordingError naming the file; junk after a valid magic does
    not crash either (it reads as a truncated or corrupt tail)."""
    path = tmp_path / "junk.mcap"
    path.write_bytes(content)
    if not content.startswith(MAGIC):
        with pytest.raises(RecordingError, match="not an MCAP file"):
            list(read_recording(path))
    else:
        try:
            report = ReadReport()
            assert list(read_recording(path, report)) == [] and not report.complete
        except RecordingError as exc:
            assert str(path) in str(exc)


@pytest.mark.timeout(30)
def test_replay_refuses_garbage_without_a_traceback(tmp_path):
    """`launch.replay` on a non-recording exits 2 with one clear line."""
    path = tmp_path / "junk.mcap"
    path.write_bytes(np.random.default_rng(2).bytes(100))
    proc = subprocess.run(
        [sys.executable, "-m", "launch.replay", str(path), "--endpoint", f"ipc://{tmp_path}/r.sock"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert proc.returncode == 2
    assert "not an MCAP file" in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.timeout(120)
def test_record_attaches_to_the_running_sim_by_graph_name(tmp_path):
    """`python -m launch.record --out run.mcap`, as the issue writes it: no endpoints, the recorder finds the
    graph `launch.sim` announced and records its sensor streams; with no graph running it says so."""
    env = {**os.environ, "HAMRT_RUNNING_DIR": str(tmp_path / "running")}
    record = [sys.executable, "-m", "launch.record", "--seconds", "3"]
    missing = subprocess.run(
        record + ["--out", str(tmp_path / "none.mcap")], cwd=ROOT, env=env, capture_output=True, text=True
    )
    assert missing.returncode == 2 and "no graph 'sim' is running" in missing.stderr, missing.stderr
    sim = subprocess.Popen(
        [sys.executable, "-m", "launch.sim", "--env", "manipulation", "--seconds", "40"],
        cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        while not (tmp_path / "running" / "sim.json").exists():
            assert time.monotonic() < deadline and sim.poll() is None, "launch.sim never announced its graph"
            time.sleep(0.1)
        out = tmp_path / "run.mcap"
        done = subprocess.run(
            record + ["--out", str(out)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
        )
        assert done.returncode == 0, done.stderr
    finally:
        sim.send_signal(signal.SIGINT)
        sim.wait(20)
    counts: dict[str, int] = {}
    for msg in read_recording(out):
        counts[msg.topic] = counts.get(msg.topic, 0) + 1
    assert {"sim/camera", "sim/audio", "sim/joint", "actuator/command"} <= set(counts), counts
    assert counts["sim/audio"] > 100, counts  # 100 chunks/s for most of the 3 s
    assert not (tmp_path / "running" / "sim.json").exists()  # withdrawn when the graph stopped
