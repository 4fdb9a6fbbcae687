"""The dynamics lock: the transition's weights are what was certified, or nothing moves.

`DynamicsLock.seal(model)` hashes every parameter (SHA-256 over a random salt, then each parameter's name,
dtype, shape and bytes, in name order) and records it; the record is saved next to a deployment. A locked
runtime:
- refuses to start from weights whose salted hash differs from the record (`check` raises `LockError`);
- applies no weight changes (`permits_weight_change` is False; the slow learner's swaps are refused and
  counted), while the memory may still be read, and written only if `memory_writes` says so;
- re-checks the hash every `recheck_ticks` (`LockWatch`); a mismatch at run time calls its `on_violation`,
  which the brain wires to a protective stop of the actuators (repeated while tripped).
It covers the transition (`model.predictor`), the part online learning may change; the encoders and the
belief are covered by the checkpoint's own SHA-256 manifest at load.
The salt makes the record useless for forging a matching set of weights from the hash alone.
"""

import hashlib
import json
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch


class LockError(RuntimeError):
    """Weights that do not match the lock record."""


def weights_hash(module: torch.nn.Module, salt: bytes) -> str:
    h = hashlib.sha256(salt)
    for name, tensor in sorted(module.state_dict().items()):
        t = tensor.detach().contiguous().cpu()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.numpy().tobytes() if t.dtype != torch.bfloat16 else t.view(torch.int16).numpy().tobytes())
    return h.hexdigest()


@dataclass
class DynamicsLock:
    salt_hex: str
    sha256: str
    locked: bool = True
    memory_writes: bool = True  # a locked runtime may still let the memory learn, if this says so

    @classmethod
    def seal(cls, module: torch.nn.Module, locked: bool = True, memory_writes: bool = True) -> "DynamicsLock":
        salt = os.urandom(16)
        return cls(salt.hex(), weights_hash(module, salt), locked, memory_writes)

    def matches(self, module: torch.nn.Module) -> bool:
        return weights_hash(module, bytes.fromhex(self.salt_hex)) == self.sha256

    def check(self, module: torch.nn.Module) -> None:
        if not self.matches(module):
            raise LockError(
                "dynamics lock: the model's weights do not match the lock record (salted SHA-256 "
                f"{self.sha256[:16]}...); refusing to run them. Re-seal only weights you have validated."
            )

    @property
    def permits_weight_change(self) -> bool:
        return not self.locked

    def save(self, path: Path) -> None:
        tmp = Path(path).with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(self), indent=2) + "\n")
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: Path) -> "DynamicsLock":
        try:
            raw = json.loads(Path(path).read_text())
            return cls(**raw)
        except (OSError, ValueError, TypeError) as exc:
            raise LockError(f"dynamics lock record {path} is unreadable: {exc}") from None


class LockWatch:
    """Re-checks the hash every `recheck_ticks` ticks; on a mismatch calls `on_violation(message)` once."""

    def __init__(
        self,
        lock: DynamicsLock,
        module: torch.nn.Module,
        on_violation: Callable[[str], None],
        recheck_ticks=300,
    ):
        if recheck_ticks < 1:
            raise ValueError(f"`recheck_ticks` must be >= 1, got {recheck_ticks}")
        self.lock, self.module, self.on_violation = lock, module, on_violation
        self.recheck_ticks = recheck_ticks
        self.ticks = 0
        self.tripped: str | None = None

    def tick(self) -> bool:
        """Count a tick; re-check when due. Returns False once the lock has tripped."""
        self.ticks += 1
        if (
            self.tripped is None
            and self.ticks % self.recheck_ticks == 0
            and not self.lock.matches(self.module)
        ):
            self.tripped = (
                f"dynamics lock: weights changed at run time (tick {self.ticks}); "
                "protective stop of the actuators"
            )
            self.on_violation(self.tripped)
        return self.tripped is None
