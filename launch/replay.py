"""Replay a recording: `python -m launch.replay run.mcap --speed 1 --endpoint ipc:///tmp/hamrt-replay.sock`.

Republishes every recorded message unchanged (topic, seq, capture_ns, send_ns, source, kind, payload) on one
endpoint, at the original capture-time spacing divided by `--speed` (0: as fast as possible). It waits for
`--wait-subscribers` subscribers first, so nothing is lost at the start, and it never drops: when a
subscriber's queue is full it waits. `--loop` replays until Ctrl-C (sequence numbers then restart, which
subscribers count as a reset).

Timing: each source's capture clock is anchored to the recorder's clock at that source's first message, so
sources on different hosts (different monotonic clocks) replay in the order the recorder saw them; within
a source the spacing is exactly the capture spacing. A recording whose writer was killed replays its complete
chunks.
"""

import gc
import logging
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import tyro
import zmq
from rich.console import Console
from rich.live import Live
from rich.table import Table

from runtime.latency import LatencyStats
from runtime.record import ReadReport, iter_recording, recording_summary
from runtime.signals import StopFlag
from runtime.transport import Publisher

log = logging.getLogger("launch.replay")

REANCHOR_NS = 1_000_000_000  # a source whose clock disagrees with the recorder's by more is re-anchored


@dataclass
class ReplayConfig:
    recording: tyro.conf.Positional[Path]
    """MCAP file written by `launch.record`."""
    speed: float = 1.0
    """Replay speed: 1 is real time, 4 is four times faster, 0 is as fast as possible."""
    endpoint: str = "ipc:///tmp/hamrt-replay.sock"
    """Endpoint to bind and publish on (loopback only: ipc:// or tcp://127.0.0.1)."""
    loop: bool = False
    """Start again at the end, until Ctrl-C."""
    wait_subscribers: int = 1
    """Subscribers to wait for before the first message (0: start at once)."""
    wait_timeout_s: float = 30.0
    """Give up (exit 1) if they have not all connected by then."""
    source: str = "replay"
    """Source name of the replay's own heartbeats (messages keep their recorded sources)."""
    drain_s: float = 1.0
    """Keep the socket open this long after the last message so queued messages are delivered."""

    def __post_init__(self):
        if not self.speed >= 0:
            raise ValueError(f"`speed` must be >= 0, got {self.speed}")
        if self.wait_subscribers < 0 or not self.wait_timeout_s > 0 or self.drain_s < 0:
            raise ValueError("`wait-subscribers` and `drain-s` must be >= 0, `wait-timeout-s` > 0")
        if not self.recording.is_file():
            raise ValueError(f"{self.recording} is not a file")


@dataclass
class _TopicReplay:
    messages: int = 0
    first_seq: int = -1
    last_seq: int = -1


class Player:
    """Paces one pass over the recording; keeps the statistics across passes."""

    def __init__(self, pub: Publisher, speed: float, stop: StopFlag):
        self.pub, self.speed, self.stop = pub, speed, stop
        self.topics: dict[str, _TopicReplay] = {}
        self.late = LatencyStats()
        self.sent = 0
        self.gave_up = 0
        self.recording_s = 0.0  # recording time reached in this pass

    def play(self, path: Path, report: ReadReport, on_progress) -> None:
        anchors: dict[str, int] = {}  # source -> recorder clock minus capture clock
        base_ns: int | None = None
        start = last_progress = time.monotonic()
        for log_ns, msg in iter_recording(path, report):
            if self.stop:
                return
            anchor = anchors.get(msg.source)
            if anchor is None or abs(msg.capture_ns + anchor - log_ns) > REANCHOR_NS:
                anchor = anchors[msg.source] = log_ns - msg.capture_ns
            t_ns = msg.capture_ns + anchor  # capture time on the recorder's clock
            if base_ns is None:
                base_ns = t_ns
            self.recording_s = (t_ns - base_ns) / 1e9
            due = start + self.recording_s / self.speed if self.speed > 0 else None
            if due is not None:
                self._sleep_until(due)
                if self.stop:
                    return
            else:
                self.pub.service()
            if not self.pub.republish(msg, stop=lambda: bool(self.stop)):
                self.gave_up += 1
                continue
            if due is not None:
                self.late.add(max(0.0, time.monotonic() - due))
            self.sent += 1
            t = self.topics.setdefault(msg.topic, _TopicReplay())
            if not t.messages:
                t.first_seq = msg.seq
            t.messages += 1
            t.last_seq = msg.seq
            now = time.monotonic()
            if now - last_progress >= 0.25:
                last_progress = now
                on_progress()

    def _sleep_until(self, due: float) -> None:
        while not self.stop:
            left = due - time.monotonic()
            if left <= 0:
                return
            self.pub.service()
            time.sleep(min(left, 0.05))


def main(cfg: ReplayConfig) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    console = Console(stderr=True)
    summary = recording_summary(cfg.recording)
    # Refuse a file that is not a recording before binding anything.
    next(iter_recording(cfg.recording, ReadReport()), None)
    if summary is not None:
        topics = sorted(summary.topics)
        console.print(
            f"{cfg.recording}: {summary.messages:,} messages on {len(topics)} topics, "
            f"{summary.duration_s:.1f} s ({', '.join(topics)})"
        )
    else:
        topics = []
        console.print(
            f"[yellow]{cfg.recording} was not finished (recorder killed?)[/]: replaying its complete chunks"
        )
    stop = StopFlag()
    previous = {s: signal.signal(s, stop) for s in (signal.SIGINT, signal.SIGTERM)}
    # nodrop: a full subscriber queue makes republish wait, never drop; a deeper queue than a live node's.
    pub = Publisher(cfg.endpoint, cfg.source, nodrop=True, sndhwm=1000)
    try:
        if cfg.wait_subscribers:
            console.print(f"waiting for {cfg.wait_subscribers} subscriber(s) on {cfg.endpoint}")
            if not pub.wait_for_readers(cfg.wait_subscribers, topics, cfg.wait_timeout_s):
                if not stop:
                    console.print(
                        f"[red]only {pub.readers()} of {cfg.wait_subscribers} subscriber(s) connected within "
                        f"{cfg.wait_timeout_s:g} s[/]; pass --wait-subscribers 0 to replay regardless"
                    )
                    return 1
        speed = f"x{cfg.speed:g}" if cfg.speed > 0 else "as fast as possible"
        console.print(f"replaying on {cfg.endpoint}, {speed}" + (", looping" if cfg.loop else ""))
        player = Player(pub, cfg.speed, stop)
        gc.collect()
        gc.freeze()  # a full collection walks every object imported so far: a 10 ms hiccup in the schedule
        t0 = time.monotonic()
        passes, report, tail = 0, ReadReport(), ""
        total = f" / {summary.duration_s:.1f}" if summary is not None else ""
        with Live(console=console, refresh_per_second=4, transient=False) as live:

            def progress():
                late = player.late.summary_ms()
                live.update(
                    f"{time.monotonic() - t0:6.1f} s | pass {max(passes, 1)}, "
                    f"{player.recording_s:.1f}{total} s of recording | {player.sent:,} sent | "
                    f"late p99 {late['p99_ms']:.2f} ms | "
                    f"waited on full queues {pub.blocked_s:.2f} s"
                )

            progress()  # the first render is slow (tens of ms): not inside the schedule
            while not stop:
                report = ReadReport()
                passes += 1
                player.play(cfg.recording, report, progress)
                progress()
                tail = tail or report.tail
                if not cfg.loop or report.messages == 0:
                    break
        if not console.is_terminal:
            console.line()  # Live leaves its last line open on a pipe or file
        elapsed = time.monotonic() - t0
        end = time.monotonic() + cfg.drain_s  # let the last messages leave the socket
        while time.monotonic() < end and not stop:
            pub.service()
            time.sleep(0.01)
    finally:
        pub.close()
        for s, handler in previous.items():
            signal.signal(s, handler)
    if stop:
        console.print(f"stopped by {stop.signal}")
    if tail:
        console.print(f"[yellow]the recording ends in an incomplete chunk ({tail}); replayed up to it[/]")
    _summary(console, player, elapsed, passes)
    return 1 if player.gave_up else 0


def _summary(console: Console, player: Player, elapsed: float, passes: int) -> None:
    late = player.late.summary_ms()
    table = Table(
        title=f"{player.sent:,} messages in {elapsed:.1f} s ({passes} pass{'es' if passes != 1 else ''}), "
        f"lateness p50 {late['p50_ms']:.2f} / p99 {late['p99_ms']:.2f} / max {late['max_ms']:.2f} ms, "
        f"{player.gave_up} not delivered"
    )
    for column in ("topic", "messages", "first seq", "last seq"):
        table.add_column(column, justify="left" if column == "topic" else "right")
    for topic in sorted(player.topics):
        t = player.topics[topic]
        table.add_row(topic, f"{t.messages:,}", str(t.first_seq), str(t.last_seq))
    console.print(table)


def cli(argv: list[str] | None = None) -> int:
    from runtime.record import RecordingError

    try:
        cfg = tyro.cli(ReplayConfig, args=argv, description=__doc__)
        return main(cfg)
    except (RecordingError, ValueError, zmq.ZMQError) as exc:  # not a recording, bad flag or endpoint
        print(f"launch.replay: {exc}", file=sys.stderr)
        return 2
    except (RuntimeError, OSError) as exc:  # endpoint in use, unreadable file
        print(f"launch.replay: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(cli())
