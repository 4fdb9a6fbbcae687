"""Edge deployment from the command line: `launch.export`, and `launch.bench model|planner|pipeline` with a
device profile, `--runtime both` and `--report` (short runs: the figures are the benchmarks' to measure)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[2]
PROFILE = "host-x86-2core"


def run(*args: str, timeout: int = 400) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout
    )


@pytest.fixture(scope="module")
def exports(tmp_path_factory):
    """One export for the module's runs (`--export-dir`); the first test to need it makes it."""
    return tmp_path_factory.mktemp("exports")


def _check_report(directory: Path, *rows: str) -> str:
    md = (directory / "report.md").read_text()
    for png in ("latency_hist.png", "stages.png", "latency_over_time.png"):
        with Image.open(directory / png) as image:
            image.verify()
        assert f"]({png})" in md
    for row in rows:
        assert f"| {row} |" in md, row
    return md


@pytest.mark.timeout(300)
def test_export_writes_checked_graphs_and_refuses_a_bad_profile(exports):
    """`launch.export --profile NAME --out DIR` writes every graph and a manifest, and prints each graph's
    largest difference from torch; an unknown profile is refused before anything is written."""
    out = exports / PROFILE
    proc = run("launch.export", "--profile", PROFILE, "--out", str(out))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["profile"] == PROFILE and "tick" in manifest["graphs"]
    assert "tick.onnx" in proc.stdout and "manifest" in proc.stdout
    bad = run("launch.export", "--profile", "no-such-board", "--out", str(exports / "bad"))
    assert bad.returncode == 2 and "no-such-board" in bad.stdout + bad.stderr
    assert not (exports / "bad").exists()


@pytest.mark.timeout(400)
def test_bench_model_both_runtimes_writes_the_issue_keys_and_a_report(exports, tmp_path):
    """`launch.bench model --runtime both`: torch, onnxruntime fp32 and int8 steps timed in one run, their
    ratios, the int8 probe R^2 drop, with targets; `--report` writes the Markdown page and its three plots."""
    out, report = tmp_path / "model.json", tmp_path / "report"
    proc = run(
        "launch.bench", "model", "--profile", PROFILE, "--runtime", "both", "--steps", "200",
        "--probe-episodes", "3", "--export-dir", str(exports), "--json", str(out), "--report", str(report),
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    data = json.loads(out.read_text())
    results = data["results"]
    for key in ("step_p50_ms_torch", "step_p50_ms_ort", "step_p50_ms_ort_int8", "ort_over_torch"):
        assert results[key] > 0, key
    assert results["ort_over_torch"] == pytest.approx(
        results["step_p50_ms_ort"] / results["step_p50_ms_torch"]
    )
    assert -1 < results["int8_probe_r2_drop"] < 1
    assert data["targets"]["ort_over_torch"] == {"op": "<=", "value": 0.7}
    assert data["targets"]["int8_over_fp32"] == {"op": "<=", "value": 0.6}
    assert "step torch" in data["samples_summary"] and data["budget_ms"] == pytest.approx(33.3)
    md = _check_report(report, "ort_over_torch", "int8_probe_r2_drop")
    assert PROFILE in md


@pytest.mark.timeout(400)
def test_bench_planner_times_plans_in_both_runtimes(exports, tmp_path):
    """`launch.bench planner --runtime both`: per-control-step plan times in torch and through the export's
    rollout graph, with miss rates against the profile's plan deadline and the closed loop's successes."""
    out = tmp_path / "planner.json"
    proc = run(
        "launch.bench", "planner", "--profile", PROFILE, "--episodes", "1", "--steps", "50",
        "--export-dir", str(exports), "--json", str(out),
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads(out.read_text())["results"]
    for rt in ("torch", "ort"):
        assert 0 < results[f"plan_p50_ms_{rt}"] <= results[f"plan_p99_ms_{rt}"]
        assert 0 <= results[f"plan_miss_rate_{rt}"] <= 1 and 0 <= results[f"success_{rt}"] <= 1
        assert results[f"rollout_p50_ms_{rt}"] > 0


@pytest.mark.timeout(400)
def test_bench_pipeline_with_a_profile_runs_the_brain_in_onnxruntime(exports, tmp_path):
    """`launch.bench pipeline --profile host-x86-2core`: the live graph with the profile's brain (onnxruntime,
    its threads and planner budget), judged against the profile's budget, peak memory per node, a report."""
    out, report = tmp_path / "pipeline.json", tmp_path / "report"
    proc = run(
        "launch.bench", "pipeline", "--profile", PROFILE, "--seconds", "8", "--warmup-s", "3",
        "--export-dir", str(exports), "--json", str(out), "--report", str(report),
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    data = json.loads(out.read_text())
    assert data["details"]["brain"]["runtime"] == "onnxruntime"
    assert data["details"]["brain"]["onnx"] == str(exports / PROFILE)
    assert data["targets"]["e2e_p99_ms"] == {"op": "<=", "value": 33.3}
    assert 0 < data["results"]["e2e_p50_ms"] and 0 <= data["results"]["miss_rate_budget"] <= 1
    assert data["details"]["rss_mb_peak"]["brain"] > 50
    _check_report(report, "e2e_p99_ms")
