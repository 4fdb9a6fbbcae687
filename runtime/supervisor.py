"""Starts a graph's nodes as processes, watches them, restarts crashed ones, and stops them all cleanly.

Liveness is the process itself (exit code) plus its heartbeats: a node whose heartbeats stop while its process
lives is hung, and is killed and restarted like a crashed one. Restarts follow the node's policy (backoff
doubling up to a ceiling, a maximum count); a node past its maximum is left down and reported. `stop()` sends
SIGTERM to every node, then SIGKILL to whatever is left after `grace_s`, so Ctrl-C ends everything within 2 s.

While it runs, a supervisor announces its graph's endpoints in `running_dir()/<graph name>.json`, so tools
started separately (`python -m launch.record`) can attach to the running graph by name.
"""

import json
import logging
import os
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from runtime.graph import Graph
from runtime.transport import Subscriber

log = logging.getLogger(__name__)
ROOT = Path(__file__).resolve().parents[1]


def running_dir() -> Path:
    """Where running graphs announce themselves: per user, under the temporary directory (`HAMRT_RUNNING_DIR`
    overrides)."""
    default = Path(tempfile.gettempdir()) / f"hamrt-{os.getuid()}"
    return Path(os.environ.get("HAMRT_RUNNING_DIR") or default)


def running_endpoints(graph_name: str) -> list[str]:
    """The running graph `graph_name`'s publisher endpoints, or a LookupError saying why there are none."""
    path = running_dir() / f"{graph_name}.json"
    try:
        announced = json.loads(path.read_text())
        pid, endpoints = int(announced["pid"]), list(announced["endpoints"])
    except FileNotFoundError:
        raise LookupError(
            f"no graph {graph_name!r} is running (nothing announced at {path}): start it with "
            "`python -m launch.sim`, or name the endpoints with --endpoints"
        ) from None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise LookupError(f"{path} is not a graph announcement: {exc}") from None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        raise LookupError(
            f"graph {graph_name!r} was announced by pid {pid}, which has exited: start it again with "
            "`python -m launch.sim`"
        ) from None
    except PermissionError:
        pass  # alive, another user's
    return endpoints


@dataclass
class NodeProcess:
    name: str
    process: subprocess.Popen | None = None
    started_at: float = 0.0
    restarts: int = 0
    next_start: float = 0.0  # time.monotonic() after which a restart may happen
    backoff_s: float = 0.0
    exit_codes: list[int] = field(default_factory=list)
    given_up: bool = False

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None


class Supervisor:
    def __init__(
        self,
        graph: Graph,
        run_dir: Path | None = None,
        log_dir: Path | None = None,
        params: dict[str, dict] | None = None,
        hung_after_s: float = 5.0,
        start_grace_s: float = 30.0,
    ):
        self.graph = graph
        self._tmp = None
        if run_dir is None:
            # ipc paths must be short (108 bytes on Linux), so not under a deep working directory.
            self._tmp = tempfile.TemporaryDirectory(prefix="hamrt-")
            run_dir = Path(self._tmp.name)
        self.run_dir = run_dir
        self.log_dir = log_dir or run_dir
        self.params = params or {}
        self.hung_after_s = hung_after_s  # heartbeat silence that counts as hung, once a node has spoken
        # before its first heartbeat a node may still be importing and loading (torch and a world model take
        # several seconds on a busy 2-core machine): it gets this long
        self.start_grace_s = start_grace_s
        self.nodes = {name: NodeProcess(name) for name in graph.nodes}
        self.endpoints = sorted({spec.endpoint(run_dir) for spec in graph.nodes.values() if spec.publishes})
        # Heartbeats only: a subscription to no topic still receives `_hb/` messages.
        self.monitor = Subscriber(self.endpoints, {}, name="supervisor") if self.endpoints else None

    def start(self) -> None:
        for name in self.nodes:
            self._spawn(self.nodes[name])
        self._announce()

    @property
    def announcement(self) -> Path:
        return running_dir() / f"{self.graph.name}.json"

    def _announce(self) -> None:
        record = {
            "graph": self.graph.name,
            "pid": os.getpid(),
            "run_dir": str(self.run_dir),
            "endpoints": self.endpoints,
        }
        try:
            self.announcement.parent.mkdir(parents=True, exist_ok=True)
            partial = self.announcement.with_suffix(f".{os.getpid()}.tmp")
            partial.write_text(json.dumps(record))
            partial.replace(self.announcement)  # atomic: a reader sees the old file or the new one
        except OSError as exc:  # attaching tools will not find the graph; running it still works
            log.warning("cannot announce graph %s at %s: %s", self.graph.name, self.announcement, exc)

    def _withdraw(self) -> None:
        try:
            if json.loads(self.announcement.read_text()).get("pid") == os.getpid():
                self.announcement.unlink()
        except (OSError, ValueError):
            pass  # nothing (of ours) to withdraw

    def _spawn(self, node: NodeProcess) -> None:
        cmd = [
            sys.executable,
            "-m",
            "nodes",
            "--graph",
            self.graph.source,
            "--node",
            node.name,
            "--run-dir",
            str(self.run_dir),
        ]
        if self.params.get(node.name):
            cmd += ["--params", json.dumps(self.params[node.name])]
        log_file = open(self.log_dir / f"{node.name}.log", "ab")  # noqa: SIM115 (owned by the child)
        node.process = subprocess.Popen(
            cmd,
            cwd=ROOT,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        log_file.close()
        node.started_at = time.monotonic()
        log.info("started %s (pid %d)", node.name, node.process.pid)

    def watch(self) -> list[tuple[str, str]]:
        """Check every node once; restart what died or hung. Returns events (node, what happened)."""
        events = []
        if self.monitor is not None:
            self.monitor.poll(0.0)
        now = time.monotonic()
        for node in self.nodes.values():
            spec = self.graph.nodes[node.name]
            if node.given_up:
                continue
            if node.process is not None and not node.alive:
                code = node.process.returncode
                node.exit_codes.append(code)
                node.process = None
                events.append((node.name, f"exited with code {code}"))
                if node.restarts >= spec.restart.max_restarts:
                    node.given_up = True
                    events.append((node.name, f"not restarted: {node.restarts} restarts already"))
                    continue
                node.backoff_s = min(spec.restart.max_backoff_s, spec.restart.backoff_s * (2**node.restarts))
                node.next_start = now + node.backoff_s
            elif node.alive and spec.publishes and self._hung(node, now):
                events.append((node.name, "hung (no heartbeat): killed"))
                node.process.kill()
                continue
            if node.process is None and now >= node.next_start:
                node.restarts += 1
                self._spawn(node)
                events.append(
                    (node.name, f"restarted (restart {node.restarts}, after {node.backoff_s:.1f} s)")
                )
        for name, what in events:
            log.warning("%s: %s", name, what)
        return events

    def _hung(self, node: NodeProcess, now: float) -> bool:
        if self.monitor is None:
            return False
        live = self.monitor.liveness.get(node.name)
        if live is None or live.last_seen < node.started_at:  # not a word yet from this process
            return now - node.started_at > self.start_grace_s
        return now - live.last_seen > self.hung_after_s

    def stop(self, grace_s: float = 1.5) -> None:
        """SIGTERM everything, SIGKILL what is left after `grace_s`; returns when no node process remains."""
        running = [n.process for n in self.nodes.values() if n.alive]
        for process in running:
            process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + grace_s
        for process in running:
            try:
                process.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.warning("pid %d ignored SIGTERM for %.1f s: SIGKILL", process.pid, grace_s)
                process.kill()
                process.wait()
        if self.monitor is not None:
            self.monitor.close()
            self.monitor = None
        self._withdraw()
        if self._tmp is not None:
            self._tmp.cleanup()

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc):
        self.stop()
