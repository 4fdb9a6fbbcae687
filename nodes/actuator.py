"""The actuator node: receives actions, keeps them safe, and commands the robot (the sim node for now).

Every action is checked before it is forwarded: non-finite values are refused (and counted), values are
clamped to the action limits (counted, never silent). A watchdog holds the last safe command when no action
has arrived for `watchdog_s`, and says so once per lapse. Commands go out at the node's rate as
`actuator/command`, so the robot always has a fresh one.

A message on a `stop_topics` topic (default `brain/stop`, sent when the dynamics lock trips, and repeated
while it stays tripped) is a protective stop: the last safe command is held (the arm settles at that
target) and every later action is refused (counted).
"""

import logging

import numpy as np

import envs
from nodes.node import Node
from runtime.clock import now_ns

log = logging.getLogger(__name__)


class ActuatorNode(Node):
    def connect(self) -> None:
        p = self.params
        self.watchdog_s = float(p.get("watchdog_s", 0.5))  # 5 control periods at 10 Hz
        env = envs.make("manipulation", observe_image=False, audio=False, action_mode="absolute")
        self.low = env.action_space.low.astype(np.float64)
        self.high = env.action_space.high.astype(np.float64)
        self.command = np.asarray(
            env.unwrapped.action_for_targets(env.unwrapped.arm_target, -1.0), np.float64
        )
        env.close()
        self.has_command = False
        self.last_action_s: float | None = None
        self.holding = False
        self.stats = {
            "actions": 0,
            "rejected_nonfinite": 0,
            "rejected_shape": 0,
            "clamped": 0,
            "watchdog_trips": 0,
            "refused_stopped": 0,
        }
        self.stop_topics = set(p.get("stop_topics", ["brain/stop"]))
        self.action_topics = set(self.spec.subscribes) - self.stop_topics
        self.stopped = False

    def step(self) -> None:
        now_s = now_ns() / 1e9
        for msg in self.receive(0.0):
            if msg.topic in self.stop_topics:
                if not self.stopped:
                    log.error(
                        "actuator: protective stop from %s: holding the last command, refusing actions",
                        msg.topic,
                    )
                self.stopped = True
                continue
            if msg.topic not in self.action_topics:
                continue
            if self.stopped:
                self.stats["refused_stopped"] += 1
                continue
            action = np.asarray(msg.data, dtype=np.float64)
            if action.shape != self.low.shape:
                self.stats["rejected_shape"] += 1
                continue
            if not np.all(np.isfinite(action)):
                self.stats["rejected_nonfinite"] += 1
                log.warning("actuator: refused a non-finite action %s; holding the last safe command", action)
                continue
            safe = np.clip(action, self.low, self.high)
            if np.any(safe != action):
                self.stats["clamped"] += 1
            self.command, self.has_command = safe, True
            self.stats["actions"] += 1
            self.last_action_s = now_s
            if self.holding:
                self.holding = False
                log.info("actuator: actions resumed")
        if (
            self.last_action_s is not None
            and not self.stopped
            and not self.holding
            and now_s - self.last_action_s > self.watchdog_s
        ):
            self.holding = True
            self.stats["watchdog_trips"] += 1
            log.warning("actuator: no action for %.2f s: holding the last safe command", self.watchdog_s)
        if self.has_command:
            self.publish("actuator/command", self.command.astype(np.float32), now_ns())

    def disconnect(self) -> None:
        log.info("actuator: %s", self.stats)


NODE = ActuatorNode
