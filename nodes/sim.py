"""The simulated robot as a node: steps the world in real time and publishes each sensor at its own rate.

Physics shares one state, so one process publishes all the simulated sensors: camera (`sim/camera`, default
30 Hz), contact microphone (`sim/audio`, one 10 ms chunk per loop iteration: 100 chunks/s), proprioception
(`sim/joint`: joint positions and velocities and the tool position, `envs.proprioception`) and the task
state the scripted expert needs (`sim/task`: episode, ee, cube pose, goal), plus one `sim/episode` message
per finished episode. It applies the newest `actuator/command` (absolute joint targets and gripper) whenever
one arrives. Rates come from the graph's `publishes` entries. `shift: NAME@SECONDS` (flip, mass, friction or
gain, envs/dynamics_shift.py) changes the world's rules at that simulated second, for the rest of the run.

For `env: gym:<id>` the node steps that Gymnasium env at its own control rate and publishes camera and joint
only (no audio); with no command it acts randomly.
"""

import logging

import numpy as np

import envs
from envs.dynamics_shift import NAMED_SHIFTS, parse_shift
from nodes.node import Node
from runtime.clock import now_ns

log = logging.getLogger(__name__)
AUDIO_CHUNK_S = 0.01


def check_params(params: dict, graph) -> None:
    """Called by launch entry points before any process starts."""
    if params.get("shift"):
        if params.get("env", "manipulation") != "manipulation":
            raise ValueError("`shift` changes the manipulation world's dynamics; gym envs have none")
        parse_shift(params["shift"])


class SimNode(Node):
    def connect(self) -> None:
        p = self.params
        self.env_name = p.get("env", "manipulation")
        self.manipulation = self.env_name == "manipulation"
        kwargs = {"action_mode": "absolute"} if self.manipulation else {}
        self.env = envs.make(self.env_name, p.get("task"), image_size=int(p.get("image_size", 64)), **kwargs)
        self.base = self.env.unwrapped
        self.seed = int(p.get("seed", 0))
        self.episode = 0
        self.rejected_commands = 0
        self.obs, _ = self.env.reset(seed=self.seed)
        self.env.action_space.seed(self.seed)
        speed = float(p.get("speed", 1.0))
        if self.manipulation:
            self.steps_per_iteration = int(round(AUDIO_CHUNK_S / self.base.model.opt.timestep))
            self.iteration_s = AUDIO_CHUNK_S
        else:
            self.iteration_s = 1.0 / float(self.base.metadata.get("render_fps") or 20)
        # The loop rate is the simulated rate times the speed-up; speed 0 runs flat out.
        self.timer.period_s = self.iteration_s / speed if speed > 0 else None
        self.sim_s = 0.0
        self.next_s = {topic: 0.0 for topic in self.spec.publishes}
        self.next_control_s = 0.0
        self.command = None
        # `shift: NAME@SECONDS` (envs/dynamics_shift.py): the world's rules change at that simulated second
        self.shift = parse_shift(p["shift"]) if p.get("shift") and self.manipulation else None
        log.info(
            "sim: %s, iteration %.1f ms, speed x%g",
            self.env.spec.id if self.env.spec else self.env_name,
            self.iteration_s * 1e3,
            speed,
        )

    def _due(self, topic: str) -> bool:
        if topic not in self.spec.publishes or self.sim_s + 1e-9 < self.next_s[topic]:
            return False
        self.next_s[topic] += 1.0 / self.spec.publishes[topic].rate_hz
        return True

    def _take_commands(self) -> None:
        for msg in self.receive(0.0):
            if msg.topic == "actuator/command":
                self.command = np.array(msg.data, dtype=np.float64)

    def step(self) -> None:
        self._take_commands()
        if self.manipulation:
            self._step_manipulation()
        else:
            self._step_gym()

    def _step_manipulation(self) -> None:
        base = self.base
        if self.command is not None:
            try:
                base.apply_action(self.command)
            except ValueError as exc:  # a bad command is refused; the arm keeps its last targets
                self.rejected_commands += 1
                log.warning("sim: rejected command: %s", exc)
            self.command = None
        base.advance_physics(self.steps_per_iteration)
        self.sim_s += self.iteration_s
        if self.shift is not None and self.sim_s + 1e-9 >= self.shift[1]:
            base.apply_shift(NAMED_SHIFTS[self.shift[0]])
            log.warning("sim: dynamics shift %r applied at %.2f s (simulated)", self.shift[0], self.sim_s)
            self.shift = None
        now = now_ns()
        audio = base.microphone.pull()  # (1, 160): this iteration's 10 ms
        if "sim/audio" in self.spec.publishes:
            self.publish("sim/audio", audio[0], now - int(AUDIO_CHUNK_S * 1e9))  # stamped at its first sample
        joint_due, task_due = self._due("sim/joint"), self._due("sim/task")
        if joint_due or task_due:
            state = base.state()
            if joint_due:
                self.publish("sim/joint", envs.proprioception(state), now)
            if task_due:
                task = [[self.episode], state["ee"], state["object"], state["goal"]]
                self.publish("sim/task", np.concatenate(task).astype(np.float32), now)
        if self._due("sim/camera"):
            self.publish("sim/camera", base.render_camera(), now_ns())
        if self.sim_s + 1e-9 >= self.next_control_s:
            self.next_control_s += 1.0 / base.control_hz
            terminated, truncated = base.episode_end()
            if terminated or truncated:
                self._end_episode(base.success())

    def _step_gym(self) -> None:
        action = self.command if self.command is not None else self.env.action_space.sample()
        if np.shape(action) != self.env.action_space.shape or not np.all(np.isfinite(action)):
            self.rejected_commands += 1
            action = self.env.action_space.sample()
        self.obs, _, terminated, truncated, info = self.env.step(action)
        self.sim_s += self.iteration_s
        now = now_ns()
        self.publish("sim/joint", self.obs["joint"], now)
        self.publish("sim/camera", self.obs["image"], now)
        if terminated or truncated:
            self._end_episode(bool(info.get("is_success", False)))

    def _end_episode(self, success: bool) -> None:
        if "sim/episode" in self.spec.publishes:
            self.publish("sim/episode", np.array([self.episode, float(success)], np.float32), now_ns())
        log.info("sim: episode %d ended, success=%s", self.episode, success)
        self.episode += 1
        self.obs, _ = self.env.reset(seed=self.seed + self.episode)

    def disconnect(self) -> None:
        if hasattr(self, "env"):
            self.env.close()


NODE = SimNode
