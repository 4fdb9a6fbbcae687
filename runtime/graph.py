"""Node graphs declared in YAML: which node publishes what, who subscribes, rates, policies, restarts.

A graph is validated completely before any process starts; every problem is reported at once, each naming
its field (`nodes.sim.publishes.sim/camera.rate_hz must be > 0, got 0`). Endpoints are derived here, never
hard-coded in nodes: node N publishes on `ipc://<run_dir>/<N>.sock`.
"""

import importlib.util
import re
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from runtime.messages import check_kind, check_name
from runtime.transport import Policy

GRAPHS_DIR = Path(__file__).resolve().parents[1] / "launch" / "graphs"
_NODE_NAME = re.compile(r"[a-z][a-z0-9_]{0,31}")
MAX_RATE_HZ = 10_000.0


class GraphError(ValueError):
    """A graph that must not start; `problems` lists every field that is wrong."""

    def __init__(self, source: str, problems: list[str]):
        self.problems = problems
        super().__init__(f"invalid node graph {source}:\n  - " + "\n  - ".join(problems))


@dataclass(frozen=True)
class TopicSpec:
    name: str
    kind: str
    rate_hz: float
    policy: Policy


@dataclass(frozen=True)
class RestartPolicy:
    max_restarts: int = 3  # within one run; a node that keeps crashing is left down and reported
    backoff_s: float = 0.5  # doubled after each restart, up to max_backoff_s
    max_backoff_s: float = 5.0


@dataclass(frozen=True)
class NodeSpec:
    name: str
    module: str
    rate_hz: float
    publishes: dict[str, TopicSpec]
    subscribes: tuple[str, ...]
    params: dict
    restart: RestartPolicy

    def endpoint(self, run_dir: Path) -> str:
        return f"ipc://{run_dir}/{self.name}.sock"


@dataclass(frozen=True)
class Graph:
    name: str
    nodes: dict[str, NodeSpec]
    source: str = "<memory>"
    heartbeat_period_s: float = 0.2
    topics: dict[str, tuple[str, TopicSpec]] = field(default_factory=dict)  # topic -> (publisher, spec)

    def publisher_endpoint(self, topic: str, run_dir: Path) -> str:
        return self.nodes[self.topics[topic][0]].endpoint(run_dir)

    def subscriptions(self, node: str, run_dir: Path) -> tuple[list[str], dict[str, Policy]]:
        """Endpoints and topic policies for `node`'s subscriber."""
        spec = self.nodes[node]
        endpoints = sorted({self.publisher_endpoint(t, run_dir) for t in spec.subscribes})
        return endpoints, {t: self.topics[t][1].policy for t in spec.subscribes}

    def with_params(self, node: str, **params) -> "Graph":
        """A copy with `params` merged into one node's params (command-line overrides)."""
        spec = self.nodes[node]
        nodes = dict(self.nodes)
        nodes[node] = NodeSpec(
            spec.name,
            spec.module,
            spec.rate_hz,
            spec.publishes,
            spec.subscribes,
            {**spec.params, **params},
            spec.restart,
        )
        return Graph(self.name, nodes, self.source, self.heartbeat_period_s, self.topics)


def load_graph(path: str | Path) -> Graph:
    path = Path(path)
    if not path.exists() and not path.suffix:
        path = GRAPHS_DIR / f"{path}.yaml"
    try:
        raw = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        known = sorted(p.stem for p in GRAPHS_DIR.glob("*.yaml"))
        raise GraphError(str(path), [f"no such graph file; graphs in {GRAPHS_DIR}: {known}"]) from None
    except yaml.YAMLError as exc:
        raise GraphError(str(path), [f"not valid YAML: {exc}"]) from None
    return parse_graph(raw, source=str(path))


def _positive(problems: list[str], where: str, value, upper: float | None = None) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
        problems.append(f"{where} must be a number > 0, got {value!r}")
        return 1.0
    if upper is not None and value > upper:
        problems.append(f"{where} must be <= {upper:g}, got {value!r}")
    return float(value)


def parse_graph(raw, source: str = "<memory>") -> Graph:
    problems: list[str] = []
    if not isinstance(raw, dict):
        raise GraphError(source, [f"top level must be a mapping, got {type(raw).__name__}"])
    unknown = set(raw) - {"name", "nodes", "heartbeat_period_s"}
    if unknown:
        problems.append(f"unknown top-level keys {sorted(unknown)}; known: name, nodes, heartbeat_period_s")
    heartbeat = _positive(problems, "heartbeat_period_s", raw.get("heartbeat_period_s", 0.2), upper=10)
    nodes_raw = raw.get("nodes")
    if not isinstance(nodes_raw, dict) or not nodes_raw:
        raise GraphError(source, problems + ["`nodes` must be a non-empty mapping of node name -> node"])

    nodes: dict[str, NodeSpec] = {}
    topics: dict[str, tuple[str, TopicSpec]] = {}
    for name, node in nodes_raw.items():
        where = f"nodes.{name}"
        if not isinstance(name, str) or not _NODE_NAME.fullmatch(name):
            problems.append(f"{where}: node names must match {_NODE_NAME.pattern}")
        if not isinstance(node, dict):
            problems.append(f"{where} must be a mapping")
            continue
        unknown = set(node) - {"module", "rate_hz", "publishes", "subscribes", "params", "restart"}
        if unknown:
            problems.append(f"{where}: unknown keys {sorted(unknown)}")
        module = node.get("module")
        if not isinstance(module, str) or importlib.util.find_spec(module.split(":")[0]) is None:
            problems.append(f"{where}.module: no importable module {module!r}")
        rate = _positive(problems, f"{where}.rate_hz", node.get("rate_hz"), upper=MAX_RATE_HZ)
        publishes: dict[str, TopicSpec] = {}
        for topic, tspec in (node.get("publishes") or {}).items():
            twhere = f"{where}.publishes.{topic}"
            try:
                check_name("topic", topic)
                if topic.startswith("_"):
                    raise ValueError("topics starting with '_' are reserved for the transport")
            except ValueError as exc:
                problems.append(f"{twhere}: {exc}")
            if not isinstance(tspec, dict):
                problems.append(f"{twhere} must be a mapping with kind, rate_hz, policy")
                continue
            try:
                kind = check_kind(tspec.get("kind"))
            except ValueError as exc:
                problems.append(f"{twhere}.kind: {exc}")
                kind = "unknown"
            trate = _positive(problems, f"{twhere}.rate_hz", tspec.get("rate_hz"), upper=MAX_RATE_HZ)
            try:
                policy = Policy(tspec.get("policy"))
            except ValueError:
                problems.append(
                    f"{twhere}.policy must be one of {[p.value for p in Policy]}, got {tspec.get('policy')!r}"
                )
                policy = Policy.LATEST
            spec = TopicSpec(topic, kind, trate, policy)
            publishes[topic] = spec
            if topic in topics:
                problems.append(
                    f"{twhere}: topic already published by node {topics[topic][0]!r}; one publisher per topic"
                )
            else:
                topics[topic] = (name, spec)
        subscribes = node.get("subscribes") or []
        if not isinstance(subscribes, list) or not all(isinstance(t, str) for t in subscribes):
            problems.append(f"{where}.subscribes must be a list of topic names")
            subscribes = []
        params = node.get("params") or {}
        if not isinstance(params, dict):
            problems.append(f"{where}.params must be a mapping")
            params = {}
        restart_raw = node.get("restart") or {}
        try:
            restart = RestartPolicy(**restart_raw)
            if restart.max_restarts < 0 or restart.backoff_s < 0 or restart.max_backoff_s < restart.backoff_s:
                raise ValueError("max_restarts >= 0 and 0 <= backoff_s <= max_backoff_s")
        except (TypeError, ValueError) as exc:
            problems.append(f"{where}.restart: {exc}")
            restart = RestartPolicy()
        nodes[name] = NodeSpec(name, module, rate, publishes, tuple(subscribes), params, restart)

    for name, spec in nodes.items():
        for topic in spec.subscribes:
            if topic not in topics:
                problems.append(
                    f"nodes.{name}.subscribes: topic {topic!r} has no publisher "
                    f"(published topics: {sorted(topics)})"
                )
            elif topics[topic][0] == name:
                problems.append(f"nodes.{name}.subscribes: {topic!r} is its own topic")
    if problems:
        raise GraphError(source, problems)
    return Graph(str(raw.get("name", Path(source).stem)), nodes, source, heartbeat, topics)
