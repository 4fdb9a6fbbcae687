"""ZeroMQ publisher and subscriber: queue policies, readiness handshake, heartbeats, loopback-or-CurveZMQ.

A `Publisher` binds an XPUB socket. Seeing subscriptions lets it answer the readiness handshake: a
`Subscriber` subscribes to its topics, then to a fresh `_ready/<nonce>` topic; ZeroMQ delivers subscriptions
in order on a connection, so when the publisher sees the nonce, the topics before it are live, and it
publishes a welcome on the nonce topic. A subscriber that got the welcome receives everything published
after it (the fix for ZeroMQ's "slow joiner").

Queue policies, per topic: `latest` topics (camera, proprioception) ride a SUB socket with a tiny receive
high-water mark and are collapsed to the newest message per poll, so a stalled reader holds only a few frames;
`lossless` topics (audio, actions, recording) ride a second SUB socket with a deep queue, and sequence gaps
are counted.

Heartbeats: every publisher sends `_hb/<source>` every `heartbeat_period_s` from `service()`, which a node
calls every loop iteration; a subscriber declares the publisher lost after `LOST_AFTER_PERIODS` silent
periods (so within 3 periods) and back at its next heartbeat.
"""

import ipaddress
import logging
import os
import secrets
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


def context() -> zmq.Context:
    """The process's one ZeroMQ context. A forked child gets its own: a context must not cross a fork."""
    global _context, _context_pid
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
    host = urllib.parse.urlsplit(f"//{rest}").hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # an interface name or hostname: assume it can be reached from outside


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
    "make keys with `python -m launch.keys --out keys/` (ZeroMQ certificates via zmq.auth), then pass the "
    "server's secret certificate and the directory of authorized client public keys"
)

_authenticator: ThreadAuthenticator | None = None


def _start_authenticator(ctx: zmq.Context, clients_dir: Path) -> None:
    """ZAP handler so a CURVE server accepts only clients whose public keys are in `clients_dir`."""
    global _authenticator
    if _authenticator is None or _authenticator.context is not ctx:
        _authenticator = ThreadAuthenticator(ctx)
        _authenticator.start()
    _authenticator.configure_curve(domain="*", location=str(clients_dir))


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
        self.endpoint = endpoint
        self.source = source
        self.heartbeat_period_s = heartbeat_period_s
        self._ctx = ctx or context()
        self._sock = self._ctx.socket(zmq.XPUB)
        self._sock.setsockopt(zmq.LINGER, 0)
        self._sock.setsockopt(zmq.SNDHWM, sndhwm)
        self._sock.setsockopt(zmq.XPUB_VERBOSE, 1)  # see every subscription, repeats included
        self._sock.setsockopt(zmq.SNDTIMEO, 0)
        if curve is not None:
            public, secret = zmq.auth.load_certificate(curve.secret_key_file)
            if secret is None:
                raise TransportSecurityError(f"{curve.secret_key_file} holds no secret key; {KEYS_HELP}")
            _start_authenticator(self._ctx, curve.authorized_clients_dir)
            self._sock.curve_secretkey = secret
            self._sock.curve_publickey = public
            self._sock.curve_server = True
        try:
            self._sock.bind(endpoint)
        except zmq.ZMQError as exc:
            self._sock.close()
            raise RuntimeError(f"{source}: cannot bind {endpoint}: {exc}") from exc
        self._seq: dict[str, int] = defaultdict(int)
        self._checked: set[str] = set()
        self._next_heartbeat = 0.0
        self.subscriptions = 0  # live subscriptions seen (topic prefixes, handshakes excluded)
        self.dropped = 0  # sends refused because a subscriber's queue was full

    def publish(self, topic: str, kind: str, data: np.ndarray, capture_ns: int) -> int:
        """Send one sample; returns its sequence number on `topic`."""
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
            else:
                self.subscriptions += 1 if subscribed else -1
        now = time.monotonic()
        if now >= self._next_heartbeat:
            self._next_heartbeat = now + self.heartbeat_period_s
            period = np.array([self.heartbeat_period_s], np.float64)
            self._send_control(HEARTBEAT_PREFIX + self.source, "heartbeat", period)

    def wait_for_subscribers(self, count: int, timeout_s: float) -> bool:
        """Block (servicing handshakes) until `count` topic subscriptions exist or the timeout passes."""
        deadline = time.monotonic() + timeout_s
        while self.subscriptions < count:
            if time.monotonic() >= deadline:
                return False
            self.service()
            self._sock.poll(10, zmq.POLLIN)
        return True

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
    gaps: int = 0  # messages missing between consecutive sequence numbers (lossless topics)
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


class Subscriber:
    """Receives the topics it is given from any number of publishers' endpoints."""

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
        self._ctx = ctx or context()
        self._socks: dict[Policy, zmq.Socket] = {}
        used = {p for p in self.policies.values()} or {Policy.LATEST}
        # Heartbeats ride the latest socket when there is one: they are tiny and only the newest matters.
        heartbeat_policy = Policy.LATEST if Policy.LATEST in used else Policy.LOSSLESS
        for policy, hwm in ((Policy.LATEST, latest_rcvhwm), (Policy.LOSSLESS, lossless_rcvhwm)):
            if policy not in used:
                continue  # one socket fewer to poll on every receive
            sock = self._ctx.socket(zmq.SUB)
            sock.setsockopt(zmq.LINGER, 0)
            sock.setsockopt(zmq.RCVHWM, hwm)
            if curve is not None:
                public, secret = zmq.auth.load_certificate(curve.secret_key_file)
                server_public, _ = zmq.auth.load_certificate(curve.server_public_key_file)
                sock.curve_secretkey, sock.curve_publickey, sock.curve_serverkey = (
                    secret,
                    public,
                    server_public,
                )
            for topic, p in self.policies.items():
                if p is policy:
                    sock.setsockopt(zmq.SUBSCRIBE, topic.encode())
            if policy is heartbeat_policy:
                sock.setsockopt(zmq.SUBSCRIBE, HEARTBEAT_PREFIX.encode())
            for endpoint in self.endpoints:
                sock.connect(endpoint)
            self._socks[policy] = sock
        self._poller = zmq.Poller()
        for sock in self._socks.values():
            self._poller.register(sock, zmq.POLLIN)
        self._welcomed: dict[Policy, set[str]] = {p: set() for p in self._socks}
        self._nonce: str | None = None
        self._last_log = 0.0

    # -------------------------------------------------------------- handshake
    def wait_ready(self, timeout_s: float = 5.0, publishers: int | None = None) -> bool:
        """True once every endpoint's publisher has welcomed both sockets (default: one per endpoint)."""
        wanted = publishers if publishers is not None else len(self.endpoints)
        deadline = time.monotonic() + timeout_s
        while True:
            # A fresh nonce per attempt: a subscription a publisher has not yet seen is retried, not lost.
            self._subscribe_nonce()
            attempt_end = min(deadline, time.monotonic() + 0.2)
            while time.monotonic() < attempt_end:
                self._receive(timeout_s=0.02, keep=False)
                if all(len(w) >= wanted for w in self._welcomed.values()):
                    self._unsubscribe_nonce()
                    return True
            if time.monotonic() >= deadline:
                self._unsubscribe_nonce()
                return False

    def _subscribe_nonce(self) -> None:
        self._unsubscribe_nonce()
        self._nonce = READY_PREFIX + secrets.token_hex(8)
        for sock in self._socks.values():
            sock.setsockopt(zmq.SUBSCRIBE, self._nonce.encode())

    def _unsubscribe_nonce(self) -> None:
        if self._nonce is not None:
            for sock in self._socks.values():
                sock.setsockopt(zmq.UNSUBSCRIBE, self._nonce.encode())
            self._nonce = None

    # -------------------------------------------------------------- receiving
    def poll(self, timeout_s: float) -> list[Message]:
        """Wait up to `timeout_s` for messages, then drain everything queued.

        Lossless messages come in arrival order; each latest topic contributes only its newest message.
        """
        return self._receive(timeout_s, keep=True)

    def _receive(self, timeout_s: float, keep: bool) -> list[Message]:
        out: list[Message] = []
        newest: dict[str, Message] = {}
        if len(self._socks) == 1:  # one socket: zmq's own poll, no Poller bookkeeping
            ((policy, sock),) = self._socks.items()
            ready = {sock: 1} if sock.poll(max(0, int(timeout_s * 1000)), zmq.POLLIN) else {}
        else:
            ready = dict(self._poller.poll(max(0, int(timeout_s * 1000))))
        now = time.monotonic()
        for policy, sock in self._socks.items():
            if sock not in ready:
                continue
            for _ in range(100_000):  # bounded drain: a flood cannot pin this loop forever
                try:
                    frames = sock.recv_multipart(zmq.NOBLOCK, copy=False)
                except zmq.Again:
                    break
                try:
                    msg = decode(frames, self._limits)
                except MessageError as exc:
                    self._drop(exc)
                    continue
                if self._control(msg, policy, now):
                    continue
                if not keep or msg.topic not in self.policies:
                    continue
                stats = self.stats.topics[msg.topic]
                stats.received += 1
                self._heard(msg.source, now)
                if policy is Policy.LOSSLESS:
                    if msg.seq < stats.last_seq:
                        stats.resets += 1
                    elif stats.last_seq >= 0 and msg.seq > stats.last_seq + 1:
                        stats.gaps += msg.seq - stats.last_seq - 1
                    stats.last_seq = msg.seq
                    out.append(msg)
                else:
                    if msg.topic in newest:
                        stats.superseded += 1
                    stats.last_seq = msg.seq
                    newest[msg.topic] = msg
        self._check_liveness(now)
        out.extend(newest.values())
        return out

    def _control(self, msg: Message, policy: Policy, now: float) -> bool:
        if msg.kind == "heartbeat" and msg.topic.startswith(HEARTBEAT_PREFIX):
            period = float(msg.data[0]) if msg.data.size == 1 and msg.data.dtype == np.float64 else 0.2
            self._heard(msg.source, now, period if period > 0 else 0.2)
            return True
        if msg.kind == "ready" and msg.topic.startswith(READY_PREFIX):
            if msg.topic == self._nonce:
                self._welcomed[policy].add(msg.source)
            return True
        return False

    def _heard(self, source: str, now: float, period_s: float | None = None) -> None:
        live = self.liveness.get(source)
        if live is None:
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
                log.warning("%s: publisher %s lost (silent %.2f s)", self.name, source, now - live.last_seen)

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
