"""Transport on loopback, publishers in processes of their own (tests/fakes/publisher_proc.py).

Rates are measured from capture timestamps (the publisher's clock), so a busy test machine does not fail
them; the liveness bound (3 heartbeat periods) is the requirement itself.
"""

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest
import zmq
import zmq.auth

from runtime import transport
from runtime.messages import Message, encode
from runtime.transport import (
    CurveClient,
    CurveServer,
    Policy,
    Publisher,
    Subscriber,
    TransportSecurityError,
    is_loopback,
)

REPO = Path(__file__).resolve().parents[2]
FAKE_PUBLISHER = REPO / "tests" / "fakes" / "publisher_proc.py"
CAMERA = "cam/image:image:uint8:64x64x3"
AUDIO = "mic/audio:audio:float32:160"
JOINT = "arm/joint:joint:float32:10"
ACTION = "arm/action:action:float32:7"


# ----------------------------------------------------------------------------------------- helpers
class PublisherProcess:
    """tests/fakes/publisher_proc.py in a subprocess; its stdout lines are collected by a thread."""

    def __init__(self, endpoint: str, topics: list[str], *extra: str, source: str = "fake"):
        cmd = [sys.executable, str(FAKE_PUBLISHER), "--endpoint", endpoint, "--source", source, *extra]
        for t in topics:
            cmd += ["--topic", t]
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
        self.proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, text=True)
        self.lines: list[str] = []
        self._cond = threading.Condition()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            with self._cond:
                self.lines.append(line.strip())
                self._cond.notify_all()
        with self._cond:
            self.lines.append("<eof>")
            self._cond.notify_all()

    def wait_line(self, prefix: str, timeout_s: float = 10.0) -> str:
        deadline = time.monotonic() + timeout_s
        with self._cond:
            while True:
                for line in self.lines:
                    if line.startswith(prefix):
                        return line
                remaining = deadline - time.monotonic()
                if remaining <= 0 or "<eof>" in self.lines:
                    raise AssertionError(f"publisher never printed {prefix!r}; output {self.lines}")
                self._cond.wait(remaining)

    def bound(self) -> str:
        return self.wait_line("bound ").split(" ", 1)[1]

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(5)


@pytest.fixture
def tmp_short():
    """A short directory for ipc:// sockets (their paths must stay under 107 characters)."""
    path = Path(tempfile.mkdtemp(prefix="tt-", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def publishers():
    """Start publisher processes; every one still running is killed afterwards."""
    started: list[PublisherProcess] = []

    def start(endpoint: str, topics: list[str], *extra: str, source: str = "fake") -> PublisherProcess:
        p = PublisherProcess(endpoint, topics, *extra, source=source)
        started.append(p)
        return p

    yield start
    for p in started:
        p.kill()


@pytest.fixture
def subscribers():
    made: list[Subscriber] = []

    def make(*args, **kwargs) -> Subscriber:
        sub = Subscriber(*args, **kwargs)
        made.append(sub)
        return sub

    yield make
    for sub in made:
        sub.close()


def rss_bytes() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def events_of(sub: Subscriber, kind: str) -> list[float]:
    return [t for t, _source, what in sub.events if what == kind]


# ----------------------------------------------------------------------------------------- rates
@pytest.mark.timeout(60)
def test_native_rates_held(tmp_short, publishers, subscribers):
    """Camera 30 Hz and joints 100 Hz (latest) and audio 100 Hz (lossless) reach a subscriber in another
    process at their native rates (within 5%, from capture timestamps), with no gap in the audio."""
    ep = f"ipc://{tmp_short}/pub"
    rates = {"cam/image": 30.0, "mic/audio": 100.0, "arm/joint": 100.0}
    pub = publishers(
        ep,
        [f"{CAMERA}:30", f"{AUDIO}:100", f"{JOINT}:100"],
        "--seconds", "3", "--wait-subscribers", "3",
    )  # fmt: skip
    sub = subscribers(
        [ep], {"cam/image": Policy.LATEST, "arm/joint": Policy.LATEST, "mic/audio": Policy.LOSSLESS}
    )
    assert sub.wait_ready(10)
    captures: dict[str, list[int]] = defaultdict(list)
    shapes = {}
    deadline = time.monotonic() + 15
    while pub.proc.poll() is None and time.monotonic() < deadline:
        for msg in sub.poll(0.01):
            captures[msg.topic].append(msg.capture_ns)
            shapes[msg.topic] = (msg.data.shape, msg.data.dtype.name)
    for msg in sub.poll(0.2):
        captures[msg.topic].append(msg.capture_ns)
    sent = dict(kv.split("=") for kv in pub.wait_line("done ").split()[1:])
    assert shapes == {
        "cam/image": ((64, 64, 3), "uint8"),
        "mic/audio": ((160,), "float32"),
        "arm/joint": ((10,), "float32"),
    }
    for topic, native in rates.items():
        stats = sub.stats.topics[topic]
        span_s = (max(captures[topic]) - min(captures[topic])) / 1e9
        rate = (stats.received - 1) / span_s  # every message that reached us, superseded ones included
        assert span_s > 2.5, (topic, span_s)
        assert abs(rate / native - 1) < 0.05, f"{topic}: {rate:.1f} Hz received, native {native} Hz"
    audio = sub.stats.topics["mic/audio"]
    assert audio.gaps == 0 and audio.resets == 0
    assert audio.received == int(sent["mic/audio"]) == audio.last_seq + 1  # every chunk, from seq 0


# ----------------------------------------------------------------------------------------- handshake
@pytest.mark.timeout(60)
def test_late_subscriber_misses_nothing_after_ready(tmp_short, publishers, subscribers):
    """A subscriber that joins a running 300 Hz lossless stream is ready within 1 s and, from the welcome the
    publisher sent it on, receives every message without a gap (ZeroMQ's slow joiner solved)."""
    ep = f"ipc://{tmp_short}/pub"
    pub = publishers(ep, [f"{ACTION}:300"])
    pub.bound()
    time.sleep(0.5)  # it is publishing to nobody
    sub = subscribers([ep], {"arm/action": Policy.LOSSLESS})
    t0 = time.monotonic()
    assert sub.wait_ready(5)
    ready_s = time.monotonic() - t0
    seqs = []
    end = time.monotonic() + 1.0
    while time.monotonic() < end:
        seqs += [m.seq for m in sub.poll(0.01) if m.topic == "arm/action"]
    welcomes = [int(line.split("=")[1]) for line in pub.lines if line.startswith("welcome ")]
    assert ready_s < 1.0
    assert len(seqs) > 200, len(seqs)
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs))), "gap after ready"
    assert sub.stats.topics["arm/action"].gaps == 0
    assert welcomes and seqs[0] <= max(welcomes), (seqs[0], welcomes)  # nothing after the welcome was lost


@pytest.mark.timeout(30)
def test_short_wait_ready_calls_complete_with_a_slowly_serviced_publisher(tmp_short, subscribers):
    """wait_ready(0.05) called in a loop (how a node waits while serving its own loop) completes against a
    publisher that services its socket only every 150 ms, and nothing published after it is missed."""
    ep = f"ipc://{tmp_short}/slow"
    with Publisher(ep, "slow", sndhwm=1000) as pub:
        sub = subscribers([ep], {"a/lossless": Policy.LOSSLESS, "a/latest": Policy.LATEST})
        ready, serviced = False, 0.0
        deadline = time.monotonic() + 5
        while not ready and time.monotonic() < deadline:
            if time.monotonic() - serviced >= 0.15:
                pub.service()
                serviced = time.monotonic()
            ready = sub.wait_ready(0.05)
        assert ready
        for _ in range(100):
            pub.publish("a/lossless", "action", np.zeros(7, np.float32), time.monotonic_ns())
        seqs = []
        deadline = time.monotonic() + 5
        while len(seqs) < 100 and time.monotonic() < deadline:
            seqs += [m.seq for m in sub.poll(0.05)]
        assert seqs == list(range(100))


@pytest.mark.timeout(30)
def test_topic_that_prefixes_another_is_not_delivered_twice(tmp_short, subscribers):
    """ZeroMQ filters on prefixes: with a latest topic `arm` and a lossless topic `arm/action`, each message
    still arrives exactly once, under its own topic's policy."""
    ep = f"ipc://{tmp_short}/prefix"
    with Publisher(ep, "arm") as pub:
        sub = subscribers([ep], {"arm": Policy.LATEST, "arm/action": Policy.LOSSLESS})
        deadline = time.monotonic() + 5
        while not sub.wait_ready(0.02) and time.monotonic() < deadline:
            pub.service()
        for _ in range(20):
            pub.publish("arm/action", "action", np.zeros(7, np.float32), time.monotonic_ns())
        pub.publish("arm", "joint", np.zeros(10, np.float32), time.monotonic_ns())
        got = []
        deadline = time.monotonic() + 5
        while len(got) < 21 and time.monotonic() < deadline:
            got += [(m.topic, m.seq) for m in sub.poll(0.05)]
        got += [(m.topic, m.seq) for m in sub.poll(0.1)]
        assert got == [("arm/action", i) for i in range(20)] + [("arm", 0)]
        assert sub.stats.topics["arm/action"].received == 20


# ----------------------------------------------------------------------------------------- liveness
@pytest.mark.timeout(60)
def test_sigkilled_publisher_lost_within_3_heartbeats_and_back_after_restart(
    tmp_short, publishers, subscribers
):
    """A publisher killed with SIGKILL is reported lost within 3 heartbeat periods; restarted on the same
    endpoint it is reported back, its messages flow again, and its sequence restart counts as a reset, not a
    gap."""
    ep = f"ipc://{tmp_short}/pub"
    period = 0.1
    args = ([f"{ACTION}:200", f"{JOINT}:100"], "--heartbeat", str(period))
    first = publishers(ep, *args, source="arm")
    first.bound()
    sub = subscribers([ep], {"arm/action": Policy.LOSSLESS, "arm/joint": Policy.LATEST})
    assert sub.wait_ready(10)
    end = time.monotonic() + 1.2
    while time.monotonic() < end:
        sub.poll(0.01)
    before = sub.stats.topics["arm/action"].last_seq
    assert before > 150 and not sub.events, (before, list(sub.events))  # no false alarm while it runs

    t_kill = time.monotonic()
    os.kill(first.proc.pid, signal.SIGKILL)
    deadline = t_kill + 3
    while not events_of(sub, "lost") and time.monotonic() < deadline:
        sub.poll(0.005)
    (lost_at,) = events_of(sub, "lost")
    assert 0 < lost_at - t_kill <= 3 * period, f"lost {lost_at - t_kill:.3f} s after SIGKILL"
    assert not sub.liveness["arm"].alive
    first.kill()

    second = publishers(ep, *args, source="arm")
    received_after = 0
    deadline = time.monotonic() + 10
    while (not events_of(sub, "back") or received_after < 50) and time.monotonic() < deadline:
        received_after += sum(m.topic == "arm/action" for m in sub.poll(0.01))
    second.bound()
    (back_at,) = events_of(sub, "back")
    action = sub.stats.topics["arm/action"]
    assert back_at > lost_at and sub.liveness["arm"].alive
    assert received_after >= 50
    assert action.resets == 1 and action.gaps == 0, action
    assert action.last_seq < before + received_after  # numbered from 0 again, not continued


# ----------------------------------------------------------------------------------------- stalls
@pytest.mark.timeout(60)
def test_stalled_subscriber_bounded_memory_and_counted_gaps(tmp_short, publishers, subscribers):
    """While a subscriber does not read for 3 s under a flood of 64x64x3 frames (latest) and audio (lossless),
    its memory stays bounded by the high-water marks; when it resumes, the first poll holds one frame, the
    newest read, and the lossless topic's overflow is counted as gaps."""
    ep = f"ipc://{tmp_short}/pub"
    pub = publishers(ep, [f"{CAMERA}:3000", f"{AUDIO}:3000"], "--sndhwm", "20")
    pub.bound()
    sub = subscribers(
        [ep], {"cam/image": Policy.LATEST, "mic/audio": Policy.LOSSLESS}, latest_rcvhwm=4, lossless_rcvhwm=100
    )
    assert sub.wait_ready(10)
    end = time.monotonic() + 0.5
    while time.monotonic() < end:
        sub.poll(0.01)
    camera, audio = sub.stats.topics["cam/image"], sub.stats.topics["mic/audio"]
    assert camera.received > 100  # the flood is on
    gaps_before, superseded_before = audio.gaps, camera.superseded

    rss_before = rss_bytes()
    time.sleep(3.0)  # stalled: ZeroMQ's I/O thread keeps receiving, up to the high-water marks
    rss_after = rss_bytes()

    first = sub.poll(0)
    frames = [m for m in first if m.topic == "cam/image"]
    later = []
    end = time.monotonic() + 0.5
    while time.monotonic() < end:
        later += sub.poll(0.01)
    # 3 s of a 3000 Hz flood of 12 KiB frames is ~100 MiB were the latest queue unbounded.
    assert rss_after - rss_before < 16 * 2**20, f"RSS grew {(rss_after - rss_before) / 2**20:.1f} MiB"
    assert len(frames) == 1 and camera.superseded > superseded_before  # several were queued, one came out
    assert all(m.seq > frames[0].seq for m in later if m.topic == "cam/image")  # it was the newest read
    assert audio.gaps > gaps_before, "lossless overflow not counted"


# ------------------------------------------------------------------------------- every topic, replay
class RawPublisher:
    """A bare XPUB socket (a foreign publisher): answers handshakes on `answer()`, sends what it is given."""

    def __init__(self, endpoint: str, source: str = "raw"):
        self.ctx = zmq.Context()
        self.sock = self.ctx.socket(zmq.XPUB)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.setsockopt(zmq.XPUB_VERBOSE, 1)
        self.sock.bind(endpoint)
        self.source = source

    def answer(self) -> None:
        while self.sock.poll(0):
            event = self.sock.recv()
            if event[:1] == b"\x01" and event[1:].startswith(b"_ready/"):
                self.send(event[1:].decode(), "ready", np.zeros(0, np.uint8))

    def send(self, topic: str, kind: str, data: np.ndarray, seq: int = 0) -> None:
        self.sock.send_multipart(encode(topic, seq, seq, seq, self.source, kind, data))

    def close(self) -> None:
        self.sock.close(0)
        self.ctx.term()


def _ready(sub: Subscriber, *publishers) -> None:
    deadline = time.monotonic() + 10
    while not sub.wait_ready(0.02):
        assert time.monotonic() < deadline, "never ready"
        for pub in publishers:
            (pub.answer if isinstance(pub, RawPublisher) else pub.service)()


@pytest.mark.timeout(30)
def test_every_subscriber_receives_each_topic_once_and_never_internal_ones(tmp_short, subscribers):
    """`every=LOSSLESS` delivers every topic a publisher sends, each message once and in order, except the
    named topics, which keep their own policy (a latest topic still collapses to its newest message), and
    the runtime's `_hb/` and `_ready/` topics, never delivered as data whatever their kind."""
    raw = RawPublisher(f"ipc://{tmp_short}/every", source="raw")
    try:
        sub = subscribers(  # a latest queue deep enough for the burst: this test is not about stalls
            [f"ipc://{tmp_short}/every"], {"cam": Policy.LATEST}, every=Policy.LOSSLESS, latest_rcvhwm=100
        )
        _ready(sub, raw)
        for seq in range(5):
            raw.send("a/1", "joint", np.full(3, seq, np.float32), seq)
            raw.send("b", "audio", np.full(160, seq, np.float32), seq)
            raw.send("cam", "image", np.full((8, 8, 3), seq, np.uint8), seq)
            raw.send("_hb/raw", "joint", np.zeros(3, np.float32), seq)  # data on internal topics
            raw.send("_ready/0123456789abcdef", "image", np.zeros(3, np.uint8), seq)
            raw.send("_ready", "joint", np.zeros(3, np.float32), seq)  # not internal: no slash
        time.sleep(0.3)  # all sent before the first poll: the latest topic has several queued
        got: list[Message] = []
        deadline = time.monotonic() + 10
        while sum(m.topic != "cam" for m in got) < 15 or ("cam", 4) not in [(m.topic, m.seq) for m in got]:
            assert time.monotonic() < deadline, [(m.topic, m.seq) for m in got]
            got += sub.poll(0.1)
        got += sub.poll(0.2)
    finally:
        raw.close()
    lossless = [(m.topic, m.seq) for m in got if m.topic != "cam"]
    assert [x for x in lossless if x[0] == "a/1"] == [("a/1", i) for i in range(5)]
    assert [x for x in lossless if x[0] == "b"] == [("b", i) for i in range(5)]
    assert [x for x in lossless if x[0] == "_ready"] == [("_ready", i) for i in range(5)]
    assert len(lossless) == 15
    cams = [m.seq for m in got if m.topic == "cam"]
    camera = sub.stats.topics["cam"]
    assert cams[-1] == 4 and cams == sorted(set(cams)) and len(cams) + camera.superseded == 5
    assert camera.superseded >= 1 and sub.stats.topics["a/1"].gaps == 0
    assert not any(t.startswith(("_hb/", "_ready/")) for t in sub.stats.topics)
    assert not sub.stats.dropped


@pytest.mark.timeout(30)
def test_publisher_tracks_subscriptions_by_prefix(tmp_short, subscribers):
    """A Publisher counts live subscriptions per prefix (`topic` + 0x00, `_hb/` once per subscriber, the
    empty prefix of an every-topic subscriber), answers and counts handshakes, and forgets a closed
    subscriber's prefixes; `readers()` and `covered()` follow."""
    ep = f"ipc://{tmp_short}/prefixes"
    with Publisher(ep, "p") as pub:
        exact = subscribers([ep], {"x": Policy.LOSSLESS, "y": Policy.LATEST})
        every = subscribers([ep], {}, every=Policy.LOSSLESS)
        _ready(exact, pub)
        _ready(every, pub)
        deadline = time.monotonic() + 5
        while pub.prefixes.get("", 0) < 1 or pub.readers() < 2:
            assert time.monotonic() < deadline, pub.prefixes
            pub.service()
            time.sleep(0.005)
        assert pub.prefixes == {"x\x00": 1, "y\x00": 1, "_hb/": 2, "": 1}
        assert pub.subscriptions == 3 and pub.handshakes >= 2 and pub.welcomes >= 3  # exact has 2 sockets
        assert pub.covered("x") and pub.covered("anything")
        every.close()
        while "" in pub.prefixes or pub.readers() != 1:
            assert time.monotonic() < deadline + 5, pub.prefixes
            pub.service()
            time.sleep(0.005)
        assert pub.prefixes == {"x\x00": 1, "y\x00": 1, "_hb/": 1}
        assert pub.covered("y") and not pub.covered("x/more") and not pub.covered("anything")
        with pytest.raises(ValueError, match="runtime's own"):
            pub.publish("_hb/p", "joint", np.zeros(1, np.float32), 0)


@pytest.mark.timeout(30)
def test_republish_is_unchanged_and_keeps_recorded_sources_alive(tmp_short, subscribers):
    """`republish` delivers a recorded message with its own topic, seq, timestamps, source, kind and payload,
    and from then on the publisher heartbeats for that source, so a subscriber keeps it alive while no
    message of it comes (and learns the replay's own source too)."""
    ep = f"ipc://{tmp_short}/replay"
    with Publisher(ep, "replay", heartbeat_period_s=0.1, nodrop=True) as pub:
        sub = subscribers([ep], {}, every=Policy.LOSSLESS)
        _ready(sub, pub)
        sent = [
            Message("cam/rgb", 40 + i, 1000 + i, 2000 + i, "cam", "image", np.full((4, 4, 3), i, np.uint8))
            for i in range(5)
        ]
        assert all(pub.republish(m) for m in sent)
        got = []
        end = time.monotonic() + 1.0  # 10 heartbeat periods without a message from "cam"
        while time.monotonic() < end:
            pub.service()
            got += sub.poll(0.01)
    assert [(m.topic, m.seq, m.capture_ns, m.send_ns, m.source, m.kind) for m in got] == [
        (m.topic, m.seq, m.capture_ns, m.send_ns, m.source, m.kind) for m in sent
    ]
    assert all(np.array_equal(a.data, b.data) for a, b in zip(got, sent, strict=True))
    assert pub.sources == ["replay", "cam"]
    assert sub.liveness["cam"].alive and sub.liveness["cam"].period_s == 0.1 and not sub.events
    assert sub.liveness["replay"].alive and not pub.dropped


@pytest.mark.timeout(30)
def test_nodrop_publisher_gives_up_after_its_timeout_or_when_stopped(tmp_short):
    """With `nodrop`, a send into a full queue waits; it gives up (False, counted in `dropped`) after
    `send_timeout_s`, or at once when `stop()` says so, and publishes again once there is room."""
    ep = f"ipc://{tmp_short}/nodrop"
    ctx = zmq.Context()
    reader = ctx.socket(zmq.SUB)
    reader.setsockopt(zmq.LINGER, 0)
    reader.setsockopt(zmq.RCVHWM, 1)
    reader.setsockopt(zmq.SUBSCRIBE, b"")
    try:
        with Publisher(ep, "p", nodrop=True, sndhwm=1, send_timeout_s=0.3) as pub:
            reader.connect(ep)
            assert pub.wait_for_subscribers(1, 5)
            big = Message("t", 0, 0, 0, "p", "image", np.zeros(2**20, np.uint8))  # 1 MiB: buffers fill fast
            sent = 0
            t0 = time.monotonic()
            while pub.republish(big._replace(seq=sent)):
                sent += 1
                assert sent < 200, "the queue never filled"
            waited = time.monotonic() - t0
            assert pub.dropped == 1 and pub.blocked_s >= 0.3 and waited >= 0.3
            t0 = time.monotonic()
            assert not pub.republish(big, stop=lambda: True)
            assert pub.dropped == 2 and time.monotonic() - t0 < 0.2
            while reader.poll(100):
                reader.recv_multipart()  # room again
            assert pub.republish(big._replace(seq=sent))
    finally:
        reader.close()
        ctx.term()


# ----------------------------------------------------------------------------------------- security
@pytest.mark.parametrize(
    ("endpoint", "loopback"),
    [
        ("ipc:///tmp/x/pub", True),
        ("inproc://pub", True),
        ("tcp://127.0.0.1:5555", True),
        ("tcp://127.5.5.5:5555", True),
        ("tcp://localhost:5555", True),
        ("tcp://[::1]:5555", True),
        ("tcp://127.0.0.1:*", True),
        ("tcp://0.0.0.0:5555", False),
        ("tcp://*:5555", False),
        ("tcp://10.0.0.1:5555", False),
        ("tcp://[::]:5555", False),
        ("tcp://eth0:5555", False),
        ("tcp://robot.local:5555", False),
        ("tcp://[::1:5555", False),
        ("udp://127.0.0.1:5555", False),
    ],
)
def test_is_loopback(endpoint, loopback):
    """Only ipc/inproc, 127.0.0.0/8, ::1 and localhost count as loopback; interfaces, hostnames, wildcards
    and anything unparsable do not."""
    assert is_loopback(endpoint) is loopback


@pytest.mark.timeout(10)
@pytest.mark.parametrize("endpoint", ["tcp://0.0.0.0:*", "tcp://*:*", "tcp://eth0:*"])
def test_non_loopback_bind_without_keys_refused(endpoint):
    """Binding beyond loopback without CurveZMQ keys is refused before any socket exists, and the error
    says how to make keys."""
    with pytest.raises(TransportSecurityError, match=r"python -m launch\.keys"):
        Publisher(endpoint, "exposed")


@pytest.mark.timeout(10)
def test_curve_server_without_client_keys_refused(tmp_path):
    """A CurveServer whose authorized-clients directory holds no public keys is refused at start (pyzmq would
    otherwise log the problem and turn every client away)."""
    _public, secret = zmq.auth.create_certificates(tmp_path, "server")
    (tmp_path / "clients").mkdir()
    with pytest.raises(TransportSecurityError, match="no client public keys"):
        Publisher("tcp://0.0.0.0:*", "exposed", curve=CurveServer(Path(secret), tmp_path / "clients"))


@pytest.mark.timeout(60)
@pytest.mark.skipif(not zmq.has("curve"), reason="libzmq without CURVE")
def test_curve_keys_from_launch_keys(tmp_path, publishers, subscribers):
    """Keys made by `python -m launch.keys` let an authorized subscriber receive from a publisher bound on
    all interfaces; a client whose key is not authorized, a client holding the wrong server key, and a
    client without keys get nothing at all."""
    keys = tmp_path / "keys"
    made = subprocess.run(
        [sys.executable, "-m", "launch.keys", "--out", str(keys), "--clients", "good", "revoked"],
        cwd=REPO, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert made.returncode == 0, made.stderr
    assert "CurveServer(" in made.stdout and "CurveClient(" in made.stdout
    secret = keys / "secret"
    assert sorted(p.name for p in secret.iterdir()) == [
        "good.key_secret",
        "revoked.key_secret",
        "server.key_secret",
    ]
    assert all(p.stat().st_mode & 0o777 == 0o600 for p in secret.iterdir())
    (keys / "public" / "clients" / "revoked.key").unlink()  # revoked: no longer authorized
    _, stray_server_secret = zmq.auth.create_certificates(tmp_path, "stray")
    stray_server_public = tmp_path / "stray.key"

    pub = publishers(
        "tcp://0.0.0.0:*",
        [f"{ACTION}:100"],
        "--curve-secret", str(secret / "server.key_secret"),
        "--curve-clients", str(keys / "public" / "clients"),
    )  # fmt: skip
    port = pub.bound().rsplit(":", 1)[1]
    ep = f"tcp://127.0.0.1:{port}"
    topics = {"arm/action": Policy.LOSSLESS}
    server_public = keys / "public" / "server.key"
    good = subscribers([ep], topics, curve=CurveClient(secret / "good.key_secret", server_public))
    outsiders = {
        "unauthorized client": subscribers(
            [ep], topics, curve=CurveClient(secret / "revoked.key_secret", server_public)
        ),
        "wrong server key": subscribers(
            [ep], topics, curve=CurveClient(secret / "good.key_secret", stray_server_public)
        ),
        "no keys": subscribers([ep], topics),
    }
    assert good.wait_ready(10)
    got = []
    end = time.monotonic() + 0.5
    while time.monotonic() < end:
        got += good.poll(0.01)
    assert len(got) > 20 and good.stats.topics["arm/action"].gaps == 0

    # The outsiders have been connecting all along; give them another second of handshakes and polls.
    end = time.monotonic() + 1.0
    while time.monotonic() < end:
        for name, sub in outsiders.items():
            assert not sub.wait_ready(0.05), name
            assert sub.poll(0.01) == [], name
    for name, sub in outsiders.items():
        assert sub.stats.topics["arm/action"].received == 0 and not sub.liveness, name  # not even heartbeats


# ----------------------------------------------------------------------------------------- process hygiene
@pytest.mark.timeout(30)
@pytest.mark.skipif(not hasattr(os, "fork"), reason="no fork on this platform")
@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # Python 3.12+ warns about fork with threads
def test_forked_child_gets_its_own_context(tmp_short, subscribers):
    """After fork, transport.context() in the child is a new context (a ZeroMQ context must not cross a
    fork), and the child can publish with it."""
    parent_ctx = transport.context()
    ep = f"ipc://{tmp_short}/forked"
    pid = os.fork()
    if pid == 0:  # child: never return into pytest
        code = 1
        try:
            ctx = transport.context()
            code = 0 if ctx is not parent_ctx and transport.context() is ctx else 3
            with Publisher(ep, "forked", heartbeat_period_s=0.05) as pub:
                if pub.wait_for_subscribers(1, 10):
                    for _ in range(50):
                        pub.publish("fork/data", "joint", np.arange(4, dtype=np.float32), time.monotonic_ns())
                        pub.service()
                        time.sleep(0.002)
                    end = time.monotonic() + 1.0
                    while time.monotonic() < end:
                        pub.service()
                        time.sleep(0.01)
                else:
                    code = 4
        finally:
            os._exit(code)
    try:
        sub = subscribers([ep], {"fork/data": Policy.LOSSLESS})
        assert sub.wait_ready(10)
        seqs = []
        deadline = time.monotonic() + 10
        while len(seqs) < 50 and time.monotonic() < deadline:
            seqs += [m.seq for m in sub.poll(0.05) if m.source == "forked"]
        assert seqs == list(range(50))
        assert transport.context() is parent_ctx
    finally:
        _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0  # 3: the child reused the parent's context


@pytest.mark.timeout(10)
def test_receive_timeouts(tmp_short, subscribers):
    """poll and wait_ready on a silent endpoint return empty-handed after about their timeout."""
    sub = subscribers([f"ipc://{tmp_short}/nobody"], {"x/y": Policy.LATEST, "x/z": Policy.LOSSLESS})
    t0 = time.perf_counter()
    assert sub.poll(0.05) == []
    poll_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    assert not sub.wait_ready(0.2)
    ready_s = time.perf_counter() - t0
    assert 0.04 <= poll_s < 0.5, poll_s
    assert 0.19 <= ready_s < 1.0, ready_s


@pytest.mark.timeout(20)
def test_close_with_undelivered_messages_returns_promptly(tmp_short):
    """close() discards what is still queued (LINGER 0): with a subscriber that reads nothing, closing the
    publisher and terminating its context return at once instead of waiting forever to deliver."""
    pub_ctx, sub_ctx = zmq.Context(), zmq.Context()
    ep = f"ipc://{tmp_short}/linger"
    pub = Publisher(ep, "linger", sndhwm=1000, ctx=pub_ctx)
    reader = sub_ctx.socket(zmq.SUB)
    reader.setsockopt(zmq.LINGER, 0)
    reader.setsockopt(zmq.RCVHWM, 1)
    reader.setsockopt(zmq.SUBSCRIBE, b"")
    reader.connect(ep)
    unread = Subscriber([f"ipc://{tmp_short}/nobody"], {"x/y": Policy.LOSSLESS}, ctx=pub_ctx)
    try:
        assert pub.wait_for_subscribers(1, 5)
        frame = np.zeros((256, 256, 3), np.uint8)  # 192 KiB: more than the socket buffers hold
        for _ in range(2000):
            pub.publish("cam/image", "image", frame, time.monotonic_ns())
        t0 = time.perf_counter()
        pub.close()
        unread.close()  # its subscriptions are still queued for a peer that never comes
        term = threading.Thread(target=pub_ctx.term, daemon=True)
        term.start()
        term.join(5)
        elapsed = time.perf_counter() - t0
        assert not term.is_alive(), "context.term() blocked: something closed with LINGER != 0"
        assert elapsed < 1.0, elapsed
    finally:
        reader.close()
        sub_ctx.term()
