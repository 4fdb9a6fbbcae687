"""What a user sees when MuJoCo cannot render (MUJOCO_GL), checked in fresh interpreters because the GL
backend is chosen once, when mujoco is first imported."""

import ctypes.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PROBE = """
import json
try:
    import os
    import envs, gymnasium as gym
    env = gym.make("Manipulation-Reach-v0", observe_image={observe_image})
    obs, _ = env.reset(seed=0)
    print(json.dumps({{"ok": True, "gl": os.environ.get("MUJOCO_GL"), "keys": sorted(obs)}}))
except BaseException as exc:
    print(json.dumps({{"ok": False, "type": type(exc).__name__, "msg": str(exc)}}))
"""


def _probe(mujoco_gl: str | None, observe_image: bool = True) -> dict:
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("DISPLAY", "WAYLAND_DISPLAY", "MUJOCO_GL", "PYOPENGL_PLATFORM")
    }
    if mujoco_gl is not None:
        env["MUJOCO_GL"] = mujoco_gl
    out = subprocess.run(
        [sys.executable, "-c", PROBE.format(observe_image=observe_image)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    lines = [line for line in out.stdout.splitlines() if line.startswith("{")]
    assert lines, f"probe printed nothing (rc {out.returncode}); stderr:\n{out.stderr[-3000:]}"
    return json.loads(lines[-1])


def test_unset_mujoco_gl_renders_headless():
    """With no display and MUJOCO_GL unset, `import envs` picks a headless backend (egl) and the camera
    renders."""
    result = _probe(None)
    assert result["ok"], result
    assert result["gl"] == "egl" and "image" in result["keys"]


def test_glfw_without_display_explains_the_backends():
    """MUJOCO_GL=glfw with no display: building an env with a camera raises RuntimeError that names
    MUJOCO_GL and the usable values egl / osmesa / glfw."""
    result = _probe("glfw")
    assert not result["ok"] and result["type"] == "RuntimeError", result
    for text in ("MUJOCO_GL", "egl", "osmesa", "glfw"):
        assert text in result["msg"], result["msg"]


def test_no_gl_needed_without_images():
    """An env with observe_image=False (and no render_mode) never needs an OpenGL context."""
    result = _probe("glfw", observe_image=False)
    assert result["ok"], result
    assert "image" not in result["keys"]


def test_invalid_mujoco_gl_value_names_the_variable():
    """A value MuJoCo does not know (MUJOCO_GL=foo) fails with a message naming MUJOCO_GL and the value
    (MuJoCo's own check, at import)."""
    result = _probe("foo")
    assert not result["ok"], result
    assert "MUJOCO_GL" in result["msg"] and "foo" in result["msg"], result


@pytest.mark.skipif(ctypes.util.find_library("OSMesa") is not None, reason="OSMesa is installed here")
def test_osmesa_without_the_library_explains_the_backends():
    """MUJOCO_GL=osmesa where libOSMesa is missing fails with a message that names MUJOCO_GL (and what to
    do), not a bare error from deep inside PyOpenGL."""
    result = _probe("osmesa")
    assert not result["ok"], result
    assert "MUJOCO_GL" in result["msg"], result
