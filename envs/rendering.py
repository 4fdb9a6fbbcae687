"""Offscreen camera rendering with the settings that keep software rendering fast."""

import os

import mujoco
import numpy as np

GL_BACKENDS_HELP = (
    "Set MUJOCO_GL before starting Python (it is read when mujoco is first imported): "
    "`MUJOCO_GL=egl` (headless, GPU or Mesa software), "
    "`MUJOCO_GL=osmesa` (headless, pure software; needs libosmesa6), or `MUJOCO_GL=glfw` (with a display)."
)


class CameraRenderer:
    """Renders one fixed MuJoCo camera to RGB uint8, shadows and reflections off.

    Software rendering (EGL on Mesa llvmpipe) runs ~20x faster without shadows and reflections.
    """

    def __init__(self, model: mujoco.MjModel, camera: str, height: int, width: int):
        try:
            self._renderer = mujoco.Renderer(model, height, width)
        except Exception as exc:  # mujoco raises several types, all meaning "no usable GL context"
            backend = os.environ.get("MUJOCO_GL", "<unset>")
            raise RuntimeError(
                f"MuJoCo could not create an OpenGL context (MUJOCO_GL={backend}): {exc}. {GL_BACKENDS_HELP}"
            ) from exc
        self._camera = model.camera(camera).id
        flags = self._renderer.scene.flags
        flags[mujoco.mjtRndFlag.mjRND_SHADOW] = 0
        flags[mujoco.mjtRndFlag.mjRND_REFLECTION] = 0
        flags[mujoco.mjtRndFlag.mjRND_SKYBOX] = 0

    def render(self, data: mujoco.MjData) -> np.ndarray:
        self._renderer.update_scene(data, camera=self._camera)
        return self._renderer.render()  # (H, W, 3) uint8, a fresh array

    def close(self) -> None:
        self._renderer.close()
