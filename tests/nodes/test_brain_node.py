"""The brain node as a real process, aligning three jittery publisher processes with the V-sync scheduler."""

import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

from runtime.graph import load_graph
from runtime.supervisor import Supervisor
from runtime.transport import Subscriber
from runtime.vsync.wire import read_tick_summary

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

GRAPH = {
    "name": "brain-test",
    "heartbeat_period_s": 0.2,
    "nodes": {
        "cam": {
            "module": "tests.fakes.jitter_node",
            "rate_hz": 1000,
            "params": {"topics": {"cam/image": {"shape": [8, 8, 3], "jitter": 0.2}}},
            "publishes": {"cam/image": {"kind": "image", "rate_hz": 30, "policy": "lossless"}},
        },
        "mic": {
            "module": "tests.fakes.jitter_node",
            "rate_hz": 1000,
            "params": {"topics": {"mic/audio": {"shape": [160], "jitter": 0.2}}},
            "publishes": {"mic/audio": {"kind": "audio", "rate_hz": 100, "policy": "lossless"}},
        },
        "arm": {
            "module": "tests.fakes.jitter_node",
            "rate_hz": 1000,
            "params": {"topics": {"arm/action": {"shape": [5], "jitter": 0.2}}},
            "publishes": {"arm/action": {"kind": "action", "rate_hz": 10, "policy": "lossless"}},
        },
        "brain": {
            "module": "nodes.brain",
            "rate_hz": 1000,
            "params": {
                "world_model": "none",  # three streams: not the world model's four
                "vsync": {
                    "streams": {
                        "cam/image": {"assemble": "nearest"},
                        "mic/audio": {"assemble": "concat"},
                        "arm/action": {"assemble": "hold"},
                    }
                },
            },
            "publishes": {
                "brain/tick": {"kind": "tick", "rate_hz": 30, "policy": "lossless"},
                "brain/vsync": {"kind": "state", "rate_hz": 2, "policy": "latest"},
            },
            "subscribes": ["cam/image", "mic/audio", "arm/action"],
        },
    },
}


@pytest.mark.timeout(120)
def test_brain_ticks_are_coherent_across_three_jittery_publishers(tmp_path):
    """Camera 30 Hz, audio 100 Hz and actions 10 Hz from three processes, stamps jittered by up to 20 % of a
    period: the brain's ticks come at 30 Hz, in order, with every stream valid once running, about 3.3 audio
    chunks and at most one frame per tick, the action held with an age under its period (97 % of ticks; under
    two periods on all), `measured` dt_eff near 33 ms, and the scheduler tracking each stream's rate within
    1 %."""
    (tmp_path / "g.yaml").write_text(yaml.safe_dump(GRAPH, sort_keys=False))  # stream order: the ticks
    graph = load_graph(tmp_path / "g.yaml")
    sup = Supervisor(graph, log_dir=tmp_path)
    sub = Subscriber(
        [graph.publisher_endpoint("brain/tick", sup.run_dir)],
        {"brain/tick": "lossless", "brain/vsync": "latest"},
        name="test",
    )
    try:
        sup.start()
        # the brain imports torch and loads the model: slow on a loaded machine
        deadline = time.monotonic() + 60
        while not sub.wait_ready(0.2) and time.monotonic() < deadline:
            sup.watch()
        assert time.monotonic() < deadline, "the brain never became ready"
        ticks, status, stamps = [], None, []
        end = time.monotonic() + 6.0
        while time.monotonic() < end:
            for msg in sub.poll(0.05):
                if msg.topic == "brain/tick":
                    ticks.append(read_tick_summary(msg.data, 3))
                    stamps.append(msg.capture_ns)
                else:
                    status = np.array(msg.data)
            sup.watch()
    finally:
        sub.close()
        sup.stop()
    assert len(ticks) > 100, f"only {len(ticks)} ticks in 6 s"
    steady = ticks[30:]  # the first second: streams starting and oscillators locking
    assert np.all(np.diff(stamps) > 0), "tick times go backwards"
    rate = (len(stamps) - 1) / ((stamps[-1] - stamps[0]) / 1e9)
    assert 28.5 < rate < 31.5, rate
    heads = [h for h, _ in steady]
    per = np.array([p for _, p in steady])  # (T, 3 streams, [valid, age_s, samples])
    assert per[:, :, 0].mean(axis=0).min() > 0.95, per[:, :, 0].mean(axis=0)
    assert per[:, 0, 2].max() <= 1  # at most one frame per tick
    assert 3.0 < per[:, 1, 2].mean() < 3.7, per[:, 1, 2].mean()  # 100 Hz chunks into 30 Hz ticks
    # The held action is younger than its period (+ the stamps' 20 ms jitter) on 97 % of ticks; on a busy
    # 2-core machine a publisher is sometimes descheduled past a tick's deadline, and that tick holds the
    # action before: then it is still under two periods old, never stale. (99 % failed once in a full-suite
    # run: 2 of ~150 ticks at 0.13 s.)
    ages = per[:, 2, 1]
    assert np.nanpercentile(ages, 97) < 0.1 + 0.02, np.nanpercentile(ages, 97)
    assert np.nanmax(ages) < 2 * 0.1, np.nanmax(ages)
    dt = np.array([h["dt_eff_s"] for h in heads])
    assert abs(np.median(dt) - 1 / 30) < 0.002, np.median(dt)
    assert status is not None
    assert np.allclose(status[:, 0], [30, 100, 10], rtol=0.01), status[:, 0]


def test_a_brain_asked_to_act_without_the_checkpoint_files_it_needs_is_refused(tmp_path):
    """`policy: actor` on a checkpoint without its actor, and `policy: mpc` without its readout: refused
    before start, naming the file and the command that makes it."""
    import json
    import shutil

    from nodes.brain import check_params
    from runtime.world_model import checkpoint

    graph = load_graph("sim_mpc")
    params = dict(graph.nodes["brain"].params)
    for missing, policy, flag in (
        ("actor.pt", "actor", "--actor-only"),
        ("readout.npz", "mpc", "--readout-only"),
    ):
        copy = tmp_path / missing
        shutil.copytree(checkpoint.DEFAULT_CHECKPOINT, copy)
        manifest = checkpoint.read_manifest(copy)
        del manifest["files"][missing]
        (copy / checkpoint.MANIFEST).write_text(json.dumps(manifest))
        check_params({**params, "policy": policy, "world_model": str(checkpoint.DEFAULT_CHECKPOINT)}, graph)
        with pytest.raises(ValueError, match=f"lists no {missing}.*{flag}"):
            check_params({**params, "policy": policy, "world_model": str(copy)}, graph)
