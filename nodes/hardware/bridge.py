"""An arm with its own controller, on our wire format (docs/wire-format.md, "A remote arm"), as a bus.

The controller owns its servos, their limits and their torque; the hardware node above it (node.py, arm.py)
is the same as for a serial arm: calibration, the safety filter, the watchdog, torque off on every exit. The
conversation, every message the wire format's envelope:

- the controller binds an XPUB at `port` (the profile's `bus.port`) and publishes `bridge/state`, float64
  (J + 1,): its joints' positions in radians, in its own order (a joint's `id` in the profile is its index
  here; a controller may have more joints than the profile drives), then its torque, 1.0 on or 0.0 off;
  `capture_ns` when they were read;
- we bind an XPUB at `command_port` (`bus.command_port`), where the controller connects a SUB, and publish
  `bridge/target`, float64 (max id + 1,), the goal positions in radians (NaN: a joint we do not drive, to
  hold), and `bridge/torque`, uint8 (1,), the arm's torque, 1 on or 0 off; a message each time either
  changes, and the torque again whenever the controller's state disagrees with it;
- both sides heartbeat and answer the readiness handshake. The controller must stop its arm when our
  heartbeats stop (three periods, 0.6 s): a node killed outright then still ends in a stop, which a serial
  servo cannot do. The node heartbeats on every read, and while it waits for its publishers (`service`).

So the node's code runs unchanged, this bus speaks in the serial servos' register units: a position is
ticks of a 4096-per-turn virtual servo centred at 2048 (calibration.py), 1.5 mrad a tick, so joint limits
stay within +-pi (the profile refuses others). A read takes the next state to arrive, waiting up to
`timeout_s`, so consecutive reads see consecutive states (the node's velocities); failing that, the last one
if it arrived within `stale_s`; failing that, it is retried (`retries`) like a missing status packet, and a
controller that stays silent is a BusError naming its endpoint. Freshness is judged by arrival: the
controller's clock need not be ours.
"""

import logging
import math
import time
from collections.abc import Sequence

import numpy as np
import zmq

from nodes.hardware.bus import BusError, MotorBus, Retry
from nodes.hardware.calibration import CENTER_TICKS, TICKS_PER_TURN
from runtime.clock import now_ns
from runtime.transport import Publisher, Subscriber

log = logging.getLogger(__name__)
STATE, TARGET, TORQUE = "bridge/state", "bridge/target", "bridge/torque"
SOURCE = "hamrt"  # our side's name in the envelope's `source` and heartbeats
CONNECT_TIMEOUT_S = 3.0  # for the controller to answer the handshake and connect to our command endpoint


def to_ticks(rad: float) -> int:
    return round(CENTER_TICKS + rad * TICKS_PER_TURN / (2 * math.pi))


def to_rad(ticks: int) -> float:
    return (ticks - CENTER_TICKS) * 2 * math.pi / TICKS_PER_TURN


class ZmqBus(MotorBus):
    REGISTERS = {"present_position": (0, 4), "goal_position": (1, 4), "torque_enable": (2, 1)}
    PROTOCOL = "zmq"

    def __init__(
        self,
        port: str,
        command_port: str,
        ids: Sequence[int],
        retries: int = 3,
        stale_s: float = 0.05,
        timeout_s: float = 0.02,
    ):
        """`port`: the controller's state endpoint; `command_port`: ours, for targets and torque. `ids`:
        the joints' indices in the controller's vectors."""
        super().__init__(port, 0, ids, retries)
        if not command_port:
            raise ValueError("a zmq bus needs `command_port`: the endpoint the controller reads targets from")
        self.command_port, self.stale_s, self.timeout_s = command_port, stale_s, timeout_s
        self.joints = max(self.ids) + 1
        self.targets = np.full(self.joints, np.nan)  # rad; NaN for a joint not ours to drive: it holds
        self.torque = False  # what we asked for: one switch for the arm
        self._state: np.ndarray | None = None
        self._state_at = -math.inf  # monotonic time it arrived
        self._consumed = False  # the state was returned by a read already
        self._pub = self._sub = None

    @property
    def reported_torque(self) -> bool | None:
        """The torque the controller's last state reports (None before one)."""
        return None if self._state is None else bool(self._state[-1] > 0.5)

    def service(self) -> None:
        """Heartbeats and handshakes on our endpoint (the node calls it while it waits)."""
        with self._lock:
            if self._pub is not None:
                self._pub.service()

    # ---- the protocol --------------------------------------------------------------------------------------
    def _open(self) -> None:
        try:
            self._pub = Publisher(self.command_port, SOURCE)
            # lossless, and the newest taken: a `latest` queue of a few messages fills while the node is
            # busy and then holds the oldest ones
            self._sub = Subscriber([self.port], {STATE: "lossless"}, name=SOURCE)
        except (RuntimeError, ValueError, zmq.ZMQError) as exc:  # a port in use, a malformed endpoint
            self._close()
            raise BusError(f"cannot open the zmq bus ({self.port}, {self.command_port}): {exc}") from None
        if not self._sub.wait_ready(CONNECT_TIMEOUT_S):
            self._close()
            raise BusError(f"no controller answers at {self.port} (within {CONNECT_TIMEOUT_S:g} s)")
        if not self._pub.wait_for_readers(1, (TARGET, TORQUE), CONNECT_TIMEOUT_S):
            self._close()
            raise BusError(f"the controller at {self.port} did not connect to {self.command_port}")

    def _close(self) -> None:
        for end in (self._sub, self._pub):
            if end is not None:
                end.close()
        self._pub = self._sub = None

    def _latest(self) -> np.ndarray:
        """The controller's next state (waiting up to `timeout_s`), else its last if it arrived within
        `stale_s`; Retry if neither."""
        self._pub.service()  # heartbeats and handshakes on our endpoint
        deadline = time.monotonic() + self.timeout_s
        while True:
            wait = 0.0 if (self._fresh() and not self._consumed) else max(0.0, deadline - time.monotonic())
            msgs = self._sub.poll(wait)
            if msgs:  # the newest; those before it are past
                data = np.asarray(msgs[-1].data, np.float64)
                ours = data[self.ids + [-1]] if data.ndim == 1 and len(data) > self.joints else None
                if ours is None or not np.isfinite(ours).all():
                    raise Retry("corrupt", f"{STATE} {data.shape}: want {self.joints}+ joints, then torque")
                self._state, self._state_at, self._consumed = data, time.monotonic(), False
                self._resend_torque()
            if (self._fresh() and not self._consumed) or (time.monotonic() >= deadline and self._fresh()):
                self._consumed = True
                return self._state
            if time.monotonic() >= deadline:
                raise Retry("no_reply", f"no {STATE} from {self.port} for {self.stale_s * 1e3:.0f} ms")

    def _resend_torque(self) -> None:
        """Torque off asked for and the controller still on: say it again (a message can be lost, and a
        controller restarted knows nothing). Torque on is never repeated: a controller that stopped its arm
        by itself is reported (`reported_torque`), not overridden."""
        if not self.torque and self.reported_torque:
            self._pub.publish(TORQUE, "state", np.zeros(1, np.uint8), now_ns())

    def _fresh(self) -> bool:
        return time.monotonic() - self._state_at <= self.stale_s

    def _ping(self, servo: int) -> int:
        self._latest()
        return 0  # no model number: the controller's joints, not servos

    def _read(self, servo: int, address: int, size: int) -> int:
        return self._sync_read([servo], address, size)[servo]

    def _write(self, servo: int, address: int, size: int, value: int) -> None:
        self._sync_write({servo: value}, address, size)

    def _sync_read(self, servos: Sequence[int], address: int, size: int) -> dict[int, int]:
        state = self._latest()  # one state for all: the joints as the controller read them together
        if address == 0:
            return {s: to_ticks(state[s]) for s in servos}
        return {s: int(self.reported_torque) if address == 2 else 0 for s in servos}

    def disconnect(self) -> None:
        """Torque off, confirmed by the controller's state (a serial bus reads each servo back), then the
        sockets closed; a controller that does not confirm within a second is logged as an error."""
        if not self._connected:
            return
        try:
            self.disable_torque()
            deadline = time.monotonic() + 1.0
            while time.monotonic() < deadline:
                try:
                    self._latest()
                    if not self.reported_torque:
                        break
                except Retry:
                    pass
                time.sleep(self.timeout_s)  # `_latest` says it again meanwhile
            else:
                log.error("bus %s: the controller did not confirm torque off within 1 s", self.port)
        except BusError as exc:
            log.error("bus %s: torque-off on disconnect failed: %s", self.port, exc)
        finally:
            self._close()
            self._connected = False

    def _sync_write(self, values: dict[int, int], address: int, size: int) -> None:
        if address == 1:
            for servo, ticks in values.items():
                self.targets[servo] = to_rad(ticks)
            self._pub.publish(TARGET, "action", self.targets.copy(), now_ns())
        elif address == 2:
            wanted = {bool(on) for on in values.values()}
            if len(wanted) != 1 or set(values) != set(self.ids):
                raise BusError("a remote controller's torque is one switch for the whole arm")
            self.torque = wanted.pop()
            self._pub.publish(TORQUE, "state", np.array([int(self.torque)], np.uint8), now_ns())
        self._pub.service()
