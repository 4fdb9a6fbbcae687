"""`python -m launch.bench model`: the world model's per-tick cost on this machine, batch 1, with the device
profile's threads (`--profile`, default host-x86-2core).

With `--runtime onnxruntime` or `both` (runtimes.py): `step_p50_ms_torch`, `step_p50_ms_ort`,
`step_p50_ms_ort_int8` (and p95, p99), `ort_over_torch` and `int8_over_fp32` (ratios of medians measured in
turns in this run), `int8_probe_r2_drop`; per stage (encoders; backbone and head) for the report's bars.

With the baselines (default with `--runtime torch`):
- `step_p50_ms` / `step_p99_ms`: one streaming tick through the shipped checkpoint (tick checks, encoders,
  Hamiltonian backbone, head), inference mode;
- `transformer_step_p50_ms_ctx{64,512,4096}`: the same tick through the Transformer baseline (same encoders,
  same parameter count) with its key/value cache holding that many past ticks;
- `ratio_ctx4096`: Transformer at 4096 ticks of context over hssm, both measured in this run;
- `backbone_*`: the same without the encoders (the belief step alone), to show where the time goes;
- `encoders_step_p50_ms` and `ratio_ctx4096_upper_bound` (= the Transformer's tick over the encoders'
  alone): the most any backbone could reach with these shared encoders, however fast its own step;
- `transformer_step_p50_ms_ctx{16384,65536}` (details): how the Transformer's tick grows past 4096;
- `rss_growth_mb_10k_steps`: resident memory after 10,000 more hssm ticks minus before, and
  `state_bytes` before and after (the state's size must not change).
"""

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from runtime.benchmarks.report import Report
from runtime.world_model import checkpoint
from runtime.world_model.model import (
    ENCODER_INPUTS,
    JOINT_DIM,
    MAX_CHUNKS,
    WorldModel,
    WorldModelConfig,
    parameter_count,
)

TARGETS = {"step_p50_ms": ("<=", 2.0), "ratio_ctx4096": (">=", 10.0), "rss_growth_mb_10k_steps": ("<=", 1.0)}
CONTEXTS = (64, 512, 4096)
LONG_CONTEXTS = (16384, 65536)  # details only: where the Transformer's cache starts to dominate its tick


RUNTIME_TARGETS = {
    "ort_over_torch": ("<=", 0.7),
    "int8_over_fp32": ("<=", 0.6),
    "int8_probe_r2_drop": ("<=", 0.02),
}


@dataclass
class ModelBenchConfig:
    checkpoint: Path | None = None
    """World-model checkpoint (default: the shipped one)."""
    profile: str = "host-x86-2core"
    """Device profile (firmware_profiles/devices): its threads, per-frame budget and export."""
    runtime: Literal["torch", "onnxruntime", "both"] = "torch"
    """Which runtime's step to time: torch, the ONNX export in onnxruntime (fp32 and int8), or both, in turns
    in the same run (`ort_over_torch`)."""
    baselines: bool | None = None
    """Also time the Transformer baseline's step at growing contexts (default: with `--runtime torch`)."""
    export_dir: Path = Path("results/export")
    """Where the profile's ONNX export lives (<dir>/<profile>), made first if absent."""
    steps: int = 2000
    """Timed ticks per measurement (after 200 warm-up ticks)."""
    threads: int | None = None
    """Intra-op threads (default: the profile's)."""
    memory_steps: int = 10_000
    """Ticks between the two resident-memory readings."""
    probe_episodes: int = 12
    """Simulator episodes for the int8 probe check (the last third held out)."""
    seed: int = 0


def tick(rng: np.random.Generator, image_size: int = 64) -> dict[str, torch.Tensor]:
    """One realistic tick, batch 1: a camera frame, 4 audio chunks, joints, the action in force."""
    return {
        "image": torch.from_numpy(rng.integers(0, 256, (1, image_size, image_size, 3), dtype=np.uint8)),
        "audio": torch.from_numpy(rng.normal(0, 0.05, (1, MAX_CHUNKS, 160)).astype(np.float32)),
        "audio_chunks": torch.tensor([4]),
        "joint": torch.from_numpy(rng.normal(0, 0.5, (1, JOINT_DIM)).astype(np.float32)),
        "action": torch.from_numpy(rng.normal(0, 0.5, (1, 5)).astype(np.float32)),
        "mask": torch.ones(1, 4, dtype=torch.bool),
        "dt_eff": torch.tensor([1 / 30]),
    }


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096 / 2**20


def state_bytes(state) -> int:
    if isinstance(state, dict):
        return sum(v.numel() * v.element_size() for v in state.values() if torch.is_tensor(v))
    if isinstance(state, list):
        return sum(x.numel() * x.element_size() for x in state)
    return state.numel() * state.element_size()


def _time(fn, steps: int) -> np.ndarray:
    for _ in range(200):
        fn()
    out = np.empty(steps)
    for i in range(steps):
        t0 = time.perf_counter()
        fn()
        out[i] = time.perf_counter() - t0
    return out * 1e3


def run(cfg: ModelBenchConfig, progress=None) -> Report:
    from runtime.profiles import load_device

    profile = load_device(cfg.profile)
    threads = cfg.threads or profile.compute.threads
    torch.set_num_threads(threads)
    baselines = cfg.runtime == "torch" if cfg.baselines is None else cfg.baselines
    targets = {**(TARGETS if baselines else {}), **(RUNTIME_TARGETS if cfg.runtime == "both" else {})}
    config = {k: str(v) for k, v in vars(cfg).items()}
    report = Report("model", config={**config, "threads": threads}, targets=targets)
    report.budget_ms = profile.budget.frame_ms
    hssm, manifest = checkpoint.load(cfg.checkpoint or checkpoint.DEFAULT_CHECKPOINT)
    if cfg.runtime != "torch":
        runtimes(report, cfg, profile, hssm, threads, progress)
    if baselines:
        _baselines(report, cfg, hssm, manifest)
    report.details["rss_mb"] = rss_mb()
    return report


def runtimes(report: Report, cfg: ModelBenchConfig, profile, hssm, threads: int, progress=None) -> None:
    """torch, onnxruntime fp32 and int8 per-tick steps in turns; int8's probe R^2 drop; per-stage parts."""
    from runtime.benchmarks import runtimes as rt
    from runtime.export.session import OrtWorldModel, ensure_export, session
    from runtime.world_model.data import CollectConfig, collect_episode

    directory = cfg.export_dir / profile.name
    manifest = ensure_export(directory, cfg.checkpoint, profile.name)
    weights = checkpoint.read_manifest(cfg.checkpoint or checkpoint.DEFAULT_CHECKPOINT)["files"]
    sha = weights[checkpoint.WEIGHTS]
    provider = profile.runtime.provider
    steppers = {
        "ort": OrtWorldModel(directory, threads, provider, "fp32", sha),
        "ort_int8": OrtWorldModel(directory, threads, provider, "int8", sha),
    }
    if cfg.runtime == "both":
        steppers = {"torch": _TorchStepper(hssm), **steppers}
    x = tick(np.random.default_rng(cfg.seed), hssm.cfg.image_size)
    if progress:
        progress("timing steps")
    with torch.inference_mode():
        times = rt.step_times(steppers, x, cfg.steps)
    results, details, budget = report.results, report.details, profile.budget.frame_ms
    for name, ms in times.items():
        results[f"step_p50_ms_{name}"] = float(np.median(ms))
        results[f"step_p95_ms_{name}"] = float(np.percentile(ms, 95))
        results[f"step_p99_ms_{name}"] = float(np.percentile(ms, 99))
        details[f"step_miss_rate_{name}"] = float(np.mean(ms > budget))
        report.samples[f"step {name}"] = ms.tolist()
    if "torch" in times:
        results["ort_over_torch"] = results["step_p50_ms_ort"] / results["step_p50_ms_torch"]
    results["int8_over_fp32"] = results["step_p50_ms_ort_int8"] / results["step_p50_ms_ort"]
    # per stage: encoders, then backbone and head (the tick less the encoders)
    encoders = session(directory / manifest["graphs"]["encoders"]["file"], threads, provider)
    feed = {k: x[k].numpy() for k in manifest["graphs"]["encoders"]["inputs"]}
    enc_ort = float(np.median(_time(lambda: encoders.run(None, feed), cfg.steps // 2)))
    enc_inputs = [x[k] for k in ENCODER_INPUTS]
    with torch.inference_mode():
        enc_torch = float(np.median(_time(lambda: hssm.encoder(*enc_inputs), cfg.steps // 2)))
    for name, enc in (("torch", enc_torch), ("ort", enc_ort)):
        if f"step_p50_ms_{name}" in results:
            step = results[f"step_p50_ms_{name}"]
            report.stages[name] = {"encoders": enc, "backbone + head": max(step - enc, 0.0)}
    if progress:
        progress("int8 probe")
    collect = CollectConfig(episode_seconds=8.0, random_fraction=0.0)
    episodes = [collect_episode(collect, 400_000 + i) for i in range(cfg.probe_episodes)]
    with torch.inference_mode():
        accuracy = rt.int8_accuracy(steppers["ort"], steppers["ort_int8"], episodes, cfg.probe_episodes // 3)
    results["int8_probe_r2_drop"] = accuracy.pop("int8_probe_r2_drop")
    details.update(accuracy)
    details["export"] = str(directory)
    details["profile"] = profile.name


class _TorchStepper:
    """`WorldModel.step` with a fresh state per runtime, as `runtimes.step_times` takes them."""

    def __init__(self, model):
        self.model = model

    def initial_state(self, batch: int):
        return self.model.initial_state(batch)

    def step(self, state, x):
        return self.model.step(state, x)


def _baselines(report: Report, cfg: ModelBenchConfig, hssm, manifest) -> None:
    """Issue 5's figures: hssm's tick against the Transformer baseline's at growing contexts, and resident
    memory over 10,000 ticks."""
    rng = np.random.default_rng(cfg.seed)
    x = tick(rng, hssm.cfg.image_size)
    torch.manual_seed(cfg.seed)
    transformer = WorldModel(WorldModelConfig(**{**hssm.cfg.to_dict(), "model": "transformer", "width": 0}))
    transformer.eval()
    results, details = report.results, report.details
    with torch.inference_mode():
        state = [hssm.initial_state(1)]

        def hssm_step():
            state[0], _, _ = hssm.step(state[0], x)

        ms = _time(hssm_step, cfg.steps)
        results["step_p50_ms"] = float(np.median(ms))
        results["step_p99_ms"] = float(np.percentile(ms, 99))
        u = hssm.encode({k: v[:, None] for k, v in x.items()})[:, 0]
        dt = x["dt_eff"]
        belief_state = [hssm.belief.initial_state(1)]

        def hssm_belief():
            _, belief_state[0], _ = hssm.belief.step(u, dt, belief_state[0])

        details["backbone_step_p50_ms_hssm"] = float(np.median(_time(hssm_belief, cfg.steps)))
        encoder_inputs = [x[k] for k in ENCODER_INPUTS]
        details["encoders_step_p50_ms"] = float(
            np.median(_time(lambda: hssm.encoder(*encoder_inputs), cfg.steps))
        )
        for ctx in CONTEXTS + LONG_CONTEXTS:
            cache = transformer.belief.initial_state(1, ctx)
            cache["k"].normal_()
            cache["v"].normal_()
            cache["seen"] = ctx  # full: every step attends over ctx ticks

            def transformer_step(cache=cache):
                transformer.step(cache, x)

            def transformer_belief(cache=cache):
                transformer.belief.step(u, dt, cache)

            where = results if ctx in CONTEXTS else details
            where[f"transformer_step_p50_ms_ctx{ctx}"] = float(np.median(_time(transformer_step, cfg.steps)))
            details[f"backbone_step_p50_ms_transformer_ctx{ctx}"] = float(
                np.median(_time(transformer_belief, cfg.steps))
            )
        results["ratio_ctx4096"] = results["transformer_step_p50_ms_ctx4096"] / results["step_p50_ms"]
        details["ratio_ctx4096_upper_bound"] = (
            results["transformer_step_p50_ms_ctx4096"] / details["encoders_step_p50_ms"]
        )
        details["backbone_ratio_ctx4096"] = (
            details["backbone_step_p50_ms_transformer_ctx4096"] / details["backbone_step_p50_ms_hssm"]
        )
        before_bytes, before = state_bytes(state[0]), rss_mb()
        for _ in range(cfg.memory_steps):
            hssm_step()
        results["rss_growth_mb_10k_steps"] = rss_mb() - before
        details["state_bytes_before"], details["state_bytes_after"] = before_bytes, state_bytes(state[0])
    details["parameters_hssm"] = parameter_count(hssm)
    details["parameters_transformer"] = parameter_count(transformer)
    details["checkpoint_command"] = manifest.get("command")
    report.samples["step torch"] = ms.tolist()
