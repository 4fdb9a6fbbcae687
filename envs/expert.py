"""Scripted expert for reach and push: inverse kinematics on the arm's own MuJoCo model.

It is an oracle (it reads the true cube and goal positions) used to collect demonstrations and as the
upper baseline. The gripper always points straight down: with a yaw-pitch-pitch-pitch arm, that plus the
end-effector position pins all four joints, so IK solves for the ee point and the wrist point above it.
"""

from dataclasses import dataclass

import mujoco
import numpy as np

from envs import manipulation_constants as C
from envs.manipulation_v0 import ManipulationEnv

HOVER_Z_M = 0.09  # ee height while moving around the cube: fingertips clear its 5 cm top
PUSH_Z_M = 0.03  # ee height while pushing: finger pads cover the cube's lower half
PUSHER_OFFSET_M = C.CUBE_HALF_M + 0.022  # ee centre to cube centre when the finger pads touch the cube
# Where to come down behind the cube: clears a cube corner (half-diagonal 3.5 cm) plus the closed
# fingers' footprint (1.8 cm) whatever the cube's and the hand's yaw.
DESCEND_OFFSET_M = 0.065
PUSH_LEAD_M = 0.02  # how far past the contact point each push step aims; sets push speed
ALIGN_TOL_M = 0.012  # lateral misalignment that triggers a fresh approach
EE_STEP_M = 0.04  # longest straight-line ee move per control step (0.4 m/s at 10 Hz)


@dataclass(frozen=True)
class PushStyle:
    """How tightly a push is run, sized to how precisely the pushing hand follows its waypoints. The defaults
    are the expert's, whose hand goes exactly where it is told."""

    align_tol: float = ALIGN_TOL_M  # lateral misalignment (m) that triggers a fresh approach
    descend_offset: float = DESCEND_OFFSET_M  # where the hand comes down, behind the cube's centre (m)
    # The cube this close to the goal (m) ends the push: the hand backs `back_off` away along the push line
    # and stays. 0: never (the expert's carrot stops at the goal, so its hand stops there by itself).
    done_tol: float = 0.0
    back_off: float = 0.03


class InverseKinematics:
    """Damped least squares on the ee and wrist sites, warm-started from the previous solution."""

    def __init__(self, model: mujoco.MjModel):
        self.model = model
        self.data = mujoco.MjData(model)
        self._qadr = np.array([model.joint(j).qposadr[0] for j in C.ARM_JOINTS])
        self._dadr = np.array([model.joint(j).dofadr[0] for j in C.ARM_JOINTS])
        self._low = model.jnt_range[[model.joint(j).id for j in C.ARM_JOINTS], 0]
        self._high = model.jnt_range[[model.joint(j).id for j in C.ARM_JOINTS], 1]
        self._ee = model.site(C.EE_SITE).id
        self._wrist = model.site(C.WRIST_SITE).id
        self._jac = np.zeros((3, model.nv))

    def solve(self, ee_target: np.ndarray, q_init: np.ndarray, iterations: int = 30) -> np.ndarray:
        m, d = self.model, self.data
        wrist_target = ee_target + np.array([0.0, 0.0, C.WRIST_TO_EE_M])
        q = np.array(q_init, dtype=float)
        jac = np.empty((6, len(q)))
        for _ in range(iterations):
            d.qpos[self._qadr] = q
            mujoco.mj_kinematics(m, d)
            mujoco.mj_comPos(m, d)
            err = np.concatenate([ee_target - d.site_xpos[self._ee], wrist_target - d.site_xpos[self._wrist]])
            if np.dot(err, err) < 1e-10:
                break
            mujoco.mj_jacSite(m, d, self._jac, None, self._ee)
            jac[:3] = self._jac[:, self._dadr]
            mujoco.mj_jacSite(m, d, self._jac, None, self._wrist)
            jac[3:] = self._jac[:, self._dadr]
            q = q + jac.T @ np.linalg.solve(jac @ jac.T + 1e-4 * np.eye(6), err)
            q = np.clip(q, self._low, self._high)
        return q

    def position(self, q: np.ndarray) -> np.ndarray:
        """The end effector's position (m) at arm joints `q` (forward kinematics)."""
        self.data.qpos[self._qadr] = q
        mujoco.mj_kinematics(self.model, self.data)
        return self.data.site_xpos[self._ee].copy()

    def miss(self, ee_target: np.ndarray, q: np.ndarray) -> float:
        """How far (m) the end effector at joints `q` is from `ee_target`: a solution's leftover error."""
        return float(np.linalg.norm(np.asarray(ee_target, float) - self.position(q)))


class ScriptedExpert:
    """Acts on a `ManipulationEnv` (reach or push) from its observations and the true state."""

    def __init__(self, env: ManipulationEnv):
        self.env = env.unwrapped
        self.ik = InverseKinematics(self.env.model)
        self.reset()

    def reset(self) -> None:
        self._phase = "approach"
        self._ee_command: np.ndarray | None = None
        self._rest: np.ndarray | None = None  # where the hand waits once the push is done

    @property
    def phase(self) -> str:
        """The push's phase: approach, descend, push, retreat or done."""
        return self._phase

    def act(self, obs: dict) -> np.ndarray:
        env = self.env
        if self._ee_command is None:
            self._ee_command = np.asarray(obs["ee"], dtype=float)
        if env.task == "reach":
            return self._move_to(np.asarray(obs["goal"], float), gripper=-1.0)
        return self._push(obs)

    def _move_to(self, ee_target: np.ndarray, gripper: float) -> np.ndarray:
        """Step along a straight line toward `ee_target`; joint moves are scaled together, not clipped
        one by one, so the hand does not swerve (into the cube) on the way."""
        env = self.env
        step = ee_target - self._ee_command
        length = np.linalg.norm(step)
        if length > EE_STEP_M:
            step *= EE_STEP_M / length
        self._ee_command = self._ee_command + step
        q = self.ik.solve(self._ee_command, env.arm_target)
        dq = q - env.arm_target
        largest = np.max(np.abs(dq))
        if largest > env.max_delta_rad:
            dq *= env.max_delta_rad / largest
        return env.action_for_targets(env.arm_target + dq, gripper)

    def _push(self, obs: dict) -> np.ndarray:
        return self._move_to(self.push_waypoint(obs, self._ee_command), gripper=1.0)

    def push_waypoint(self, obs: dict, here: np.ndarray, style: PushStyle = PushStyle()) -> np.ndarray:
        """The end-effector point the push's current phase heads for: approach behind the cube at hover
        height, descend, push with a carrot `PUSH_LEAD_M` past the contact point, retreat straight up from
        `here` when the hand is more than `style.align_tol` off the line, and (with `style.done_tol`) back
        off and wait once the cube is at the goal. The world-model planner reaches the same points."""
        ee = np.asarray(obs["ee"], float)
        cube = np.asarray(obs["object"][:2], float)
        goal = np.asarray(obs["goal"][:2], float)
        to_goal = goal - cube
        dist = np.linalg.norm(to_goal)
        if self._rest is not None:
            return self._rest
        if dist < 1e-6:
            return np.array([*cube, HOVER_Z_M])
        u = to_goal / dist
        if dist < style.done_tol:
            self._phase, self._rest = "done", np.array([*(ee[:2] - u * style.back_off), ee[2]])
            return self._rest
        behind = cube - u * PUSHER_OFFSET_M
        descend_at = cube - u * style.descend_offset
        rel = ee[:2] - cube
        lateral = abs(rel[0] * u[1] - rel[1] * u[0])
        along = float(rel @ u)  # negative: ee is behind the cube

        if self._phase == "push" and (lateral > style.align_tol or along > -C.CUBE_HALF_M):
            self._phase = "retreat"
        if self._phase == "retreat":
            if ee[2] > HOVER_Z_M - 0.01:
                self._phase = "approach"
            else:  # straight up first, so the fingers do not drag the cube
                return np.array([*np.asarray(here, float)[:2], HOVER_Z_M])
        if self._phase == "approach":
            if np.linalg.norm(ee[:2] - descend_at) < 0.008:
                self._phase = "descend"
            else:
                return np.array([*descend_at, HOVER_Z_M])
        if self._phase == "descend":
            if ee[2] < PUSH_Z_M + 0.01:
                self._phase = "push"
            else:
                return np.array([*descend_at, PUSH_Z_M])
        lead = min(PUSH_LEAD_M, dist)
        return np.array([*(behind + u * lead), PUSH_Z_M])
