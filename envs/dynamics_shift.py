"""Dynamics shifts for online-adaptation experiments: applied mid-episode, each exactly reversible."""

import math
from dataclasses import dataclass

import mujoco
import numpy as np


@dataclass(frozen=True)
class DynamicsShift:
    """A change of the world's rules. The default instance is the nominal world."""

    cube_mass_scale: float = 1.0  # heavier or lighter object
    friction_scale: float = 1.0  # every geom's friction coefficients
    actuator_gain_scale: float = 1.0  # stiffness, damping and force limit of the arm servos (weaker motor)
    action_sign: tuple[float, ...] = (1.0, 1.0, 1.0, 1.0)  # -1 reverses that arm joint's command

    def __post_init__(self):
        for name in ("cube_mass_scale", "friction_scale", "actuator_gain_scale"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"`{name}` must be a finite number > 0, got {value}")
        if any(s not in (-1.0, 1.0) for s in self.action_sign):
            raise ValueError(f"`action_sign` entries must be +1 or -1, got {self.action_sign}")


# The shifts the adaptation evaluation and `launch.sim --shift NAME@SECONDS` apply (issue 6's four).
NAMED_SHIFTS = {
    "flip": DynamicsShift(action_sign=(1.0, -1.0, 1.0, 1.0)),  # the shoulder's command reversed
    "mass": DynamicsShift(cube_mass_scale=4.0),
    "friction": DynamicsShift(friction_scale=0.3),
    "gain": DynamicsShift(actuator_gain_scale=0.5),
}


def parse_shift(text: str) -> tuple[str, float]:
    """`flip@5` -> ("flip", 5.0): a named shift and the simulated second it applies at; ValueError if bad."""
    name, at, seconds = str(text).partition("@")
    try:
        when = float(seconds) if at else float("nan")
    except ValueError:
        when = float("nan")
    if name not in NAMED_SHIFTS or not (math.isfinite(when) and when >= 0):
        raise ValueError(f"a shift is NAME@SECONDS with NAME one of {', '.join(NAMED_SHIFTS)}, got {text!r}")
    return name, when


class ShiftableModel:
    """Owns the nominal copies of every parameter a shift touches, so reverting is exact (not a division).

    A shift stays in force across `reset` until reverted, so an experiment can span episodes.
    """

    def __init__(self, model: mujoco.MjModel, cube_body: str, arm_actuators: tuple[str, ...]):
        self.model = model
        self._cube = model.body(cube_body).id
        self._arm = np.array([model.actuator(a).id for a in arm_actuators])
        self._mass = float(model.body_mass[self._cube])
        self._inertia = model.body_inertia[self._cube].copy()
        self._friction = model.geom_friction.copy()
        self._gain = model.actuator_gainprm[self._arm, 0].copy()
        self._bias = model.actuator_biasprm[self._arm, 1:3].copy()
        self._forcerange = model.actuator_forcerange[self._arm].copy()
        self._scratch = mujoco.MjData(model)
        self.shift = DynamicsShift(action_sign=(1.0,) * len(arm_actuators))

    def apply(self, shift: DynamicsShift) -> None:
        if len(shift.action_sign) != len(self._arm):
            raise ValueError(f"`action_sign` needs {len(self._arm)} entries, got {len(shift.action_sign)}")
        m = self.model
        m.body_mass[self._cube] = self._mass * shift.cube_mass_scale
        m.body_inertia[self._cube] = self._inertia * shift.cube_mass_scale
        m.geom_friction[:] = self._friction * shift.friction_scale
        m.actuator_gainprm[self._arm, 0] = self._gain * shift.actuator_gain_scale
        m.actuator_biasprm[self._arm, 1:3] = self._bias * shift.actuator_gain_scale
        m.actuator_forcerange[self._arm] = self._forcerange * shift.actuator_gain_scale
        # Derived constants (body/dof inverse weights that scale the contact solver, actuator_acc0...) must
        # follow the new mass, or pushing a heavier cube launches it. mj_setConst overwrites the MjData it
        # is given, hence a scratch one: the simulation's own state is untouched.
        mujoco.mj_setConst(m, self._scratch)
        self.shift = shift

    def revert(self) -> None:
        self.apply(DynamicsShift(action_sign=(1.0,) * len(self._arm)))

    @property
    def action_sign(self) -> np.ndarray:
        return np.asarray(self.shift.action_sign)
