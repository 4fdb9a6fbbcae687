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
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path

import numpy as np
import zmq
import zmq.auth
from zmq.auth.thread import ThreadAuthenticator

from runtime.messages import DecodeLimits, Message, MessageError, check_kind, check_name, decode, encode

log = logging.getLogger(__name__)

HEARTBEAT_PREFIX = "_hb/"
READY_PREFIX = "_ready/"
MAX_TRACKED_SOURCES = 256  # publishers whose liveness a subscriber tracks; more are counted, not stored
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


def _load_client_keys(curve: CurveClient) -> tuple[bytes, bytes, bytes]:
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


# ----------------------------------------------------------------------------------------- publisher
class Publisher:
    """Publishes enveloped ndarrays on one bound endpoint, numbering each topic's messages from 0."""

    def __init__(
        self,
        endpoint: str,
        source: str,
        *,
        heartbeat_period_s: float = 0.2,  # a dead publisher is noticed within 3 periods: 0.6 s
        sndhwm: int = 100,  # per subscriber; a stalled reader costs at most this many messages of memory
        curve: CurveServer | None = None,
        ctx: zmq.Context | None = None,
    ):
        check_name("source", source)
        if not heartbeat_period_s > 0:
            raise ValueError(f"`heartbeat_period_s` must be > 0, got {heartbeat_period_s}")
        if not is_loopback(endpoint) and curve is None:
            raise TransportSecurityError(
                f"refusing to bind {endpoint}: it is reachable from other machines and has no CurveZMQ keys; "
                f"{KEYS_HELP}; or bind a loopback endpoint (ipc:// or tcp://127.0.0.1)"
            )
        keys = _load_server_keys(curve) if curve is not None else None  # before any socket exists
        self.source = source
        self.heartbeat_period_s = heartbeat_period_s
        self._ctx = ctx or context()
        self._sock = self._ctx.socket(zmq.XPUB)
        self._sock.setsockopt(zmq.LINGER, 0)
        self._sock.setsockopt(zmq.SNDHWM, sndhwm)
        # Every subscription and every unsubscription, a disconnected subscriber's included: exact counts.
        self._sock.setsockopt(zmq.XPUB_VERBOSER, 1)
        self._sock.setsockopt(zmq.SNDTIMEO, 0)
        _set_ipv6(self._sock, endpoint)
        try:
            if keys is not None:
                public, secret, clients_dir = keys
                self._sock.zap_domain = _start_authenticator(self._ctx, clients_dir).encode()
                self._sock.curve_secretkey = secret
                self._sock.curve_publickey = public
                self._sock.curve_server = True
            self._sock.bind(endpoint)
        except zmq.ZMQError as exc:
            self._sock.close()
            raise RuntimeError(f"{source}: cannot bind {endpoint}: {exc}") from exc
        # Where it is bound, a wildcard port resolved (tcp://127.0.0.1:* -> tcp://127.0.0.1:41234).
        self.endpoint = self._sock.getsockopt_string(zmq.LAST_ENDPOINT) or endpoint
        self._seq: dict[str, int] = defaultdict(int)
        self._checked: set[str] = set()
        self._next_heartbeat = 0.0
        self.subscriptions = 0  # live topic subscriptions (handshakes and heartbeats excluded)
        # Sends the socket refused. ZeroMQ drops a slow subscriber's overflow silently (it never blocks the
        # others), so that loss shows up as sequence gaps at the subscriber, not here.
        self.dropped = 0

    def publish(self, topic: str, kind: str, data: np.ndarray, capture_ns: int) -> int:
        """Send one sample; returns its sequence number on `topic`.

        Payloads over 64 KiB are handed to ZeroMQ without a copy and sent later by its I/O thread: do not
        write into `data` after publishing it (publish a fresh array, or a copy of a reused buffer)."""
        if topic not in self._checked:
            check_name("topic", topic)
            check_kind(kind)
            self._checked.add(topic)
        seq = self._seq[topic]
        self._seq[topic] = seq + 1
        frames = encode(topic, seq, capture_ns, time.monotonic_ns(), self.source, kind, data)
        try:
            self._sock.send_multipart(frames, copy=False)
        except zmq.Again:
            self.dropped += 1
        return seq

    def service(self) -> None:
        """Answer handshakes and send a heartbeat when due; call every loop iteration."""
        while self._sock.get(zmq.EVENTS) & zmq.POLLIN:  # cheaper than catching zmq.Again every call
            event = self._sock.recv(zmq.NOBLOCK)
            if not event:
                continue
            subscribed, prefix = event[0] == 1, event[1:].decode(errors="replace")
            if prefix.startswith(READY_PREFIX):
                if subscribed:
                    self._send_control(prefix, "ready")
            elif not prefix.startswith(HEARTBEAT_PREFIX):
                self.subscriptions += 1 if subscribed else -1
        now = time.monotonic()
        if now >= self._next_heartbeat:
            # On a fixed schedule, so a loop that calls service() every few ms does not stretch the period.
            self._next_heartbeat += self.heartbeat_period_s
            if self._next_heartbeat <= now:
                self._next_heartbeat = now + self.heartbeat_period_s
            period = np.array([self.heartbeat_period_s], np.float64)
            self._send_control(HEARTBEAT_PREFIX + self.source, "heartbeat", period)

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

    def _send_control(self, topic: str, kind: str, data: np.ndarray = _EMPTY) -> None:
        frames = encode(topic, 0, time.monotonic_ns(), time.monotonic_ns(), self.source, kind, data)
        try:
            self._sock.send_multipart(frames, copy=False)
        except zmq.Again:
            self.dropped += 1

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


_MAX_NONCES = 16  # handshake topics kept subscribed while waiting: a slow publisher's late welcome counts


class Subscriber:
    """Receives the topics it is given from any number of publishers' endpoints.

    `topics` maps exact topic names to their policy; a message whose topic is not a key is discarded."""

    def __init__(
        self,
        endpoints: list[str],
        topics: dict[str, Policy | str],
        *,
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
        self.stats = SubscriberStats()
        self.liveness: dict[str, PublisherLiveness] = {}
        self.events: deque[tuple[float, str, str]] = deque(maxlen=256)  # (time, source, "lost" | "back")
        self._limits = limits or DecodeLimits()
        keys = _load_client_keys(curve) if curve is not None else None
        self._ctx = ctx or context()
        self._socks: dict[Policy, zmq.Socket] = {}
        used = {p for p in self.policies.values()} or {Policy.LATEST}
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
                if keys is not None:
                    sock.curve_publickey, sock.curve_secretkey, sock.curve_serverkey = keys
                for topic, p in self.policies.items():
                    if p is policy:
                        sock.setsockopt(zmq.SUBSCRIBE, topic.encode())
                if policy is heartbeat_policy:
                    sock.setsockopt(zmq.SUBSCRIBE, HEARTBEAT_PREFIX.encode())
                for endpoint in self.endpoints:
                    _set_ipv6(sock, endpoint)
                    sock.connect(endpoint)
        except Exception:
            self.close()
            raise
        self._poller = zmq.Poller()
        for sock in self._socks.values():
            self._poller.register(sock, zmq.POLLIN)
        self._welcomed: dict[Policy, set[str]] = {p: set() for p in self._socks}
        self._nonces: deque[str] = deque()  # handshake topics subscribed on every socket, oldest first
        self._next_seq: dict[tuple[str, str], int] = {}  # (topic, source) -> the sequence number due next
        # Messages read but not yet returned (those that arrive while wait_ready runs): lossless in arrival
        # order, at most `lossless_rcvhwm` of them; latest, the newest per topic.
        self._pending: deque[Message] = deque()
        self._pending_latest: dict[str, Message] = {}
        self._pending_max = lossless_rcvhwm if lossless_rcvhwm > 0 else None
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
        self._receive(0.0 if self._pending or self._pending_latest else timeout_s)
        out = list(self._pending)
        out.extend(self._pending_latest.values())
        self._pending.clear()
        self._pending_latest.clear()
        return out

    def _receive(self, timeout_s: float, holding: bool = False) -> None:
        """Wait up to `timeout_s`, then read everything queued into the pending buffers."""
        ready = dict(self._poller.poll(max(0, int(timeout_s * 1000))))
        now = time.monotonic()
        for policy, sock in self._socks.items():
            if sock not in ready:
                continue
            for _ in range(100_000):  # bounded drain: a flood cannot pin this loop forever
                # Asking the socket is cheaper than raising and catching zmq.Again on every empty read.
                if not sock.get(zmq.EVENTS) & zmq.POLLIN:
                    break
                frames = sock.recv_multipart(zmq.NOBLOCK, copy=False)
                try:
                    msg = decode(frames, self._limits)
                except MessageError as exc:
                    self._drop(exc)
                    continue
                if self._control(msg, policy, now):
                    continue
                # Exact topics, on the socket of their policy: SUB filters on prefixes, so "cam" also lets
                # "camera/x" through, and a latest "a" also passes a lossless "a/b" on the wrong socket.
                if self.policies.get(msg.topic) is not policy:
                    continue
                self._accept(msg, policy, now, holding)
        self._check_liveness(now)

    def _accept(self, msg: Message, policy: Policy, now: float, holding: bool = False) -> None:
        stats = self.stats.topics[msg.topic]
        stats.received += 1
        self._heard(msg.source, now)
        key = (msg.topic, msg.source)  # two publishers of one topic each number it from 0
        expected = self._next_seq.get(key)
        if expected is None and len(self._next_seq) >= MAX_TRACKED_SOURCES * 16:
            self.stats.untracked_sources += 1
            key = None
        if expected is not None and msg.seq < expected:
            stats.resets += 1
        elif expected is not None and msg.seq > expected and policy is Policy.LOSSLESS:
            stats.gaps += msg.seq - expected
        if key is not None:
            self._next_seq[key] = msg.seq + 1
        stats.last_seq = msg.seq
        if policy is Policy.LOSSLESS:
            # Only messages held across wait_ready calls are capped; what one poll reads is returned whole.
            if holding and self._pending_max is not None and len(self._pending) >= self._pending_max:
                self.stats.topics[self._pending.popleft().topic].gaps += 1  # never returned: lost here
            self._pending.append(msg)
        else:
            if msg.topic in self._pending_latest:
                stats.superseded += 1
            self._pending_latest[msg.topic] = msg

    def _control(self, msg: Message, policy: Policy, now: float) -> bool:
        if msg.kind == "heartbeat" and msg.topic.startswith(HEARTBEAT_PREFIX):
            # Any shape holding one float64 (a sender's (), (1,) or (1, 1)); a bad value would disable or
            # hair-trigger the lost timer, so it falls back to the default period.
            one_float = msg.data.size == 1 and msg.data.dtype == np.float64
            period = float(msg.data.reshape(-1)[0]) if one_float else 0.0
            self._heard(msg.source, now, period if math.isfinite(period) and period > 0 else 0.2)
            return True
        if msg.kind == "ready" and msg.topic.startswith(READY_PREFIX):
            if msg.topic in self._nonces:  # any of ours: the publisher saw our topics before that nonce
                self._welcomed[policy].add(msg.source)
            return True
        return False

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
                    log.warning("%s: publisher %s lost (silent %.2f s)", self.name, source,
                                now - live.last_seen)

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
