"""The goal node: reach goals for a real arm, in the task stream's layout (`goal/task`), so the brain plans
for a real arm as it does for the simulated one (`launch.hw`).

Every `period_s` a new episode: its goal point is drawn as the simulated reach task draws them (the env reset
with the episode's seed, so a run is reproducible), in the arm's base frame, metres. The message is the sim
node's `sim/task` layout (episode, end-effector, cube pose, goal); a real arm has no tracked cube and no
measured end-effector here, so those fields carry the scene's cube pose (the planner's private copy of the
world puts it there, out of the way of a reach) and zeros. Publishes at the node's rate.
"""

import logging

import numpy as np

import envs
from nodes.node import Node
from runtime.clock import now_ns

log = logging.getLogger(__name__)


class GoalNode(Node):
    def connect(self) -> None:
        p = self.params
        self.task = str(p.get("task", "reach"))
        if self.task != "reach":
            raise ValueError(
                f"`task` must be 'reach' on a real arm (push needs a tracked cube), got {self.task!r}"
            )
        self.period_s = float(p.get("period_s", 8.0))
        if not self.period_s > 0:
            raise ValueError(f"`period_s` must be > 0, got {self.period_s}")
        self.seed = int(p.get("seed", 0))
        self.env = envs.make(
            "manipulation", "reach", audio=False, observe_image=False, action_mode="absolute"
        )
        self.episode, self.next_s = self.seed - 1, 0.0
        self.message = None

    def step(self) -> None:
        now_s = now_ns() / 1e9
        if now_s >= self.next_s:
            self.episode += 1
            self.next_s = now_s + self.period_s
            self.env.reset(seed=self.episode)
            state = self.env.unwrapped.state()
            task = [[self.episode], np.zeros(3), state["object"], state["goal"]]
            self.message = np.concatenate(task).astype(np.float32)
            log.info("goal: episode %d, reach %s m", self.episode, np.round(state["goal"], 3).tolist())
        self.publish("goal/task", self.message, now_ns())

    def disconnect(self) -> None:
        env = getattr(self, "env", None)
        if env is not None:
            env.close()


NODE = GoalNode
