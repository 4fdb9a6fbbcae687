"""Tabletop manipulation, version 1: v0 with the policy camera moved onto the workspace."""

from envs import manipulation_constants as C
from envs.manipulation_v0 import ManipulationEnv


class ManipulationEnvV1(ManipulationEnv):
    """`Manipulation-Reach-v1` and `Manipulation-Push-v1`: everything as in v0 (see `ManipulationEnv`) except
    the observation `image`, which comes from the `workspace` camera. It looks down at 55 degrees across the
    table from the arm and frames the area the tasks use, so the 5 cm cube covers about 50 pixels of a
    64x64 frame instead of v0's 12-16: a target a vision encoder can find. Dynamics, actions, rewards, audio
    and episode ends are v0's.
    """

    def __init__(self, *, camera: str = C.WORKSPACE_CAMERA, **kwargs):
        super().__init__(camera=camera, **kwargs)
