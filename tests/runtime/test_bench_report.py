"""The benchmark report writer: Markdown plus PNG plots, and the JSON's sample summary."""

import json

import numpy as np
import pytest
from PIL import Image

from runtime.benchmarks.plots import HIST_PNG, OVER_TIME_PNG, STAGES_PNG, write_report
from runtime.benchmarks.report import Report, summarize_samples

MACHINE = {
    "cpu": "Test CPU 9000",
    "cores": 8,
    "python": "3.11",
    "torch": "x",
    "platform": "x",
    "commit": "abc1234",
}
BUDGET_MS = 8.0


def _full_report() -> Report:
    rng = np.random.default_rng(0)
    return Report(
        "model",
        config={"batch": 1, "command": ["python", "-m", "launch.bench", "model", "--report", "out dir"]},
        results={"step_p99_ms": 7.5, "throughput_hz": 120.0, "recall": 0.5},
        targets={"step_p99_ms": ("<=", 10.0), "throughput_hz": (">=", 1000.0), "unmeasured": (">=", 1.0)},
        details={"warmup_frames": 50, "providers": {"onnxruntime": ["CPUExecutionProvider"]}},
        machine=MACHINE,
        created_unix_s=1_700_000_000.0,
        samples={
            "step torch": list(rng.lognormal(np.log(3.0), 0.4, 2000)),
            "step onnxruntime": list(rng.lognormal(np.log(2.0), 0.5, 2000)),
        },
        stages={
            "torch": {"encode": 1.2, "transition": 0.9, "readout": 0.4},
            "onnxruntime": {"encode": 0.8, "transition": 0.6, "readout": 0.3},
        },
        budget_ms=BUDGET_MS,
    )


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    report = _full_report()
    directory = tmp_path_factory.mktemp("report") / "nested"
    md = write_report(report, directory, profile_summary="Profile laptop-cpu: 4 threads, fp32.")
    return report, directory, md.read_text()


@pytest.mark.parametrize("filename", [HIST_PNG, STAGES_PNG, OVER_TIME_PNG])
def test_each_plot_is_a_valid_png_of_plausible_size(written, filename):
    """Every plot is written as a PNG that PIL verifies, with real content and the configured size."""
    _, directory, _ = written
    path = directory / filename
    assert path.stat().st_size > 10_000
    with Image.open(path) as image:
        assert image.format == "PNG"
        assert 400 <= image.width <= 2000 and 200 <= image.height <= 1500
        image.verify()


def test_markdown_has_title_machine_and_profile_summary(written):
    """The page names the benchmark, the machine and commit, the ISO time, and the profile paragraph."""
    _, _, md = written
    assert md.startswith("# Benchmark `model`")
    assert "Test CPU 9000 (8 cores)" in md and "`abc1234`" in md
    assert "2023-11-14T22:13:20+00:00" in md
    assert "Profile laptop-cpu: 4 threads, fp32." in md


def test_results_table_marks_targets_as_report_met_does(written):
    """Each result row shows its target and 'met' or '**MISSED**' exactly as Report.met() decides."""
    report, _, md = written
    assert report.met() == {"step_p99_ms": True, "throughput_hz": False, "unmeasured": False}
    assert "| step_p99_ms | 7.500 | <= 10.0 | met |" in md
    assert "| throughput_hz | 120.000 | >= 1,000.0 | **MISSED** |" in md
    assert "| unmeasured | (not measured) | >= 1.0 | **MISSED** |" in md
    assert "| recall | 0.500 |  |  |" in md  # no target: no verdict
    assert "1 of 3 targets met." in md


def test_series_table_shows_percentiles_and_miss_rate(written):
    """Per-series rows carry count and p50/p95/p99/max to 3 decimals and the miss rate against the budget."""
    report, _, md = written
    for name, values in report.samples.items():
        summary = summarize_samples(values)
        misses = int((np.asarray(values) > BUDGET_MS).sum())
        row = (
            f"| {name} | 2000 | {summary['p50']:.3f} | {summary['p95']:.3f} | {summary['p99']:.3f} "
            f"| {summary['max']:.3f} | {100 * misses / 2000:.2f} % ({misses}) |"
        )
        assert row in md


def test_stages_table_and_details_and_command(written):
    """Stages tabulate per group with totals; details keep scalars and nested JSON; the command is quoted."""
    _, _, md = written
    assert "| stage | torch | onnxruntime |" in md
    assert "| encode | 1.200 | 0.800 |" in md
    assert "| **sum of the stages' p50s** | 2.500 | 1.700 |" in md
    assert "| warmup_frames | 50 |" in md
    assert '"CPUExecutionProvider"' in md
    assert "python -m launch.bench model --report 'out dir'" in md


def test_markdown_links_each_plot_relatively(written):
    """Each drawn plot is embedded with a relative link that resolves inside the report folder."""
    _, directory, md = written
    for filename in (HIST_PNG, STAGES_PNG, OVER_TIME_PNG):
        assert f"]({filename})" in md
        assert (directory / filename).exists()
    assert "Not drawn" not in md


def test_report_without_samples_or_stages_writes_notes_not_plots(tmp_path):
    """No samples or stages: report.md still appears, says so, links no plot, and stale plots are removed."""
    (tmp_path / HIST_PNG).write_bytes(b"stale")
    report = Report("env", config={}, results={"steps_per_s": 10.0}, machine=MACHINE, created_unix_s=0.0)
    md = write_report(report, tmp_path).read_text()
    assert "_No latency samples recorded._" in md
    assert "_No per-stage timings recorded._" in md
    assert md.count("_Not drawn:") == 3
    assert ".png)" not in md
    assert not any(tmp_path.glob("*.png"))
    assert "| steps_per_s | 10.000 |  |  |" in md


def test_report_with_samples_but_no_stages_or_budget(tmp_path):
    """Samples without stages or budget: both sample plots drawn, the stage plot not, and no miss column."""
    report = Report("vsync", config={}, machine=MACHINE, samples={"e2e": [1.0, 2.0, 3.0, float("nan")]})
    md = write_report(report, tmp_path).read_text()
    assert (tmp_path / HIST_PNG).exists() and (tmp_path / OVER_TIME_PNG).exists()
    assert not (tmp_path / STAGES_PNG).exists()
    assert "miss rate" not in md
    assert "| e2e | 3 |" in md  # the NaN is left out of the count


def test_write_json_summarises_samples_without_the_raw_values(tmp_path):
    """write_json writes count/p50/p95/p99/max per series under samples_summary and never the samples."""
    report = _full_report()
    path = tmp_path / "model.json"
    report.write_json(path)
    payload = json.loads(path.read_text())
    assert "samples" not in payload
    assert set(payload["samples_summary"]) == set(report.samples)
    summary = payload["samples_summary"]["step torch"]
    values = np.asarray(report.samples["step torch"])
    assert summary["count"] == 2000
    assert summary["p99"] == pytest.approx(np.percentile(values, 99))
    assert summary["max"] == pytest.approx(values.max())
    assert payload["stages"]["torch"] == {"encode": 1.2, "transition": 0.9, "readout": 0.4}
    assert payload["budget_ms"] == BUDGET_MS
    assert path.stat().st_size < 10_000  # 4000 raw floats would be far larger
    assert len(report.samples["step torch"]) == 2000  # writing left the report's samples alone
