"""ONNX export of the shipped checkpoint and its execution in onnxruntime (runtime/export)."""

import json
import shutil

import numpy as np
import pytest
import torch

from runtime.export.onnx_export import (
    CORRECTED_TICKS,
    FORMAT_VERSION,
    MANIFEST,
    ROLLOUT_TICKS,
    ROLLOUTS,
    example_inputs,
    export,
    graphs,
)
from runtime.export.session import (
    ExportError,
    OnnxEngine,
    OrtActor,
    OrtRollout,
    OrtWorldModel,
    ensure_export,
    load_manifest,
    session,
)
from runtime.world_model import checkpoint
from runtime.world_model.data import CollectConfig, collect_episode
from runtime.world_model.model import TICK_FIELDS

TOL = 1e-4  # the fp32 parity bound, max absolute error


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    out = tmp_path_factory.mktemp("export")
    return out, export(None, out, int8=True)


@pytest.fixture(scope="module")
def model():
    m, _ = checkpoint.load()
    m.directory = checkpoint.DEFAULT_CHECKPOINT
    return m


@pytest.fixture(scope="module")
def episode():
    return collect_episode(CollectConfig(episode_seconds=3.0, random_fraction=0.0), 321)


def _torch_outputs(module, graph, x):
    with torch.no_grad():
        out = module(*(torch.from_numpy(x[k]) for k in graph.inputs))
    return [o.numpy() for o in (out if isinstance(out, tuple | list) else (out,))]


def _gap(name, got, want) -> float:
    """Largest absolute difference; the layers' energy (a diagnostic in the thousands) relative to it."""
    if name == "energy":
        return float(np.abs(got - want).max() / max(np.abs(want).max(), 1.0))
    return float(np.abs(got - want).max())


GRAPHS = ["tick", "encoders", "backbone_step", *ROLLOUTS.values(), "actor"]


def test_every_graph_is_written_checked_and_hashed(exported):
    """The export holds the tick graph, its parts, a rollout per horizon the planner runs and the actor
    (opset 17), int8 versions of tick, rollouts and actor, and a manifest with the SHA-256 of every file,
    which loads."""
    out, manifest = exported
    assert set(manifest["graphs"]) == set(GRAPHS)
    assert manifest["opset"] >= 17 and manifest["rollout_ticks"] == ROLLOUT_TICKS
    assert manifest["rollouts"] == {"30": "rollout", "12": "rollout_12", "4": "rollout_4", "1": "rollout_1"}
    files = {e["file"] for e in manifest["graphs"].values()} | {
        e["int8"] for e in manifest["graphs"].values() if "int8" in e
    }
    assert files == set(manifest["files"]) and len(files) == 8 + 6
    assert load_manifest(out)["files"] == manifest["files"]


@pytest.mark.parametrize("name", GRAPHS)
@pytest.mark.parametrize("batch", [1, 4])
def test_onnx_matches_torch_on_random_inputs(exported, model, name, batch):
    """Every exported graph, in onnxruntime fp32, gives torch's outputs within 1e-4 on random inputs, at
    batch 1 and at another batch size (the batch axis is dynamic)."""
    out, manifest = exported
    graph, module = graphs(model, True)[name]
    x = example_inputs(model, name, batch=batch, seed=11 + batch)
    got = session(out / manifest["graphs"][name]["file"], 1).run(None, x)
    want = _torch_outputs(module, graph, x)
    for n, g, w in zip(graph.outputs, got, want, strict=True):
        assert g.shape == w.shape, n
        assert _gap(n, g, w) <= TOL, f"{name}.{n}: {_gap(n, g, w):.2e}"


def test_onnx_tick_matches_torch_streaming_real_ticks(exported, model, episode):
    """Streaming a real episode from our simulator tick by tick (camera, audio, joints, action, the belief
    state carried), the export's z and state stay within 1e-4 of torch's at every tick."""
    out, _ = exported
    ort = OrtWorldModel(out, threads=1)
    state_t, state_o = model.initial_state(1), ort.initial_state(1)
    worst = 0.0
    with torch.no_grad():
        for t in range(len(episode["joint"])):
            x = {k: torch.from_numpy(np.asarray(episode[k][t : t + 1])) for k in TICK_FIELDS}
            state_t, z_t, _ = model.step(state_t, x)
            state_o, z_o, _ = ort.step(state_o, x)
            worst = max(worst, float((z_t - z_o).abs().max()))
            worst = max(
                worst, max(float(np.abs(a.numpy() - b).max()) for a, b in zip(state_t, state_o, strict=True))
            )
    assert worst <= TOL, worst


def test_a_30_step_rollout_in_onnxruntime_matches_torch(exported, model, episode):
    """From real beliefs, a 30-tick open-loop rollout under the episode's actions and dt through the
    export's rollout graph matches torch's rollout at every step within 1e-4."""
    out, _ = exported
    with torch.no_grad():
        batch = {k: torch.from_numpy(np.asarray(episode[k][None])) for k in TICK_FIELDS}
        z = model(batch)[0][0]  # (T, 2D)
    starts = [0, 20, 40]
    z0 = z[starts]
    actions = torch.stack(
        [torch.from_numpy(episode["action"][s + 1 : s + 1 + ROLLOUT_TICKS]) for s in starts]
    )
    dt = torch.stack(
        [torch.from_numpy(episode["dt_eff"][s + 1 : s + 1 + ROLLOUT_TICKS]).float() for s in starts]
    )
    with torch.no_grad():
        want = model.rollout(z0, actions, dt)
        uniform = model.rollout(z0, actions, torch.full_like(dt, 1 / 30))  # the planner's constant-step path
    ort = OrtRollout(out)
    got = ort(z0, actions, dt)
    assert got.shape == (3, ROLLOUT_TICKS, z.shape[1])
    assert float((got - want).abs().max()) <= TOL
    assert float((ort(z0, actions, torch.full_like(dt, 1 / 30)) - uniform).abs().max()) <= TOL
    # the memory's correction on the first ticks, one for every candidate, as planning holds it
    residual = 0.05 * torch.randn(1, z.shape[1], generator=torch.Generator().manual_seed(0))
    for k in ROLLOUTS:
        with torch.no_grad():
            want = model.rollout(z0, actions[:, :k], dt[:, :k], residual, CORRECTED_TICKS)
            plain = model.rollout(z0, actions[:, :k], dt[:, :k])
        got = ort(z0, actions[:, :k], dt[:, :k], residual, CORRECTED_TICKS)
        assert float((got - want).abs().max()) <= TOL, k
        assert float((got - plain).abs().max()) > 1e-3  # it corrects


def test_rollouts_between_the_graphs_horizons_run_in_the_next_longer_one(exported, model):
    """A rollout of a horizon without a graph of its own (2, 5 or 20 ticks: the belief carried to the next
    control tick) runs in the next longer graph, its extra ticks of dt 0, and matches torch's, corrected or
    not."""
    out, _ = exported
    ort = OrtRollout(out)
    z0 = torch.randn(3, 2 * model.cfg.d_latent, generator=torch.Generator().manual_seed(2))
    residual = torch.full((1, z0.shape[1]), 0.02)
    for k in (2, 5, 20):
        actions = torch.randn(3, k, 5, generator=torch.Generator().manual_seed(k)) * 0.3
        dt = torch.full((3, k), 1 / 30)
        for corr in (None, residual):
            with torch.no_grad():
                want = model.rollout(z0, actions, dt, corr, CORRECTED_TICKS)
            got = ort(z0, actions, dt, corr, CORRECTED_TICKS)
            assert got.shape == want.shape and float((got - want).abs().max()) <= TOL, (k, corr is None)


def test_what_no_graph_can_roll_out_falls_back_to_torch(exported):
    """With the model it was exported from, `OrtRollout` rolls out in torch (counted by reason) what its
    graphs cannot: a horizon past the longest graph, a correction over other ticks, and anything while the
    transition's weights are not the export's (a learner's swap; a rollback brings the graphs back); without
    the model, it refuses."""
    out, _ = exported
    model, _ = checkpoint.load()  # its own copy: the weights change below
    ort = OrtRollout(out, model=model)
    z0 = torch.randn(4, 2 * model.cfg.d_latent, generator=torch.Generator().manual_seed(1))
    actions, dt = torch.zeros(4, 12, 5), torch.full((4, 12), 1 / 30)
    residual = torch.full((1, z0.shape[1]), 0.01)
    with torch.no_grad():
        longer, long_dt = torch.zeros(4, 31, 5), torch.full((4, 31), 1 / 30)
        assert torch.equal(ort(z0, longer, long_dt), model.rollout(z0, longer, long_dt))
        corrected_all = model.rollout(z0, actions, dt, residual, 12)
        assert torch.equal(ort(z0, actions, dt, residual, 12), corrected_all)
        assert ort.fallbacks == 2
        assert float((ort(z0, actions, dt) - model.rollout(z0, actions, dt)).abs().max()) <= TOL
        assert ort.fallbacks == 2  # the graph ran
        exported = {k: v.clone() for k, v in model.predictor.state_dict().items()}
        model.predictor.load_state_dict({k: v + 0.01 for k, v in exported.items()})
        assert torch.equal(ort(z0, actions, dt), model.rollout(z0, actions, dt))  # as the learner swaps
        assert ort.fallbacks == 3 and ort.reasons == {"horizon": 1, "correction": 1, "weights": 1}
        model.predictor.load_state_dict(exported)  # rolled back: the graphs hold these again
        assert float((ort(z0, actions, dt) - model.rollout(z0, actions, dt)).abs().max()) <= TOL
        assert ort.fallbacks == 3
    with pytest.raises(ExportError, match="no graph for a 31-tick rollout"):
        OrtRollout(out)(z0, longer, long_dt)


def test_a_tampered_or_missing_file_is_refused_with_its_path_and_both_hashes(exported, tmp_path):
    """One byte changed in a graph: loading names the file and gives its hash and the manifest's. A file
    deleted: refused, naming it. Nothing is loaded either way."""
    out, manifest = exported
    copy = tmp_path / "export"
    shutil.copytree(out, copy)
    target = copy / "tick.onnx"
    data = bytearray(target.read_bytes())
    data[len(data) // 2] ^= 0xFF
    target.write_bytes(bytes(data))
    actual = checkpoint.sha256(target)
    with pytest.raises(ExportError) as err:
        OrtWorldModel(copy)
    message = str(err.value)
    assert str(target) in message and actual in message and manifest["files"]["tick.onnx"] in message
    target.unlink()
    with pytest.raises(ExportError, match=f"{target}.*missing"):
        load_manifest(copy)


def test_a_provider_that_is_not_installed_is_refused_listing_the_available_ones(exported):
    """Asking for CUDA on a CPU-only onnxruntime: an error naming the provider and listing those there are."""
    import onnxruntime

    available = onnxruntime.get_available_providers()
    if "CUDAExecutionProvider" in available:
        pytest.skip("this onnxruntime has CUDA")
    out, _ = exported
    with pytest.raises(ExportError) as err:
        OrtWorldModel(out, provider="CUDAExecutionProvider")
    assert "CUDAExecutionProvider" in str(err.value)
    assert all(p in str(err.value) for p in available)


def test_an_export_of_other_weights_or_format_is_refused(exported, tmp_path):
    """An export made from other weights than the checkpoint in use is refused (export again), and so is a
    manifest of another format version; `ensure_export` (what launch.sim and the benches call) exports such
    one again."""
    out, _ = exported
    with pytest.raises(ExportError, match="other weights"):
        OnnxEngine(out).check("0" * 64)
    copy = tmp_path / "export"
    shutil.copytree(out, copy)
    manifest = json.loads((copy / MANIFEST).read_text())
    manifest["format_version"] = 999
    (copy / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(ExportError, match="format 999"):
        load_manifest(copy)
    assert ensure_export(copy)["format_version"] == FORMAT_VERSION  # another runtime's: exported again
    manifest = json.loads((copy / MANIFEST).read_text())
    actor = manifest["source"]["actor_sha256"]
    manifest["source"]["actor_sha256"] = "0" * 64  # the actor distilled again since the export
    (copy / MANIFEST).write_text(json.dumps(manifest))
    assert ensure_export(copy)["source"]["actor_sha256"] == actor  # exported again, with this actor


def test_int8_latents_stay_close_to_fp32(exported, episode):
    """The int8 tick graph (the learned linear layers' weights in int8) runs and the positions half of its
    latents (q, what the sensors say now) stays within a few percent of fp32's on a real episode
    (`launch.bench model` reports the probe R^2 drop). Quantizing the audio DFT and the keypoint grid as
    well put them 5 % apart at the median and 47 % at the 90th percentile."""
    from runtime.benchmarks.runtimes import episode_latents

    out, _ = exported
    with torch.no_grad():
        z32 = episode_latents(OrtWorldModel(out, precision="fp32"), episode)
        z8 = episode_latents(OrtWorldModel(out, precision="int8"), episode)
    assert np.isfinite(z8).all()
    q = slice(0, z32.shape[1] // 2)
    relative = np.linalg.norm(z8[:, q] - z32[:, q], axis=1) / np.linalg.norm(z32[:, q], axis=1)
    assert 0 < np.median(relative) < 0.03 and np.percentile(relative, 90) < 0.1, np.percentile(
        relative, [50, 90]
    )


def test_int8_rollouts_and_actor_stay_close_to_fp32(exported, model):
    """The int8 rollout (the router's weights in int8; a Raspberry Pi profile plans and carries its belief
    through it) moves 256 candidates within 2 % of the fp32 graph's displacement, a candidate's rollout
    hardly depends on the others in its batch (dynamic quantization scales activations per call), and the
    int8 actor's steps stay within 5 % of fp32's (measured: 0.3 %, 0.1 %, 1.7 %)."""
    out, _ = exported
    g = torch.Generator().manual_seed(0)
    z0 = torch.randn(1, 2 * model.cfg.d_latent, generator=g).expand(256, -1)
    actions, dt = torch.randn(256, 30, 5, generator=g) * 0.3, torch.full((256, 30), 1 / 30)
    fp32, int8 = OrtRollout(out), OrtRollout(out, precision="int8")
    want, got = fp32(z0, actions, dt), int8(z0, actions, dt)
    moved = float((want - z0[:, None]).norm(dim=-1).mean())
    assert float((got - want).norm(dim=-1).mean()) / moved < 0.02
    alone = int8(z0[:1], actions[:1], dt[:1])
    assert float((got[:1] - alone).norm(dim=-1).mean()) / moved < 0.01
    z, goal, measured = (torch.randn(64, n, generator=g) for n in (2 * model.cfg.d_latent, 4, 4))
    step32 = OrtActor(out)(z, goal, measured)
    step8 = OrtActor(out, precision="int8")(z, goal, measured)
    assert float((step8 - step32).norm() / step32.norm()) < 0.05


def test_the_live_brain_steps_its_belief_in_onnxruntime(exported, episode):
    """`LiveWorldModel` with an onnxruntime engine steps the export and gives the torch brain's belief; with
    a checkpoint the export was not made from, it refuses to start."""
    from nodes.brain import check_params
    from runtime.graph import load_graph
    from runtime.world_model.live import LiveWorldModel

    out, _ = exported
    graph = load_graph("sim_mpc")
    params = dict(graph.nodes["brain"].params)
    check_params({**params, "runtime": "onnxruntime", "onnx": str(out)}, graph)
    with pytest.raises(ValueError, match="`onnx`: .*not an ONNX export"):
        check_params({**params, "runtime": "onnxruntime", "onnx": str(out / "nowhere")}, graph)
    with pytest.raises(ValueError, match="`runtime` must be one of"):
        check_params({**params, "runtime": "tensorflow"}, graph)
    with pytest.raises(ValueError, match="needs `onnx`"):
        check_params({**params, "runtime": "onnxruntime"}, graph)
    torch_brain = LiveWorldModel()
    ort_brain = LiveWorldModel(onnx=OnnxEngine(out))
    assert ort_brain.belief_model is not ort_brain.model
    for t in range(30):
        x = {k: torch.from_numpy(np.asarray(episode[k][t : t + 1])) for k in TICK_FIELDS}
        with torch.no_grad():
            torch_brain.state, z_t, _ = torch_brain.model.step(torch_brain.state, x)
            ort_brain.state, z_o, _ = ort_brain.belief_model.step(ort_brain.state, x)
        assert float((z_t - z_o).abs().max()) <= TOL
