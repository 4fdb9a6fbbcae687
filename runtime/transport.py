"""ZeroMQ publisher and subscriber: queue policies, readiness handshake, heartbeats, loopback-or-CurveZMQ.

A `Publisher` binds an XPUB socket. Seeing subscriptions lets it answer the readiness handshake: a
`Subscriber` subscribes to its topics, then to a fresh `_ready/<nonce>` topic; ZeroMQ delivers subscriptions
in order on a connection, so when the publisher sees the nonce, the topics before it are live, and it
publishes a welcome on the nonce topic. A subscriber that got the welcome receives everything published
after it (the fix for ZeroMQ's "slow joiner"). Messages that arrive while `wait_ready` runs are kept for the
next `poll`, never discarded.

Queue policies, per topic: `latest` topics (camera, proprioception) ride a SUB socket with a tiny receive
high-water mark and are collapsed to the newest message per poll, so a stalled reader holds only a few frames;
`lossless` topics (audio, actions, recording) ride a second SUB socket with a deep queue, and sequence gaps
are counted. ZeroMQ's high-water marks drop new messages, not old ones: after a long stall the first `latest`
message can be up to `sndhwm + latest_rcvhwm` messages old (check `capture_ns` where staleness matters); the
queues, and so memory, stay bounded either way.

Heartbeats: every publisher sends `_hb/<source>` every `heartbeat_period_s` from `service()`, which a node
calls every loop iteration; a subscriber declares the publisher lost after `LOST_AFTER_PERIODS` silent
periods (so within 3 periods) and back at its next heartbeat. A restarted publisher numbers its topics from 0
again; a subscriber counts that as a reset (sequence went backwards), not as a gap.

Recording and replay use the same classes: `Subscriber(endpoints, {}, every=Policy.LOSSLESS)` receives
every topic (never the internal `_hb/` and `_ready/` ones), and `Publisher(endpoint, source, nodrop=True)`
with `republish(msg)` sends recorded messages unchanged, waiting for a full subscriber queue instead of
dropping, heartbeating for the recorded sources, and `prefixes`/`readers()`/`wait_for_readers()` tell who is
subscribed to what.

The hot paths (`publish`, `poll`) are written for latency, since every Python step on them shows up in the
hop (the code runs cold, woken from a poll): a message is one ZeroMQ frame up to 64 KiB of payload, a known
stream's header is neither rebuilt nor re-parsed (see runtime/messages.py), one clock read per poll, one
lookup per message for its statistics; `python -m launch.bench transport` measures them against bare pyzmq.
"""

import hashlib
import ipaddress
import logging
import math
import os
import secrets
import threading
import time
import urllib.parse
from collections import defaultdict, deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path

import numpy as np
import zmq
import zmq.auth
from zmq.auth.thread import ThreadAuthenticator
from zmq.backend import Socket as _BackendSocket
from zmq.backend import zmq_poll as _zmq_poll

from runtime.messages import (
    INLINE_MAX_BYTES,
    DecodeLimits,
    Decoder,
    Message,
    MessageError,
    TopicEncoder,
    check_name,
    encode,
    topic_prefix,
)

log = logging.getLogger(__name__)

HEARTBEAT_PREFIX = "_hb/"
READY_PREFIX = "_ready/"
MAX_TRACKED_SOURCES = 256  # publishers whose liveness a subscriber tracks; more are counted, not stored
MAX_TRACKED_TOPICS = 4096  # topics an `every` subscriber keeps statistics for; more are delivered, counted
LOST_AFTER_PERIODS = 2.5  # < 3: the subscriber must know within 3 heartbeat periods
_EMPTY = np.zeros(0, np.uint8)


class Policy(StrEnum):
    LATEST = "latest"
    LOSSLESS = "lossless"


class TransportSecurityError(RuntimeError):
    """Refusal to expose a socket beyond this machine without CurveZMQ keys."""


# ----------------------------------------------------------------------------------------- context
_context: zmq.Context | None = None
_context_pid: int | None = None
_context_lock = threading.Lock()


def context() -> zmq.Context:
    """The process's one ZeroMQ context. A forked child gets its own: a context must not cross a fork."""
    global _context, _context_pid, _context_lock
    if _context_pid != os.getpid():
        _context_lock = threading.Lock()  # a lock held by another thread at fork time stays held in the child
    with _context_lock:
        if _context is None or _context_pid != os.getpid():
            _context, _context_pid = zmq.Context(), os.getpid()
        return _context


# ----------------------------------------------------------------------------------------- endpoints
def is_loopback(endpoint: str) -> bool:
    """ipc:// and inproc:// stay on this machine; tcp:// is loopback only on 127.0.0.0/8, ::1, localhost."""
    scheme, _, rest = endpoint.partition("://")
    if scheme in ("ipc", "inproc"):
        return True
    if scheme != "tcp":
        return False
    host = _tcp_host(rest)
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # an interface name or hostname: assume it can be reached from outside


def _tcp_host(address: str) -> str:
    try:
        return urllib.parse.urlsplit(f"//{address}").hostname or ""
    except ValueError:  # e.g. an unclosed IPv6 bracket
        return ""


def _set_ipv6(sock: zmq.Socket, endpoint: str) -> None:
    """ZeroMQ binds and connects IPv6 literals (tcp://[::1]:port) only on sockets with IPV6 set."""
    scheme, _, rest = endpoint.partition("://")
    if scheme == "tcp" and ":" in _tcp_host(rest):
        sock.setsockopt(zmq.IPV6, 1)


@dataclass(frozen=True)
class CurveServer:
    """Keys for a publisher bound beyond loopback: its secret certificate, and the clients it accepts."""

    secret_key_file: Path
    authorized_clients_dir: Path


@dataclass(frozen=True)
class CurveClient:
    """Keys for a subscriber: its own secret certificate and the server's public certificate."""

    secret_key_file: Path
    server_public_key_file: Path


KEYS_HELP = (
    "make keys with `python -m launch.keys --out keys/` (ZeroMQ certificates via zmq.auth), then pass "
    "CurveServer(secret_key_file=keys/secret/server.key_secret, authorized_clients_dir=keys/public/clients)"
)

NO_CURVE = "this libzmq was built without CURVE support; install a pyzmq wheel (it bundles libsodium)"

_authenticator: ThreadAuthenticator | None = None
_authenticator_lock = threading.Lock()


def _load_server_keys(curve: CurveServer) -> tuple[bytes, bytes, Path]:
    """The server's key pair and authorized-clients directory, or a TransportSecurityError saying why not."""
    if not zmq.has("curve"):
        raise TransportSecurityError(NO_CURVE)
    try:
        public, secret = zmq.auth.load_certificate(curve.secret_key_file)
    except (OSError, ValueError) as exc:
        raise TransportSecurityError(f"cannot read {curve.secret_key_file}: {exc}; {KEYS_HELP}") from exc
    if secret is None:
        raise TransportSecurityError(f"{curve.secret_key_file} holds no secret key; {KEYS_HELP}")
    clients = Path(curve.authorized_clients_dir)
    if not clients.is_dir() or not any(clients.glob("*.key")):
        # pyzmq's authenticator would only log this and then refuse every client, silently.
        raise TransportSecurityError(f"{clients} holds no client public keys (*.key); {KEYS_HELP}")
    return public, secret, clients.resolve()


def client_keys(curve: CurveClient | None) -> tuple[bytes, bytes, bytes] | None:
    """A subscriber's keys (None: a plain connection), or a TransportSecurityError saying why not."""
    if curve is None:
        return None
    if not zmq.has("curve"):
        raise TransportSecurityError(NO_CURVE)
    try:
        public, secret = zmq.auth.load_certificate(curve.secret_key_file)
        server_public, _ = zmq.auth.load_certificate(curve.server_public_key_file)
    except (OSError, ValueError) as exc:
        raise TransportSecurityError(f"cannot read CurveZMQ keys: {exc}; {KEYS_HELP}") from exc
    if secret is None:
        raise TransportSecurityError(f"{curve.secret_key_file} holds no secret key; {KEYS_HELP}")
    return public, secret, server_public


def _start_authenticator(ctx: zmq.Context, clients_dir: Path) -> str:
    """ZAP handler so a CURVE server accepts only clients whose public keys are in `clients_dir`.

    Returns the ZAP domain to set on the server socket: one per directory, so two publishers in one process
    with different authorized clients do not overwrite each other's list."""
    global _authenticator
    with _authenticator_lock:
        if _authenticator is None or _authenticator.context is not ctx:  # a forked child starts its own
            _authenticator = ThreadAuthenticator(ctx)
            _authenticator.start()
        domain = "hamrt-" + hashlib.sha256(str(clients_dir).encode()).hexdigest()[:16]  # ZAP domains < 256 B
        _authenticator.configure_curve(domain=domain, location=str(clients_dir))
    return domain


def server_keys(endpoint: str, curve: CurveServer | None) -> tuple[bytes, bytes, Path] | None:
    """The keys a socket bound at `endpoint` will use: none on loopback, required anywhere else (refused,
    saying how to make keys, before any socket exists)."""
    if not is_loopback(endpoint) and curve is None:
        raise TransportSecurityError(
            f"refusing to bind {endpoint}: it is reachable from other machines and has no CurveZMQ keys; "
            f"{KEYS_HELP}; or bind a loopback endpoint (ipc:// or tcp://127.0.0.1)"
        )
    return _load_server_keys(curve) if curve is not None else None


def secure_server(sock: zmq.Socket, keys: tuple[bytes, bytes, Path] | None) -> None:
    """Make `sock` a CURVE server accepting only the authorized clients (before it binds); None: no-op."""
    if keys is None:
        return
    public, secret, clients_dir = keys
    sock.zap_domain = _start_authenticator(sock.context, clients_dir).encode()
    sock.curve_secretkey = secret
    sock.curve_publickey = public
    sock.curve_server = True


def secure_client(sock: zmq.Socket, keys: tuple[bytes, bytes, bytes] | None) -> None:
    """Make `sock` a CURVE client of the server whose public key is in `keys` (before it connects)."""
    if keys is not None:
        sock.curve_publickey, sock.curve_secretkey, sock.curve_serverkey = keys


# ----------------------------------------------------------------------------------------- publisher
_NOBLOCK = int(zmq.NOBLOCK)
_EVENTS = int(zmq.EVENTS)
_POLLIN = int(zmq.POLLIN)
_INTERNAL = (HEARTBEAT_PREFIX, READY_PREFIX)
# pyzmq's compiled send, without the Python wrapper zmq.Socket.send adds for routing ids and groups (unused
# here): a few microseconds less between a sample's capture time and its send, measured.
_send = _BackendSocket.send
_NONCES_REMEMBERED = 256  # handshake nonces a publisher remembers, to count distinct handshakes


class Publisher:
    """Publishes enveloped ndarrays on one bound endpoint, numbering each topic's messages from 0.

    By default a send never waits: ZeroMQ drops a message for a subscriber whose queue (`sndhwm`) is full
    and delivers it to the others. With `nodrop=True` (XPUB_NODROP) a full queue refuses the send for
    everyone instead, and `publish`/`republish` wait for room, servicing handshakes and heartbeats meanwhile,
    up to `send_timeout_s`: for replays, where a late message is better than a lost one. A live sensor
    should not wait for its slowest reader.
    """

    def __init__(
        self,
        endpoint: str,
        source: str,
        *,
        heartbeat_period_s: float = 0.2,  # a dead publisher is noticed within 3 periods: 0.6 s
        sndhwm: int = 100,  # per subscriber; a stalled reader costs at most this many messages of memory
        nodrop: bool = False,
        send_timeout_s: float = 10.0,  # nodrop only: give a send up after waiting this long
        curve: CurveServer | None = None,
        ctx: zmq.Context | None = None,
    ):
        check_name("source", source)
        if not heartbeat_period_s > 0:
            raise ValueError(f"`heartbeat_period_s` must be > 0, got {heartbeat_period_s}")
        if not send_timeout_s >= 0:
            raise ValueError(f"`send_timeout_s` must be >= 0, got {send_timeout_s}")
        keys = server_keys(endpoint, curve)  # before any socket exists
        self.source = source
        self.heartbeat_period_s = heartbeat_period_s
        self.nodrop = nodrop
        self.send_timeout_s = send_timeout_s
        self._ctx = ctx or context()
        self._sock = self._ctx.socket(zmq.XPUB)
        self._sock.setsockopt(zmq.LINGER, 0)
        self._sock.setsockopt(zmq.SNDHWM, sndhwm)
        # Every subscription and every unsubscription, a disconnected subscriber's included: exact counts.
        self._sock.setsockopt(zmq.XPUB_VERBOSER, 1)
        self._sock.setsockopt(zmq.SNDTIMEO, 0)
        if nodrop:  # without it an XPUB socket drops silently at the high-water mark (it never raises Again)
            self._sock.setsockopt(zmq.XPUB_NODROP, 1)
        _set_ipv6(self._sock, endpoint)
        try:
            secure_server(self._sock, keys)
            self._sock.bind(endpoint)
        except zmq.ZMQError as exc:
            self._sock.close()
            raise RuntimeError(f"{source}: cannot bind {endpoint}: {exc}") from exc
        # Where it is bound, a wildcard port resolved (tcp://127.0.0.1:* -> tcp://127.0.0.1:41234).
        self.endpoint = self._sock.getsockopt_string(zmq.LAST_ENDPOINT) or endpoint
        self._topics: dict[str, TopicEncoder] = {}  # each topic's encoder, which holds its next seq
        # Sources heartbeated from service(): this publisher's own, then those of republished messages.
        self.sources: list[str] = [source]
        self._next_heartbeat = 0.0
        self.subscriptions = 0  # live topic subscriptions (handshakes and heartbeats excluded)
        # Live subscriptions by prefix (handshake nonces excluded; `_hb/` included: one per subscriber).
        self.prefixes: dict[str, int] = {}
        self.welcomes = 0  # handshake welcomes sent (one per subscribing socket and attempt)
        self.handshakes = 0  # distinct handshake nonces answered (about one per subscriber)
        self._nonces: dict[str, None] = {}  # the last few nonces answered, oldest first
        # Sends the socket refused. ZeroMQ drops a slow subscriber's overflow silently (it never blocks the
        # others), so that loss shows up as sequence gaps at the subscriber, not here.
        self.dropped = 0
        self.control_dropped = 0  # heartbeats and welcomes refused (a full queue)
        self.blocked_s = 0.0  # nodrop: time spent waiting for room in a full queue

    # -------------------------------------------------------------- sending
    def publish(self, topic: str, kind: str, data: np.ndarray, capture_ns: int) -> int:
        """Send one sample; returns its sequence number on `topic` (consumed even when the send is refused).

        Payloads over 64 KiB are handed to ZeroMQ without a copy and sent later by its I/O thread: do not
        write into `data` after publishing it (publish a fresh array, or a copy of a reused buffer)."""
        encoder = self._topics.get(topic)
        if encoder is None:
            encoder = self._topic(topic)
        seq = encoder.seq
        frames = encoder.encode(seq, capture_ns, time.monotonic_ns(), self.source, kind, data)
        encoder.seq = seq + 1
        try:
            if len(frames) == 1:
                _send(self._sock, frames[0])  # below pyzmq's zero-copy threshold it copies anyway
            else:
                self._sock.send_multipart(frames, copy=False)
        except zmq.Again:
            self._refused(frames)
        return seq

    def republish(self, msg: Message, *, stop: Callable[[], bool] | None = None) -> bool:
        """Send `msg` exactly as it is (topic, seq, capture_ns, send_ns, source, kind, payload): a recorded
        message, replayed. From then on this publisher also heartbeats for `msg.source`, as the original
        publisher did (heartbeats are not recorded), so subscribers see that source alive during a replay.

        True when sent. False when the socket refused it (counted in `dropped`): at once, or with `nodrop`
        after waiting `send_timeout_s` or as soon as `stop()` returns True."""
        encoder = self._topics.get(msg.topic)
        if encoder is None:
            encoder = self._topic(msg.topic)
        frames = encoder.encode(msg.seq, msg.capture_ns, msg.send_ns, msg.source, msg.kind, msg.data)
        if msg.source not in self.sources and len(self.sources) < MAX_TRACKED_SOURCES:  # bounded
            self.sources.append(msg.source)  # checked by the encoder
            self._next_heartbeat = 0.0  # heartbeat the new source at the next service()
        return self._send(frames, stop)

    def _topic(self, topic: str) -> TopicEncoder:
        if isinstance(topic, str) and topic.startswith(_INTERNAL):
            raise ValueError(
                f"{topic!r}: topics starting with {' or '.join(_INTERNAL)} are the runtime's own"
            )
        encoder = self._topics[topic] = TopicEncoder(topic)  # checks the name
        return encoder

    def _try_send(self, frames: list) -> None:
        if len(frames) == 1:
            _send(self._sock, frames[0])  # below pyzmq's zero-copy threshold a copy is what it does anyway
        else:
            self._sock.send_multipart(frames, copy=False)

    def _send(self, frames: list, stop: Callable[[], bool] | None = None) -> bool:
        try:
            self._try_send(frames)
            return True
        except zmq.Again:
            return self._refused(frames, stop)

    def _refused(self, frames: list, stop: Callable[[], bool] | None = None) -> bool:
        """A send found a full queue: count it, or with `nodrop` wait for room. A multipart message is
        refused whole, at its first frame."""
        if not self.nodrop:
            self.dropped += 1
            return False
        started = time.monotonic()
        while True:
            self.service()
            time.sleep(0.0005)
            try:
                self._try_send(frames)
                break
            except zmq.Again:
                now = time.monotonic()
                if now - started >= self.send_timeout_s or (stop is not None and stop()):
                    self.blocked_s += now - started
                    self.dropped += 1
                    return False
        self.blocked_s += time.monotonic() - started
        return True

    def _send_control(
        self, topic: str, kind: str, data: np.ndarray = _EMPTY, source: str | None = None
    ) -> None:
        stamp = time.monotonic_ns()
        try:
            self._try_send(encode(topic, 0, stamp, stamp, source or self.source, kind, data))
        except zmq.Again:
            self.control_dropped += 1

    # -------------------------------------------------------------- subscriptions, handshakes, heartbeats
    def service(self) -> None:
        """Answer handshakes, track subscriptions and send heartbeats when due; call every loop iteration."""
        sock = self._sock
        while sock.getsockopt(_EVENTS) & _POLLIN:  # cheaper than catching zmq.Again every call
            self._on_subscription(sock.recv(_NOBLOCK))
        now = time.monotonic()
        if now >= self._next_heartbeat:
            # On a fixed schedule, so a loop that calls service() every few ms does not stretch the period.
            self._next_heartbeat += self.heartbeat_period_s
            if self._next_heartbeat <= now:
                self._next_heartbeat = now + self.heartbeat_period_s
            period = np.array([self.heartbeat_period_s], np.float64)
            for source in self.sources:
                self._send_control(HEARTBEAT_PREFIX + source, "heartbeat", period, source)

    def _on_subscription(self, event: bytes) -> None:
        if not event:
            return
        subscribed, prefix = event[0] == 1, event[1:].decode(errors="replace")
        if prefix.startswith(READY_PREFIX):
            if subscribed:
                self._send_control(prefix, "ready")
                self.welcomes += 1
                if prefix not in self._nonces:  # each socket of a subscriber subscribes the same nonce
                    self.handshakes += 1
                    self._nonces[prefix] = None
                    if len(self._nonces) > _NONCES_REMEMBERED:
                        del self._nonces[next(iter(self._nonces))]
            return
        count = self.prefixes.get(prefix, 0) + (1 if subscribed else -1)
        if count:
            self.prefixes[prefix] = count
        else:
            del self.prefixes[prefix]  # bounded by the live subscriptions
        if not prefix.startswith(HEARTBEAT_PREFIX):
            self.subscriptions += 1 if subscribed else -1

    def readers(self) -> int:
        """Subscribers connected: every `Subscriber` subscribes the heartbeat prefix exactly once."""
        return self.prefixes.get(HEARTBEAT_PREFIX, 0)

    def covered(self, topic: str) -> bool:
        """Whether some subscriber would receive `topic` (a live subscription is a prefix of its frame 0)."""
        head = topic + "\x00"
        return any(n > 0 and head.startswith(p) for p, n in self.prefixes.items())

    def wait_for_subscribers(self, count: int, timeout_s: float) -> bool:
        """Block (servicing handshakes) until `count` topic subscriptions exist or the timeout passes."""
        deadline = time.monotonic() + timeout_s
        while True:
            self.service()
            if self.subscriptions >= count:
                return True
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            self._sock.poll(max(1, min(10, int(remaining * 1000))), zmq.POLLIN)

    def wait_for_readers(
        self, count: int, topics: Iterable[str] = (), timeout_s: float = 10.0, settle_s: float = 0.5
    ) -> bool:
        """Block (servicing) until `count` subscribers are connected; False on timeout.

        Then, for up to `settle_s` more, until every topic in `topics` has a live subscription and `count`
        readiness handshakes were answered (a subscriber need not want every topic, nor handshake), and a
        short grace for the welcomed subscribers to return from `wait_ready`."""
        topics = list(topics)
        deadline = time.monotonic() + timeout_s
        while True:
            self.service()
            if self.readers() >= count:
                break
            if time.monotonic() >= deadline:
                return False
            self._sock.poll(10, zmq.POLLIN)
        settle_end = time.monotonic() + settle_s
        while time.monotonic() < settle_end:
            self.service()
            if self.handshakes >= count and all(self.covered(t) for t in topics):
                break
            self._sock.poll(10, zmq.POLLIN)
        grace_end = time.monotonic() + 0.1
        while time.monotonic() < grace_end:
            self.service()
            time.sleep(0.005)
        return True

    def close(self) -> None:
        self._sock.close(linger=0)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


# ----------------------------------------------------------------------------------------- subscriber
@dataclass
class TopicStats:
    received: int = 0
    gaps: int = 0  # lossless topics: messages missing between consecutive sequence numbers (or dropped here)
    resets: int = 0  # sequence went backwards: the publisher restarted
    superseded: int = 0  # latest topics: older messages replaced by a newer one within a poll
    last_seq: int = -1


@dataclass
class PublisherLiveness:
    period_s: float
    last_seen: float  # time.monotonic() of the last heartbeat or message
    alive: bool = True
    lost: int = 0
    back: int = 0


@dataclass
class SubscriberStats:
    topics: dict[str, TopicStats] = field(default_factory=lambda: defaultdict(TopicStats))
    dropped: dict[str, int] = field(default_factory=lambda: defaultdict(int))  # malformed, by reason
    untracked_sources: int = 0  # messages from sources beyond MAX_TRACKED_SOURCES (delivered, not tracked)
    # `every`: messages on topics beyond MAX_TRACKED_TOPICS (delivered, not tracked)
    untracked_topics: int = 0


class _Stream:
    """What a subscriber tracks per (topic, source): the topic's statistics, the source's liveness and the
    sequence number due next (-1 before the first message)."""

    __slots__ = ("stats", "live", "next_seq")

    def __init__(self, stats: TopicStats, live: PublisherLiveness):
        self.stats, self.live, self.next_seq = stats, live, -1


_MAX_NONCES = 16  # handshake topics kept subscribed while waiting: a slow publisher's late welcome counts
_LIVENESS_CHECK_S = 0.01  # how often a polling subscriber looks for silent publishers


class Subscriber:
    """Receives the topics it is given from any number of publishers' endpoints.

    `topics` maps exact topic names to their policy; a message whose topic is not a key is discarded, unless
    `every` is a policy: then every other topic is received too, with that policy (a recorder). The runtime's
    own `_hb/` and `_ready/` topics are never returned as data."""

    def __init__(
        self,
        endpoints: list[str],
        topics: dict[str, Policy | str],
        *,
        every: Policy | str | None = None,
        name: str = "subscriber",
        latest_rcvhwm: int = 4,  # frames a stalled reader may hold per latest-topic publisher
        lossless_rcvhwm: int = 10_000,  # 100 s of audio chunks before gaps appear
        curve: CurveClient | None = None,
        limits: DecodeLimits | None = None,
        ctx: zmq.Context | None = None,
    ):
        if not endpoints:
            raise ValueError("`endpoints` must name at least one publisher endpoint")
        self.name = name
        self.endpoints = list(endpoints)
        self.policies = {check_name("topic", t): Policy(p) for t, p in topics.items()}
        self.every = Policy(every) if every is not None else None
        self.stats = SubscriberStats()
        self.liveness: dict[str, PublisherLiveness] = {}
        self.events: deque[tuple[float, str, str]] = deque(maxlen=256)  # (time, source, "lost" | "back")
        keys = client_keys(curve)
        self._ctx = ctx or context()
        self._socks: dict[Policy, zmq.Socket] = {}
        used = set(self.policies.values()) | ({self.every} if self.every is not None else set())
        used = used or {Policy.LATEST}
        # Heartbeats ride the latest socket when there is one: they are tiny and only the newest matters.
        heartbeat_policy = Policy.LATEST if Policy.LATEST in used else Policy.LOSSLESS
        try:
            for policy, hwm in ((Policy.LATEST, latest_rcvhwm), (Policy.LOSSLESS, lossless_rcvhwm)):
                if policy not in used:
                    continue  # one socket fewer to poll on every receive
                sock = self._ctx.socket(zmq.SUB)
                self._socks[policy] = sock
                sock.setsockopt(zmq.LINGER, 0)
                sock.setsockopt(zmq.RCVHWM, hwm)
                secure_client(sock, keys)
                if policy is self.every:
                    sock.setsockopt(zmq.SUBSCRIBE, b"")  # every topic; the others' are not delivered twice
                for topic, p in self.policies.items():
                    if p is policy:
                        # With its 0x00: the publisher filters on the exact topic, not on every extension.
                        sock.setsockopt(zmq.SUBSCRIBE, topic_prefix(topic))
                if policy is heartbeat_policy:
                    sock.setsockopt(zmq.SUBSCRIBE, HEARTBEAT_PREFIX.encode())
                for endpoint in self.endpoints:
                    _set_ipv6(sock, endpoint)
                    sock.connect(endpoint)
        except Exception:
            self.close()
            raise
        self._pollitems = [(sock, _POLLIN) for sock in self._socks.values()]
        self._sock_info = {sock: (policy, [(sock, _POLLIN)]) for policy, sock in self._socks.items()}
        self._decoder = Decoder(limits)
        self._head_max = self._decoder.limits.max_header_bytes + INLINE_MAX_BYTES  # frame 0, at most
        self._welcomed: dict[Policy, set[str]] = {p: set() for p in self._socks}
        self._nonces: deque[str] = deque()  # handshake topics subscribed on every socket, oldest first
        self._streams: dict[tuple[str, str], _Stream] = {}  # (topic, source) -> its statistics and next seq
        # Messages read but not yet returned: lossless in arrival order (those read while wait_ready runs are
        # held, at most `lossless_rcvhwm` of them); latest, the newest per topic.
        self._pending: list[Message] = []
        self._held: deque[Message] = deque()
        self._pending_latest: dict[str, Message] = {}
        self._held_max = lossless_rcvhwm if lossless_rcvhwm > 0 else None
        self._next_liveness_check = 0.0
        self._last_log = 0.0
        self._last_lost_log = 0.0

    # -------------------------------------------------------------- handshake
    def wait_ready(self, timeout_s: float = 5.0, publishers: int | None = None) -> bool:
        """True once every endpoint's publisher has welcomed both sockets (default: one per endpoint).

        From then on, every message those publishers send on the subscribed topics arrives (up to the queue
        limits). Messages that arrive meanwhile are kept for the next `poll`. Welcomes add up over calls that
        return False, so short calls in a loop work; the call that returns True starts the next one afresh."""
        wanted = publishers if publishers is not None else len(self.endpoints)
        deadline = time.monotonic() + max(0.0, timeout_s)
        while True:
            # A fresh nonce per attempt: a welcome the publisher could not send (a full queue) is asked again.
            self._subscribe_nonce()
            attempt_end = min(deadline, time.monotonic() + 0.2)
            while True:
                self._receive(max(0.0, min(0.02, attempt_end - time.monotonic())), holding=True)
                if all(len(w) >= wanted for w in self._welcomed.values()):
                    self._unsubscribe_nonces()
                    for welcomed in self._welcomed.values():
                        welcomed.clear()
                    return True
                if time.monotonic() >= attempt_end:
                    break
            if time.monotonic() >= deadline:
                return False  # nonces stay subscribed: a welcome on any of them counts in the next call

    def _subscribe_nonce(self) -> None:
        nonce = READY_PREFIX + secrets.token_hex(8)
        for sock in self._socks.values():
            sock.setsockopt(zmq.SUBSCRIBE, nonce.encode())
        self._nonces.append(nonce)
        while len(self._nonces) > _MAX_NONCES:
            old = self._nonces.popleft().encode()
            for sock in self._socks.values():
                sock.setsockopt(zmq.UNSUBSCRIBE, old)

    def _unsubscribe_nonces(self) -> None:
        while self._nonces:
            old = self._nonces.popleft().encode()
            for sock in self._socks.values():
                sock.setsockopt(zmq.UNSUBSCRIBE, old)

    # -------------------------------------------------------------- receiving
    def poll(self, timeout_s: float) -> list[Message]:
        """Wait up to `timeout_s` for messages, then drain everything queued.

        Lossless messages come in arrival order; each latest topic contributes only its newest message.
        """
        latest = self._pending_latest
        self._receive(0.0 if self._pending or self._held or latest else timeout_s)
        out = self._pending
        self._pending = []
        if self._held:  # read by wait_ready, before these
            out[:0] = self._held
            self._held.clear()
        if latest:
            out.extend(latest.values())
            latest.clear()
        return out

    def _receive(self, timeout_s: float, holding: bool = False) -> None:
        """Wait up to `timeout_s`, then read everything queued into the pending buffers."""
        ready = _zmq_poll(self._pollitems, int(timeout_s * 1000) if timeout_s > 0 else 0)
        now = time.monotonic()  # one clock read per poll: the receive time of everything it drains
        decode, policies, every, head_max = (
            self._decoder.decode_parts,
            self.policies,
            self.every,
            self._head_max,
        )
        for sock, _ in ready:
            policy, pollitem = self._sock_info[sock]
            recv = sock.recv
            for _ in range(100_000):  # bounded drain: a flood cannot pin this loop forever
                try:
                    # A Frame, not bytes: it knows whether more frames follow (asking the socket costs more).
                    frame = recv(_NOBLOCK, copy=False)
                except zmq.Again:
                    break
                payload = None
                try:
                    if frame.more:
                        payload = last = recv(_NOBLOCK, copy=False)  # the payload frame: kept, not copied
                        parts = 2
                        while last.more:
                            last = recv(_NOBLOCK, copy=False)
                            parts += 1
                        if parts > 2:
                            raise MessageError("frames", f"expected 1 or 2 frames, got {parts}")
                    if len(frame) > head_max:  # refused before it is copied; within it, decode checks exactly
                        raise MessageError("oversize", f"frame 0 is {len(frame)} bytes, limit {head_max}")
                    msg = decode(frame.bytes, payload)  # frame 0 (at most a few KiB past 64 KiB): copied
                except MessageError as exc:
                    self._drop(exc)
                else:
                    topic = msg.topic
                    if topic[0] == "_" and topic.startswith(_INTERNAL):
                        self._control(msg, policy, now)  # never delivered as data
                    # Exact topics, on the socket of their policy: the every socket receives all topics (and a
                    # foreign publisher may not filter).
                    elif policies.get(topic, every) is policy:
                        self._accept(msg, policy, now, holding)
                # More queued? Cheaper than raising and catching zmq.Again after the last message.
                if not _zmq_poll(pollitem, 0):
                    break
        if now >= self._next_liveness_check:
            self._next_liveness_check = now + _LIVENESS_CHECK_S
            self._check_liveness(now)

    def _accept(self, msg: Message, policy: Policy, now: float, holding: bool) -> None:
        stream = self._streams.get((msg.topic, msg.source))  # two publishers of a topic each number it
        if stream is None:
            stream = self._new_stream(msg.topic, msg.source, now)
        live = stream.live
        if live.alive:
            live.last_seen = now
        else:
            self._heard(msg.source, now)
        stats, seq = stream.stats, msg.seq
        stats.received += 1
        stats.last_seq = seq
        if seq != stream.next_seq and stream.next_seq >= 0:
            if seq < stream.next_seq:
                stats.resets += 1
            elif policy is Policy.LOSSLESS:
                stats.gaps += seq - stream.next_seq
        stream.next_seq = seq + 1
        if policy is Policy.LOSSLESS:
            if not holding:
                self._pending.append(msg)
                return
            # Only messages held across wait_ready calls are capped; what one poll reads is returned whole.
            if self._held_max is not None and len(self._held) >= self._held_max:
                self.stats.topics[self._held.popleft().topic].gaps += 1  # never returned: lost here
            self._held.append(msg)
        else:
            if msg.topic in self._pending_latest:
                stats.superseded += 1
            self._pending_latest[msg.topic] = msg

    def _new_stream(self, topic: str, source: str, now: float) -> _Stream:
        stats = self.stats.topics.get(topic) or self._topic_stats(topic)
        live = self.liveness.get(source)
        if live is None:
            self._heard(source, now)  # starts tracking it, or counts it untracked when there are too many
            live = self.liveness.get(source)
            if live is None:
                return _Stream(stats, PublisherLiveness(0.2, now))  # delivered, not tracked
        if len(self._streams) >= MAX_TRACKED_SOURCES * 16:  # a sender inventing names cannot grow memory
            self.stats.untracked_sources += 1
            return _Stream(stats, live)
        stream = self._streams[topic, source] = _Stream(stats, live)
        return stream

    def _topic_stats(self, topic: str) -> TopicStats:
        if self.every is not None and len(self.stats.topics) >= MAX_TRACKED_TOPICS:
            self.stats.untracked_topics += 1  # a sender inventing topic names cannot grow memory
            return TopicStats()
        return self.stats.topics[topic]

    def _control(self, msg: Message, policy: Policy, now: float) -> None:
        if msg.kind == "heartbeat" and msg.topic.startswith(HEARTBEAT_PREFIX):
            # Any shape holding one float64 (a sender's (), (1,) or (1, 1)); a bad value would disable or
            # hair-trigger the lost timer, so it falls back to the default period.
            one_float = msg.data.size == 1 and msg.data.dtype == np.float64
            period = float(msg.data.reshape(-1)[0]) if one_float else 0.0
            self._heard(msg.source, now, period if math.isfinite(period) and period > 0 else 0.2)
        elif msg.kind == "ready" and msg.topic in self._nonces:
            self._welcomed[policy].add(msg.source)  # any of ours: the publisher saw our topics before it

    def _heard(self, source: str, now: float, period_s: float | None = None) -> None:
        live = self.liveness.get(source)
        if live is None:
            if len(self.liveness) >= MAX_TRACKED_SOURCES:  # a sender inventing names cannot grow memory
                self.stats.untracked_sources += 1
                return
            self.liveness[source] = PublisherLiveness(period_s or 0.2, now)
            return
        if period_s is not None:
            live.period_s = period_s
        live.last_seen = now
        if not live.alive:
            live.alive = True
            live.back += 1
            self.events.append((now, source, "back"))
            log.info("%s: publisher %s is back", self.name, source)

    def _check_liveness(self, now: float) -> None:
        for source, live in self.liveness.items():
            if live.alive and now - live.last_seen > LOST_AFTER_PERIODS * live.period_s:
                live.alive = False
                live.lost += 1
                self.events.append((now, source, "lost"))
                for welcomed in self._welcomed.values():
                    welcomed.discard(source)  # a restarted publisher must welcome us again
                if now - self._last_lost_log > 1.0:  # rate-limited like drops: many sources may go at once
                    self._last_lost_log = now
                    log.warning(
                        "%s: publisher %s lost (silent %.2f s)", self.name, source, now - live.last_seen
                    )

    def _drop(self, exc: MessageError) -> None:
        self.stats.dropped[exc.reason] += 1
        now = time.monotonic()
        if now - self._last_log > 1.0:  # rate-limited: a flood of garbage must not flood the log
            self._last_log = now
            log.warning(
                "%s: dropped malformed message (%s); totals %s", self.name, exc, dict(self.stats.dropped)
            )

    def close(self) -> None:
        for sock in self._socks.values():
            sock.close(linger=0)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
