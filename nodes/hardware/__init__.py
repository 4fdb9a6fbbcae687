"""Real arms: servo-bus drivers (`bus.py` and one module per protocol), calibration, the hardware node, and
protocol-level emulators for testing without a robot (`emulators/`)."""
