"""Benchmark reports for people: a Markdown page with PNG plots that reads without the JSON.

report = Report("model", config={...}, samples={"step torch": [...]}, stages={...}, budget_ms=33.3)
write_report(report, Path("reports/model"))  # -> reports/model/report.md plus three PNGs
"""

import json
import logging
import shlex
from datetime import UTC, datetime
from pathlib import Path

import matplotlib
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from runtime.benchmarks.report import Report, summarize_samples

logger = logging.getLogger(__name__)

HIST_PNG = "latency_hist.png"
STAGES_PNG = "stages.png"
OVER_TIME_PNG = "latency_over_time.png"
REPORT_MD = "report.md"

FIGSIZE_IN = (8.0, 4.0)  # with DPI: 800 x 400 px, small enough to write in well under a second
DPI = 100
ROLLING_WINDOW = 100  # frames: the smallest window in which a p99 means "the worst 1 in 100"
MAX_ROLLING_POINTS = 2000  # the rolling p99 is evaluated at most this often; more points only add ink
LOG_X_SPREAD = 20.0  # max / min above this and the histogram uses log-spaced bins, else the tail is one bin
HIST_BINS = 60
MAX_DETAIL_JSON_CHARS = 4000  # a nested detail longer than this stays in the JSON only
BUDGET_COLOR = "tab:red"


def _finite(values) -> np.ndarray:
    values = np.asarray(values, dtype=float)
    return values[np.isfinite(values)]


def _figure() -> tuple[Figure, object]:
    """A figure with one axes that needs no pyplot (global) state; Agg renders it without a display."""
    fig = Figure(figsize=FIGSIZE_IN, dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig, fig.add_subplot()


def _save(fig: Figure, path: Path) -> None:
    fig.savefig(path, dpi=DPI, format="png")


def _series_colors(names) -> dict[str, str]:
    return {name: f"C{i % 10}" for i, name in enumerate(names)}


def plot_latency_hist(series: dict[str, np.ndarray], budget_ms: float | None, path: Path) -> None:
    """Overlaid histograms of every series with each series' p99 and the budget as vertical lines."""
    fig, ax = _figure()
    everything = np.concatenate(list(series.values()))
    lo, hi = float(everything.min()), float(everything.max())
    if budget_ms is not None:
        hi = max(hi, budget_ms)
    log_x = lo > 0 and hi / lo > LOG_X_SPREAD
    if log_x:
        bins = np.geomspace(lo, hi, HIST_BINS + 1)
        ax.set_xscale("log")
    else:
        bins = np.linspace(lo, hi if hi > lo else lo + 1.0, HIST_BINS + 1)
    colors = _series_colors(series)
    for name, values in series.items():
        # weighted to fractions so a 2k-frame series stays visible beside a 100k-frame one
        weights = np.full(len(values), 1.0 / len(values))
        ax.hist(
            values,
            bins=bins,
            weights=weights,
            histtype="stepfilled",
            alpha=0.35,
            color=colors[name],
            label=name,
        )
        p99 = float(np.percentile(values, 99))
        ax.axvline(p99, color=colors[name], linestyle="--", linewidth=1, label=f"{name} p99 {p99:.3f} ms")
    if budget_ms is not None:
        ax.axvline(budget_ms, color=BUDGET_COLOR, linewidth=1.5, label=f"budget {budget_ms:.3f} ms")
    ax.set_xlabel("latency per frame (ms" + (", log scale)" if log_x else ")"))
    ax.set_ylabel("fraction of frames")
    ax.set_title("latency distribution")
    ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize="small")  # outside: many series overlap
    _save(fig, path)


def plot_stages(stages: dict[str, dict[str, float]], budget_ms: float | None, path: Path) -> None:
    """One horizontal bar per group, stacked from its stages' p50s, each segment labelled in ms."""
    fig, ax = _figure()
    stage_names = list(dict.fromkeys(name for group in stages.values() for name in group))
    cmap = matplotlib.colormaps["tab20" if len(stage_names) > 10 else "tab10"]
    colors = {name: cmap(i % cmap.N) for i, name in enumerate(stage_names)}
    totals = {group: sum(parts.values()) for group, parts in stages.items()}
    widest = max([*totals.values(), budget_ms or 0.0]) or 1.0
    groups = list(stages)
    labelled = set()
    for row, group in enumerate(groups):
        left = 0.0
        for name, ms in stages[group].items():
            bar = ax.barh(
                row,
                ms,
                left=left,
                color=colors[name],
                edgecolor="white",
                label=None if name in labelled else name,
            )
            labelled.add(name)
            # a label wider than its segment would spill onto the next one; the table has every figure
            if ms >= 0.06 * widest:
                ax.bar_label(bar, labels=[f"{ms:.2f}"], label_type="center", fontsize="small")
            left += ms
        ax.text(left, row, f" {left:.2f} ms", va="center", fontsize="small")
    if budget_ms is not None:
        ax.axvline(budget_ms, color=BUDGET_COLOR, linewidth=1.5, label=f"budget {budget_ms:.3f} ms")
    ax.set_yticks(range(len(groups)), labels=groups)
    ax.invert_yaxis()  # first group on top, as in the table
    ax.set_xlim(0, widest * 1.15)  # room for the total written after each bar
    ax.set_xlabel("p50 latency per frame (ms)")
    ax.set_title("where a frame's time goes (stage p50s)")
    ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize="small")
    _save(fig, path)


def rolling_p99(values: np.ndarray, window: int = ROLLING_WINDOW) -> tuple[np.ndarray, np.ndarray]:
    """(frame index at each window's end, p99 over the window), sampled at most MAX_ROLLING_POINTS times."""
    windows = np.lib.stride_tricks.sliding_window_view(values, window)  # (N - window + 1, window), no copy
    stride = max(1, len(windows) // MAX_ROLLING_POINTS)
    starts = np.arange(0, len(windows), stride)
    return starts + window - 1, np.percentile(windows[starts], 99, axis=1)


def plot_latency_over_time(series: dict[str, np.ndarray], budget_ms: float | None, path: Path) -> None:
    """Each series against its frame number, with a rolling p99 where the series is long enough."""
    fig, ax = _figure()
    colors = _series_colors(series)
    for name, values in series.items():
        ax.plot(np.arange(len(values)), values, color=colors[name], linewidth=0.5, alpha=0.3, label=name)
        if len(values) >= 2 * ROLLING_WINDOW:
            frames, p99 = rolling_p99(values)
            label = f"{name} p99 of last {ROLLING_WINDOW}"
            ax.plot(frames, p99, color=colors[name], linewidth=1.2, label=label)
    if budget_ms is not None:
        ax.axhline(budget_ms, color=BUDGET_COLOR, linewidth=1.5, label=f"budget {budget_ms:.3f} ms")
    ax.set_xlabel("frame")
    ax.set_ylabel("latency (ms)")
    ax.set_title("latency over time")
    ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize="small")  # outside: lines fill the axes
    _save(fig, path)


def _cell(value) -> str:
    """A Markdown table cell: numbers as in the console table, pipes escaped."""
    if isinstance(value, float):
        text = f"{value:,.3f}"
    elif isinstance(value, dict):  # e.g. per-stage figures: "send 0.006, transport 0.358, ..."
        text = ", ".join(f"{k} {v:,.3f}" if isinstance(v, float) else f"{k} {v}" for k, v in value.items())
    elif value is None:
        text = "—"
    else:
        text = str(value)
    return text.replace("|", "\\|").replace("\n", " ")


def _table(header: list[str], rows: list[list]) -> list[str]:
    # first column names the row, the others hold figures: right-aligned so digits line up
    lines = ["| " + " | ".join(header) + " |", "|---|" + "---:|" * (len(header) - 1)]
    lines += ["| " + " | ".join(_cell(v) for v in row) + " |" for row in rows]
    return lines + [""]


def _results_section(report: Report) -> list[str]:
    lines = ["## Results", ""]
    met = report.met()
    if met:
        lines += [f"{sum(met.values())} of {len(met)} targets met.", ""]
    rows = []
    for key, value in report.results.items():
        target = report.targets.get(key)
        rows.append(
            [
                key,
                value,
                f"{target[0]} {target[1]:,}" if target else "",
                ("met" if met[key] else "**MISSED**") if target else "",
            ]
        )
    for key, (op, value) in report.targets.items():
        if key not in report.results:  # a target nothing measured is a miss, and says so
            rows.append([key, "(not measured)", f"{op} {value:,}", "**MISSED**"])
    if not rows:
        return lines + ["_No results recorded._", ""]
    return lines + _table(["result", "value", "target", "met"], rows)


def _series_section(series: dict[str, np.ndarray], budget_ms: float | None) -> list[str]:
    lines = ["## Latency per frame", ""]
    if not series:
        return lines + ["_No latency samples recorded._", ""]
    header = ["series", "count", "p50 ms", "p95 ms", "p99 ms", "max ms"]
    if budget_ms is not None:
        header.append(f"miss rate (> {budget_ms:.3f} ms)")
    rows = []
    for name, values in series.items():
        summary = summarize_samples(values)
        row = [name, summary["count"], *(f"{summary[k]:.3f}" for k in ("p50", "p95", "p99", "max"))]
        if budget_ms is not None:
            misses = int((values > budget_ms).sum())
            row.append(f"{100.0 * misses / len(values):.2f} % ({misses})")
        rows.append(row)
    return lines + _table(header, rows)


def _stages_section(stages: dict[str, dict[str, float]]) -> list[str]:
    lines = ["## Stages (p50 ms)", ""]
    if not stages:
        return lines + ["_No per-stage timings recorded._", ""]
    groups = list(stages)
    stage_names = list(dict.fromkeys(name for parts in stages.values() for name in parts))
    rows = [[name, *(stages[g].get(name) for g in groups)] for name in stage_names]
    rows.append(["**sum of the stages' p50s**", *(sum(stages[g].values()) for g in groups)])
    return lines + _table(["stage", *groups], rows)


def _details_section(details: dict) -> list[str]:
    if not details:
        return []
    lines = ["## Details", ""]
    details = {k: v.item() if isinstance(v, np.generic) else v for k, v in details.items()}
    scalars = {k: v for k, v in details.items() if v is None or isinstance(v, bool | int | float | str)}
    if scalars:
        lines += _table(["detail", "value"], [[k, v] for k, v in scalars.items()])
    for key, value in details.items():
        if key in scalars:
            continue
        text = json.dumps(value, indent=2, default=str)
        if len(text) > MAX_DETAIL_JSON_CHARS:
            lines += [f"`{key}`: {len(text):,} characters, left to the JSON report.", ""]
        else:
            lines += [f"`{key}`:", "", "```json", text, "```", ""]
    return lines


def _image_section(title: str, filename: str, drawn: bool, caption: str, missing: str) -> list[str]:
    lines = [f"### {title}", ""]
    if not drawn:
        return lines + [f"_Not drawn: {missing}_", ""]
    return lines + [f"![{title}]({filename})", "", f"_{caption}_", ""]


def write_report(
    report: Report, directory: Path, profile_summary: str | None = None, about: str | None = None
) -> Path:
    """Write report.md and its plots (latency histogram, stage bars, latency over time) into directory.

    A plot without data (no samples, no stages) is not drawn, any stale copy of it is removed so the
    folder matches the page, and report.md says why. Returns the path of report.md.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    series = {name: _finite(values) for name, values in report.samples.items()}
    series = {name: values for name, values in series.items() if values.size}
    stages = {group: parts for group, parts in report.stages.items() if parts}
    budget = report.budget_ms

    drawn = {}
    for filename, has_data, plot in (
        (HIST_PNG, bool(series), lambda p: plot_latency_hist(series, budget, p)),
        (STAGES_PNG, bool(stages), lambda p: plot_stages(stages, budget, p)),
        (OVER_TIME_PNG, bool(series), lambda p: plot_latency_over_time(series, budget, p)),
    ):
        path = directory / filename
        if has_data:
            plot(path)
        else:
            path.unlink(missing_ok=True)
        drawn[filename] = has_data

    machine = report.machine
    created = datetime.fromtimestamp(report.created_unix_s, tz=UTC).isoformat(timespec="seconds")
    lines = [
        f"# Benchmark `{report.benchmark}`",
        "",
        f"Measured on {machine.get('cpu', 'unknown CPU')} ({machine.get('cores', '?')} cores), "
        f"commit `{machine.get('commit') or 'unknown'}`, at {created}.",
        "",
    ]
    if about:
        lines += ["**What this measures.** " + " ".join(about.split()), ""]
    if profile_summary:
        lines += ["**Device profile.** " + profile_summary.strip(), ""]
    if budget is not None:
        lines += [f"Per-frame budget: {budget:.3f} ms (p99, capture to action).", ""]
    lines += _results_section(report)
    lines += _series_section(series, budget)
    lines += _stages_section(stages)
    lines += ["## Plots", ""]
    lines += _image_section(
        "Latency histogram",
        HIST_PNG,
        drawn[HIST_PNG],
        "How per-frame latencies are distributed; dashed lines mark each series' p99, red the budget.",
        "no latency samples were recorded.",
    )
    lines += _image_section(
        "Stages",
        STAGES_PNG,
        drawn[STAGES_PNG],
        "Median time of each stage, stacked per group, so the largest share of a frame stands out.",
        "no per-stage timings were recorded.",
    )
    lines += _image_section(
        "Latency over time",
        OVER_TIME_PNG,
        drawn[OVER_TIME_PNG],
        "Each frame's latency in order, with a rolling p99, to show drift, warm-up and periodic stalls.",
        "no latency samples were recorded.",
    )
    lines += _details_section(report.details)
    command = report.config.get("command")
    if command:
        command = shlex.join(command) if isinstance(command, list | tuple) else str(command)
        lines += ["## Command", "", "```bash", command, "```", ""]

    path = directory / REPORT_MD
    path.write_text("\n".join(lines).rstrip("\n") + "\n")
    logger.info("wrote benchmark report %s", path)
    return path
