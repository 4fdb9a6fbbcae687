"""Real stand-ins for absent hardware: video files and pipes, file-backed ALSA devices."""
