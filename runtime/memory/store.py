"""A cell's content-addressable store: partial cues recall whole entries; entries live on energy.

Each entry is a key (phase-space context and action, or any modality's latent parts), a value (what followed:
a prediction residual, a goal latent), an energy and a crystallized flag (seed 004, sections 4.3, 5.4, 7.4).

- **Recall by content, from part of a key.** A cue names the key dimensions it knows; similarity is the cosine
  over those dimensions only (a hidden dimension is neither a match nor a mismatch), the best `top_k` entries
  are blended by a softmax on it, and the recall returns the whole entry: the blended value *and* the blended
  full key, hidden dimensions filled in. A shorter cue separates entries less sharply, so recall blurs
  gradually instead of failing (the "cut hologram" property of seed 004, section 5.4), and so does a fuller
  store, as more entries crowd each cue.
- **Metabolism.** Every entry's energy decays each tick unless it is crystallized; `credit` feeds the entries
  a recall used, in proportion to their weights, when that recall made a prediction better. At capacity a
  write evicts the weakest entry that is not crystallized. An entry that stays above `crystallize_energy`
  for `crystallize_ticks` ticks crystallizes: it no longer decays and is never evicted.
- **Probes.** `recall(..., probe=True)` is what planning uses: no recall changes the store, and a probe's
  recall cannot be credited, so nothing read while imagining feeds energy or crystallizes.
- **Age.** Each entry keeps the write count at which it was stored (`born`), so a cell can tell entries from
  before and after a change in the world apart when it splits (cells.py). With `recency_writes` set, recall
  also prefers newer entries among similar ones (an entry that many writes older weighs e^-1 as much).

Keys should be roughly centred (cosine compares directions): the world model's latents are, by its mean
penalty; callers with raw features standardize them first.
"""

from dataclasses import dataclass

import numpy as np
import torch

EPS = 1e-8


class MemoryInputError(ValueError):
    """A key, value or cue the memory refuses: wrong shape, not finite, or a cue that knows nothing."""


MAX_ABS = 1e18  # squares of larger values overflow float32: refused like NaN


def check_vectors(x, dim: int, name: str) -> np.ndarray:
    """(dim,) or (B, dim) finite values -> (B, dim) float32, or MemoryInputError naming `name`."""
    x = np.asarray(x, np.float32)
    if x.ndim == 1:
        x = x[None]
    if x.ndim != 2 or x.shape[1] != dim:
        raise MemoryInputError(f"{name} must have shape (..., {dim}), got {tuple(np.shape(x))}")
    if not np.isfinite(x).all() or (np.abs(x) > MAX_ABS).any():
        raise MemoryInputError(f"{name} has NaN, infinite or out-of-range values")
    return x


@dataclass(frozen=True)
class StoreConfig:
    key_dim: int
    value_dim: int
    capacity: int = 4096
    top_k: int = 4  # entries blended per recall
    temperature: float = 0.02  # of the softmax on cosine similarity: 0.02 gives a 0.05 cosine lead e^2.5
    decay_per_tick: float = 0.002  # energy *= 1 - decay each tick (half-life ~350 ticks, 12 s at 30 Hz)
    initial_energy: float = 1.0
    crystallize_energy: float = 3.0
    crystallize_ticks: int = 300  # 10 s at 30 Hz above the threshold
    # > 0: recall prefers newer entries, an entry this many writes older needing a cosine one softmax
    # temperature higher to weigh the same (0: by content alone)
    recency_writes: float = 0.0

    def __post_init__(self):
        for name in ("key_dim", "value_dim", "capacity", "top_k", "crystallize_ticks"):
            if getattr(self, name) < 1:
                raise ValueError(f"`{name}` must be >= 1, got {getattr(self, name)}")
        if not 0.0 <= self.decay_per_tick < 1.0:
            raise ValueError(f"`decay_per_tick` must be in [0, 1), got {self.decay_per_tick}")
        if self.temperature <= 0:
            raise ValueError(f"`temperature` must be > 0, got {self.temperature}")
        if self.recency_writes < 0:
            raise ValueError(f"`recency_writes` must be >= 0, got {self.recency_writes}")


@dataclass
class Recall:
    """What a batch of cues (B) brought back: blended values (B, Dv), completed keys (B, Dk), the entries
    used (B, k) with their weights and cosine similarities, and whether it was a probe."""

    value: np.ndarray
    key: np.ndarray
    slots: np.ndarray
    weights: np.ndarray
    similarity: np.ndarray
    probe: bool
    born: np.ndarray  # (B, k) the entries' write counts: a slot rewritten since the recall is not credited


class HolographicStore:
    """Fixed-capacity arrays, allocated once: the per-tick path allocates only its small outputs."""

    ARRAYS = ("keys", "values", "energy", "crystal", "used", "strong_ticks", "hits", "born")

    def __init__(self, cfg: StoreConfig):
        self.cfg = cfg
        c = cfg.capacity
        self.keys = np.zeros((c, cfg.key_dim), np.float32)
        self.values = np.zeros((c, cfg.value_dim), np.float32)
        self.key_sq = np.zeros((c, cfg.key_dim), np.float32)  # keys**2, for norms over any subset of dims
        self.key_norm = np.zeros(c, np.float32)  # and over all of them (the common full-key cue)
        self.energy = np.zeros(c, np.float32)
        self.crystal = np.zeros(c, bool)
        self.used = np.zeros(c, bool)
        self.strong_ticks = np.zeros(c, np.int32)  # consecutive ticks above crystallize_energy
        self.hits = np.zeros(c, np.int32)  # credited recalls
        self.born = np.zeros(c, np.int64)  # `writes` when the entry was stored
        self.writes = 0
        self.refused = 0  # writes refused because every slot is crystallized
        self.evicted = 0

    # ---- state --------------------------------------------------------------------------------------------
    def __len__(self) -> int:
        return int(self.used.sum())

    @property
    def crystallized(self) -> int:
        return int(self.crystal.sum())

    def state(self) -> dict[str, np.ndarray]:
        out = {name: getattr(self, name).copy() for name in self.ARRAYS}
        out["counters"] = np.array([self.writes, self.refused, self.evicted], np.int64)
        return out

    @classmethod
    def from_state(cls, cfg: StoreConfig, arrays: dict[str, np.ndarray]) -> "HolographicStore":
        store = cls(cfg)
        for name in cls.ARRAYS:
            got = arrays[name]
            want = getattr(store, name)
            if got.shape != want.shape or got.dtype != want.dtype:
                raise MemoryInputError(
                    f"stored `{name}` is {got.dtype}{got.shape}, expected {want.dtype}{want.shape}"
                )
            want[...] = got
        store.keys_changed(slice(None))
        store.writes, store.refused, store.evicted = (int(n) for n in arrays["counters"])
        return store

    # ---- input checks -------------------------------------------------------------------------------------

    def _known(self, known, batch: int) -> np.ndarray:
        dk = self.cfg.key_dim
        known = np.asarray(known)
        if known.dtype != bool:
            raise MemoryInputError(f"`known` must be a bool mask, got {known.dtype}")
        known = np.broadcast_to(known, (batch, dk)) if known.ndim == 1 else known
        if known.shape != (batch, dk):
            raise MemoryInputError(f"`known` must have shape ({batch}, {dk}), got {known.shape}")
        if not known.any(-1).all():
            raise MemoryInputError("a cue must know at least one key dimension")
        return known.astype(np.float32)

    # ---- reading ------------------------------------------------------------------------------------------
    def nearest(
        self, cue: np.ndarray, known: np.ndarray | None, k: int, recency: bool = False
    ) -> tuple[np.ndarray, np.ndarray]:
        """The k most similar live entries per cue, (B, k) slots and cosines over the known dimensions
        (`known` None: all), best first (`recency`: ranked by cosine less the age penalty of
        `recency_writes`). Over the live slots only and in torch: a planning read is 256 cues x
        4096 entries, and numpy's OpenBLAS pool and torch's would otherwise both spin on the same 2 cores."""
        full = bool(self.used.all())
        live = None if full else torch.from_numpy(np.flatnonzero(self.used))
        pick = (lambda a: torch.from_numpy(a)) if full else (lambda a: torch.from_numpy(a)[live])  # noqa: E731
        masked = torch.from_numpy(cue if known is None else cue * known)
        dot = masked @ pick(self.keys).T
        if known is None or known.all():
            key_norms = pick(self.key_norm)[None]
        else:
            key_norms = (torch.from_numpy(known) @ pick(self.key_sq).T).sqrt()
        sim = dot / (key_norms * masked.norm(dim=-1, keepdim=True) + EPS)
        if recency and self.cfg.recency_writes:
            # After the world changes, the entries written since are the ones that describe it.
            age = (self.writes - pick(self.born)).float()
            _, idx = torch.topk(sim - age * (self.cfg.temperature / self.cfg.recency_writes), k, dim=-1)
            top = torch.gather(sim, -1, idx)
        else:
            top, idx = torch.topk(sim, k, dim=-1)
        slots = idx if full else live[idx]
        return slots.numpy(), top.numpy()

    def recall(self, cue, known=None, *, probe: bool = False) -> Recall:
        """Cues (B, Dk) or (Dk,), `known` a bool mask of the same shape (None: all known) -> Recall.

        Changes nothing: credit a recall (`credit`) to feed the entries it used."""
        n = len(self)
        if n == 0:
            raise MemoryInputError("recall from an empty store")
        cue = check_vectors(cue, self.cfg.key_dim, "cue")
        known = None if known is None else self._known(known, len(cue))  # None: the whole key is known
        slots, top = self.nearest(cue, known, min(self.cfg.top_k, n), recency=True)
        logits = top / self.cfg.temperature
        if self.cfg.recency_writes:
            logits = logits - (self.writes - self.born[slots]) / self.cfg.recency_writes
        logits -= logits.max(-1, keepdims=True)
        weights = np.exp(logits)
        weights /= weights.sum(-1, keepdims=True)
        value = np.einsum("bk,bkd->bd", weights, self.values[slots])
        if known is None:
            key = cue.copy()
        else:
            key = np.einsum("bk,bkd->bd", weights, self.keys[slots])
            key = np.where(known > 0, cue, key)  # what the cue knew stays as given
        return Recall(value, key, slots, weights.astype(np.float32), top, probe, self.born[slots])

    def credit(self, recall: Recall, gain: np.ndarray | float) -> None:
        """Feed the entries a recall used, `gain` (B,) or scalar >= 0 per cue (how much that recall improved a
        prediction), split by their weights. A probe's recall is refused: planning never feeds energy."""
        if recall.probe:
            raise MemoryInputError(
                "a probe's recall cannot be credited (reads made while planning never write)"
            )
        gain = np.broadcast_to(np.asarray(gain, np.float32), (len(recall.slots),))
        if not np.isfinite(gain).all() or (gain < 0).any():
            raise MemoryInputError("credit gain must be finite and >= 0")
        live = self.used[recall.slots] & (
            self.born[recall.slots] == recall.born
        )  # evicted or rewritten: nothing
        np.add.at(self.energy, recall.slots[live], (recall.weights * gain[:, None])[live])
        np.add.at(self.hits, recall.slots[live], 1)

    # ---- writing ------------------------------------------------------------------------------------------
    def write(self, key, value, energy: float | None = None) -> np.ndarray:
        """Store entries (B, Dk) -> (B, Dv); returns their slots (-1 where refused: every slot crystallized).
        At capacity the weakest entry that is not crystallized is evicted first."""
        key = check_vectors(key, self.cfg.key_dim, "key")
        value = check_vectors(value, self.cfg.value_dim, "value")
        if len(key) != len(value):
            raise MemoryInputError(f"{len(key)} keys but {len(value)} values")
        energy = self.cfg.initial_energy if energy is None else float(energy)
        if not np.isfinite(energy) or energy < 0:
            raise MemoryInputError(f"energy must be finite and >= 0, got {energy}")
        slots = np.full(len(key), -1, np.int64)
        for i in range(len(key)):  # a batch is a handful of ticks; each may evict what the previous wrote
            self.writes += 1
            slot = self._free_slot()
            if slot < 0:
                self.refused += 1
                continue
            self.keys[slot] = key[i]
            self.keys_changed(slot)
            self.values[slot] = value[i]
            self.energy[slot] = energy
            self.used[slot], self.crystal[slot] = True, False
            self.strong_ticks[slot] = self.hits[slot] = 0
            self.born[slot] = self.writes
            slots[i] = slot
        return slots

    def _free_slot(self) -> int:
        free = np.flatnonzero(~self.used)
        if free.size:
            return int(free[0])
        candidates = np.where(self.crystal, np.inf, self.energy)
        slot = int(np.argmin(candidates))
        if np.isinf(candidates[slot]):
            return -1
        self.evicted += 1
        return slot

    def put(self, entries: dict[str, np.ndarray]) -> None:
        """Entries taken from another store (a split, a merge), arrays as in `take`, into free slots."""
        free = np.flatnonzero(~self.used)[: len(entries["keys"])]
        if len(free) < len(entries["keys"]):
            raise MemoryInputError(f"{len(entries['keys'])} entries do not fit in {len(free)} free slots")
        for name, array in entries.items():
            getattr(self, name)[free] = array
        self.keys_changed(free)
        self.used[free] = True

    def keys_changed(self, slots) -> None:
        """Refresh the cached squares and norms after keys at `slots` were written."""
        self.key_sq[slots] = self.keys[slots] ** 2
        self.key_norm[slots] = np.sqrt(self.key_sq[slots].sum(-1))

    def take(self, slots: np.ndarray) -> dict[str, np.ndarray]:
        """Copies of the entries at `slots` (for `put`)."""
        names = ("keys", "values", "energy", "crystal", "strong_ticks", "hits", "born")
        return {name: getattr(self, name)[slots].copy() for name in names}

    def remove(self, slots: np.ndarray) -> None:
        self.used[slots] = False
        self.energy[slots] = 0.0
        self.crystal[slots] = False

    # ---- time ---------------------------------------------------------------------------------------------
    def tick(self, ticks: int = 1) -> int:
        """Energy decays for `ticks` ticks; entries strong long enough crystallize. Returns how many did."""
        cfg = self.cfg
        fluid = self.used & ~self.crystal
        self.energy[fluid] *= (1.0 - cfg.decay_per_tick) ** ticks
        strong = fluid & (self.energy >= cfg.crystallize_energy)
        self.strong_ticks[strong] += ticks
        self.strong_ticks[fluid & ~strong] = 0
        new = strong & (self.strong_ticks >= cfg.crystallize_ticks)
        self.crystal |= new
        return int(new.sum())
