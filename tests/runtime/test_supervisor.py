"""Supervisor: crashed nodes restart with backoff, a node past its budget stays down, stop() ends all."""

import os
import signal
import time

import pytest
import yaml

from runtime.graph import load_graph
from runtime.supervisor import Supervisor


def _graph(tmp_path, max_restarts=2, backoff_s=0.2):
    raw = yaml.safe_load(open(load_graph("sim").source))
    for node in raw["nodes"].values():
        node["restart"] = {"max_restarts": max_restarts, "backoff_s": backoff_s, "max_backoff_s": 1.0}
    path = tmp_path / "graph.yaml"
    path.write_text(yaml.safe_dump(raw))
    return load_graph(path)


def _watch_until(sup: Supervisor, predicate, timeout_s: float) -> list:
    events, deadline = [], time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        events += sup.watch()
        if predicate():
            return events
        time.sleep(0.05)
    raise AssertionError(f"condition not reached in {timeout_s} s; events {events}")


@pytest.mark.timeout(90)
def test_crashed_node_is_restarted_and_heard_again(tmp_path):
    """SIGKILL on a node: the supervisor restarts it after its backoff and its heartbeats come back; a second
    crash doubles the backoff."""
    sup = Supervisor(_graph(tmp_path))
    try:
        sup.start()
        expert = sup.nodes["expert"]
        _watch_until(sup, lambda: sup.monitor.liveness.get("expert") is not None, 30)
        old_pid = expert.process.pid
        killed_at = time.monotonic()
        os.kill(old_pid, signal.SIGKILL)
        events = _watch_until(sup, lambda: expert.restarts == 1 and expert.alive, 10)
        assert any("exited with code -9" in what for _, what in events)
        assert expert.process.pid != old_pid
        restarted_at = time.monotonic()
        assert expert.backoff_s == pytest.approx(0.2) and expert.started_at - killed_at >= 0.2  # its backoff
        _watch_until(sup, lambda: sup.monitor.liveness["expert"].last_seen > restarted_at, 30)
        killed_at = time.monotonic()  # a second crash waits twice as long
        os.kill(expert.process.pid, signal.SIGKILL)
        _watch_until(sup, lambda: expert.restarts == 2 and expert.alive, 10)
        assert expert.backoff_s == pytest.approx(0.4) and expert.started_at - killed_at >= 0.4
    finally:
        sup.stop()


@pytest.mark.timeout(90)
def test_node_past_its_restart_budget_stays_down(tmp_path):
    """With max_restarts 0 a crashed node is reported and not restarted; the others keep running."""
    sup = Supervisor(_graph(tmp_path, max_restarts=0))
    try:
        sup.start()
        time.sleep(1.0)
        os.kill(sup.nodes["actuator"].process.pid, signal.SIGKILL)
        events = _watch_until(sup, lambda: sup.nodes["actuator"].given_up, 10)
        assert any("not restarted" in what for _, what in events)
        assert sup.nodes["sim"].alive and sup.nodes["expert"].alive
    finally:
        sup.stop()


@pytest.mark.timeout(60)
def test_stop_ends_every_process_within_2_s(tmp_path):
    """stop() returns within 2 s and every node process has exited."""
    sup = Supervisor(_graph(tmp_path))
    sup.start()
    time.sleep(3.0)
    pids = [n.process.pid for n in sup.nodes.values()]
    t0 = time.monotonic()
    sup.stop()
    assert time.monotonic() - t0 < 2.0
    assert not [
        pid
        for pid in pids
        if os.path.exists(f"/proc/{pid}") and open(f"/proc/{pid}/stat").read().split()[2] != "Z"
    ]
