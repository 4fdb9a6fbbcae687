"""Tabletop manipulation with a 4-DoF arm and a two-finger gripper (MuJoCo), tasks reach and push."""

import math

import gymnasium as gym
import mujoco
import numpy as np
from gymnasium import spaces

from envs import manipulation_constants as C
from envs.contact_audio import ContactMicrophone
from envs.dynamics_shift import DynamicsShift, ShiftableModel
from envs.rendering import CameraRenderer, check_image_size

TASKS = ("reach", "push")
ACTION_MODES = ("delta", "absolute")
AUDIO_CHUNK_S = 0.01
SETTLE_STEPS = 50  # 0.1 s of physics at reset for a cube placed on the table


def _polar(radius: float, bearing: float) -> np.ndarray:
    return radius * np.array([np.cos(bearing), np.sin(bearing)])


class ManipulationEnv(gym.Env):
    """A 4-DoF arm (yaw, shoulder, elbow, wrist pitch) with a two-finger gripper, a 5 cm cube and a goal.

    Ids: `Manipulation-Reach-v0` (bring the point between the finger pads to a goal in the air) and
    `Manipulation-Push-v0` (push the cube across the table onto a goal).

    Physics runs at 500 Hz; the policy acts at `control_hz` (default 10 Hz), so one `step` advances
    `500 / control_hz` physics steps.

    Action space: `Box(-1, 1, (5,))` in `delta` mode, the default: the first four entries move each arm
    joint's position target by `a * max_delta_rad` from the previous *target* (not the measured position,
    so holding still never drifts). In `absolute` mode the first four entries are the joint-position targets
    in radians, bounded by the joint ranges. In both modes the fifth entry is the gripper: -1 open, +1
    closed. Out-of-range actions are clipped (reported as `info["action_clipped"]`); actions of the wrong
    shape or with NaN/inf raise `ValueError` before anything is changed.

    Observation space (`Dict`):
        image   (S, S, 3) uint8    RGB from the fixed policy camera, `front` unless `camera` names another
                                   camera of the scene (S = `image_size`, default 64);
                                   absent when `observe_image=False`.
        joint   (10,) float32      positions then velocities of the 4 arm joints and the gripper opening
                                   (gap between the finger pads, m: 0 closed, 0.058 open).
        ee      (3,) float32       end-effector position (between the finger pads), world frame, m.
        object  (7,) float32       cube position (m) and orientation quaternion (w, x, y, z).
        goal    (3,) float32       goal position, m.
        audio   (N, 160) float32   contact microphone, 16 kHz in 10 ms chunks, N = chunks per control step
                                   (10 at 10 Hz); oldest first. Absent when `audio=False`.

    Rewards (terms in `info["reward_terms"]`, reward = their sum):
        reach: `distance` = -|ee - goal|, `success` = 1 within 2 cm, `action` = -0.01 |a|^2.
        push:  `reach_object` = -0.5 |ee - cube|, `object_to_goal` = -|cube_xy - goal_xy|,
               `success` = 1 within 3 cm, `action` = -0.01 |a|^2.
    `info["is_success"]` is the success test of the task.

    Episode end: truncated after `episode_seconds` of simulated time (reach 5 s, push 12 s by default);
    terminated (push) when the cube falls off the table.

    Dynamics shifts for online adaptation: `apply_shift(DynamicsShift(...))` mid-episode, `revert_shift()`.

    Arguments are keyword-only; see `__init__`.
    """

    metadata = {"render_modes": ["rgb_array"], "render_fps": 10}

    def __init__(
        self,
        *,
        task: str = "push",
        render_mode: str | None = None,
        image_size: int = 64,
        observe_image: bool = True,
        audio: bool = True,
        control_hz: float = 10.0,
        action_mode: str = "delta",
        max_delta_rad: float = 0.15,  # per control step: 1.5 rad/s at 10 Hz, well under the servos' reach
        episode_seconds: float | None = None,
        render_size: tuple[int, int] = (480, 640),  # (height, width) of render(), for people, not policies
        camera: str = C.CAMERA,  # the policy camera (observation "image")
    ):
        if task not in TASKS:
            raise ValueError(f"`task` must be one of {TASKS}, got {task!r}")
        if action_mode not in ACTION_MODES:
            raise ValueError(f"`action_mode` must be one of {ACTION_MODES}, got {action_mode!r}")
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ValueError(
                f"`render_mode` must be None or one of {self.metadata['render_modes']}, got {render_mode!r}"
            )
        check_image_size("image_size", image_size)
        if not (isinstance(render_size, tuple | list) and len(render_size) == 2):
            raise ValueError(f"`render_size` must be (height, width), got {render_size!r}")
        for side in render_size:
            check_image_size("render_size", side, largest=4096)
        period_s = 1.0 / control_hz if control_hz > 0 else math.inf
        chunks = period_s / AUDIO_CHUNK_S
        if not (math.isfinite(chunks) and abs(chunks - round(chunks)) < 1e-9 and round(chunks) >= 1):
            raise ValueError(
                f"`control_hz` must make the control period a whole number of 10 ms audio chunks "
                f"(e.g. 10, 20, 25, 50, 100), got {control_hz}"
            )
        if not (max_delta_rad > 0 and math.isfinite(max_delta_rad)):
            raise ValueError(f"`max_delta_rad` must be a finite number > 0, got {max_delta_rad}")

        self.task = task
        self.render_mode = render_mode
        self.action_mode = action_mode
        self.max_delta_rad = float(max_delta_rad)
        self.control_hz = float(control_hz)
        self.episode_seconds = float(episode_seconds or (5.0 if task == "reach" else 12.0))
        self.metadata = {**self.metadata, "render_fps": self.control_hz}

        self.model = mujoco.MjModel.from_xml_path(str(C.XML_PATH))
        cameras = [self.model.camera(i).name for i in range(self.model.ncam)]
        if camera not in cameras:
            raise ValueError(f"`camera` must be one of the scene's cameras {cameras}, got {camera!r}")
        self.data = mujoco.MjData(self.model)
        self.n_substeps = int(round(period_s / self.model.opt.timestep))
        m = self.model
        self._arm_qpos = np.array([m.joint(j).qposadr[0] for j in C.ARM_JOINTS])
        self._arm_qvel = np.array([m.joint(j).dofadr[0] for j in C.ARM_JOINTS])
        self._finger_qpos = np.array([m.joint(j).qposadr[0] for j in C.FINGER_JOINTS])
        self._finger_qvel = np.array([m.joint(j).dofadr[0] for j in C.FINGER_JOINTS])
        self._arm_ctrl = np.array([m.actuator(a).id for a in C.ARM_ACTUATORS])
        self._finger_ctrl = np.array([m.actuator(a).id for a in C.FINGER_ACTUATORS])
        self.joint_low = m.jnt_range[[m.joint(j).id for j in C.ARM_JOINTS], 0].copy()
        self.joint_high = m.jnt_range[[m.joint(j).id for j in C.ARM_JOINTS], 1].copy()
        self._ee = m.site(C.EE_SITE).id
        self._cube_qpos = m.joint(C.CUBE_JOINT).qposadr[0]
        self._cube_qvel = m.joint(C.CUBE_JOINT).dofadr[0]
        self._goal_mocap = m.body(C.GOAL_BODY).mocapid[0]

        self.shifts = ShiftableModel(m, C.CUBE_BODY, C.ARM_ACTUATORS)
        self.microphone = ContactMicrophone(m, self.data, C.TOUCH_MATERIALS) if audio else None
        self.image_size = image_size
        self.observe_image = observe_image
        self._camera = CameraRenderer(m, camera, image_size, image_size) if observe_image else None
        self._render_size = render_size
        self._viewer_camera: CameraRenderer | None = None

        n_arm = len(C.ARM_JOINTS)
        if action_mode == "delta":
            self.action_space = spaces.Box(-1.0, 1.0, (n_arm + 1,), np.float32)
        else:
            low = np.append(self.joint_low, -1.0).astype(np.float32)
            high = np.append(self.joint_high, 1.0).astype(np.float32)
            self.action_space = spaces.Box(low, high, dtype=np.float32)
        obs = {
            "joint": spaces.Box(-np.inf, np.inf, (2 * (n_arm + 1),), np.float32),
            "ee": spaces.Box(-np.inf, np.inf, (3,), np.float32),
            "object": spaces.Box(-np.inf, np.inf, (7,), np.float32),
            "goal": spaces.Box(-np.inf, np.inf, (3,), np.float32),
        }
        if observe_image:
            obs["image"] = spaces.Box(0, 255, (image_size, image_size, 3), np.uint8)
        if audio:
            obs["audio"] = spaces.Box(
                -1.0, 1.0, (int(round(chunks)), self.microphone.chunk_samples), np.float32
            )
        self.observation_space = spaces.Dict(obs)

        self.arm_target = np.array(C.HOME_ARM_QPOS)
        self.gripper_command = -1.0
        self.goal = np.zeros(3)

    # ------------------------------------------------------------------ episode
    def reset(self, *, seed: int | None = None, options: dict | None = None):
        """Options: `cube_pos` (3,) and `goal` (3,) override the sampled ones (for tests and demos)."""
        super().reset(seed=seed)
        options = options or {}
        m, d = self.model, self.data
        mujoco.mj_resetData(m, d)
        self.arm_target = np.array(C.HOME_ARM_QPOS)
        self.gripper_command = -1.0 if self.task == "reach" else 1.0
        d.qpos[self._arm_qpos] = self.arm_target
        self._write_ctrl()
        d.qpos[self._finger_qpos] = d.ctrl[self._finger_ctrl]

        rng = self.np_random
        if self.task == "reach":
            cube_xy = _polar(rng.uniform(*C.PUSH_CUBE_RADIUS_M), rng.uniform(*C.PUSH_CUBE_BEARING_RAD))
            goal = np.array(
                [
                    *_polar(rng.uniform(*C.REACH_GOAL_RADIUS_M), rng.uniform(*C.REACH_GOAL_BEARING_RAD)),
                    rng.uniform(*C.REACH_GOAL_HEIGHT_M),
                ]
            )
        else:
            cube_xy, goal_xy = self._sample_push(rng)
            goal = np.array([*goal_xy, 0.0])
        cube = np.array([*cube_xy, C.CUBE_HALF_M])
        cube = np.asarray(options.get("cube_pos", cube), dtype=float)
        self.goal = np.asarray(options.get("goal", goal), dtype=float)
        if self.goal.shape != (3,) or not np.all(np.isfinite(self.goal)):
            raise ValueError(f"`goal` must be 3 finite numbers (x, y, z in metres), got {options['goal']!r}")
        d.qpos[self._cube_qpos : self._cube_qpos + 3] = cube
        yaw = rng.uniform(-np.pi, np.pi)
        d.qpos[self._cube_qpos + 3 : self._cube_qpos + 7] = (np.cos(yaw / 2), 0.0, 0.0, np.sin(yaw / 2))
        d.mocap_pos[self._goal_mocap] = self.goal
        mujoco.mj_forward(m, d)
        if cube[2] <= C.CUBE_HALF_M + 1e-3:
            # A cube placed on the table lands on it within a few steps; settle that before the clock
            # starts, so the first step does not hear it as an impact. A cube placed in the air still falls.
            mujoco.mj_step(m, d, nstep=SETTLE_STEPS)
            d.time = 0.0
            mujoco.mj_forward(m, d)
        if self.microphone is not None:
            self.microphone.reset(int(rng.integers(2**31)))
        return self._observation(
            np.zeros(self.observation_space["audio"].shape, np.float32)
            if self.microphone is not None
            else None
        ), self._info(None)

    @staticmethod
    def _sample_push(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        while True:  # rejection sampling; accepts within a few draws
            cube = _polar(rng.uniform(*C.PUSH_CUBE_RADIUS_M), rng.uniform(*C.PUSH_CUBE_BEARING_RAD))
            angle = rng.uniform(-np.pi, np.pi)
            goal = cube + rng.uniform(*C.PUSH_GOAL_DISTANCE_M) * np.array([np.cos(angle), np.sin(angle)])
            radius, bearing = np.hypot(*goal), np.arctan2(goal[1], goal[0])
            if (
                C.PUSH_GOAL_RADIUS_M[0] <= radius <= C.PUSH_GOAL_RADIUS_M[1]
                and C.PUSH_GOAL_BEARING_RAD[0] <= bearing <= C.PUSH_GOAL_BEARING_RAD[1]
            ):
                return cube, goal

    def step(self, action):
        action, clipped = self.apply_action(action)
        self.advance_physics(self.n_substeps)
        audio = self.microphone.pull() if self.microphone is not None else None
        obs = self._observation(audio)
        terms, success = self._reward_terms(action)
        terminated, truncated = self.episode_end()
        info = self._info(terms, success, clipped=bool(np.any(clipped != action)))
        return obs, float(sum(terms.values())), terminated, truncated, info

    # The pieces of `step`, public for streaming use (the sim node applies actions whenever they arrive and
    # publishes each sensor at its own rate, so it cannot use the lock-step `step`).
    def apply_action(self, action) -> tuple[np.ndarray, np.ndarray]:
        """Validate and apply an action to the servos' targets; returns (action, clipped action)."""
        action = self._check_action(action)
        clipped = np.clip(action, self.action_space.low, self.action_space.high)
        sign = self.shifts.action_sign
        if self.action_mode == "delta":
            target = self.arm_target + sign * clipped[:4] * self.max_delta_rad
        else:
            # A flipped joint mirrors its absolute target about the joint's zero.
            target = sign * clipped[:4]
        self.arm_target = np.clip(target, self.joint_low, self.joint_high)
        self.gripper_command = float(clipped[4])
        self._write_ctrl()
        return action, clipped

    def episode_end(self) -> tuple[bool, bool]:
        """(terminated, truncated) for the current state."""
        cube_z = self.data.qpos[self._cube_qpos + 2]
        terminated = bool(self.task == "push" and cube_z < -0.05)
        truncated = bool(self.data.time >= self.episode_seconds - 1e-9)
        return terminated, truncated

    def success(self) -> bool:
        return self._reward_terms(np.zeros(self.action_space.shape))[1]

    def state(self) -> dict:
        """Proprioception and task state (no camera, no audio) as float32 arrays."""
        return self._observation(None, image=False)

    def render_camera(self) -> np.ndarray:
        """The policy camera's current image, (S, S, 3) uint8."""
        if self._camera is None:
            raise RuntimeError("this env was made with observe_image=False: it has no camera")
        return self._camera.render(self.data)

    def advance_physics(self, n_steps: int) -> None:
        """Step the physics `n_steps` times at 500 Hz, feeding the contact microphone after each step."""
        m, d, mic = self.model, self.data, self.microphone
        if mic is None:
            mujoco.mj_step(m, d, nstep=n_steps)
            return
        for _ in range(n_steps):
            mujoco.mj_step(m, d)
            mic.observe()

    def _check_action(self, action) -> np.ndarray:
        try:
            a = np.asarray(action, dtype=np.float64)
        except (TypeError, ValueError) as exc:
            raise ValueError(
                f"action must be a numeric array of shape {self.action_space.shape}: {exc}"
            ) from exc
        if a.shape != self.action_space.shape:
            raise ValueError(f"action must have shape {self.action_space.shape}, got {a.shape}")
        bad = np.flatnonzero(~np.isfinite(a))
        if bad.size:
            raise ValueError(f"action has non-finite values at indices {bad.tolist()}: {a[bad].tolist()}")
        return a

    def _write_ctrl(self) -> None:
        d = self.data
        d.ctrl[self._arm_ctrl] = self.arm_target
        d.ctrl[self._finger_ctrl] = (self.gripper_command + 1.0) / 2.0 * C.FINGER_CLOSED_M

    # ------------------------------------------------------------------ observation, reward
    def _observation(self, audio: np.ndarray | None, image: bool = True) -> dict:
        d = self.data
        fq = d.qpos[self._finger_qpos]
        opening = 2 * C.FINGER_CLOSED_M - fq.sum()  # distance the fingers can still close, m
        joint = np.concatenate(
            [d.qpos[self._arm_qpos], [opening], d.qvel[self._arm_qvel], [-d.qvel[self._finger_qvel].sum()]]
        )
        obs = {
            "joint": joint.astype(np.float32),
            "ee": d.site_xpos[self._ee].astype(np.float32),
            "object": d.qpos[self._cube_qpos : self._cube_qpos + 7].astype(np.float32),
            "goal": self.goal.astype(np.float32),
        }
        if self._camera is not None and image:
            obs["image"] = self._camera.render(d)
        if audio is not None:
            obs["audio"] = audio
        return obs

    def _reward_terms(self, action: np.ndarray) -> tuple[dict[str, float], bool]:
        d = self.data
        ee = d.site_xpos[self._ee]
        cube = d.qpos[self._cube_qpos : self._cube_qpos + 3]
        action_term = -0.01 * float(np.dot(action, action))
        if self.task == "reach":
            dist = float(np.linalg.norm(ee - self.goal))
            success = dist < C.REACH_SUCCESS_M
            return {"distance": -dist, "success": float(success), "action": action_term}, success
        to_goal = float(np.linalg.norm(cube[:2] - self.goal[:2]))
        success = to_goal < C.PUSH_SUCCESS_M and cube[2] > 0
        terms = {
            "reach_object": -0.5 * float(np.linalg.norm(ee - cube)),
            "object_to_goal": -to_goal,
            "success": float(success),
            "action": action_term,
        }
        return terms, success

    def _info(self, terms: dict | None, success: bool | None = None, clipped: bool = False) -> dict:
        if terms is None:
            terms, success = self._reward_terms(np.zeros(self.action_space.shape))
        return {
            "reward_terms": terms,
            "is_success": bool(success),
            "sim_time_s": float(self.data.time),
            "action_clipped": clipped,
        }

    # ------------------------------------------------------------------ helpers for experts and tools
    def action_for_targets(self, arm_target: np.ndarray, gripper: float) -> np.ndarray:
        """The action that moves the arm's position targets toward `arm_target` (rad) in this action mode."""
        sign = self.shifts.action_sign
        if self.action_mode == "delta":
            arm = sign * (np.asarray(arm_target) - self.arm_target) / self.max_delta_rad
        else:
            arm = sign * np.asarray(arm_target)
        action = np.append(arm, gripper)
        return np.clip(action, self.action_space.low, self.action_space.high).astype(np.float32)

    def apply_shift(self, shift: DynamicsShift) -> None:
        """Change the world's dynamics now, mid-episode, without reset."""
        self.shifts.apply(shift)

    def revert_shift(self) -> None:
        """Restore the nominal dynamics exactly."""
        self.shifts.revert()

    @property
    def sim_time_s(self) -> float:
        return float(self.data.time)

    def render(self):
        if self.render_mode != "rgb_array":
            return None
        if self._viewer_camera is None:
            self._viewer_camera = CameraRenderer(self.model, C.CAMERA, *self._render_size)
        return self._viewer_camera.render(self.data)

    def close(self):
        for cam in (self._camera, self._viewer_camera):
            if cam is not None:
                cam.close()
        self._camera = self._viewer_camera = None
