"""The installed environment: every core package imports, with the system libraries they need."""

import importlib
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CORE_MODULES = [
    "torch",
    "ray",
    "zmq",
    "cv2",
    "sounddevice",
    "gymnasium",
    "mujoco",
    "msgpack",
    "numba",
    "onnxruntime",
    "onnx",
]


@pytest.mark.parametrize("module", CORE_MODULES)
def test_core_package_imports(module):
    """`make setup` installed it (sounddevice also needs the system PortAudio library)."""
    importlib.import_module(module)


def test_torch_is_the_pinned_cpu_build():
    """torch is pinned to the CPU wheel these machines install without a multi-GB CUDA download."""
    import torch

    pins = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    assert "torch==2.13.0" in pins
    assert torch.__version__.startswith("2.13.0")


def test_top_level_packages_are_exactly_the_product_folders():
    """Importable top-level packages are runtime, nodes, envs, launch."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert config["tool"]["setuptools"]["packages"]["find"]["include"] == [
        "runtime*",
        "nodes*",
        "envs*",
        "launch*",
    ]
    for package in ("runtime", "nodes", "envs", "launch"):
        assert (ROOT / package / "__init__.py").exists()
