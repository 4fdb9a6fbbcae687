"""A checkpoint to ONNX: `export(checkpoint_dir, out_dir)` writes every graph the brain runs, checks each with
`onnx.checker`, optionally adds int8 versions, and writes a manifest with the SHA-256 of every file.

Graphs (graphs.py): `tick` (the per-tick path: encoders, backbone step, head), its parts `encoders` and
`backbone_step`, the rollouts the planner runs (`rollout`: the plan's 30 ticks; `rollout_12`: the final
pass's 12; `rollout_4` and `rollout_1`: the belief carried ahead; batched, with the memory's correction as
an input) and `actor`. Exported with the TorchScript
tracer at opset 17, batch dimensions dynamic. int8 is onnxruntime's dynamic quantization of the MatMul and
Gemm weights (activations quantized per call); convolutions stay fp32: quantized, they ran slower here (the
camera is 64x64 and the convs small, so the per-call quantization costs more than it saves).
"""

import json
import logging
import os
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import torch

from runtime.adapt.fast import FastConfig
from runtime.export.graphs import ActorGraph, BackboneStepGraph, EncoderGraph, RolloutGraph, TickGraph
from runtime.world_model import checkpoint
from runtime.world_model.model import ACTION_DIM, TICK_FIELDS, WorldModel

log = logging.getLogger(__name__)

FORMAT_VERSION = 2  # of the export manifest; bump when a change makes old exports unreadable
MANIFEST = "manifest.json"
OPSET = 17
ROLLOUT_TICKS = 30  # the planner's horizon: 10 control steps of 3 ticks (planning/control.py)
# A traced graph unrolls its ticks, so a horizon is a graph: the plan's, the final pass's 4 control steps
# (planning/live.py FINAL_SCORED) and the belief's carry-ahead (control.py `advance`): one tick to the
# actuator, up to 4 to the next control tick. A shorter rollout runs in the next longer graph, its extra
# ticks of dt 0 (a leapfrog step of length 0 is the identity).
ROLLOUTS = {ROLLOUT_TICKS: "rollout", 12: "rollout_12", 4: "rollout_4", 1: "rollout_1"}
CORRECTED_TICKS = FastConfig.plan_correction_ticks  # the memory's correction enters a plan's first ticks


@dataclass(frozen=True)
class Graph:
    name: str
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    batch: tuple[str, ...]  # names whose first axis is the batch


def state_names(model: WorldModel) -> tuple[str, ...]:
    return tuple(f"state{i}" for i in range(len(model.initial_state(1))))


def graphs(model: WorldModel, with_actor: bool) -> dict[str, tuple[Graph, torch.nn.Module]]:
    states = state_names(model)
    nexts = tuple(f"next_{s}" for s in states)
    tick_in = (*TICK_FIELDS, *states)
    out = {
        "tick": (
            Graph("tick", tick_in, ("z", "energy", *nexts), (*tick_in, "z", "energy", *nexts)),
            TickGraph,
        ),
        "encoders": (
            Graph("encoders", TICK_FIELDS[:-1], ("u", "u_world"), (*TICK_FIELDS[:-1], "u", "u_world")),
            EncoderGraph,
        ),
        "backbone_step": (
            Graph(
                "backbone_step",
                ("u", "dt_eff", *states),
                ("y", "energy", *nexts),
                ("u", "dt_eff", *states, "y", "energy", *nexts),
            ),
            BackboneStepGraph,
        ),
    }
    out = {k: (g, cls(model).eval()) for k, (g, cls) in out.items()}
    for name in ROLLOUTS.values():  # residual's batch is its own: one correction for every candidate
        g = Graph(name, ("z0", "actions", "dt", "residual"), ("z",), ("z0", "actions", "dt", "z"))
        out[name] = (g, RolloutGraph(model, CORRECTED_TICKS).eval())
    if with_actor:
        from runtime.planning import actor as actor_module

        g = Graph("actor", ("z", "goal", "measured"), ("step",), ("z", "goal", "measured", "step"))
        out["actor"] = (g, ActorGraph(actor_module.load(model_dir_of(model))).eval())
    return out


def model_dir_of(model: WorldModel) -> Path:
    return getattr(model, "directory", checkpoint.DEFAULT_CHECKPOINT)


def example_inputs(model: WorldModel, name: str, batch: int = 2, seed: int = 0) -> dict[str, np.ndarray]:
    """Random inputs of the right shapes and dtypes for graph `name` (batch 2: a batch of 1 can hide a
    broadcast that a dynamic batch would break)."""
    rng = np.random.default_rng(seed)
    size, d_z = model.cfg.image_size, 2 * model.cfg.d_latent
    tick = {
        "image": rng.integers(0, 256, (batch, size, size, 3), dtype=np.uint8),
        "audio": rng.normal(0, 0.05, (batch, 6, 160)).astype(np.float32),
        "audio_chunks": rng.integers(1, 7, batch).astype(np.int64),
        "joint": rng.normal(0, 0.5, (batch, 13)).astype(np.float32),
        "action": rng.normal(0, 0.5, (batch, ACTION_DIM)).astype(np.float32),
        "mask": rng.random((batch, 4)) > 0.2,
        "dt_eff": rng.uniform(0.02, 0.05, batch).astype(np.float32),
    }
    states = {
        s: rng.normal(0, 0.3, tuple(x.shape)).astype(np.float64)
        for s, x in zip(state_names(model), model.initial_state(batch), strict=True)
    }
    if name == "tick":
        return {**tick, **states}
    if name == "encoders":
        return {k: tick[k] for k in TICK_FIELDS[:-1]}
    if name == "backbone_step":
        u = rng.normal(0, 1, (batch, model.cfg.d_model)).astype(np.float32)
        return {"u": u, "dt_eff": tick["dt_eff"], **states}
    ticks = {graph: k for k, graph in ROLLOUTS.items()}
    if name in ticks:
        return {
            "z0": rng.normal(0, 1, (batch, d_z)).astype(np.float32),
            "actions": rng.normal(0, 0.5, (batch, ticks[name], ACTION_DIM)).astype(np.float32),
            # not all equal: a uniform dt would trace the planner's constant-step branch
            "dt": rng.uniform(0.03, 0.037, (batch, ticks[name])).astype(np.float32),
            "residual": rng.normal(0, 0.05, (1, d_z)).astype(np.float32),
        }
    if name == "actor":
        return {
            "z": rng.normal(0, 1, (batch, d_z)).astype(np.float32),
            "goal": rng.normal(0, 0.5, (batch, 4)).astype(np.float32),
            "measured": rng.normal(0, 0.5, (batch, 4)).astype(np.float32),
        }
    raise KeyError(name)


def _export_one(graph: Graph, module: torch.nn.Module, example: dict, path: Path) -> None:
    args = tuple(torch.from_numpy(example[k]) for k in graph.inputs)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # the tracer's warnings about Python values it fixes: expected
        torch.onnx.export(
            module,
            args,
            str(path),
            dynamo=False,
            opset_version=OPSET,
            input_names=list(graph.inputs),
            output_names=list(graph.outputs),
            dynamic_axes={
                **{n: {0: "batch"} for n in graph.batch},
                **({"residual": {0: "residual_batch"}} if "residual" in graph.inputs else {}),
            },
        )
    onnx.checker.check_model(onnx.load(str(path)), full_check=True)


def linear_layers_as_matmul(model: onnx.ModelProto) -> list[str]:
    """Rewrites every Gemm with weight initializers (an nn.Linear) as MatMul + Add, in place; returns the new
    MatMuls' names. onnxruntime's dynamic quantization quantizes MatMul weights, not Gemm's."""
    from onnx import helper, numpy_helper

    inits = {i.name: i for i in model.graph.initializer}
    nodes, names = [], []
    for node in model.graph.node:
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        plain = (
            attrs.get("alpha", 1.0) == 1.0 and attrs.get("beta", 1.0) == 1.0 and not attrs.get("transA", 0)
        )
        if node.op_type != "Gemm" or not plain or len(node.input) != 3 or node.input[1] not in inits:
            nodes.append(node)
            continue
        weight = numpy_helper.to_array(inits[node.input[1]])
        weight = weight.T if attrs.get("transB", 0) else weight
        name = f"{node.input[1]}_kn"  # (in, out): the MatMul's layout
        model.graph.initializer.append(numpy_helper.from_array(np.ascontiguousarray(weight), name))
        product = f"{node.output[0]}_product"
        nodes.append(helper.make_node("MatMul", [node.input[0], name], [product], name=f"{node.name}_MatMul"))
        nodes.append(
            helper.make_node("Add", [product, node.input[2]], list(node.output), name=f"{node.name}_Add")
        )
        names.append(f"{node.name}_MatMul")
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    return names


def quantize_int8(src: Path, dst: Path, symbolic_shapes: bool = True) -> None:
    """int8 weights for the learned linear layers (dynamic quantization: activations quantized per call).
    The other MatMuls multiply by fixed numeric tables, the audio front end's DFT and mel bank and the
    keypoints' coordinate grid: quantized, a log-mel spectrum and keypoint positions came out visibly wrong
    (the fp32 and int8 latents of an episode 25 % apart at the median), so they stay fp32."""
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from onnxruntime.quantization.shape_inference import quant_pre_process

    model = onnx.load(str(src))
    learned = linear_layers_as_matmul(model)
    rewritten, pre = dst.with_suffix(".linear.onnx"), dst.with_suffix(".pre.onnx")
    onnx.save(model, str(rewritten))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        quant_pre_process(  # keeps the nodes' names
            str(rewritten), str(pre), skip_optimization=True, skip_symbolic_shape=not symbolic_shapes
        )
        matmuls = [n.name for n in onnx.load(str(pre)).graph.node if n.op_type == "MatMul"]
        quantize_dynamic(
            str(pre),
            str(dst),
            weight_type=QuantType.QInt8,
            op_types_to_quantize=["MatMul"],
            nodes_to_exclude=[n for n in matmuls if n not in learned],
        )
    rewritten.unlink()
    pre.unlink()
    onnx.checker.check_model(onnx.load(str(dst)))


def export(
    checkpoint_dir: Path | None,
    out_dir: Path,
    int8: bool = True,
    profile: str | None = None,
    progress=None,
) -> dict:
    """Exports the checkpoint's graphs into `out_dir`; returns the manifest written there."""
    checkpoint_dir = Path(checkpoint_dir or checkpoint.DEFAULT_CHECKPOINT)
    model, source = checkpoint.load(checkpoint_dir)
    model.directory = checkpoint_dir
    with_actor = "actor.pt" in source.get("files", {})
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / MANIFEST).unlink(missing_ok=True)  # a directory with a manifest is a complete export
    files, entries = {}, {}
    for name, (graph, module) in graphs(model, with_actor).items():
        t0 = time.perf_counter()
        path = out_dir / f"{name}.onnx"
        _export_one(graph, module, example_inputs(model, name), path)
        entry = {"file": path.name, "inputs": list(graph.inputs), "outputs": list(graph.outputs)}
        files[path.name] = checkpoint.sha256(path)
        if int8 and name in ("tick", "actor", *ROLLOUTS.values()):
            q = out_dir / f"{name}.int8.onnx"
            # the rollouts' residual broadcasts over its own batch axis, which symbolic inference cannot
            # resolve; onnx's own shape inference is enough to find the weights
            quantize_int8(path, q, symbolic_shapes="residual" not in graph.inputs)
            entry["int8"] = q.name
            files[q.name] = checkpoint.sha256(q)
        entries[name] = entry
        log.info("exported %s in %.1f s", name, time.perf_counter() - t0)
        if progress is not None:
            progress(name)
    lo, hi = model.dt_band()
    manifest = {
        "format_version": FORMAT_VERSION,
        "opset": OPSET,
        "source": {
            "checkpoint": str(checkpoint_dir),
            "weights_sha256": source["files"][checkpoint.WEIGHTS],
            "actor_sha256": source["files"].get("actor.pt"),  # distilled again later: this actor is stale
            "model_version": source["model_version"],
            "config": source["config"],
        },
        "profile": profile,
        "dt_band_s": [lo, hi],
        "rollout_ticks": ROLLOUT_TICKS,
        "rollouts": {str(k): name for k, name in ROLLOUTS.items()},  # horizon in ticks -> graph
        "rollout_corrected_ticks": CORRECTED_TICKS,
        "states": [list(x.shape[1:]) for x in model.initial_state(1)],
        "graphs": entries,
        "files": files,
    }
    tmp = out_dir / (MANIFEST + ".tmp")
    tmp.write_text(json.dumps(manifest, indent=2) + "\n")
    os.replace(tmp, out_dir / MANIFEST)
    return manifest
