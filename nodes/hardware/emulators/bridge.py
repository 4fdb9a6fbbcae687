"""A remote arm controller on our wire format (nodes/hardware/bridge.py), for `launch.hw --port emulator`
with the `zmq-bridge` profile and for tests: the real bus code talks to it over real ZeroMQ sockets.

Its joints move toward their targets at their speed limit while torque is on, and stay where they are when
it is off. It stops (torque off) when the runtime's heartbeats stop, as a controller must.
"""

import shutil
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from nodes.hardware.bridge import SOURCE, STATE, TARGET, TORQUE
from runtime.clock import now_ns
from runtime.transport import Publisher, Subscriber


class RemoteArmEmulator:
    def __init__(
        self,
        positions,
        max_velocity_rad_s: float = 3.0,
        state_hz: float = 100.0,
        port: str | None = None,
        command_port: str | None = None,
    ):
        """`positions`: the joints where they rest at start (rad). Endpoints default to fresh ipc paths."""
        self.positions = np.array(positions, np.float64)
        self.targets = self.positions.copy()
        self.torque = False
        self.max_velocity, self.period_s = max_velocity_rad_s, 1.0 / state_hz
        self._directory = Path(tempfile.mkdtemp(prefix="hamrt-bridge-"))
        self.port = port or f"ipc://{self._directory}/state"
        self.command_port = command_port or f"ipc://{self._directory}/command"
        self.silenced = False  # a controller that stops publishing (tests)
        self.stops = 0  # times it stopped because the runtime's heartbeats stopped
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name="remote-arm", daemon=True)

    def start(self) -> "RemoteArmEmulator":
        self._thread.start()
        if not self._ready.wait(5.0):
            raise RuntimeError("the remote arm emulator did not start")
        return self

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2.0)
        shutil.rmtree(self._directory, ignore_errors=True)  # its ipc sockets

    def __enter__(self) -> "RemoteArmEmulator":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()

    def move_by_hand(self, joint: int, rad: float) -> None:
        with self._lock:
            self.positions[joint] = rad

    def _run(self) -> None:
        """At `state_hz`: commands in, joints moved, the state out. Torque on moves the joints toward their
        targets (so the arm holds where its targets are, not where it was when torque came on)."""
        pub = Publisher(self.port, "controller")
        sub = Subscriber([self.command_port], {TARGET: "latest", TORQUE: "latest"}, name="controller")
        self._ready.set()
        last = due = time.monotonic()
        try:
            while not self._stop.is_set():
                for msg in sub.poll(max(0.0, due - time.monotonic())):
                    data = np.asarray(msg.data, np.float64).reshape(-1)
                    with self._lock:
                        if msg.topic == TARGET:
                            n = min(len(data), len(self.positions))
                            held = ~np.isfinite(data[:n])  # not driven: hold where it is
                            self.targets[:n] = np.where(held, self.targets[:n], data[:n])
                        elif len(data) == 1:  # the arm's one torque switch
                            self.torque = bool(data[0])
                pub.service()
                now = time.monotonic()
                if now < due:
                    continue
                due = max(due + self.period_s, now)  # the state at its rate, whatever the commands do
                live = sub.liveness.get(SOURCE)
                with self._lock:
                    if self.torque and live is not None and not live.alive:
                        self.torque = False  # the runtime is gone: stop the arm
                        self.stops += 1
                    if self.torque:
                        step = self.max_velocity * (now - last)
                        self.positions += np.clip(self.targets - self.positions, -step, step)
                    state = np.append(self.positions, 1.0 if self.torque else 0.0)
                last = now
                if not self.silenced:
                    pub.publish(STATE, "joint", state, now_ns())
        finally:
            sub.close()
            pub.close()
