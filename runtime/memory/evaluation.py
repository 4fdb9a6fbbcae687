"""Recall quality of a cell's store against two baselines, on the world model's own latents.

Entries come from held-out episodes through the shipped world model: the key is a tick's four modality tokens
(camera | audio | joints | action, 4 x d_token), standardized per dimension; the value is what followed, the
next tick's latent z (or, for the cross-modal test, the tick's own camera token). Measured:
- `recall_cos_mask{25,50,75}`: mean cosine of the recalled value with the stored one when that share of the
  key's dimensions is hidden at random, at a load of C/2;
- `capacity_at_095`: the largest load (entries in one cell, doubling up to C) at which the mean cosine with
  half the key hidden is still >= 0.95;
- `crossmodal_top1`: a cue holding only the audio token of a tick with audible contact retrieves that tick's
  entry first (its stored camera token), over C/2 entries of such ticks.
Baselines, given the same cues: `exact_nn` (brute-force nearest key over the known dimensions, its value)
and `hopfield` (a modern Hopfield read-out, softmax(beta * K c) V with the hidden dimensions of the cue set
to zero, as retrieval from a partial pattern is done there; beta picked per load from a grid, on other
masks of stored cues: its best case, not ours).
"""

from dataclasses import dataclass

import numpy as np
import torch

from runtime.memory.store import HolographicStore, StoreConfig
from runtime.world_model.model import TICK_FIELDS

MASKS = (0.25, 0.5, 0.75)
HOPFIELD_BETAS = (1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0)
AUDIBLE_RMS = 0.01  # the contact microphone's noise floor is ~1e-3; contact is 0.1-0.6


@dataclass
class Entries:
    keys: np.ndarray  # (N, 4 * d_token), standardized
    next_z: np.ndarray  # (N, 2 * d_latent)
    camera: np.ndarray  # (N, d_token)
    audible: np.ndarray  # (N,) bool
    audio_dims: slice  # the key's audio part
    d_token: int


@torch.no_grad()
def entries_from_episodes(model, episodes: list[dict]) -> Entries:
    keys, nexts, cams, audible = [], [], [], []
    for ep in episodes:
        batch = {k: torch.from_numpy(ep[k][None]) for k in TICK_FIELDS}
        tokens = model.tokens(batch)[0]  # (T, 4, d_token)
        z, _, _ = model(batch)
        keys.append(tokens[:-1].flatten(1).numpy())
        nexts.append(z[0, 1:].numpy())
        cams.append(tokens[:-1, 0].numpy())
        rms = np.sqrt((ep["audio"][:-1] ** 2).mean((1, 2)))
        audible.append(rms > AUDIBLE_RMS)
    keys = np.concatenate(keys).astype(np.float32)
    keys = (keys - keys.mean(0)) / (keys.std(0) + 1e-6)
    d = model.cfg.d_token
    return Entries(
        keys, np.concatenate(nexts), np.concatenate(cams), np.concatenate(audible), slice(d, 2 * d), d
    )


class ExactNN:
    """Nearest stored key by Euclidean distance over the cue's known dimensions."""

    def __init__(self, keys: np.ndarray, values: np.ndarray):
        self.keys, self.values = keys, values

    def recall(self, cue: np.ndarray, known: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        m = known.astype(np.float32)
        dist = (m * cue**2).sum(-1, keepdims=True) - 2 * (m * cue) @ self.keys.T + m @ (self.keys**2).T
        best = dist.argmin(-1)
        return self.values[best], best


class Hopfield:
    """Modern Hopfield retrieval (Ramsauer et al. 2020) from a partial pattern: unknown entries are zero."""

    def __init__(self, keys: np.ndarray, values: np.ndarray, beta: float):
        norm = np.linalg.norm(keys, axis=-1, keepdims=True) + 1e-8
        self.keys, self.values, self.beta = keys / norm, values, beta

    def recall(self, cue: np.ndarray, known: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        c = cue * known
        c = c / (np.linalg.norm(c, axis=-1, keepdims=True) + 1e-8)
        logits = self.beta * c @ self.keys.T
        w = np.exp(logits - logits.max(-1, keepdims=True))
        w /= w.sum(-1, keepdims=True)
        return w @ self.values, w.argmax(-1)


class Ours:
    def __init__(self, keys: np.ndarray, values: np.ndarray, capacity: int):
        self.store = HolographicStore(
            StoreConfig(key_dim=keys.shape[1], value_dim=values.shape[1], capacity=capacity)
        )
        self.store.write(keys, values)

    def recall(self, cue: np.ndarray, known: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        got = self.store.recall(cue, known, probe=True)
        return got.value, got.slots[np.arange(len(cue)), got.weights.argmax(-1)]


def cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(-1) / (np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1) + 1e-8)


def hidden(rng: np.random.Generator, n: int, dims: int, share: float) -> np.ndarray:
    """Known-masks (n, dims) hiding `share` of the dimensions of each cue (exactly, at random)."""
    order = rng.random((n, dims)).argsort(-1)
    return order >= int(round(share * dims))


def build(name: str, keys, values, capacity: int, beta: float = 8.0):
    if name == "ours":
        return Ours(keys, values, capacity)
    if name == "exact_nn":
        return ExactNN(keys, values)
    return Hopfield(keys, values, beta)


def best_beta(keys, values, rng, cues: int, share: float = 0.5) -> float:
    """The Hopfield inverse temperature that recalls best at this load (cues drawn apart from scoring's)."""
    idx = rng.choice(len(keys), min(cues, len(keys)), replace=False)
    known = hidden(rng, len(idx), keys.shape[1], share)
    scores = {
        beta: cosine(Hopfield(keys, values, beta).recall(keys[idx], known)[0], values[idx]).mean()
        for beta in HOPFIELD_BETAS
    }
    return max(scores, key=scores.get)


def recall_scores(
    entries: Entries, capacity: int, rng: np.random.Generator, cues: int = 512
) -> tuple[dict[str, float], dict]:
    """Every figure for the three stores: results keys for ours (`recall_cos_mask25`, ...) and the baselines
    with a `_exact_nn` / `_hopfield` suffix; details hold the capacity curves and the betas chosen."""
    results: dict[str, float] = {}
    details: dict = {"capacity_curve": {}, "hopfield_beta": {}}
    n_all = len(entries.keys)
    loads = [n for n in (2**i for i in range(6, 20)) if n <= min(capacity, n_all)]
    half = min(capacity // 2, n_all)
    for name in ("ours", "exact_nn", "hopfield"):
        suffix = "" if name == "ours" else f"_{name}"
        curve = {}
        for load in sorted(set(loads) | {half}):
            pick = rng.choice(n_all, load, replace=False)
            keys, values = entries.keys[pick], entries.next_z[pick]
            beta = best_beta(keys, values, rng, cues) if name == "hopfield" else 8.0
            if name == "hopfield":
                details["hopfield_beta"][str(load)] = beta
            store = build(name, keys, values, capacity, beta)
            idx = rng.choice(load, min(cues, load), replace=False)
            shares = MASKS if load == half else (0.5,)
            for share in shares:
                known = hidden(rng, len(idx), keys.shape[1], share)
                cos = float(cosine(store.recall(keys[idx], known)[0], values[idx]).mean())
                if load == half:
                    results[f"recall_cos_mask{round(share * 100)}{suffix}"] = cos
                if share == 0.5:
                    curve[load] = cos
        details["capacity_curve"][name] = {str(k): v for k, v in sorted(curve.items())}
        ok = [load for load, cos in sorted(curve.items()) if cos >= 0.95]
        results[f"capacity_at_095{suffix}"] = float(max(ok)) if ok else 0.0
        if entries.audible.sum() >= 2:
            results[f"crossmodal_top1{suffix}"] = crossmodal_top1(entries, name, capacity, rng, cues)
    details["crossmodal_entries"] = int(min(capacity // 2, entries.audible.sum()))  # 0: not measured
    details["entries_available"] = n_all
    return results, details


def crossmodal_top1(entries: Entries, name: str, capacity: int, rng: np.random.Generator, cues: int) -> float:
    """Audio-only cues of ticks with audible contact: the share whose first recalled entry is their own."""
    pool = np.flatnonzero(entries.audible)
    pick = rng.choice(pool, min(capacity // 2, len(pool)), replace=False)
    keys, values = entries.keys[pick], entries.camera[pick]
    known = np.zeros(keys.shape, bool)
    known[:, entries.audio_dims] = True
    store = build(name, keys, values, capacity)  # top-1 is the softmax's argmax: beta does not matter
    idx = rng.choice(len(pick), min(cues, len(pick)), replace=False)
    _, first = store.recall(keys[idx], known[idx])
    return float(np.mean(first == idx))
