"""Offscreen camera rendering with the settings that keep software rendering fast."""

import os

import mujoco
import numpy as np

from runtime.headless import GL_BACKENDS_HELP


def check_image_size(name: str, value, largest: int = 1024) -> None:
    """Refuse a camera size before any GL work; the message names the argument."""
    if isinstance(value, bool) or not isinstance(value, int) or not 8 <= value <= largest:
        raise ValueError(f"`{name}` must be an int between 8 and {largest}, got {value!r}")


class CameraRenderer:
    """Renders one fixed MuJoCo camera to RGB uint8, shadows and reflections off.

    Software rendering (EGL on Mesa llvmpipe) runs ~20x faster without shadows and reflections.
    """

    def __init__(self, model: mujoco.MjModel, camera: str, height: int, width: int):
        check_image_size("height", height, largest=4096)
        check_image_size("width", width, largest=4096)
        # The offscreen framebuffer is sized from the model; grow it (visual-only) to fit this camera.
        model.vis.global_.offwidth = max(model.vis.global_.offwidth, width)
        model.vis.global_.offheight = max(model.vis.global_.offheight, height)
        try:
            self._renderer = mujoco.Renderer(model, height, width)
        except Exception as exc:  # with the size checked, what is left means "no usable GL context"
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
