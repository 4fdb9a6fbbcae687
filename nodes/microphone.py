"""The microphone node: PortAudio capture (or a WAV file) published as `mic/audio`, one chunk per message.

Params (graph YAML): the fields of `MicrophoneConfig` (`device`, `file`, `sample_rate_hz`, `chunk_ms`, ...).
Chunks are stamped with the ADC time of their first sample on the monotonic clock. The device's counters
(overflows, dropped chunks, dead callbacks, restarts) are published once a second as `mic/stats` when the
graph declares it, so a listener sees lost audio, not just silence.
"""

import logging

import numpy as np

from nodes.microphone_device import Microphone, MicrophoneConfig
from nodes.node import Node
from runtime.clock import now_ns

log = logging.getLogger(__name__)
STATS_KEYS = ("chunks", "overflows", "dropped_chunks", "dead_callbacks", "restarts")


class MicrophoneNode(Node):
    def connect(self) -> None:
        fields = set(MicrophoneConfig.__dataclass_fields__)
        self.mic = Microphone(MicrophoneConfig(**{k: v for k, v in self.params.items() if k in fields}))
        self.mic.connect()
        self.topic = next(t for t, s in self.spec.publishes.items() if s.kind == "audio")
        self.next_stats_ns = 0

    def step(self) -> None:
        # Drain everything the callback queued: the loop runs at the chunk rate, but may fall behind a little.
        timeout_s = 0.5 / self.spec.rate_hz
        while (sample := self.mic.read(timeout_s)) is not None:
            chunk, capture_ns = sample
            self.publish(self.topic, chunk, capture_ns)
            timeout_s = 0.0
        now = now_ns()
        if "mic/stats" in self.spec.publishes and now >= self.next_stats_ns:
            self.next_stats_ns = now + 1_000_000_000
            stats = self.mic.stats
            self.publish("mic/stats", np.array([stats.get(k, 0) for k in STATS_KEYS], np.int64), now)

    def disconnect(self) -> None:
        if hasattr(self, "mic"):
            log.info("microphone: %s", self.mic.stats)
            self.mic.disconnect()


NODE = MicrophoneNode
