"""A node publishing synthetic streams at native rates, each stamp late by a random delay (driver jitter).

params: {topics: {TOPIC: {shape: [..], jitter: 0.2}}}: each capture happens on a regular grid at the topic's
`rate_hz` (from the graph); it is stamped and published `U(0, jitter * period)` later, so stamps jitter the
way a driver's do while the true captures stay regular. The payload's first value is the true capture time
in milliseconds since the node started (float64), so a test can score the scheduler's estimates.
"""

import time

import numpy as np

from nodes.node import Node
from runtime.clock import now_ns


class JitterNode(Node):
    def connect(self) -> None:
        self.rng = np.random.default_rng(abs(hash(self.spec.name)) % 2**32)
        self.t0 = now_ns() + 50_000_000
        self.topics = []
        for topic, p in (self.params.get("topics") or {}).items():
            period = 1e9 / self.spec.publishes[topic].rate_hz
            shape = tuple(p.get("shape", [1]))
            self.topics.append(
                {
                    "topic": topic,
                    "period": period,
                    "shape": shape,
                    "jitter": p.get("jitter", 0.2),
                    "n": 0,
                    "due": None,
                }
            )

    def step(self) -> None:
        now = now_ns()
        for t in self.topics:
            if t["due"] is None:
                t["true"] = self.t0 + t["n"] * t["period"]
                t["due"] = t["true"] + self.rng.uniform(0, t["jitter"] * t["period"])
            if now >= t["due"]:
                data = np.zeros(t["shape"], np.float64)
                data.flat[0] = (t["true"] - self.t0) / 1e6
                self.publish(t["topic"], data, int(t["due"]))
                t["n"] += 1
                t["due"] = None
        time.sleep(0)


NODE = JitterNode
