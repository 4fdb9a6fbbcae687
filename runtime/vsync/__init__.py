"""Phase-manifold V-sync: per-stream oscillators and the scheduler that aligns streams into ticks."""

from runtime.vsync.config import Assemble, DtEffMode, StreamConfig, VSyncConfig
from runtime.vsync.kernels import DROP_REASONS
from runtime.vsync.scheduler import StreamSlot, StreamStatus, Tick, VSync

__all__ = [
    "DROP_REASONS",
    "Assemble",
    "DtEffMode",
    "StreamConfig",
    "StreamSlot",
    "StreamStatus",
    "Tick",
    "VSync",
    "VSyncConfig",
]
