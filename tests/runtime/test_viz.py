"""The predicted-path overlay and the Rerun log: projection into the real camera, forward kinematics of the
arm, drawing, and a recording Rerun reads back."""

import numpy as np
import pytest

import envs
from runtime.viz import PREDICTED_RGB, PathProjector, RerunLog, draw_path


@pytest.fixture(scope="module")
def scene():
    env = envs.make("manipulation", "reach", image_size=64)
    env.reset(seed=3)
    yield env.unwrapped
    env.close()


def test_the_goal_marker_projects_onto_its_own_pixels(scene):
    """The green goal sphere, rendered by the policy camera, is where the pinhole projection puts its centre;
    a point behind the camera has no pixel."""
    image = scene.render_camera()
    projector = PathProjector(scene.model)
    col, row = projector.pixels(np.asarray(scene.goal)[None], *image.shape[:2])[0]
    r, g, b = image[int(round(row)), int(round(col))].astype(int)
    assert g > 180 and g > r + 80 and g > b + 80, (r, g, b)
    behind = projector.cam_pos + 0.5 * projector.cam_rot[:, 2]  # along +z: behind a camera looking down -z
    assert np.isnan(projector.pixels(behind[None], 64, 64)).all()


def test_forward_kinematics_puts_the_hand_where_the_sim_has_it(scene):
    state = scene.state()
    path = PathProjector().ee_path(state["joint"][None, :4])
    assert path.shape == (1, 3) and np.allclose(path[0], state["ee"], atol=1e-5)


def test_a_path_is_drawn_on_a_copy():
    frame = np.zeros((64, 64, 3), np.uint8)
    out = draw_path(frame, np.array([[5.0, 5.0], [40.0, 30.0], [np.nan, np.nan]]), PREDICTED_RGB)
    assert not frame.any() and out.any()
    assert tuple(out[30, 40]) == PREDICTED_RGB  # the end dot


def test_a_rerun_recording_is_written_and_read_back(tmp_path):
    log, rng = RerunLog(tmp_path / "run.rrd"), np.random.default_rng(0)
    for k in range(3):
        t = 10**18 + k * 33_000_000
        log.frame(t, np.full((8, 8, 3), 40 * k, np.uint8))
        log.paths(t, rng.random((5, 3)), rng.random((4, 3)))
        log.scalar(t, "latency/frame_to_action_ms", 12.0 + k)
        log.scalar(t, "model/energy", float("nan"))  # not logged
    log.close()
    entities = RerunLog.entities(tmp_path / "run.rrd")
    expected = {"/camera/image", "/world/ee/predicted", "/world/ee/actual", "/latency/frame_to_action_ms"}
    assert expected <= entities, entities
    assert "/model/energy" not in entities
    with pytest.raises(ValueError, match=".rrd"):
        RerunLog(tmp_path / "run.txt")
