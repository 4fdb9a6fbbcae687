"""Profiles: data files in `firmware_profiles/` loaded into typed, validated dataclasses: edge computers
(`devices`) and arms (`robots`)."""

from runtime.profiles.devices import (
    DEVICES_DIR,
    MODEL_PRESETS,
    Budget,
    Compute,
    DeviceProfile,
    Model,
    Policy,
    ProfileError,
    Runtime,
    Sensors,
    check_provider_available,
    device_names,
    load_device,
)
from runtime.profiles.robots import ROBOTS_DIR, Bus, Joint, RobotProfile, load_robot, robot_names

__all__ = [
    "DEVICES_DIR",
    "MODEL_PRESETS",
    "Budget",
    "Compute",
    "DeviceProfile",
    "Model",
    "Policy",
    "ProfileError",
    "Runtime",
    "Sensors",
    "check_provider_available",
    "device_names",
    "load_device",
    "ROBOTS_DIR",
    "Bus",
    "Joint",
    "RobotProfile",
    "load_robot",
    "robot_names",
]
