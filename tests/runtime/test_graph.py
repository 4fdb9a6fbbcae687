"""Graph YAML validation: every problem is found before anything starts, each naming its field."""

import copy

import pytest

from runtime.graph import GraphError, load_graph, parse_graph
from runtime.transport import Policy

GOOD = {
    "name": "t",
    "nodes": {
        "cam": {
            "module": "nodes.sim",
            "rate_hz": 30,
            "publishes": {"cam/image": {"kind": "image", "rate_hz": 30, "policy": "latest"}},
        },
        "brain": {
            "module": "nodes.expert",
            "rate_hz": 10,
            "subscribes": ["cam/image"],
            "publishes": {"brain/action": {"kind": "action", "rate_hz": 10, "policy": "lossless"}},
        },
    },
}


def _broken(path: list, value) -> dict:
    raw = copy.deepcopy(GOOD)
    target = raw
    for key in path[:-1]:
        target = target[key]
    if value is KeyError:
        del target[path[-1]]
    else:
        target[path[-1]] = value
    return raw


def test_shipped_graphs_are_valid():
    """launch/graphs/*.yaml load; the sim graph wires sim -> expert -> actuator -> sim, and the brain hears
    the sensors and the actions; its V-sync params pass the brain's own check."""
    from nodes.brain import check_params

    graph = load_graph("sim")
    assert set(graph.nodes) == {"sim", "expert", "actuator", "brain"}
    assert set(graph.nodes["brain"].subscribes) == {"sim/camera", "sim/audio", "sim/joint", "expert/action"}
    check_params(graph.nodes["brain"].params, graph)
    assert graph.topics["actuator/command"][0] == "actuator"
    assert "actuator/command" in graph.nodes["sim"].subscribes
    assert graph.topics["sim/audio"][1].policy is Policy.LOSSLESS
    load_graph("sim_gym")
    mpc = load_graph("sim_mpc")  # the brain acts: no expert; the actuator hears the brain's plans
    assert set(mpc.nodes) == {"sim", "actuator", "brain"}
    assert "brain/action" in mpc.nodes["actuator"].subscribes
    check_params(mpc.nodes["brain"].params, mpc)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"policy": "dance"}, "`policy` must be one of none, mpc"),
        ({"planner": {"candidates": 0}}, "`candidates` must be >= 1"),
        ({"planner": {"budget": 3}}, "`planner` has unknown fields ['budget']"),
        ({"world_model": "none"}, "`world_model` cannot be none"),
        ({"control_hz": 0}, "`control_hz` and `plan_deadline_ms` must be > 0"),
    ],
)
def test_bad_brain_policy_params_are_refused_naming_the_field(change, message):
    from nodes.brain import check_params

    graph = load_graph("sim_mpc")
    with pytest.raises(ValueError) as err:
        check_params({**graph.nodes["brain"].params, **change}, graph)
    assert message in str(err.value)


def test_endpoints_come_from_the_graph(tmp_path):
    """A subscriber's endpoints are its publishers' ipc sockets under the run directory."""
    graph = parse_graph(GOOD)
    endpoints, topics = graph.subscriptions("brain", tmp_path)
    assert endpoints == [f"ipc://{tmp_path}/cam.sock"]
    assert topics == {"cam/image": Policy.LATEST}


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        (["nodes", "brain", "subscribes"], ["cam/depth"], "topic 'cam/depth' has no publisher"),
        (
            ["nodes", "brain", "publishes", "cam/image"],
            {"kind": "image", "rate_hz": 30, "policy": "latest"},
            "one publisher per topic",
        ),
        (["nodes", "cam", "rate_hz"], 0, "nodes.cam.rate_hz must be a number > 0"),
        (["nodes", "cam", "rate_hz"], "fast", "nodes.cam.rate_hz must be a number > 0"),
        (["nodes", "cam", "publishes", "cam/image", "rate_hz"], -5, "publishes.cam/image.rate_hz"),
        (["nodes", "cam", "publishes", "cam/image", "policy"], "sometimes", "policy must be one of"),
        (["nodes", "cam", "publishes", "cam/image", "kind"], "Image!", "kind"),
        (["nodes", "cam", "module"], "nodes.no_such_node", "no importable module"),
        (["nodes", "cam", "colour"], "red", "unknown keys ['colour']"),
        (["nodes", "cam", "restart"], {"max_restarts": -1}, "nodes.cam.restart"),
        (["nodes", "cam", "restart"], {"tries": 3}, "nodes.cam.restart"),
        (["nodes", "brain", "subscribes"], "cam/image", "subscribes must be a list"),
        (["nodes"], {}, "`nodes` must be a non-empty mapping"),
    ],
)
def test_bad_graph_is_refused_naming_the_field(path, value, message):
    """Unknown topic, two publishers of a topic, bad rates, policies, kinds, modules, keys are refused."""
    with pytest.raises(GraphError) as err:
        parse_graph(_broken(path, value))
    assert message in str(err.value)


def test_all_problems_are_reported_at_once():
    """Two independent mistakes give two lines, not one at a time."""
    raw = _broken(["nodes", "cam", "rate_hz"], 0)
    raw["nodes"]["brain"]["subscribes"] = ["nope"]
    with pytest.raises(GraphError) as err:
        parse_graph(raw)
    assert len(err.value.problems) == 2


def test_missing_graph_file_lists_the_known_graphs(tmp_path):
    """A graph name that is not a file names the graphs that exist."""
    with pytest.raises(GraphError, match="sim"):
        load_graph("no_such_graph")
    bad = tmp_path / "bad.yaml"
    bad.write_text("nodes: [unclosed")
    with pytest.raises(GraphError, match="not valid YAML"):
        load_graph(bad)
