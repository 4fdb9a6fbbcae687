"""Record every topic to MCAP: `python -m launch.record --out run.mcap`.

Subscribes losslessly to every topic of the running graph (`--graph`, default `sim`: the one
`python -m launch.sim` starts, found by its announcement) or of the given `--endpoints` (heartbeats and
handshakes are not recorded; `--topics a b` records only those exact topic names) and writes each message,
payload included, to one MCAP file (see `runtime/record.py` for the layout). The recording starts once
every endpoint's publisher has answered the readiness handshake (or after `--ready-timeout-s`, with a
warning); from then on a sequence gap means a lost message, and the live status line and the summary
count them.

Ctrl-C, SIGTERM or `--seconds` stop it and finish the file (summary and footer). A recorder that is killed
outright leaves a file whose complete chunks are all readable: it loses at most the last `--flush-s` seconds.
Replay with `python -m launch.replay run.mcap`.
"""

import dataclasses
import logging
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import tyro
import zmq
from rich.console import Console
from rich.live import Live
from rich.table import Table

from runtime.record import Recorder
from runtime.signals import StopFlag
from runtime.supervisor import running_endpoints
from runtime.transport import Policy, Subscriber

log = logging.getLogger("launch.record")


@dataclass
class RecordConfig:
    out: Path
    """MCAP file to write."""
    endpoints: tuple[str, ...] = ()
    """Publisher endpoints to record from (e.g. ipc:///tmp/run/sim.sock); default: those of `--graph`."""
    graph: str = "sim"
    """Record the running graph of this name (started by launch.sim) when no `--endpoints` are given."""
    topics: tuple[str, ...] = ("all",)
    """Exact topic names to record, or `all` (every topic except the internal `_hb/` and `_ready/`)."""
    seconds: float | None = None
    """Stop after this many seconds of recording (default: until Ctrl-C or SIGTERM)."""
    overwrite: bool = False
    """Replace `--out` if it exists (refused otherwise: a recording is not thrown away by accident)."""
    ready_timeout_s: float = 5.0
    """Wait this long for every endpoint's publisher to answer the handshake before recording anyway."""
    chunk_mib: float = 1.0
    """Close a chunk when it reaches this size."""
    flush_s: float = 1.0
    """Close a chunk at least this often: the most a killed recorder loses."""
    compression: Literal["zstd", "lz4", "none"] = "zstd"
    """Chunk compression."""

    def __post_init__(self):
        if self.seconds is not None and not self.seconds > 0:
            raise ValueError(f"`seconds` must be > 0, got {self.seconds}")
        if not self.chunk_mib > 0 or not self.flush_s > 0 or not self.ready_timeout_s >= 0:
            raise ValueError("`chunk-mib` and `flush-s` must be > 0, `ready-timeout-s` >= 0")
        if "all" in self.topics and len(self.topics) > 1:
            raise ValueError(f"`--topics all` cannot be combined with topic names, got {list(self.topics)}")
        if self.out.exists() and not self.overwrite:
            raise ValueError(f"{self.out} exists; pass --overwrite to replace it")


def build(cfg: RecordConfig) -> tuple[Subscriber, Recorder]:
    if cfg.topics == ("all",):
        sub = Subscriber(list(cfg.endpoints), {}, every=Policy.LOSSLESS, name="recorder")
    else:
        sub = Subscriber(list(cfg.endpoints), {t: Policy.LOSSLESS for t in cfg.topics}, name="recorder")
    try:
        recorder = Recorder(
            cfg.out,
            chunk_size=int(cfg.chunk_mib * 2**20),
            flush_interval_s=cfg.flush_s,
            compression=cfg.compression,
            metadata={"endpoints": " ".join(cfg.endpoints), "topics": " ".join(cfg.topics)},
        )
    except BaseException:
        sub.close()
        raise
    return sub, recorder


def _status(sub: Subscriber, rec: Recorder, elapsed: float, rates: dict[str, float]) -> str:
    stats = sub.stats.topics
    gaps = sum(s.gaps for s in stats.values())
    per_topic = ", ".join(f"{t} {rates.get(t, 0.0):.0f}/s" for t in sorted(rec.topics)) or "waiting for data"
    size = rec.path.stat().st_size / 2**20 if rec.path.exists() else 0.0
    return (
        f"{elapsed:6.1f} s | {rec.messages:,} msgs, {size:,.1f} MiB on disk | "
        f"gaps {gaps}{' [red](LOST)[/]' if gaps else ''} | {per_topic}"
    )


def main(cfg: RecordConfig) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    console = Console(stderr=True)
    stop = StopFlag()
    previous = {s: signal.signal(s, stop) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        sub, rec = build(cfg)
    except BaseException:
        for s, handler in previous.items():
            signal.signal(s, handler)
        raise
    ready = False
    deadline = time.monotonic() + cfg.ready_timeout_s
    while not stop and not ready:  # short attempts, so a signal is not ignored for the whole timeout
        ready = sub.wait_ready(min(0.5, max(0.0, deadline - time.monotonic())))
        if time.monotonic() >= deadline:
            break
    if not ready and not stop:
        alive = sorted(sub.liveness)
        console.print(
            f"[yellow]not every publisher answered within {cfg.ready_timeout_s:g} s[/] (heard from "
            f"{alive or 'none'}); recording whatever arrives"
        )
    console.print(
        f"recording {'every topic' if cfg.topics == ('all',) else list(cfg.topics)} from "
        f"{len(cfg.endpoints)} endpoint(s) to {cfg.out}"
        + (f" for {cfg.seconds:g} s" if cfg.seconds else ", Ctrl-C to stop")
    )
    t0 = time.monotonic()
    window_start, window_counts, rates = t0, {}, {}
    try:
        with Live(console=console, refresh_per_second=4, transient=False) as live:
            while not stop and (cfg.seconds is None or time.monotonic() - t0 < cfg.seconds):
                msgs = sub.poll(0.05)
                if msgs:
                    now_ns = time.monotonic_ns()  # receive time of this batch
                    for msg in msgs:
                        rec.write(msg, now_ns)
                rec.maybe_flush()
                now = time.monotonic()
                if now - window_start >= 1.0:
                    counts = {t: c.messages for t, c in rec.topics.items()}
                    span = now - window_start
                    rates = {t: (c - window_counts.get(t, 0)) / span for t, c in counts.items()}
                    window_start, window_counts = now, counts
                    live.update(_status(sub, rec, now - t0, rates))
            # What is already queued was published before the stop: keep it.
            while msgs := sub.poll(0.0):
                now_ns = time.monotonic_ns()
                for msg in msgs:
                    rec.write(msg, now_ns)
            live.update(_status(sub, rec, time.monotonic() - t0, rates))
        if not console.is_terminal:
            console.line()  # Live leaves its last line open on a pipe or file
    finally:
        elapsed = time.monotonic() - t0
        rec.close()
        sub.close()
        for s, handler in previous.items():
            signal.signal(s, handler)
    if stop:
        console.print(f"stopped by {stop.signal}")
    return _summary(console, sub, rec, elapsed)


def _summary(console: Console, sub: Subscriber, rec: Recorder, elapsed: float) -> int:
    gaps = sum(s.gaps for s in sub.stats.topics.values())
    table = Table(
        title=f"{rec.messages:,} messages in {elapsed:.1f} s to {rec.path} "
        f"({rec.path.stat().st_size / 2**20:,.1f} MiB, finished), {gaps} lost in gaps"
    )
    for column in ("topic", "messages", "msgs/s", "first seq", "last seq", "gaps", "resets", "MiB"):
        table.add_column(column, justify="left" if column == "topic" else "right")
    for topic in sorted(rec.topics):
        counts, stats = rec.topics[topic], sub.stats.topics[topic]
        table.add_row(
            topic,
            f"{counts.messages:,}",
            f"{counts.messages / max(elapsed, 1e-9):,.1f}",
            str(counts.first_seq),
            str(counts.last_seq),
            str(stats.gaps),
            str(stats.resets),
            f"{counts.bytes / 2**20:,.2f}",
        )
    if sub.stats.dropped:
        console.print(f"[yellow]malformed messages dropped: {dict(sub.stats.dropped)}[/]")
    console.print(table)
    return 0


def cli(argv: list[str] | None = None) -> int:
    try:
        cfg = tyro.cli(RecordConfig, args=argv, description=__doc__)
    except ValueError as exc:
        print(f"launch.record: {exc}", file=sys.stderr)
        return 2
    if not cfg.endpoints:
        try:
            cfg = dataclasses.replace(cfg, endpoints=tuple(running_endpoints(cfg.graph)))
        except LookupError as exc:
            print(f"launch.record: {exc}", file=sys.stderr)
            return 2
    try:
        return main(cfg)
    except ValueError as exc:  # a bad topic name or endpoint, refused before recording
        print(f"launch.record: {exc}", file=sys.stderr)
        return 2
    except zmq.ZMQError as exc:  # an endpoint ZeroMQ cannot parse
        print(f"launch.record: bad endpoint in {list(cfg.endpoints)}: {exc}", file=sys.stderr)
        return 2
    except (RuntimeError, OSError) as exc:
        print(f"launch.record: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(cli())
