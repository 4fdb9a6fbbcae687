"""The loop every node shares: config -> connect -> fixed-rate loop (publish, heartbeat) -> clean exit.

A node is a thin loop around devices and a transport. Its publisher endpoint and its subscriptions come from
the graph (never hard-coded); SIGINT and SIGTERM end the loop, and the summary is logged in `finally`.
"""

import logging
import signal
import time
from pathlib import Path

import numpy as np

from runtime.graph import Graph, NodeSpec
from runtime.latency import LoopTimer
from runtime.messages import Message
from runtime.signals import StopFlag
from runtime.transport import Publisher, Subscriber

log = logging.getLogger(__name__)


class Node:
    """Subclasses implement `step()` (one loop iteration) and may override `connect()`/`disconnect()`."""

    ready_timeout_s = 5.0  # publishers that start later are still heard; this only bounds the start-up wait

    def __init__(self, spec: NodeSpec, graph: Graph, run_dir: Path):
        self.spec, self.graph, self.run_dir = spec, graph, run_dir
        self.params = dict(spec.params)
        self.publisher = (
            Publisher(spec.endpoint(run_dir), spec.name, heartbeat_period_s=graph.heartbeat_period_s)
            if spec.publishes
            else None
        )
        endpoints, topics = graph.subscriptions(spec.name, run_dir)
        self.subscriber = Subscriber(endpoints, topics, name=spec.name) if topics else None
        self.timer = LoopTimer(spec.rate_hz)
        self.stopping = StopFlag()  # SIGINT and SIGTERM end the loop after the current iteration

    def publish(self, topic: str, data: np.ndarray, capture_ns: int) -> int:
        return self.publisher.publish(topic, self.spec.publishes[topic].kind, data, capture_ns)

    def receive(self, timeout_s: float = 0.0) -> list[Message]:
        return self.subscriber.poll(timeout_s) if self.subscriber is not None else []

    def connect(self) -> None:
        """Open devices; runs before the loop."""

    def disconnect(self) -> None:
        """Close devices; runs in `finally`, also after Ctrl-C or SIGTERM."""

    def step(self) -> None:
        """One loop iteration."""

    def idle(self) -> None:
        """What must go on while the node waits for its publishers (a device's own heartbeats)."""

    def _wait_for_publishers(self) -> None:
        # Short handshake attempts, servicing our own publisher in between: two nodes waiting on each other
        # must still answer each other's handshakes.
        deadline = time.monotonic() + self.ready_timeout_s
        while time.monotonic() < deadline and not self.stopping:
            if self.publisher is not None:
                self.publisher.service()
            self.idle()
            if self.subscriber.wait_ready(timeout_s=0.05):
                return
        log.warning(
            "%s: not every publisher answered within %.1f s; continuing (they are heard when they start)",
            self.spec.name,
            self.ready_timeout_s,
        )

    def run(self) -> int:
        signal.signal(signal.SIGINT, self.stopping)
        signal.signal(signal.SIGTERM, self.stopping)
        try:
            self.connect()
            if self.subscriber is not None:
                self._wait_for_publishers()
            while not self.stopping:
                self.timer.tick()
                with self.timer.section("step"):
                    self.step()
                if self.publisher is not None:
                    self.publisher.service()
                self.timer.wait()
        finally:
            if self.stopping:
                log.info("%s: %s received, stopped", self.spec.name, self.stopping.signal)
            summary = self.timer.summary()["step"] if self.timer.sections else {}
            log.info(
                "%s: %d iterations, %d deadline misses, step p50 %.2f ms p99 %.2f ms",
                self.spec.name,
                self.timer.iterations,
                self.timer.deadline_misses,
                summary.get("p50_ms", float("nan")),
                summary.get("p99_ms", float("nan")),
            )
            self.disconnect()
            for socket in (self.publisher, self.subscriber):
                if socket is not None:
                    socket.close()
        return 0
