"""The brain node: the sensor streams in, aligned by the V-sync scheduler into ticks.

Subscribes to the streams named in its `vsync` params (rates default to the graph's `publishes` entries),
pushes every message into `runtime.vsync.VSync`, and publishes a summary of each tick (`brain/tick`, see
`runtime/vsync/wire.py`) and the scheduler's per-stream status (`brain/vsync`: rate, jitter, drops, stale)
for the dashboard. The loop blocks on its inputs and the scheduler's next deadline rather than a fixed rate.

Each tick then goes through the world model (`world_model` param: `default` for the shipped checkpoint, a
checkpoint directory, or `none`): one streaming step, its time, the backbone's energy and the one-tick
prediction error, published per tick on `brain/model` (`runtime/world_model/live.py`).

`runtime: onnxruntime` runs the checkpoint's ONNX export instead (`onnx`: its directory, made by `python -m
launch.export`; `precision`: fp32 or int8; `provider`; `threads`: intra-op threads, default 1): the belief's
step, the planner's rollouts (with the memory's corrections) and the distilled actor. The memory and the
learner stay in torch; once the learner swaps weights in, the plans roll out in torch (the graphs hold the
exported weights). An export from other weights is refused.

Online adaptation (`adapt` param: `both`, the default, `memory`, `learner` or `none`; runtime/adapt) runs on
every tick, the learner's rounds one Adam step per tick (after the tick's action is out). `lock`: a
dynamics-lock record (JSON, made by `runtime.adapt.lock.DynamicsLock.seal`) or none; a locked brain refuses
to start from other weights, applies no weight changes, and on a mismatch at run time publishes `brain/stop`
(the actuator's protective stop).
`policy: mpc` plans on the belief (runtime/planning/live.py), the goal from `sim/task` and the arm's joints
from `sim/joint` (`task_topic`, `joint_topic`: a real arm's, under `launch.hw`). On a control tick
(the first tick a control period, `control_hz`, default 10, after the last) the path is: belief, one final
planning pass within `plan_deadline_ms`, the safety filter, `brain/action` (stamped with the capture time of
the tick's camera frame); then the tick's adaptation. On the ticks between, after their adaptation, one
search iteration runs ahead on the next plan. The checkpoint's distilled actor, when it has one, proposes the
first step the final pass searches around (a policy prior). Each action's path from its frame is timed by
stage and published on `brain/latency` (runtime/latency.py, ACTION_COLUMNS) when the graph declares it, and
the arm joints the plan predicts, one row per control step, on `brain/plan` (for the video overlay and the
Rerun log of `launch.sim`).
`policy: actor` runs the same loop with the policy distilled from the planner choosing each step (one
forward pass; nothing searched ahead). With `policy: none` (the default) the brain only watches: another
node acts.

Streams after the model's four (a live camera, a microphone: `launch.sim --camera/--mic`) are synchronized
into the same ticks and, after the tick's action, encoded by the encoder of their kind; the tokens go out on
`brain/extra` (one row per extra stream, NaN when it had nothing fresh). The shipped model was trained on
its four streams, so they do not enter the belief.
"""

import logging
import time
from collections import deque
from pathlib import Path

import numpy as np

from nodes.node import Node
from runtime.clock import now_ns
from runtime.graph import Graph
from runtime.vsync import VSync, VSyncConfig
from runtime.vsync.wire import status_table, tick_summary
from runtime.world_model import checkpoint

log = logging.getLogger(__name__)
STATUS_PERIOD_S = 0.5  # the dashboard refreshes at 4 Hz; twice a second is plenty for counters
MAX_BLOCK_S = 0.005  # wake at least this often to publish status and service the publisher
EXTRA_KINDS = ("image", "audio")  # extra modalities (a live camera, a microphone) the encoders can read
SPARE_SHARE = 0.6  # search ahead, learn, only while a tick's work ends within this share of its period


class SpareTimeWork:
    """Work that runs only in what is left of a tick's period, so the next frame never waits for it: its
    running time is learned as it runs; a skipped call shrinks the estimate, so one slow call does not stop
    it for good."""

    def __init__(self):
        self.estimate_s = 0.0
        self.skipped = 0

    def run(self, work, tick) -> None:
        spent_s = (now_ns() - tick.emitted_ns) / 1e9
        if spent_s + self.estimate_s > SPARE_SHARE * tick.dt_eff:
            self.skipped += 1
            self.estimate_s *= 0.9
            return
        t0 = time.perf_counter()
        work()
        self.estimate_s += 0.2 * (time.perf_counter() - t0 - self.estimate_s)


def vsync_config(params: dict, graph: Graph) -> VSyncConfig:
    """The scheduler's config from the node's params; raises ValueError naming the field."""
    nominal = {topic: spec.rate_hz for topic, (_, spec) in graph.topics.items()}
    config = VSyncConfig.from_dict(dict(params.get("vsync") or {}), nominal_hz=nominal)
    unknown = [s.name for s in config.streams if s.name not in graph.topics]
    if unknown:
        raise ValueError(f"`vsync.streams` names topics no node publishes: {unknown}")
    return config


def world_model_path(params: dict):
    """The checkpoint directory to load, or None for `world_model: none`; raises ValueError if unusable."""
    choice = str(params.get("world_model", "default"))
    if choice == "none":
        return None
    path = checkpoint.DEFAULT_CHECKPOINT if choice == "default" else choice
    try:
        checkpoint.read_manifest(path)
    except checkpoint.CheckpointError as exc:
        raise ValueError(f"`world_model`: {exc}") from None
    return path


def adapt_config(params: dict):
    """The `adapt` param as an AdaptConfig (learner steps spread over ticks), or None; raises ValueError."""
    choice = str(params.get("adapt", "both"))
    if choice == "none":
        return None
    from runtime.adapt.online import VARIANTS, AdaptConfig

    if choice not in VARIANTS:
        raise ValueError(f"`adapt` must be one of {', '.join(VARIANTS)}, got {choice!r}")
    # ~10 ms a step on a 2-core AVX2 VM; a planning brain runs them last, in what is left of a tick
    return AdaptConfig.variant(choice, steps_per_tick=1, defer_steps=params.get("policy", "none") == "mpc")


def lock_record(params: dict):
    """The `lock` param's DynamicsLock, or None; raises ValueError if unreadable."""
    path = params.get("lock")
    if path in (None, "none"):
        return None
    from runtime.adapt.lock import DynamicsLock, LockError

    try:
        return DynamicsLock.load(path)
    except LockError as exc:
        raise ValueError(f"`lock`: {exc}") from None


# actor: the policy distilled from the planner (runtime/planning/actor.py)
POLICIES = ("none", "mpc", "actor")
RUNTIMES = ("torch", "onnxruntime")


def onnx_engine(params: dict):
    """`runtime: onnxruntime` as an OnnxEngine (the export in `onnx`, `provider`, `precision`) checked
    against the checkpoint, or None for `runtime: torch`; raises ValueError naming the field."""
    runtime = str(params.get("runtime", "torch"))
    if runtime not in RUNTIMES:
        raise ValueError(f"`runtime` must be one of {', '.join(RUNTIMES)}, got {runtime!r}")
    if not int(params.get("threads", 1)) >= 1:
        raise ValueError(f"`threads` must be >= 1, got {params.get('threads')}")
    if runtime == "torch":
        return None
    from runtime.export.session import ExportError, OnnxEngine

    if params.get("onnx") is None:
        raise ValueError("`runtime: onnxruntime` needs `onnx`: an export directory (python -m launch.export)")
    path = world_model_path(params)
    if path is None:
        raise ValueError("`runtime: onnxruntime` runs the world model: `world_model` cannot be none")
    try:
        engine = OnnxEngine(
            Path(params["onnx"]),
            str(params.get("provider", "CPUExecutionProvider")),
            str(params.get("precision", "fp32")),
        )
        engine.check(checkpoint.read_manifest(path)["files"][checkpoint.WEIGHTS])
    except ExportError as exc:
        raise ValueError(f"`onnx`: {exc}") from None
    return engine


def planner_config(params: dict):
    """The `planner` param as a PlannerConfig; raises ValueError naming the field."""
    from runtime.planning.mpc import PlannerConfig

    raw = dict(params.get("planner") or {})
    unknown = sorted(set(raw) - set(PlannerConfig.__dataclass_fields__))
    if unknown:
        raise ValueError(f"`planner` has unknown fields {unknown}")
    return PlannerConfig(**raw)


def check_params(params: dict, graph: Graph) -> None:
    """Called by launch entry points before any process starts."""
    adapt_config(params)
    onnx_engine(params)
    policy = str(params.get("policy", "none"))
    if policy not in POLICIES:
        raise ValueError(f"`policy` must be one of {', '.join(POLICIES)}, got {policy!r}")
    if policy in ("mpc", "actor"):
        planner_config(params)
        path = world_model_path(params)
        if path is None:
            raise ValueError(f"`policy: {policy}` acts through the world model: `world_model` cannot be none")
        from runtime.planning.actor import ACTOR
        from runtime.world_model.readout import READOUT

        needed = {READOUT: ("the planning readout", "--readout-only")}  # joint goals are costed through it
        if policy == "actor":
            needed[ACTOR] = ("the distilled actor", "--actor-only")
        for name, (what, flag) in needed.items():
            try:
                checkpoint.verify_file(path, name)
            except checkpoint.CheckpointError as exc:
                raise ValueError(
                    f"`world_model`: `policy: {policy}` needs the checkpoint's {what}: {exc} "
                    f"(make it with `python -m launch.train {flag} {path}`)"
                ) from None
        spec = graph.nodes["brain"]
        task, joint = params.get("task_topic", "sim/task"), params.get("joint_topic", "sim/joint")
        if "brain/action" not in spec.publishes or not {task, joint} <= set(spec.subscribes):
            raise ValueError(
                f"`policy: {policy}` needs the brain to publish `brain/action` and read {task}, {joint}"
            )
        if not float(params.get("control_hz", 10.0)) > 0 or not float(params.get("plan_deadline_ms", 25)) > 0:
            raise ValueError("`control_hz` and `plan_deadline_ms` must be > 0")
    if lock_record(params) is not None and "brain/stop" not in graph.nodes["brain"].publishes:
        raise ValueError("`lock` needs the brain to publish `brain/stop` (the actuators' protective stop)")
    config = vsync_config(params, graph)
    if world_model_path(params) is not None:
        if len(config.streams) < 4:
            raise ValueError(
                "`world_model` reads 4 streams in this order: camera, audio, joint, action; `vsync.streams` "
                f"has {[s.name for s in config.streams]} (set `world_model: none` to run without)"
            )
        kinds = {s.name: graph.topics[s.name][1].kind for s in config.streams[4:]}
        odd = {name: kind for name, kind in kinds.items() if kind not in EXTRA_KINDS}
        if odd:
            raise ValueError(f"streams after the model's four are extra images or audio; got {odd}")


class BrainNode(Node):
    def connect(self) -> None:
        check_params(self.params, self.graph)
        self.vsync = VSync(vsync_config(self.params, self.graph))
        self.timer.period_s = None  # paced by its inputs and deadlines, not a fixed rate
        self.next_status = 0.0
        path = world_model_path(self.params)
        self.world_model, engine = None, None
        if path is not None:
            from runtime.world_model.live import LiveWorldModel  # torch only where a model runs

            engine = onnx_engine(self.params)
            self.world_model = LiveWorldModel(
                path,
                threads=int(self.params.get("threads", 1)),
                adapt=adapt_config(self.params),
                lock=lock_record(self.params),
                on_violation=self.stop,
                onnx=engine,
            )
            log.info(
                "brain: world model %s (%s), belief in %s",
                path,
                self.world_model.manifest.get("command"),
                "torch" if engine is None else f"onnxruntime {engine.precision} {engine.directory}",
            )
        self.planner = None
        if self.params.get("policy", "none") in ("mpc", "actor"):
            from runtime.planning import actor
            from runtime.planning.live import LivePlanner
            from runtime.world_model import readout

            wm = self.world_model
            try:  # the actor acts (`policy: actor`) or is the planner's prior (`policy: mpc`)
                distilled = actor.load(path)
            except checkpoint.CheckpointError as exc:
                distilled = None  # check_params required it for `policy: actor`
                log.warning("brain: the planner searches without a policy prior (%s)", exc)
            acting = self.params["policy"] == "actor"
            rollout, runs = None, {"rollouts": "torch", "actor": "none" if distilled is None else "torch"}
            if engine is not None:  # plans and the actor through the export as well
                from runtime.export.session import OrtActor, OrtRollout, exported_from

                threads = int(self.params.get("threads", 1))
                how = (threads, engine.provider, engine.precision)
                rollout = OrtRollout(engine.directory, *how, model=wm.model)
                runs["rollouts"] = f"onnxruntime {engine.precision}"
                exported = wm.belief_model.manifest
                if distilled is not None and "actor" in exported["graphs"]:
                    if exported_from(exported, wm.manifest):
                        distilled = OrtActor(engine.directory, *how)
                        runs["actor"] = runs["rollouts"]
                    else:
                        log.warning("brain: the export's actor is not this checkpoint's: torch runs it")
            self.planner = LivePlanner(
                wm.model,
                str(self.params.get("task", "push")),
                planner_config(self.params),
                float(self.params.get("plan_deadline_ms", 25)) / 1e3,
                wm.adapter,
                readout.load(path),
                distilled if acting else None,
                prior=None if acting else distilled,
                rollout=rollout,
            )
            self.rollout = rollout
            log.info("brain: rollouts in %s, the actor in %s", runs["rollouts"], runs["actor"])
            self.control_period_ns = int(1e9 / float(self.params.get("control_hz", 10.0)))
            self.next_control_ns = 0
            self.refused_episode = None  # an episode whose goal is out of the arm's reach
        self.search_ahead, self.learner_steps = SpareTimeWork(), SpareTimeWork()
        self.e2e_ms: deque = deque(maxlen=31)  # the last actions' capture-to-publish times, for the lead
        self.streams = {s.name for s in self.vsync.config.streams}
        extras = self.vsync.config.streams[4:] if self.world_model is not None else ()
        self.extra_kinds = tuple(self.graph.topics[s.name][1].kind for s in extras)
        self.frames = self.vsync.config.master_stream  # one tick per frame (the camera)
        self.frame_index = [s.name for s in self.vsync.config.streams].index(self.frames)
        self.frame_times: list = [None] * 64  # by seq: (seq, capture_ns, send_ns, received_ns)
        self.task = self.joint = None
        # the goal and the arm's joints: the sim's, or a real arm's (`launch.hw`: the goal node, the arm)
        self.task_topic = self.params.get("task_topic", "sim/task")
        self.joint_topic = self.params.get("joint_topic", "sim/joint")

    def stop(self, reason: str) -> None:
        """The dynamics lock tripped: a protective stop of the actuators, and the reason in the log."""
        log.error("brain: %s", reason)
        if "brain/stop" in self.spec.publishes:
            self.publish("brain/stop", np.ones(1, np.float32), now_ns())

    def step(self) -> None:
        deadline = self.vsync.next_deadline_ns()
        timeout = MAX_BLOCK_S if deadline is None else min(MAX_BLOCK_S, max(0.0, (deadline - now_ns()) / 1e9))
        msgs = self.receive(timeout)
        received_ns = now_ns()
        for m in msgs:
            if m.topic == self.task_topic:
                self.task = m.data
            elif m.topic == self.joint_topic:
                self.joint = m.data
            elif m.topic == self.frames:  # the master stream's frames, for the action's latency stages
                self.frame_times[m.seq % len(self.frame_times)] = (
                    m.seq,
                    m.capture_ns,
                    m.send_ns,
                    received_ns,
                )
        msgs = [m for m in msgs if m.topic in self.streams]
        ticks = self.vsync.push_many(  # one batch per poll: the per-sample work in one kernel call
            [m.topic for m in msgs],
            [m.seq for m in msgs],
            [m.capture_ns for m in msgs],
            [m.data for m in msgs],
        )
        ticks += self.vsync.poll()
        for i, tick in enumerate(ticks):
            if self.world_model is None:
                self.publish("brain/tick", tick_summary(tick), tick.capture_ns)
                continue
            self.world_model.believe(tick)
            due = self.planner is not None and tick.capture_ns >= self.next_control_ns
            if due:  # the critical path: plan from this belief, act, then everything else
                self.next_control_ns = tick.capture_ns + self.control_period_ns - int(tick.dt_eff * 5e8)
                self.control(tick)
            self.publish("brain/tick", tick_summary(tick), tick.capture_ns)  # after the action: off its path
            if self.extra_kinds:  # a live camera or microphone: encoded after the action went out
                tokens = self.world_model.encode_extras(tick, self.extra_kinds)
                if "brain/extra" in self.spec.publishes:
                    self.publish("brain/extra", tokens, tick.capture_ns)
            self.publish("brain/model", self.world_model.adapt(), tick.capture_ns)
            if self.planner is not None and i == len(ticks) - 1:  # never behind a backlog
                if not due:
                    self.search_ahead.run(lambda tick=tick: self.refine(tick), tick)
                self.learner_steps.run(self.learn, tick)
        if time.monotonic() >= self.next_status:
            self.next_status = time.monotonic() + STATUS_PERIOD_S
            self.publish("brain/vsync", status_table(self.vsync.status()), now_ns())
            if self.world_model is not None and self.world_model.tripped:  # latched: a restarted actuator
                self.publish("brain/stop", np.ones(1, np.float32), now_ns())  # hears it again

    def refine(self, tick) -> None:
        """One search iteration on the next plan, from the belief carried to when that plan is due."""
        if self.world_model.z is None:  # no belief this tick (refused, or just started again)
            return
        ahead_s = (self.next_control_ns - tick.capture_ns) / 1e9 + self.lead_s()
        self.planner.refine(self.world_model.z, ahead_s)

    def learn(self) -> None:
        """The learner's step for this tick (deferred by a planning brain's adapter)."""
        if self.world_model.adapter is not None and self.world_model.adapter.learner is not None:
            self.world_model.adapter.learn()

    def lead_s(self) -> float:
        """How long after a frame's capture its action goes out: the median of the last actions'."""
        return float(np.median(self.e2e_ms)) / 1e3 if self.e2e_ms else 0.0

    def control(self, tick) -> None:
        """On a control tick: plan from its belief, publish the safe action, and time the path from the
        tick's frame to it (`brain/latency`)."""
        if self.task is None or self.joint is None:
            return
        episode = int(self.task[0])
        if episode == self.refused_episode:
            return  # its goal is out of reach: no actions, the actuator holds the arm
        try:
            if self.planner.new_task(self.task, self.joint):
                log.info("brain: episode %d, goal %s", self.planner.episode, np.round(self.task[11:14], 3))
        except ValueError as exc:  # a goal the arm cannot reach: said once, not acted on
            log.error("brain: episode %d: %s; not acting on it", episode, exc)
            self.refused_episode = episode
            return
        if self.world_model.z is None:
            return  # no belief yet: the actuator holds the arm where it is
        action = self.planner.act(self.world_model.z, np.asarray(self.joint, float), self.lead_s(), self.task)
        frame = self.frame_of(tick)
        capture_ns = frame[1] if frame is not None else tick.capture_ns
        t = now_ns()
        self.publish("brain/action", np.asarray(action, np.float32), capture_ns)
        published = now_ns()
        if frame is None:
            return  # a tick without a fresh frame: nothing to time from
        e2e = (published - capture_ns) / 1e6
        self.e2e_ms.append(e2e)
        _, _, send_ns, received_ns = frame
        stages = (
            (send_ns - capture_ns) / 1e6,
            (received_ns - send_ns) / 1e6,
            (tick.emitted_ns - received_ns) / 1e6,
            self.world_model.step_ms,
            self.planner.plan_ms[-1] if self.planner.plan_ms else np.nan,
            self.planner.controller.safety_ms,
            (published - t) / 1e6,
        )
        if "brain/latency" in self.spec.publishes:
            self.publish("brain/latency", np.array([e2e, *stages], np.float64), capture_ns)
        if "brain/plan" in self.spec.publishes:  # for people watching: launch.sim --save-video / --viz
            joints = self.planner.controller.predicted_joints()
            if joints is not None:
                self.publish("brain/plan", joints.astype(np.float32), capture_ns)

    def frame_of(self, tick):
        """(seq, capture_ns, send_ns, received_ns) of the master frame this tick delivered, if it did."""
        status = tick.status[self.frame_index]
        if not status[1] or status[5] <= status[4]:  # no fresh frame
            return None
        seq = int(tick.samples[1, int(status[5]) - 1])
        frame = self.frame_times[seq % len(self.frame_times)]
        return frame if frame is not None and frame[0] == seq else None

    def disconnect(self) -> None:
        if getattr(self, "planner", None) is not None:
            ms = np.array(self.planner.plan_ms) if self.planner.plan_ms else np.full(1, np.nan)
            log.info(
                "brain: %d plans, p50 %.1f ms, p99 %.1f ms; search ahead %d iterations, %d skipped for time",
                self.planner.plans,
                *np.percentile(ms, [50, 99]),
                self.planner.refined_total,
                self.search_ahead.skipped,
            )
            if self.rollout is not None:
                fell = self.rollout
                log.info("brain: %d rollouts fell back to torch %s", fell.fallbacks, fell.reasons)
            self.planner.close()
        if hasattr(self, "vsync"):
            for s in self.vsync.status():
                log.info(
                    "brain: %s %.2f Hz (nominal %g), jitter %.2f ms, %d received, %d delivered, dropped %s",
                    s.name,
                    s.rate_hz,
                    s.nominal_hz,
                    s.jitter_ms,
                    s.received,
                    s.delivered,
                    {k: v for k, v in s.dropped.items() if v},
                )
            log.info("brain: %d ticks, %d by deadline", self.vsync.ticks_emitted, self.vsync.deadline_ticks)
        if getattr(self, "world_model", None) is not None:
            wm = self.world_model
            log.info(
                "brain: world model on %d ticks, %d refused, dt_eff clamped %d times, %d belief resets",
                wm.ticks,
                wm.refused,
                wm.belief_model.dt_clamped,
                wm.belief_resets,
            )
            if wm.adapter is not None:
                log.info("brain: adaptation %s", wm.adapter.status())


NODE = BrainNode
