"""The camera node: OpenCV capture (device index, video file or URL) published as `camera/image`.

Params (graph YAML): `source`, `width`/`height` (resize), `fps`, `loop` (files), and the stall/frozen/
reconnect settings of `CameraConfig`. Each frame is stamped right after `grab()`; the device's counters
(stalls, frozen sources, reconnects) are published once a second as `camera/stats` when the graph declares it.
"""

import logging

import numpy as np

from nodes.camera_device import Camera, CameraConfig
from nodes.node import Node
from runtime.clock import now_ns

log = logging.getLogger(__name__)
STATS_KEYS = ("frames", "dropped", "stalls", "frozen_events", "reconnects", "reconnect_failures")


class CameraNode(Node):
    def connect(self) -> None:
        fields = set(CameraConfig.__dataclass_fields__)
        config = CameraConfig(**{k: v for k, v in self.params.items() if k in fields})
        self.camera = Camera(config)
        self.camera.connect()
        self.topic = next(t for t, s in self.spec.publishes.items() if s.kind == "image")
        self.next_stats_ns = 0

    def step(self) -> None:
        sample = self.camera.read(timeout_s=0.5 / self.spec.rate_hz)
        if sample is not None:
            frame, capture_ns = sample
            self.publish(self.topic, frame, capture_ns)
        now = now_ns()
        if "camera/stats" in self.spec.publishes and now >= self.next_stats_ns:
            self.next_stats_ns = now + 1_000_000_000
            stats = self.camera.stats
            self.publish("camera/stats", np.array([stats.get(k, 0) for k in STATS_KEYS], np.int64), now)

    def disconnect(self) -> None:
        if hasattr(self, "camera"):
            log.info("camera: %s", self.camera.stats)
            self.camera.disconnect()


NODE = CameraNode
