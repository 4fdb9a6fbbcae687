"""What the planner expects, drawn where people look: the predicted end-effector path in the camera image,
and a Rerun recording of the run.

`PathProjector` turns a plan's predicted arm joints (the brain's `brain/plan`: the planning readout of each
predicted state, one row per control step) into end-effector points by forward kinematics on the arm's own
MuJoCo model, and projects world points into the policy camera's pixels (pinhole, the camera's pose and
fovy from the same model). `draw_path` overlays a path on a frame. `RerunLog` writes a `.rrd` recording
(rerun-sdk): camera frames, the predicted and the actual end-effector paths in 3-D, and scalar series
(energy, prediction error, frame-to-action latency); open it with `rerun FILE.rrd`.
"""

from pathlib import Path

import cv2
import mujoco
import numpy as np

from envs import manipulation_constants as C

PREDICTED_RGB = (255, 200, 0)  # the plan: amber
ACTUAL_RGB = (0, 200, 255)  # where the hand went: cyan


class PathProjector:
    """Forward kinematics of the arm and the pinhole projection of one fixed camera of `model`."""

    def __init__(self, model: mujoco.MjModel | None = None, camera: str = C.WORKSPACE_CAMERA):
        """`model`: the manipulation scene (default: loaded from its XML; only kinematics are read)."""
        model = model or mujoco.MjModel.from_xml_path(str(C.XML_PATH))
        self.model, self.data = model, mujoco.MjData(model)
        self._qadr = np.array([model.joint(j).qposadr[0] for j in C.ARM_JOINTS])
        self._ee = model.site(C.EE_SITE).id
        self._camera = model.camera(camera).id
        mujoco.mj_kinematics(model, self.data)
        mujoco.mj_camlight(model, self.data)  # the camera is fixed: its pose is read once
        self.cam_pos = self.data.cam_xpos[self._camera].copy()
        self.cam_rot = self.data.cam_xmat[self._camera].reshape(3, 3).copy()  # columns: camera axes in world
        self.tan_half = np.tan(np.deg2rad(model.cam_fovy[self._camera]) / 2)

    def ee_path(self, joints: np.ndarray) -> np.ndarray:
        """Arm joints (H, 4) -> end-effector positions (H, 3), metres in the world frame."""
        out = np.empty((len(joints), 3))
        for k, q in enumerate(np.asarray(joints, float)):
            self.data.qpos[self._qadr] = q
            mujoco.mj_kinematics(self.model, self.data)
            out[k] = self.data.site_xpos[self._ee]
        return out

    def pixels(self, points: np.ndarray, height: int, width: int) -> np.ndarray:
        """World points (N, 3) -> (N, 2) pixel (column, row) in a (height, width) image of the camera; NaN for
        points behind it. The camera looks down its -z axis, y up; rows grow downward."""
        local = (np.asarray(points, float) - self.cam_pos) @ self.cam_rot  # (N, 3) in camera axes
        depth = -local[:, 2]
        focal = height / 2 / self.tan_half
        with np.errstate(divide="ignore", invalid="ignore"):
            col = width / 2 + focal * local[:, 0] / depth
            row = height / 2 - focal * local[:, 1] / depth
        out = np.stack((col, row), 1)
        out[depth <= 0] = np.nan
        return out


def draw_path(frame: np.ndarray, pixels: np.ndarray, rgb=PREDICTED_RGB, thickness: int = 1) -> np.ndarray:
    """The path (N, 2) drawn on a copy of `frame` (H, W, 3) uint8 as a polyline with a dot at its end."""
    out = np.ascontiguousarray(frame).copy()
    finite = pixels[np.all(np.isfinite(pixels), 1)]
    if len(finite) == 0:
        return out
    points = np.round(finite).astype(np.int32).reshape(-1, 1, 2)
    cv2.polylines(out, [points], False, rgb, thickness, cv2.LINE_AA)
    cv2.circle(out, tuple(int(v) for v in points[-1, 0]), max(1, 2 * thickness), rgb, -1, cv2.LINE_AA)
    return out


class RerunLog:
    """A Rerun recording saved to `path` (.rrd), on the capture-time timeline of the run."""

    def __init__(self, path: str | Path, application: str = "hamrt"):
        import rerun as rr  # only when asked for: the SDK starts a recording stream

        self.path = Path(path)
        if self.path.suffix != ".rrd":
            raise ValueError(f"a Rerun recording is a .rrd file, got {str(self.path)!r}")
        if not self.path.parent.exists():
            raise ValueError(f"directory {str(self.path.parent)!r} does not exist")
        self.rr = rr
        self.stream = rr.RecordingStream(application)
        self.stream.save(self.path)

    def _at(self, capture_ns: int) -> None:
        self.rr.set_time("capture", timestamp=capture_ns / 1e9, recording=self.stream)

    def frame(self, capture_ns: int, rgb: np.ndarray) -> None:
        self._at(capture_ns)
        self.rr.log("camera/image", self.rr.Image(rgb), recording=self.stream)

    def paths(self, capture_ns: int, predicted: np.ndarray | None, actual: np.ndarray | None) -> None:
        """End-effector paths in the world frame, (N, 3) each: the plan's, and the hand's recent one."""
        self._at(capture_ns)
        for name, path, rgb in (("predicted", predicted, PREDICTED_RGB), ("actual", actual, ACTUAL_RGB)):
            if path is not None and len(path) > 1:
                strip = self.rr.LineStrips3D([np.asarray(path, np.float32)], colors=[rgb], radii=0.003)
                self.rr.log(f"world/ee/{name}", strip, recording=self.stream)

    def scalar(self, capture_ns: int, name: str, value: float) -> None:
        if np.isfinite(value):
            self._at(capture_ns)
            self.rr.log(name, self.rr.Scalars(float(value)), recording=self.stream)

    def close(self) -> None:
        self.stream.flush()
        self.stream.disconnect()

    @staticmethod
    def entities(path: str | Path) -> set[str]:
        """The entity paths a recording holds (read back with Rerun's own reader)."""
        from rerun.chunk import RrdReader

        return {str(chunk.entity_path) for chunk in RrdReader(str(path)).stream()}
