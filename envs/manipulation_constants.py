"""Constants of the tabletop manipulation scene (`envs/assets/manipulation.xml`)."""

from pathlib import Path

XML_PATH = Path(__file__).parent / "assets" / "manipulation.xml"

ARM_JOINTS = ("yaw", "shoulder", "elbow", "wrist")
FINGER_JOINTS = ("left_finger", "right_finger")
ARM_ACTUATORS = ARM_JOINTS
FINGER_ACTUATORS = FINGER_JOINTS

EE_SITE = "ee"
WRIST_SITE = "wrist"
CUBE_BODY = "cube"
CUBE_JOINT = "cube"
GOAL_BODY = "goal"
CAMERA = "front"  # v0's policy camera, and what render() shows people
WORKSPACE_CAMERA = "workspace"  # v1's policy camera

PHYSICS_DT_S = 0.002  # must match <option timestep>; 500 Hz physics
FINGER_CLOSED_M = 0.029  # slide travel of each finger from open to touching
CUBE_HALF_M = 0.025
WRIST_TO_EE_M = 0.115  # wrist axis to the point between the finger pads

# Gripper pointing down, ee about 20 cm above the table centre of the workspace.
HOME_ARM_QPOS = (0.0, 0.4154, 1.4729, 1.2532)

# Sampling regions in polar coordinates about the arm's base axis (radius m, bearing rad, height m); the
# table top is z = 0. Radii keep every target, and the pushing pose behind the cube, inside the arm's reach
# (upper arm 0.28 m + forearm 0.26 m, shoulder 0.14 m above the table).
REACH_GOAL_RADIUS_M = (0.22, 0.46)
REACH_GOAL_BEARING_RAD = (-0.7, 0.7)
REACH_GOAL_HEIGHT_M = (0.04, 0.22)
PUSH_CUBE_RADIUS_M = (0.30, 0.42)
PUSH_CUBE_BEARING_RAD = (-0.45, 0.45)
PUSH_GOAL_RADIUS_M = (0.25, 0.45)
PUSH_GOAL_BEARING_RAD = (-0.55, 0.55)
PUSH_GOAL_DISTANCE_M = (0.08, 0.15)

REACH_SUCCESS_M = 0.02  # ee within 2 cm of the goal point
PUSH_SUCCESS_M = 0.03  # cube centre within 3 cm of the goal (xy)

# Contact microphone: material of each touch sensor (see <sensor> in the XML). The mic sits under the table
# top, so an impact excites the ring modes of both bodies in contact (a cube landing: wood and plastic).
TOUCH_MATERIALS = {
    "table_touch": "wood",
    "cube_touch": "plastic",
    "left_finger_touch": "aluminium",
    "right_finger_touch": "aluminium",
}
