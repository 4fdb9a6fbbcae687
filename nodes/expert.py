"""The scripted IK expert as a node: reads `sim/task` and `sim/joint`, publishes `expert/action` at 10 Hz.

The reference policy beside the brain's planner (`launch.sim --policy expert`); it runs the same
`ScriptedExpert` as the in-process env, on its own copy of the arm's model, and outputs absolute joint
targets. `policy: random` makes it a random walk of joint targets instead (steps of up to `step_rad` per
control step, as in the training data's random episodes): the baseline any learned policy must beat.
"""

import numpy as np

import envs
from envs.expert import ScriptedExpert
from nodes.node import Node
from runtime.clock import now_ns


class ExpertNode(Node):
    def connect(self) -> None:
        # A private copy of the world, used only for its kinematic model and action conventions.
        self.model_env = envs.make(
            "manipulation", self.params.get("task"), observe_image=False, audio=False, action_mode="absolute"
        )
        self.kin = self.model_env.unwrapped
        self.expert = ScriptedExpert(self.model_env)
        self.task = self.joint = None
        self.episode = -1
        self.random = self.params.get("policy", "expert") == "random"
        if self.params.get("policy", "expert") not in ("expert", "random"):
            raise ValueError(f"`policy` must be expert or random, got {self.params.get('policy')!r}")
        self.step_rad = float(self.params.get("step_rad", 0.25))
        self.rng = np.random.default_rng(int(self.params.get("seed", 0)))

    def step(self) -> None:
        for msg in self.receive(0.0):
            if msg.topic == "sim/task":
                self.task = msg.data
            elif msg.topic == "sim/joint":
                self.joint = msg.data
        if self.task is None or self.joint is None:
            return
        episode = int(self.task[0])
        if episode != self.episode:  # a new episode: start from where the arm really is
            self.episode = episode
            self.expert.reset()
            self.kin.arm_target = np.array(self.joint[:4], dtype=float)
        obs = {"ee": self.task[1:4], "object": self.task[4:11], "goal": self.task[11:14], "joint": self.joint}
        if self.random:
            space = self.model_env.action_space
            walk = self.kin.action_for_targets(self.kin.arm_target, self.kin.gripper_command)
            walk = walk + self.rng.uniform(-self.step_rad, self.step_rad, len(walk))
            action = np.clip(walk, space.low, space.high).astype(np.float32)
        else:
            action = self.expert.act(obs)
        self.kin.arm_target = np.clip(action[:4].astype(float), self.kin.joint_low, self.kin.joint_high)
        self.publish("expert/action", action.astype(np.float32), now_ns())

    def disconnect(self) -> None:
        if hasattr(self, "model_env"):
            self.model_env.close()


NODE = ExpertNode
