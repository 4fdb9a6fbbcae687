"""Contact microphone: audio synthesized from the simulator's contact impulses.

Each physics step, MuJoCo touch sensors (summed normal contact force per body, computed inside `mj_step`)
are read and summed per material; a rise in that force is an impact
whose impulse (N*s) excites the material's ring mode, a damped sinusoid with the material's frequency and
decay (modal synthesis, as in van den Doel et al., "FoleyAutomatic", SIGGRAPH 2001). Steady contact (a cube
resting on the table) is silent. A small seeded noise floor stands for the microphone's own noise, so the
stream is deterministic for a seed.
"""

from dataclasses import dataclass

import mujoco
import numpy as np


@dataclass(frozen=True)
class Material:
    ring_hz: float
    decay_s: float  # time constant of the exponential envelope
    gain: float  # relative loudness per unit impulse


MATERIALS = {
    "wood": Material(ring_hz=820.0, decay_s=0.012, gain=1.0),
    "plastic": Material(ring_hz=2300.0, decay_s=0.006, gain=0.8),
    "aluminium": Material(ring_hz=3400.0, decay_s=0.045, gain=0.6),
}


class ContactMicrophone:
    """Turns per-step contact forces into 16 kHz audio, delivered in fixed-size chunks."""

    def __init__(
        self,
        model: mujoco.MjModel,
        data: mujoco.MjData,
        touch_materials: dict[str, str],
        sample_rate_hz: int = 16_000,
        chunk_samples: int = 160,  # 10 ms at 16 kHz
        sensitivity_per_ns: float = 12.0,  # amplitude per N*s of impulse: a 2 cm cube drop peaks ~0.3
        noise_floor: float = 2e-4,
    ):
        self.sample_rate_hz = sample_rate_hz
        self.chunk_samples = chunk_samples
        self._samples_per_step = sample_rate_hz * model.opt.timestep
        if abs(self._samples_per_step - round(self._samples_per_step)) > 1e-9:
            raise ValueError(
                f"physics timestep {model.opt.timestep} s is not a whole number of audio samples"
            )
        self._samples_per_step = int(round(self._samples_per_step))
        self._dt = model.opt.timestep
        self._noise_floor = noise_floor

        names = sorted(set(touch_materials.values()))
        self.material_names = tuple(names)
        self._touch_material = [names.index(m) for m in touch_materials.values()]
        adr = [model.sensor(t).adr[0] for t in touch_materials]
        if adr != list(range(adr[0], adr[0] + len(adr))):
            raise ValueError(
                f"touch sensors {list(touch_materials)} must be declared consecutively in the MJCF"
            )
        self._touch_slice = slice(adr[0], adr[0] + len(adr))
        self._responses = []
        for name in names:
            mat = MATERIALS[name]
            t = np.arange(int(5 * mat.decay_s * sample_rate_hz)) / sample_rate_hz
            self._responses.append(
                sensitivity_per_ns * mat.gain * np.exp(-t / mat.decay_s) * np.sin(2 * np.pi * mat.ring_hz * t)
            )
        self._tail_len = max(len(r) for r in self._responses)
        # A view into MjData's sensor buffer (fixed for the data's lifetime): no per-step lookup or copy.
        self._touch = data.sensordata[self._touch_slice]
        self._prev_force = np.zeros(len(adr))
        self._events: list[tuple[int, int, float]] = []  # (sample offset, material, impulse)
        self.reset(0)

    def reset(self, seed: int) -> None:
        """Start a new recording; contacts present now are the silent baseline, not impacts."""
        self._rng = np.random.default_rng(seed)
        self._out = np.zeros(self._tail_len)
        self._events.clear()
        self._steps = 0
        np.copyto(self._prev_force, self._touch)

    def observe(self) -> None:
        """Record the touch forces of the physics step just taken."""
        force, prev = self._touch, self._prev_force
        if (force > prev + 1e-3).any():
            rise = force - prev
            for i in np.flatnonzero(rise > 1e-3):
                self._events.append(
                    (self._steps * self._samples_per_step, self._touch_material[i], float(rise[i]) * self._dt)
                )
        np.copyto(prev, force)
        self._steps += 1

    def pull(self) -> np.ndarray:
        """Audio for all steps observed since the last pull, as (chunks, chunk_samples) float32 in [-1, 1]."""
        n = self._steps * self._samples_per_step
        if n % self.chunk_samples:
            raise ValueError(
                f"{n} samples observed is not a whole number of {self.chunk_samples}-sample chunks"
            )
        buf = np.zeros(n + self._tail_len)
        buf[: self._tail_len] = self._out
        for offset, m, impulse in self._events:
            response = self._responses[m]
            buf[offset : offset + len(response)] += impulse * response
        self._out = buf[n:].copy()
        audio = buf[:n] + self._noise_floor * self._rng.standard_normal(n)
        self._events.clear()
        self._steps = 0
        return np.clip(audio, -1.0, 1.0).astype(np.float32).reshape(-1, self.chunk_samples)
