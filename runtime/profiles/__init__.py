"""Profiles: data files in `firmware_profiles/` loaded into typed, validated dataclasses. So far the edge
computers (`devices`); robots follow with the hardware issue."""

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
]
