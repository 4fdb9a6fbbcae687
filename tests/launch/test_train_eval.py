"""Smoke tests of the world-model commands as a user runs them: collect -> train every model -> evaluate ->
benchmark, on a few short episodes, in subprocesses; and the checkpoint they make refuses tampering."""

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
EVAL_KEYS = {
    "probe_r2_ee",
    "probe_r2_object",
    "energy_drift_leapfrog",
    "energy_drift_euler",
    "scan_step_max_abs_err",
    *(f"rollout_err_h{h}_{m}" for h in (10, 30) for m in ("hssm", "gru", "transformer", "mlp_pred", "euler")),
}
MODEL_KEYS = {
    "step_p50_ms",
    "step_p99_ms",
    "transformer_step_p50_ms_ctx64",
    "transformer_step_p50_ms_ctx512",
    "transformer_step_p50_ms_ctx4096",
    "ratio_ctx4096",
    "rss_growth_mb_10k_steps",
}


def run(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout
    )


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """Four training and two held-out episodes of 2.5 s; every model trained for 3 steps."""
    root = tmp_path_factory.mktemp("wm")
    for out, seed, n in (("train", 0, 4), ("heldout", 100, 2)):
        proc = run(
            "launch.collect",
            "--out",
            str(root / out),
            "--episodes",
            str(n),
            "--seed",
            str(seed),
            "--episode-seconds",
            "2.5",
        )
        assert proc.returncode == 0, proc.stderr
    proc = run(
        "launch.train",
        "--model",
        "all",
        "--data",
        str(root / "train"),
        "--out",
        str(root / "ckpt"),
        "--train.steps",
        "3",
        "--train.batch",
        "2",
        "--train.window",
        "12",
        "--train.refit-steps",
        "3",
    )
    assert proc.returncode == 0, proc.stderr
    return root


@pytest.mark.timeout(600)
def test_train_writes_a_checkpoint_per_model_with_its_command(trained):
    """`launch.train --model all` writes five checkpoints; each manifest records the exact command, the
    training config, the data, the parameter count, and the SHA-256 of its weights."""
    for name in ("hssm", "euler", "mlp_pred", "gru", "transformer"):
        manifest = json.loads((trained / "ckpt" / name / "manifest.json").read_text())
        assert manifest["config"]["model"] == name
        assert manifest["command"].startswith("python -m launch.train --model all")
        assert manifest["train"]["steps"] == 3 and manifest["data"]["episodes"] == 4
        assert len(manifest["files"]["weights.pt"]) == 64


@pytest.mark.timeout(600)
def test_eval_and_bench_write_every_key_the_issue_names(trained, tmp_path):
    """`launch.eval worldmodel` and `launch.bench model` write every named key, finite, with targets."""
    out = tmp_path / "eval.json"
    proc = run(
        "launch.eval",
        "worldmodel",
        "--json",
        str(out),
        "--checkpoints",
        str(trained / "ckpt"),
        "--train-data",
        str(trained / "train"),
        "--heldout",
        str(trained / "heldout"),
        "--stride",
        "8",
    )
    assert proc.returncode == 0, proc.stderr
    report = json.loads(out.read_text())
    assert EVAL_KEYS <= set(report["results"])
    assert all(math.isfinite(report["results"][k]) for k in EVAL_KEYS - {"energy_drift_euler"})
    assert report["targets"]["probe_r2_ee"] == {"op": ">=", "value": 0.95}
    out = tmp_path / "model.json"
    proc = run(
        "launch.bench",
        "model",
        "--checkpoint",
        str(trained / "ckpt" / "hssm"),
        "--steps",
        "50",
        "--memory-steps",
        "200",
        "--json",
        str(out),
    )
    assert proc.returncode == 0, proc.stderr
    report = json.loads(out.read_text())
    assert MODEL_KEYS <= set(report["results"])
    assert report["details"]["state_bytes_before"] == report["details"]["state_bytes_after"]


@pytest.mark.timeout(600)
def test_tampered_checkpoint_is_refused_by_eval(trained, tmp_path):
    """A checkpoint whose weights changed after training is refused, naming the file, and nothing runs."""
    ckpt = tmp_path / "ckpt"
    subprocess.run(["cp", "-r", str(trained / "ckpt"), str(ckpt)], check=True)
    weights = ckpt / "gru" / "weights.pt"
    data = bytearray(weights.read_bytes())
    data[-100] ^= 0xFF
    weights.write_bytes(bytes(data))
    proc = run(
        "launch.eval",
        "worldmodel",
        "--checkpoints",
        str(ckpt),
        "--train-data",
        str(trained / "train"),
        "--heldout",
        str(trained / "heldout"),
    )
    assert proc.returncode != 0
    assert "does not match its manifest" in proc.stderr and "gru" in proc.stderr


def test_eval_refuses_an_unknown_model_name(tmp_path):
    proc = run("launch.eval", "worldmodel", "--models", "hssm", "lstm", "--checkpoints", str(tmp_path))
    assert proc.returncode != 0
    assert "unknown model(s) lstm" in proc.stderr and "transformer" in proc.stderr


def test_train_without_data_says_how_to_collect(tmp_path):
    """No episodes: exit code 2 and the collect command to run, before any model is built."""
    proc = run("launch.train", "--data", str(tmp_path / "none"), "--out", str(tmp_path / "ckpt"))
    assert proc.returncode == 2
    assert "launch.collect" in proc.stderr


MEMORY_KEYS = {"recall_cos_mask25", "recall_cos_mask50", "recall_cos_mask75", "capacity_at_095"}


@pytest.mark.timeout(300)
def test_eval_memory_scores_ours_and_both_baselines(trained, tmp_path):
    """`launch.eval memory` on the held-out episodes: every figure for the store and both baselines, cosines
    in [-1, 1] that do not rise as more of the key is hidden, a capacity no larger than C."""
    out = tmp_path / "memory.json"
    proc = run(
        "launch.eval", "memory", "--heldout", str(trained / "heldout"), "--capacity", "256", "--cues", "64",
        "--json", str(out),
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    results = json.loads(out.read_text())["results"]
    for suffix in ("", "_exact_nn", "_hopfield"):
        assert {k + suffix for k in MEMORY_KEYS} <= set(results)
        cos = [results[f"recall_cos_mask{m}{suffix}"] for m in (25, 50, 75)]
        assert all(-1 <= c <= 1 for c in cos) and cos[0] >= cos[2] - 0.01
        assert 0 <= results[f"capacity_at_095{suffix}"] <= 256


@pytest.mark.timeout(600)
def test_eval_adapt_reports_every_variant_for_a_shift(trained, tmp_path):
    """`launch.eval adapt` on one short shift: the issue's keys for all four variants, finite, with the
    targets for `both`; the learner and memory status per variant in details."""
    out = tmp_path / "adapt.json"
    proc = run(
        "launch.eval", "adapt", "--train-data", str(trained / "train"), "--probe-episodes", "4",
        "--phase", "1", "--episode-seconds", "3", "--shifts", "flip", "--json", str(out),
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    report = json.loads(out.read_text())
    results = report["results"]
    for variant in ("none", "memory", "learner", "both"):
        for key in ("recovery_ticks", "post_ratio", "forget_ratio"):
            assert math.isfinite(results[f"flip_{key}_{variant}"])
    assert report["targets"]["flip_post_ratio_both"] == {"op": "<=", "value": 1.5}
    assert report["details"]["flip_status_memory"]["memory_entries"] > 0
    assert report["details"]["flip_status_none"]["memory_entries"] == 0


@pytest.mark.timeout(300)
def test_eval_control_reports_each_policy_and_the_plan_time(trained, tmp_path):
    """`launch.eval control` on one short reach episode per policy: a success rate for each, the GRU planner
    from the trained checkpoints, the shipped checkpoint's distilled actor, and the plan time."""
    out = tmp_path / "control.json"
    proc = run(
        "launch.eval", "control", "--episodes", "1", "--episode-seconds", "1", "--checkpoints",
        str(trained / "ckpt"), "--candidates", "16", "--horizon", "3", "--iterations", "1",
        "--json", str(out),
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    report = json.loads(out.read_text())
    for policy in ("mpc_hssm", "mpc_gru", "actor", "expert", "random"):
        assert 0 <= report["results"][f"success_{policy}"] <= 1
    assert 0 < report["results"]["plan_p99_ms"] < 1e4
    assert report["targets"]["plan_p99_ms"] == {"op": "<=", "value": 25.0}
    assert 0 < report["details"]["plan_ms_p50_actor"] < 5  # one forward pass of a small MLP


@pytest.mark.timeout(300)
def test_train_actor_only_distills_into_a_checkpoint_and_a_changed_actor_is_refused(tmp_path):
    """`launch.train --actor-only DIR` on a copy of the shipped checkpoint: one teacher episode, a few steps;
    the actor is listed in the manifest with its hash and loads; a changed byte is refused."""
    import shutil

    from runtime.planning import actor
    from runtime.world_model import checkpoint

    copy = tmp_path / "ckpt"
    shutil.copytree(checkpoint.DEFAULT_CHECKPOINT, copy)
    (copy / actor.ACTOR).unlink(missing_ok=True)
    manifest = checkpoint.read_manifest(copy)
    manifest["files"].pop(actor.ACTOR, None)
    (copy / checkpoint.MANIFEST).write_text(json.dumps(manifest))
    proc = run(
        "launch.train", "--actor-only", str(copy), "--actor.episodes", "1", "--actor.tasks", "reach",
        "--actor.steps", "20",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "held-out step error" in proc.stderr
    assert actor.ACTOR in checkpoint.read_manifest(copy)["files"]
    loaded = actor.load(copy)
    assert isinstance(loaded, actor.Actor)
    data = bytearray((copy / actor.ACTOR).read_bytes())
    data[-20] ^= 0xFF
    (copy / actor.ACTOR).write_bytes(bytes(data))
    with pytest.raises(checkpoint.CheckpointError, match="does not match its manifest"):
        actor.load(copy)
