"""Run one node of a graph: `python -m nodes --graph launch/graphs/sim.yaml --node sim --run-dir /tmp/run`.

The supervisor starts every node this way; a node can also be started by hand for debugging.
"""

import argparse
import ctypes
import importlib
import logging
import signal
import sys
from pathlib import Path

from runtime.graph import load_graph


def _die_with_parent() -> None:
    """Linux: get SIGTERM when the supervisor dies, even by SIGKILL, so no node outlives it."""
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except OSError:
        pass


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m nodes", description=__doc__)
    parser.add_argument("--graph", required=True, help="graph YAML path or name under launch/graphs/")
    parser.add_argument("--node", required=True, help="node name in the graph")
    parser.add_argument("--run-dir", required=True, type=Path, help="directory of the graph's ipc endpoints")
    parser.add_argument("--params", default=None, help="JSON object merged into the node's params")
    args = parser.parse_args(argv)
    _die_with_parent()
    logging.basicConfig(level=logging.INFO, format=f"%(asctime)s {args.node} %(levelname)s %(message)s")
    graph = load_graph(args.graph)
    if args.node not in graph.nodes:
        parser.error(f"no node {args.node!r} in {graph.source}; nodes: {sorted(graph.nodes)}")
    if args.params:
        import json

        graph = graph.with_params(args.node, **json.loads(args.params))
    spec = graph.nodes[args.node]
    module_name, _, class_name = spec.module.partition(":")
    node_class = getattr(importlib.import_module(module_name), class_name or "NODE")
    return node_class(spec, graph, args.run_dir).run()


if __name__ == "__main__":
    sys.exit(main())
