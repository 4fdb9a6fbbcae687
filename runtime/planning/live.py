"""Latent MPC on the live brain's belief: the goal from the task stream, a plan each control period.

The brain's world model folds each V-sync tick into its belief; this planner reads that belief (it steps no
model of its own) and, at the control rate, plans through the same transition, memory corrections included
(runtime/planning/control.py), and returns the first action after the safety filter.

Most of the search runs ahead: between control ticks, `refine` runs iterations on the next plan from the
belief carried to when it is due; on the control tick, `act` runs one short final pass from the fresh belief,
itself carried ahead by the expected delay to the actuator, so the frame-to-action path holds one pass.

The goal comes from `sim/task` (episode, end-effector, cube pose, goal). A new episode number rebuilds the
scene in a private copy of the world (cube where the task says, goal marker, arm where the joints say) and
renders the goal image there, as `launch.eval control` does in process; nothing is shared with the sim
node but messages.
"""

import mujoco
import numpy as np
import torch

import envs
from runtime.planning.actor import ActorController
from runtime.planning.control import MPCController
from runtime.planning.mpc import PlannerConfig

# The final pass varies and scores only a plan's first 4 control steps (12 ticks), its tail as the search
# ahead left it: 4.3 ms against 8.1 for all 10 (32 candidates, one thread). Live, 60 s each: e2e p50 14.2
# and 15.1 ms, 12 and 10 of 12 reached, against 17.5 ms and 10 of 12 scoring all 10 in the same session.
FINAL_SCORED = 4
TASK_FIELDS = {"episode": slice(0, 1), "ee": slice(1, 4), "object": slice(4, 11), "goal": slice(11, 14)}


class LivePlanner:
    def __init__(
        self,
        model,
        task: str,
        planner: PlannerConfig,
        deadline_s: float,
        adapter=None,
        readout=None,
        actor=None,
        prior=None,
        rollout=None,
    ):
        """`actor`: the distilled policy (runtime/planning/actor.py) acts instead of the search; `prior`: it
        proposes the step the search starts from; `rollout`: what rolls plans out (MPCController; the
        brain's onnxruntime export under `runtime: onnxruntime`)."""
        self.env = envs.make(
            "manipulation",
            task,
            image_size=model.cfg.image_size,
            audio=False,
            action_mode="absolute",
        )
        if actor is None:
            self.controller = MPCController(
                model, planner, adapter, deadline_s, readout=readout, prior=prior, rollout=rollout
            )
        else:
            self.controller = ActorController(model, actor, adapter, readout=readout, rollout=rollout)
        self.searches = actor is None
        self.episode = None
        self.plans = 0
        self.warm = False  # the planner holds a plan of this episode to start from
        self.refined = self.refined_total = 0  # search iterations run ahead: on the next plan, in all
        # the final pass after its frame: an eighth of the candidates, one iteration (two of all ran ahead).
        # Live, 60 s each, with the policy prior: 128 reached 11 of 12 goals at 24.9 ms e2e p50, 64 10 of 12
        # at 19.6 ms, 32 10 of 12 at 15.4 ms.
        self.final_candidates = max(planner.elites, planner.candidates // 8)

    def new_task(self, task: np.ndarray, joint: np.ndarray) -> bool:
        """A `sim/task` reading and the latest joints; rebuilds the goal when the episode changed. Returns
        whether it did."""
        episode = int(task[TASK_FIELDS["episode"]][0])
        if episode == self.episode:
            return False
        base = self.env.unwrapped
        obj, goal = task[TASK_FIELDS["object"]], task[TASK_FIELDS["goal"]]
        self.env.reset(seed=episode, options={"cube_pos": obj[:3], "goal": goal})
        d = base.data
        d.qpos[base._cube_qpos + 3 : base._cube_qpos + 7] = obj[3:7]  # the cube's yaw as the sim has it
        d.qpos[base._arm_qpos] = joint[:4]
        base.arm_target = np.array(joint[:4], dtype=float)
        mujoco.mj_forward(base.model, d)
        self.controller.reset(self.env)
        self.episode, self.warm = episode, False
        return True

    def act(self, z: torch.Tensor, joint: np.ndarray, lead_s: float = 0.0, task=None) -> np.ndarray:
        """Plan from the belief z (1, 2D) with the arm at `joint`; the safe action to apply. With search done
        ahead (`refine`), only the final pass runs here; the belief is carried `lead_s` ahead first. `task`:
        the latest `sim/task` reading (a push's waypoints follow the cube)."""
        state = {"joint": joint}
        if task is not None:
            state.update({k: np.asarray(task[TASK_FIELDS[k]], np.float32) for k in ("ee", "object", "goal")})
        self.controller.z = z
        self.plans += 1
        # with a plan to start from (this episode's last, refined or not) or a policy prior to search
        # around, one short pass; else a full plan (a full plan at each episode's start was its p99)
        short = self.warm or self.controller.prior is not None
        short_pass = {"iterations": 1, "candidates": self.final_candidates, "scored": FINAL_SCORED}
        final = short_pass if short else {}
        self.refined, self.warm = 0, True
        return self.controller.act(state, lead_s, **final)

    def refine(self, z: torch.Tensor, ahead_s: float) -> None:
        """Between control ticks: one search iteration on the next plan, from z carried `ahead_s` to when that
        plan is due."""
        if not self.searches or self.episode is None or self.controller.z is None:
            return  # an actor, or no goal or no plan yet
        self.controller.refine(z, ahead_s)
        self.refined += 1
        self.refined_total += 1

    @property
    def plan_ms(self) -> list[float]:
        return self.controller.plan_ms

    def close(self) -> None:
        self.env.close()
