"""Fixtures for the simulated-world tests (envs/); plain helpers live in `envs_test_helpers.py`."""

import sys
from pathlib import Path

import gymnasium as gym
import pytest

sys.path.insert(0, str(Path(__file__).parent))  # `import envs_test_helpers` under any --import-mode

from envs_test_helpers import ENV_IDS  # noqa: E402


@pytest.fixture
def make_env():
    """Factory `make_env(task, **kwargs)` -> `gym.make` of that task's id; every env is closed afterwards."""
    made = []

    def _make(task: str = "push", **kwargs):
        env = gym.make(ENV_IDS[task], **kwargs)
        made.append(env)
        return env

    yield _make
    for env in made:
        env.close()
