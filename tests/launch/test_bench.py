"""Smoke test: `python -m launch.bench env` writes the JSON report the Foundation issue names."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
KEYS = {
    "physics_steps_per_s",
    "render_fps_64",
    "control_steps_per_s",
    "expert_success_reach",
    "expert_success_push",
}


def _bench(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "launch.bench", *args], cwd=ROOT, capture_output=True, text=True, timeout=300
    )


def test_bench_env_writes_report_with_issue_keys(tmp_path):
    """The report has every named key with a positive figure, the targets, and the machine it ran on."""
    out = tmp_path / "env.json"
    proc = _bench(
        "env", "--json", str(out), "--seeds", "2", "--physics-seconds", "2", "--render-frames", "50",
        "--control-steps", "30",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    report = json.loads(out.read_text())
    assert report["benchmark"] == "env"
    assert KEYS <= set(report["results"])
    assert all(report["results"][k] > 0 for k in KEYS - {"expert_success_reach", "expert_success_push"})
    assert 0 <= report["results"]["expert_success_push"] <= 1
    assert report["targets"]["physics_steps_per_s"] == {"op": ">=", "value": 40000}
    assert report["machine"]["cores"] >= 1
    assert "physics_steps_per_s" in proc.stdout  # the table for people


VSYNC_KEYS = {
    "align_err_p99_ms",
    "latest_err_p99_ms",
    "approx_err_p99_ms",
    "emit_latency_p99_ms",
    "samples_per_s",
}


def test_bench_vsync_writes_report_with_issue_keys(tmp_path):
    """`launch.bench vsync` on a short run writes every key the V-sync issue names, with finite figures, the
    baselines worse than the scheduler, and the targets."""
    out = tmp_path / "vsync.json"
    args = ["--seconds", "40", "--lock-in-s", "10", "--realtime-seconds", "1.5", "--json", str(out)]
    proc = _bench("vsync", *args)
    assert proc.returncode == 0, proc.stderr
    results = json.loads(out.read_text())["results"]
    assert VSYNC_KEYS <= set(results)
    assert all(0 < results[k] < float("inf") for k in VSYNC_KEYS)
    assert results["align_err_p99_ms"] < results["approx_err_p99_ms"] < results["latest_err_p99_ms"]
    assert json.loads(out.read_text())["targets"]["align_err_p99_ms"] == {"op": "<=", "value": 1.0}


def test_collect_writes_episodes_and_manifest_and_keeps_what_exists(tmp_path):
    """`launch.collect` writes one npz per episode and a manifest; run again, it keeps the episodes on disk
    instead of redoing them; a bad flag is refused with exit code 2 before anything is collected."""
    out = tmp_path / "data"
    args = ["--out", str(out), "--episodes", "2", "--episode-seconds", "1.5"]
    run = lambda *extra: subprocess.run(  # noqa: E731
        [sys.executable, "-m", "launch.collect", *args, *extra],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    proc = run()
    assert proc.returncode == 0, proc.stderr
    manifest = json.loads((out / "manifest.json").read_text())
    assert [e["seed"] for e in manifest["episodes"]] == [0, 1]
    assert all(e["ticks"] > 30 for e in manifest["episodes"])
    first = (out / "episode_0.npz").stat().st_mtime_ns
    assert run().returncode == 0
    assert (out / "episode_0.npz").stat().st_mtime_ns == first
    bad = run("--noise-rad", "-1")
    assert bad.returncode == 2 and "noise_rad" in bad.stderr


def test_bench_memory_writes_report_with_issue_keys(tmp_path):
    """`launch.bench memory` on a small full cell: read + write p50 <= p99, the target, the details."""
    out = tmp_path / "memory.json"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "launch.bench",
            "memory",
            "--capacity",
            "512",
            "--steps",
            "200",
            "--json",
            str(out),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    report = json.loads(out.read_text())
    results = report["results"]
    assert 0 < results["read_write_p50_ms"] <= results["read_write_p99_ms"]
    assert report["targets"]["read_write_p99_ms"] == {"op": "<=", "value": 0.5}
    assert report["details"]["entries"] == 512 and report["details"]["evicted"] >= 200


def test_bench_transport_writes_report_with_issue_keys(tmp_path):
    """`launch.bench transport`, shortened: every key the issue names, the targets, and every frame received
    by ours (the readiness handshake)."""
    out = tmp_path / "transport.json"
    proc = subprocess.run(
        [sys.executable, "-m", "launch.bench", "transport", "--frames", "100", "--rounds", "1",
         "--audio-seconds", "0.5", "--json", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    report = json.loads(out.read_text())
    results = report["results"]
    assert set(results) == {
        "hop_p50_us_64", "hop_p99_us_64", "hop_p50_us_224", "hop_p99_us_224",
        "raw_p50_us_64", "overhead_ratio_64", "audio_msgs_per_s",
    }  # fmt: skip
    assert 0 < results["hop_p50_us_64"] <= results["hop_p99_us_64"]
    assert results["overhead_ratio_64"] == pytest.approx(results["hop_p50_us_64"] / results["raw_p50_us_64"])
    assert report["targets"]["hop_p50_us_64"] == {"op": "<=", "value": 150}
    assert report["details"]["frames_received_64"] == 100  # the handshake: not one frame lost to joining
    # 200x the native audio rate is a stress figure: on a loaded machine some chunks overflow, and are counted
    assert results["audio_msgs_per_s"] > 0 and report["details"]["audio_gaps"] >= 0


def test_bench_pipeline_times_frames_to_actions_by_stage(tmp_path):
    """`launch.bench pipeline`, shortened: the planning graph runs as processes and every key the issue names
    comes back; the stages are those of runtime/latency.py, each a positive time, and their medians do not
    add up to more than the slowest action (they are parts of one path)."""
    from runtime.latency import ACTION_STAGES

    out = tmp_path / "pipeline.json"
    proc = _bench("pipeline", "--seconds", "8", "--warmup-s", "3", "--json", str(out))
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(out.read_text())
    results = report["results"]
    assert {
        "e2e_p50_ms",
        "e2e_p95_ms",
        "e2e_p99_ms",
        "miss_rate_33ms",
        "stage_p50_ms",
        "stage_p99_ms",
    } <= set(results)
    assert 0 < results["e2e_p50_ms"] <= results["e2e_p95_ms"] <= results["e2e_p99_ms"]
    assert 0 <= results["miss_rate_33ms"] <= 1
    assert set(results["stage_p50_ms"]) == set(ACTION_STAGES) == set(results["stage_p99_ms"])
    assert all(v >= 0 for v in results["stage_p50_ms"].values())
    assert sum(results["stage_p50_ms"].values()) <= results["e2e_p99_ms"] * 1.5
    assert report["details"]["actions"] > 20  # about 10 a second
    assert report["targets"]["e2e_p50_ms"] == {"op": "<=", "value": 15.0}
