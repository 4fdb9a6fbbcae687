"""Headless defaults for rendering libraries; must run before `mujoco` or `pygame` is first imported."""

import os

GL_BACKENDS_HELP = (
    "Set MUJOCO_GL before starting Python (it is read when mujoco is first imported): "
    "`MUJOCO_GL=egl` (headless, GPU or Mesa software), "
    "`MUJOCO_GL=osmesa` (headless, pure software; needs libosmesa6), or `MUJOCO_GL=glfw` (with a display)."
)


def use_headless_backends() -> None:
    """On a machine with no display, render MuJoCo through EGL (GPU or Mesa software) and pygame offscreen.

    Explicit settings win: this only fills in MUJOCO_GL / SDL_VIDEODRIVER when they are unset.
    """
    if not os.environ.get("DISPLAY"):
        os.environ.setdefault("MUJOCO_GL", "egl")
        os.environ.setdefault("SDL_VIDEODRIVER", "dummy")
