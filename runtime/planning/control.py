"""The world model closing the loop: MPC in its latent space, driven through a collection episode.

`MPCController` (the `controller` of `runtime.world_model.data.collect_episode`):
- `reset(env)`: the goal configuration is the inverse kinematics of the reach goal (or of a point behind the
  cube toward the push goal). With `goal="joint"` (the default) plans are costed on the arm joints the
  planning readout reads from each predicted state (runtime/world_model/readout.py), toward that configuration
  moved by integral action on the measured joints (see `_integrate`). With `goal="image"` the arm is posed
  there, the policy camera renders it, the pose is undone, and the model folds a few ticks of that image and
  pose into a goal latent whose q the plans approach (all of q weighs alike there: no reach succeeded). The
  belief starts afresh.
- `observe(ticks)`: each V-sync tick goes through the model's streaming step (and the adapter, if any).
- `act(state)`: CEM or MPPI (mpc.py) over `horizon` control steps of 0.1 s from the latest belief, through
  the model's transition (memory-corrected with an adapter); the first action passes the safety filter.
  A reach within its goal tolerance holds its targets instead (`_arrived`).
  Plans are sequences of joint-target *steps* of at most `STEP_RAD` (the expert's and the training data's
  largest), summed onto the present target: sampling absolute targets anywhere in the joint ranges put
  nearly every candidate far outside what the model was trained on, and the optimizer exploited its errors
  (the arm ended 0.5-0.65 m from reach goals it started 0.05-0.25 m from).
  A plan's step is held for the control period, which the transition crosses in ticks (three of 1/30 s at
  10 Hz), as the live arm does: the transition was trained one tick at a time, and one 0.1 s step took it
  three times as far as its stability margin was set for. The cost reads the state at each control step.
Plan times are kept (`plan_ms`) for `plan_p99_ms`.
"""

import time

import mujoco
import numpy as np
import torch

import envs
from envs.expert import InverseKinematics, PushStyle, ScriptedExpert
from envs.manipulation_constants import HOME_ARM_QPOS
from runtime.planning.mpc import JointGoalCost, LatentGoalCost, Planner, PlannerConfig
from runtime.planning.safety import SafetyFilter, SafetyLimits
from runtime.world_model.data import tick_fields
from runtime.world_model.model import TICK_S

GOAL_TICKS = 5  # ticks of the goal image folded into the goal latent
JOINT_SPEED_RAD_S = 2.5  # the safety filter's target speed limit: the expert's largest steps, with margin
STEP_RAD = 0.25  # the largest joint-target step per control step a plan may take
GOAL_REACH_TOLERANCE_M = 0.01  # a goal the arm's inverse kinematics ends further from is out of reach


# The closed loop's planner: noise of a fifth of the step range, correlated along the horizon (white noise
# over 10 steps x 4 joints with 2-3 iterations left the arm jittering about the goal: 0-6 of 8 reaches).
PLANNER = PlannerConfig(candidates=256, horizon=10, iterations=3, elites=32, init_std=0.2, smoothness=0.8)
GOALS = ("joint", "image")
# The gripper held in a push, closed as the expert holds it: no cost reads it, and left to the search it
# opened and shut with the noise (-0.7 to +0.55 within one push) while the fingers touched the cube (in
# process, 32 pushes without deadline: 24 held, 22 searched). A reach searches it: held open, 37 of 40
# reaches against 40 of 40, for reasons the model knows (it reads the gripper command as an input).
GRIPPER = {"reach": None, "push": 1.0}
# The plan's deadline: the 25 ms less 1 ms for the jitter of a shared 2-core machine. With 25 ms
# itself, the push evaluation's plan p99 came to 25.0 ms (24.3 in an earlier run of the same code): the last
# iteration of a 3-iteration plan ending past the deadline on a slow tick.
PLAN_DEADLINE_S = 0.024
INTEGRAL_GAIN = 0.2  # of the joint error, added to the goal each control step
INTEGRAL_LIMIT_RAD = 0.3
# A reach holds its targets once the hand is this close to the goal (forward kinematics of the measured
# joints), and plans again only if it drifts past RESUME_M: a goal tolerance, as arm controllers have.
ARRIVED_M = 0.01
RESUME_M = 0.015
# The push as the planner runs it, looser than the expert's, which it would never satisfy. In process (push,
# 32 episodes, three full iterations, no deadline) the push as it is now reached 24; it reached 21 with the
# cube 1.5 cm from the goal ending the push and no stop (`_follow_push`), and in 16 episodes 4 with the
# integral restarted at each waypoint and no end to the push.
PUSH_STYLE = PushStyle(
    # how far off the push line the hand may be: with the expert's 1.2 cm it retreated for the whole episode
    align_tol=0.03,
    descend_offset=0.09,  # it comes down further behind the cube: its descents drift 2-3 cm forward
    # the push ends with the cube 2 cm from the goal (success is 3 cm), and the hand stops (`_follow_push`):
    # pushed on, the cube went past the goal, and the retreat and the next approach dragged it off
    done_tol=0.02,
)


class MPCController:
    def __init__(
        self,
        model,
        planner: PlannerConfig | None = None,
        adapter=None,
        deadline_s=PLAN_DEADLINE_S,
        goal: str = "joint",
        readout=None,
        prior=None,
        search_ahead: bool = False,
        goals=None,
        goal_name: str | None = None,
        rollout=None,
    ):
        """`goals`, `goal_name`: a reach toward the arm pose stored under that name in a `GoalBook`
        (goals.py) instead of the env's goal point. `prior`: a policy (the distilled actor,
        runtime/planning/actor.py) whose step the search starts from and keeps as a candidate (in-process
        reaching, 20 episodes with the 25 ms deadline: 16 reached without, 20 with). `search_ahead`: on
        the ticks between control steps, one search iteration on the next plan, from the belief carried to
        when it is due, as the live brain does in its spare time. `rollout`: what rolls the plans and the
        belief's carry-ahead out, `(z0, actions, dt, residual=None, residual_ticks=None) -> z` (default the
        model's; an onnxruntime export's, runtime/export/session.py `OrtRollout`)."""
        if goal not in GOALS:
            raise ValueError(f"`goal` must be one of {GOALS}, got {goal!r}")
        self.model, self.adapter, self.deadline_s, self.goal = model, adapter, deadline_s, goal
        self.planner_cfg = planner or PLANNER
        self.readout = readout
        if goal == "joint" and readout is None:
            from runtime.world_model import readout as readouts

            self.readout = readouts.load()  # the shipped checkpoint's
        self.prior, self.search_ahead = prior, search_ahead
        if goal_name is not None and (goals is None or goal != "joint"):
            raise ValueError("a named goal needs `goals` (a GoalBook) and `goal='joint'`")
        self.goals, self.goal_name = goals, goal_name
        self.rollout = rollout or model.rollout
        self.since_act = 0  # ticks observed since the last action
        self.plan_ms: list[float] = []
        self.safety_ms = 0.0  # the last action's time in the safety filter
        self._started = 0.0  # when the running `act` began: its deadline counts from there

    # ---- goal ---------------------------------------------------------------------------------------------
    def _goal_pose(self, base) -> np.ndarray:
        """The joint goal: inverse kinematics of the reach goal (push: of the goal at the cube's height).
        ValueError if the arm cannot get there (outside its workspace)."""
        ik = self._ik
        if base.task == "reach":
            target = np.asarray(base.goal, float)
        else:  # push: the hand where the cube should end, at the cube's height
            target = np.array([*base.goal[:2], base.state()["object"][2]])
        q = ik.solve(target, base.arm_target, iterations=100)
        if not ik.miss(target, q) <= GOAL_REACH_TOLERANCE_M:
            # from a singular start (the arm straight up, as a real arm's zero pose maps to) the solver can
            # stall: from the home pose as well before calling the goal unreachable
            q = ik.solve(target, np.asarray(HOME_ARM_QPOS, float), iterations=100)
        miss = ik.miss(target, q)
        if not miss <= GOAL_REACH_TOLERANCE_M:
            raise ValueError(
                f"goal {np.round(target, 3).tolist()} m is outside the arm's workspace: its closest pose "
                f"ends {miss * 100:.1f} cm away (at most {GOAL_REACH_TOLERANCE_M * 100:.0f} cm)"
            )
        return q

    def _goal_latent(self, base) -> torch.Tensor:
        d = base.data
        saved = d.qpos.copy()
        q_goal = self._goal_pose(base)
        d.qpos[base._arm_qpos] = q_goal
        mujoco.mj_forward(base.model, d)
        image = base.render_camera()
        joint = envs.proprioception(base.state())  # the posed arm's reading, tool position included
        joint[5:10] = 0.0  # at rest there
        d.qpos[:] = saved
        mujoco.mj_forward(base.model, d)
        action = base.action_for_targets(q_goal, -1.0)
        tick = {
            "image": torch.from_numpy(image)[None],
            "audio": torch.zeros(1, 6, 160),
            "audio_chunks": torch.tensor([3]),
            "joint": torch.from_numpy(joint)[None],
            "action": torch.from_numpy(np.asarray(action, np.float32))[None],
            "mask": torch.ones(1, 4, dtype=torch.bool),
            "dt_eff": torch.tensor([1 / 30]),
        }
        state = self.model.initial_state(1)
        with torch.no_grad():
            for _ in range(GOAL_TICKS):
                state, z, _ = self.model.step(state, tick)
        return z[0, : self.model.cfg.d_latent]

    # ---- the loop -----------------------------------------------------------------------------------------
    def reset(self, env) -> None:
        base = env.unwrapped
        self.base, self._ik = base, InverseKinematics(base.model)
        low = torch.as_tensor(env.action_space.low, dtype=torch.float32)
        high = torch.as_tensor(env.action_space.high, dtype=torch.float32)
        self.low, self.high = low, high
        self.gripper = GRIPPER[base.task]
        step = torch.tensor([STEP_RAD] * (len(low) - 1) + [1.0 if self.gripper is None else 0.0])
        self.planner = Planner(self.planner_cfg, self._rollout, -step, step)
        self.safety = SafetyFilter(
            SafetyLimits(low.numpy(), high.numpy(), np.full(len(low) - 1, JOINT_SPEED_RAD_S)),
            1 / base.control_hz,
        )
        if self.goal == "image":
            self.cost = LatentGoalCost(self._goal_latent(base), self.model.cfg.d_latent)
        else:
            if self.goal_name is not None:
                if base.task != "reach":
                    raise ValueError(f"a named goal is an arm pose to reach, not a {base.task} goal")
                q_goal = self.goals.recall(self.goal_name)
                lo, hi = low[:-1].numpy(), high[:-1].numpy()  # the arm's target ranges
                if not (np.all(q_goal >= lo) and np.all(q_goal <= hi)):
                    raise ValueError(
                        f"goal {self.goal_name!r} {np.round(q_goal, 3).tolist()} rad is outside the arm's "
                        f"joint ranges {np.round(lo, 2).tolist()} .. {np.round(hi, 2).tolist()}"
                    )
                self.goal_ee = self._ik.position(q_goal)
            else:
                q_goal, self.goal_ee = self._goal_pose(base), np.asarray(base.goal, float)
            self.goal_joints = torch.as_tensor(q_goal, dtype=torch.float32)
            self.cost = JointGoalCost(self.goal_joints.clone(), self.readout)
            self.integral = torch.zeros_like(self.goal_joints)
            self.pusher = ScriptedExpert(env) if base.task == "push" else None  # its waypoints, not its moves
        self.holding = False  # a reach within its goal tolerance (`_arrived`)
        self.state, self.z, self.prev, self.since_act = self.model.initial_state(1), None, None, 0
        self.target = torch.as_tensor(
            base.action_for_targets(base.arm_target, -1.0)[:-1], dtype=torch.float32
        )
        self.ticks_per_step = max(1, round(1.0 / base.control_hz / TICK_S))
        self.dt = 1.0 / base.control_hz / self.ticks_per_step

    def _absolute(self, steps: torch.Tensor) -> torch.Tensor:
        """Plans of steps (N, H, A) -> the absolute actions they command: targets summed from the present
        one and kept in range, the gripper as planned or held (`GRIPPER`)."""
        joints = self.target[None, None] + torch.cumsum(steps[..., :-1], 1)
        joints = torch.maximum(torch.minimum(joints, self.high[:-1]), self.low[:-1])
        gripper = steps[..., -1:] if self.gripper is None else torch.full_like(steps[..., -1:], self.gripper)
        return torch.cat((joints, gripper), -1)

    def _rollout(self, z0: torch.Tensor, steps: torch.Tensor) -> torch.Tensor:
        """Plans (N, H, A) -> the latent at the end of each control step (N, H, d), tick by tick."""
        n = self.ticks_per_step
        actions = self._absolute(steps).repeat_interleave(n, 1)  # held for the control period
        dt = torch.full(actions.shape[:2], self.dt)
        if self.adapter is not None:
            return self.adapter.rollout(z0, actions, dt, self._in_force(), self.rollout)[:, n - 1 :: n]
        return self.rollout(z0, actions, dt)[:, n - 1 :: n]

    @torch.no_grad()
    def observe(self, ticks) -> None:
        for tick in ticks:
            fields = tick_fields(tick, self.model.cfg.image_size)
            x = {k: torch.from_numpy(np.asarray(v))[None] for k, v in fields.items()}
            self.state, z, _ = self.model.step(self.state, x)
            if self.adapter is not None and self.z is not None:
                self.adapter.observe(self.z, x["action"], self.model.clamp_dt(x["dt_eff"].float()), z)
            self.z = z
            self.since_act += 1
            if self.search_ahead and self.planner.mean is not None and self.since_act < self.ticks_per_step:
                # the next plan is due when the control step's last tick is in (ticks of the control's dt)
                self.refine(z, (self.ticks_per_step - self.since_act) * self.dt)

    def _follow_push(self, state: dict, measured: np.ndarray) -> None:
        """A push as a sequence of end-effector goals, the scripted expert's waypoints in `PUSH_STYLE` (behind
        the cube at hover height, down, then a carrot just past the contact point toward the goal, and back
        off once the cube is there), each the joint goal the plans reach (by inverse kinematics from the
        measured joints). The integral carries over from one waypoint to the next: the model's offsets
        change little between nearby poses, and restarting it at each phase let the hand drift 3-4 cm off
        the push line on its way down. When the push is done the arm stops where it is: the integral wound up
        against the cube and the targets led the hand, so it had pushed on for two more steps (the cube 0.4
        cm from the goal went on to 4 cm)."""
        phase = self.pusher.phase
        waypoint = self.pusher.push_waypoint(state, state["ee"], PUSH_STYLE)
        if phase != "done" and self.pusher.phase == "done":
            self.integral.zero_()
            self.target = torch.as_tensor(measured, dtype=torch.float32)
        self.goal_joints = torch.as_tensor(self._ik.solve(waypoint, measured), dtype=torch.float32)

    def _arrived(self, measured: np.ndarray) -> bool:
        """A reach within its goal tolerance: the hand within `ARRIVED_M` of the goal, held there until it is
        more than `RESUME_M` away; the integral rests meanwhile. Near the goal a plan's steps are as small as
        the model's errors, and planning on hunted about the goal: in process, the 5-8 misses of the 50
        evaluation reaches had each come within 0.2-0.9 cm and wandered 1.6-3.2 cm off again. With the
        hold at 1 cm, none missed (end distance median 0.77 cm, worst 1.1); at 0.8 cm, two that hovered at
        0.9 cm never held and wandered off."""
        miss = self._ik.miss(self.goal_ee, measured)
        self.holding = miss <= (RESUME_M if self.holding else ARRIVED_M)
        return self.holding

    def _integrate(self, measured: np.ndarray) -> None:
        """Integral action (offset-free MPC): the goal the plans aim at moves by the accumulated error
        between the goal and the measured joints. The model's predictions of where a held target settles are
        off by up to 0.1 rad, and a plan that aims right in the model ends that far off in the world (the arm
        stopped 2-4 cm from reach goals); the integral removes the steady offset, bounded against windup."""
        error = self.goal_joints - torch.as_tensor(measured, dtype=torch.float32)
        self.integral = (self.integral + INTEGRAL_GAIN * error).clamp(-INTEGRAL_LIMIT_RAD, INTEGRAL_LIMIT_RAD)
        self.cost.goal = self.goal_joints + self.integral

    @torch.no_grad()
    def _first_step(self, z: torch.Tensor, measured: np.ndarray, iterations, candidates, scored=None):
        """The step (A,) to take now from the belief z (1, d): the first of the plan found by the deadline,
        which counts from the start of `act` (the belief's carry-ahead and the prior's pass included)."""
        prior = None
        if self.prior is not None:
            measured_t = torch.as_tensor(measured, dtype=torch.float32)[None]
            prior = self.prior(z, self.cost.goal[None], measured_t)[0]
        deadline = None
        if self.deadline_s is not None:
            deadline = self.deadline_s - (time.perf_counter() - self._started)
        return self.planner.plan(z[0], self.cost, deadline, iterations, candidates, prior, scored).actions[0]

    @torch.no_grad()
    def advance(self, z: torch.Tensor, seconds: float) -> torch.Tensor:
        """z (1, d) carried `seconds` ahead under the command in force, in ticks of at most the control's:
        where the arm will be when the action planned now reaches it."""
        if seconds <= 0:
            return z
        n = int(np.ceil(seconds / self.dt - 1e-9))
        action = self._in_force()[None, None].expand(1, n, -1)
        return self.rollout(z, action, torch.full((1, n), seconds / n))[:, -1]

    @torch.no_grad()
    def predicted_joints(self) -> np.ndarray | None:
        """The arm joints (H, 4) the last plan's search predicts at each control step (its mean's rollout
        through the planning readout), or None before a plan or without a readout."""
        if self.planner.path is None or self.readout is None:
            return None
        return self.readout(self.planner.path).numpy()

    def _hold(self) -> np.ndarray:
        """The action that holds the arm where its targets are, the gripper open unless the task holds it."""
        gripper = -1.0 if self.gripper is None else self.gripper
        return self.base.action_for_targets(self.base.arm_target, gripper)

    def _in_force(self) -> torch.Tensor:
        """The command the arm holds now (A,)."""
        held = self.prev if self.prev is not None else self._hold()
        return torch.as_tensor(np.asarray(held, np.float32))

    def refine(self, z: torch.Tensor, ahead_s: float = 0.0) -> float:
        """One search iteration on the next plan before its frame arrives, from the belief z (1, d) carried
        `ahead_s` to when that plan is due."""
        return self.planner.refine(self.advance(z, ahead_s)[0], self.cost)

    def act(self, state: dict, lead_s=0.0, iterations=None, candidates=None, scored=None) -> np.ndarray:
        """The safe action for the latest belief. `lead_s`: how long after the belief's capture the action
        will apply (the belief is carried that far first); `iterations`, `candidates`, `scored`: a short
        final pass after `refine` (planner defaults otherwise; `Planner.plan`)."""
        measured = np.asarray(state["joint"][:4], float)
        if self.z is None:  # no tick yet: hold where the arm is
            return self.safety.send_action(self._hold(), measured)
        if self.goal == "joint":
            if self.pusher is not None and "object" in state:
                self._follow_push(state, measured)
            elif self._arrived(measured):  # the target in force, through the filter; no plan
                self.prev = self.safety.send_action(self._in_force().numpy(), measured)
                return self.prev
            self._integrate(measured)
        self.since_act = 0
        t0 = self._started = time.perf_counter()
        step = self._first_step(self.advance(self.z, lead_s), measured, iterations, candidates, scored)
        t1 = time.perf_counter()
        self.plan_ms.append((t1 - t0) * 1e3)
        action = self._absolute(step[None, None])[0, 0]
        self.prev = self.safety.send_action(action.numpy(), measured)
        self.safety_ms = (time.perf_counter() - t1) * 1e3
        self.target = torch.as_tensor(self.prev[:-1], dtype=torch.float32)
        return self.prev
