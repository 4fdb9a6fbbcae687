"""The runtime's one timebase, and the offset to a node's clock on another host.

`now_ns()` is `time.monotonic_ns()`: every capture timestamp in the runtime is taken with it. Monotonic, not
wall time, because NTP (or a person) may step the wall clock at any moment, and a capture timestamp that
jumps backwards breaks every ordering, interval and latency computed from it. The monotonic clock only ever
moves forwards, at the rate of the host's oscillator; its zero is arbitrary (usually boot), so it means
nothing on another host.

A node on another host stamps its captures with *its* `now_ns()`. `ClockServer` answers time requests on
that host; `estimate_offset` runs an NTP-style request/reply exchange against it and keeps the sample with
the smallest round-trip delay; `RemoteClock` converts the node's timestamps into the local timebase. The
server binds like a publisher: a loopback endpoint as it is, any other only with CurveZMQ keys
(`curve=CurveServer(...)`, and `CurveClient` on the estimating side), refused before anything binds.

Wire format (msgpack, never pickle): request `{"t0": int}`, reply `{"t0": int, "t1": int, "t2": int}` where
t0 is the client's send time, t1 the server's receive time and t2 the server's send time. A request the
server cannot read gets `{"error": str}`.

Two oscillators drift apart by tens of parts per million (tens of microseconds per second), so an estimate
ages: re-run `estimate_offset` periodically rather than once at start-up.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType

import msgpack
import zmq

from runtime.transport import CurveClient, CurveServer, client_keys, secure_client, secure_server, server_keys
from runtime.transport import context as _shared_context  # one ZeroMQ context per process, fork-safe

log = logging.getLogger(__name__)

Clock = Callable[[], int]

# How often the server thread wakes to look at its stop flag; bounds how long close() waits.
_POLL_MS = 50
# A time request is a few dozen bytes; anything much bigger is not one, and libzmq drops the peer.
_MAX_MSG_BYTES = 4096


def now_ns() -> int:
    """Monotonic time in integer nanoseconds: the timebase of every capture timestamp in the runtime."""
    return time.monotonic_ns()


class ClockSyncError(RuntimeError):
    """No usable time reply came back from a clock server."""


def _is_int(value: object) -> bool:
    # bool is a subclass of int, and msgpack decodes true/false as bool: not a timestamp.
    return isinstance(value, int) and not isinstance(value, bool)


class ClockServer:
    """Answers time requests on a ROUTER socket bound at `endpoint`, from a background thread.

    `endpoint` may use port 0 (or `*`) for a free port; `self.endpoint` is the address actually bound.
    `clock` is the server's timebase (default `now_ns`); tests inject an offset clock. The socket is
    created, bound, used and closed by the server thread alone (ZeroMQ sockets are not thread-safe); the
    constructor returns once the bind has succeeded and re-raises its error if it failed.

    ROUTER rather than REP: it answers REQ and DEALER clients alike and can never be wedged in REP's
    strict recv/send alternation by a misbehaving peer.
    """

    def __init__(
        self,
        endpoint: str,
        clock: Clock = now_ns,
        context: zmq.Context | None = None,
        curve: CurveServer | None = None,
    ):
        # Like a publisher: loopback as it is, anything else only with CurveZMQ keys (refused before binding).
        self._keys = server_keys(endpoint, curve)
        self.requested_endpoint = endpoint
        self.endpoint = endpoint
        self.served = 0
        self.malformed = 0
        self._clock = clock
        self._ctx = context if context is not None else _shared_context()
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._bind_error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name=f"clock-server {endpoint}", daemon=True)
        self._thread.start()
        self._ready.wait()
        if self._bind_error is not None:
            self._thread.join()
            raise self._bind_error

    @property
    def running(self) -> bool:
        return self._thread.is_alive()

    def close(self, timeout_s: float = 1.0) -> None:
        """Stop the thread and close its socket; idempotent."""
        self._stop.set()
        if self._thread is not threading.current_thread():
            self._thread.join(timeout_s)
            if self._thread.is_alive():
                log.warning("clock server %s did not stop within %.2f s", self.endpoint, timeout_s)

    def __enter__(self) -> ClockServer:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def _run(self) -> None:
        try:
            sock = self._ctx.socket(zmq.ROUTER)
            sock.setsockopt(zmq.LINGER, 0)
            sock.setsockopt(zmq.RCVTIMEO, _POLL_MS)  # wake to check the stop flag
            sock.setsockopt(zmq.SNDTIMEO, _POLL_MS)
            sock.setsockopt(zmq.MAXMSGSIZE, _MAX_MSG_BYTES)
            try:
                secure_server(sock, self._keys)
                sock.bind(self.requested_endpoint)
            except BaseException:
                sock.close(0)
                raise
            self.endpoint = sock.getsockopt_string(zmq.LAST_ENDPOINT) or self.requested_endpoint
        except BaseException as e:  # handed to the constructor, which raises it
            self._bind_error = e
            self._ready.set()
            return
        self._ready.set()
        log.debug("clock server listening on %s", self.endpoint)
        try:
            while not self._stop.is_set():
                try:
                    frames = sock.recv_multipart()
                except zmq.Again:
                    continue
                # Stamp t1 before any parsing so that decode time counts as server time, not as path delay.
                t1 = self._clock()
                try:
                    self._answer(sock, frames, t1)
                except zmq.Again:
                    log.debug("clock server %s: reply not sent (peer gone?)", self.endpoint)
                except zmq.ZMQError as e:
                    if e.errno == zmq.ETERM:
                        break
                    log.warning("clock server %s: %s", self.endpoint, e)
                except Exception:  # a bug or a hostile clock must not kill the time service
                    log.exception("clock server %s: unexpected error handling a request", self.endpoint)
        except zmq.ZMQError as e:
            if e.errno != zmq.ETERM:
                log.exception("clock server %s stopped on a ZeroMQ error", self.endpoint)
        finally:
            sock.close(0)
            log.debug("clock server %s stopped", self.endpoint)

    def _answer(self, sock: zmq.Socket, frames: list[bytes], t1: int) -> None:
        # frames = [identity, (b"" delimiter from REQ/DEALER-with-delimiter,) payload]; the reply goes back
        # with the same envelope so both kinds of client receive it.
        envelope, payload = frames[:-1], frames[-1]
        t0 = self._parse(payload)
        if t0 is None:
            self.malformed += 1
            reply = msgpack.packb({"error": "malformed time request: expected msgpack {'t0': int}"})
            sock.send_multipart([*envelope, reply])
            return
        # Counted before the reply leaves: a client that has its reply must see the count include it.
        self.served += 1
        # t2 as late as possible; packing a three-int map after it costs microseconds.
        t2 = self._clock()
        sock.send_multipart([*envelope, msgpack.packb({"t0": t0, "t1": t1, "t2": t2})])

    def _parse(self, payload: bytes) -> int | None:
        if len(payload) > _MAX_MSG_BYTES:  # MAXMSGSIZE should have stopped it; never decode a huge blob
            log.debug("clock server %s: oversized request (%d bytes)", self.endpoint, len(payload))
            return None
        try:
            request = msgpack.unpackb(payload, raw=False, strict_map_key=False)
        except Exception as e:  # msgpack raises several types (ExtraData, FormatError, ValueError, ...)
            log.debug("clock server %s: undecodable request: %s", self.endpoint, e)
            return None
        if not isinstance(request, dict) or not _is_int(request.get("t0")):
            log.debug("clock server %s: malformed request %r", self.endpoint, request)
            return None
        return request["t0"]


# --- Client ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class OffsetEstimate:
    """`offset_ns` = server clock - local clock, from the sample with the smallest round-trip delay.

    `uncertainty_ns` = `delay_ns` / 2 bounds the error of that sample whatever the split of the delay
    between the two directions; `samples` counts the exchanges that returned a usable reply.
    """

    offset_ns: int
    delay_ns: int
    samples: int
    uncertainty_ns: int


def _exchange(sock: zmq.Socket, clock: Clock, timeout_s: float) -> tuple[int, int, int, int] | None:
    """One request/reply; returns (t0, t1, t2, t3), or None if no matching reply came within `timeout_s`."""
    t0 = clock()
    try:
        # Empty delimiter frame: the envelope REQ would send, so REP servers can answer this DEALER too.
        sock.send_multipart([b"", msgpack.packb({"t0": t0})])
    except zmq.Again:
        return None
    deadline = time.monotonic() + timeout_s
    while (remaining_ms := int((deadline - time.monotonic()) * 1000)) > 0:
        if not sock.poll(remaining_ms, zmq.POLLIN):
            return None
        frames = sock.recv_multipart()
        t3 = clock()
        try:
            reply = msgpack.unpackb(frames[-1], raw=False, strict_map_key=False)
        except Exception:
            log.debug("undecodable time reply %r", frames[-1][:64])
            continue
        if not isinstance(reply, dict):
            continue
        if "error" in reply:
            log.warning("clock server rejected a time request: %s", reply["error"])
            continue
        # A reply to an earlier, timed-out request may still arrive on DEALER; only ours counts.
        if reply.get("t0") != t0 or not (_is_int(reply.get("t1")) and _is_int(reply.get("t2"))):
            continue
        return t0, reply["t1"], reply["t2"], t3
    return None


def estimate_offset(
    endpoint: str,
    samples: int = 16,
    timeout_s: float = 0.5,
    clock: Clock = now_ns,
    context: zmq.Context | None = None,
    curve: CurveClient | None = None,
) -> OffsetEstimate:
    """Estimate (server clock - local `clock`) at `endpoint` with `samples` NTP-style exchanges.

    Per sample: offset = ((t1 - t0) + (t2 - t3)) / 2, delay = (t3 - t0) - (t2 - t1). The sample with the
    smallest delay wins, as in NTP and PTP: extra delay is queueing, which is rarely the same in both
    directions, and an asymmetry of d shifts the offset by d/2, so the least-delayed sample is the least
    wrong. Each sample waits at most `timeout_s`; a sample that times out is skipped. Raises
    `ClockSyncError` if none of them got a reply.
    """
    if samples < 1:
        raise ValueError(f"`samples` must be >= 1, got {samples}")
    if not timeout_s > 0:
        raise ValueError(f"`timeout_s` must be > 0, got {timeout_s}")
    keys = client_keys(curve)
    ctx = context if context is not None else _shared_context()
    timeout_ms = max(1, int(timeout_s * 1000))
    # DEALER, not REQ: a REQ socket that timed out waiting for its reply refuses to send again, while
    # DEALER just discards late replies by their t0 (see _exchange).
    sock = ctx.socket(zmq.DEALER)
    best: tuple[int, int] | None = None  # (delay, offset)
    used = 0
    try:
        sock.setsockopt(zmq.LINGER, 0)  # never block close() on a request no server will take
        sock.setsockopt(zmq.RCVTIMEO, timeout_ms)
        sock.setsockopt(zmq.SNDTIMEO, timeout_ms)
        secure_client(sock, keys)
        sock.connect(endpoint)
        for _ in range(samples):
            stamps = _exchange(sock, clock, timeout_s)
            if stamps is None:
                log.debug("time request to %s timed out after %.3f s", endpoint, timeout_s)
                continue
            t0, t1, t2, t3 = stamps
            if t2 < t1 or t3 < t0:
                log.warning("non-monotonic timestamps from %s: %r; sample dropped", endpoint, stamps)
                continue
            delay = (t3 - t0) - (t2 - t1)
            offset = ((t1 - t0) + (t2 - t3)) // 2
            used += 1
            if best is None or delay < best[0]:
                best = (delay, offset)
    finally:
        sock.close(0)
    if best is None:
        raise ClockSyncError(
            f"no time reply from clock server at {endpoint} "
            f"({samples} request(s), {timeout_s:.3f} s timeout each)"
        )
    # A server that stamps coarsely can make the best delay come out negative by a tick; it is still ~0.
    delay = max(best[0], 0)
    return OffsetEstimate(offset_ns=best[1], delay_ns=delay, samples=used, uncertainty_ns=delay // 2)


@dataclass(frozen=True)
class RemoteClock:
    """Converts between a remote host's `now_ns()` timebase and the local one: local = remote - offset."""

    offset_ns: int
    uncertainty_ns: int = 0

    @classmethod
    def from_estimate(cls, estimate: OffsetEstimate) -> RemoteClock:
        return cls(offset_ns=estimate.offset_ns, uncertainty_ns=estimate.uncertainty_ns)

    @classmethod
    def sync(cls, endpoint: str, **kwargs: object) -> RemoteClock:
        """Estimate the offset to the clock server at `endpoint` (kwargs go to `estimate_offset`)."""
        return cls.from_estimate(estimate_offset(endpoint, **kwargs))  # type: ignore[arg-type]

    def to_local(self, remote_ns: int) -> int:
        """A remote capture timestamp in the local timebase."""
        return remote_ns - self.offset_ns

    def to_remote(self, local_ns: int) -> int:
        """A local timestamp in the remote timebase."""
        return local_ns + self.offset_ns
