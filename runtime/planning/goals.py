"""Named goals, recalled from memory: an arm pose stored under a name and found again by it.

A `GoalBook` keeps goals in a content-addressable store (runtime/memory/store.py): the key is the name's
code, a unit vector drawn from the name's SHA-256, so names need no vocabulary and two names are all but
orthogonal (64 dimensions: cosines of about +-0.13); the value is the goal, the four arm joints. Recall is
the store's probe with the name's code as the cue, so reading a goal changes nothing in the store. A name
nobody stored matches no entry well (cosine under `MATCH`) and is refused, naming the goals there are.
The planner (control.py, `MPCController(goal_name=...)`) aims its plans at the recalled pose.
"""

import hashlib

import numpy as np

from runtime.memory.store import HolographicStore, MemoryInputError, StoreConfig

KEY_DIM = 64
MATCH = 0.9  # cosine a recall must reach to be the named goal (another name's code is near 0)


def name_code(name: str) -> np.ndarray:
    """A name -> its key: a unit vector (KEY_DIM,) seeded by the name's SHA-256."""
    seed = int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "little")
    code = np.random.default_rng(seed).standard_normal(KEY_DIM).astype(np.float32)
    return code / np.linalg.norm(code)


class GoalBook:
    def __init__(self, goal_dim: int = 4, capacity: int = 256):
        # goals are kept until overwritten: nothing here ticks, so no energy decays
        self.store = HolographicStore(StoreConfig(KEY_DIM, goal_dim, capacity=capacity, top_k=1))
        self.names: list[str] = []

    def remember(self, name: str, goal) -> None:
        """Store `goal` (finite, (goal_dim,)) under `name`; a name stored again takes the new goal."""
        if not name or not isinstance(name, str):
            raise MemoryInputError(f"a goal's name must be a non-empty string, got {name!r}")
        if name not in self.names and len(self.names) >= self.store.cfg.capacity:
            raise MemoryInputError(f"the goal book is full ({len(self.names)} goals); {name!r} not stored")
        code = name_code(name)
        if name in self.names:
            slot = int(self.store.nearest(code[None], None, 1)[0][0, 0])
            self.store.remove(np.array([slot]))
            self.names.remove(name)
        self.store.write(code, goal)
        self.names.append(name)

    def recall(self, name: str) -> np.ndarray:
        """The goal stored under `name` (goal_dim,); KeyError naming the stored goals if there is none."""
        if not len(self.store):
            raise KeyError(f"no goal named {name!r}: no goals are stored")
        found = self.store.recall(name_code(name), probe=True)
        if not found.similarity[0, 0] >= MATCH:
            raise KeyError(f"no goal named {name!r}; stored: {', '.join(sorted(self.names))}")
        return found.value[0].copy()
