"""Episodes of aligned ticks for the world model: collected from the simulator, stored one npz per episode.

Collection runs the sim node's loop in process and in virtual time: 10 ms physics iterations, the camera at
30 Hz, one audio chunk per iteration, joints at 100 Hz, actions at the env's 10 Hz control rate from the
scripted expert (with exploration noise) or a random walk of joint targets. Every sample goes through
`VSync.push_many` with the brain's stream configuration, so training ticks are built exactly as the live brain
builds them. The
simulator's true state is recorded at each camera capture and attached to the tick that frame lands in: it
is for probes and evaluation only, never a training input.

An episode file holds, per tick (T ticks): `image` (T, S, S, 3) uint8, `audio` (T, MAX_CHUNKS, 160) float32
with `audio_chunks` (T,) the chunks present, `joint` (T, 13) (`envs.proprioception`: joint positions and
velocities, tool position), `action` (T, 5) (the action in force, held), `dt_eff` (T,), `mask` and `ages`
(T, 4) in STREAMS order, and `true_ee` (T, 3), `true_object` (T, 7), `true_joint` (T, 10) (NaN where the
tick has no frame); plus `success` and `seed`.
"""

from dataclasses import dataclass
from pathlib import Path

import numpy as np

import envs
from envs.expert import ScriptedExpert
from runtime.vsync import Assemble, StreamConfig, VSync, VSyncConfig

STREAMS = ("camera", "audio", "joint", "action")
MAX_CHUNKS = 6  # audio chunks per tick: 10 ms chunks into 33 ms ticks, 3.3 on average, up to 5 here
ITERATION_NS = 10_000_000  # one audio chunk: the sim node's loop period
CAMERA_HZ = 30.0
TRANSPORT_NS = 100_000  # virtual stamp-to-arrival delay


@dataclass(frozen=True)
class CollectConfig:
    task: str = "push"
    episode_seconds: float = 10.0
    noise_rad: float = 0.05  # exploration: Gaussian noise on the expert's joint targets, per control step
    random_fraction: float = 0.2  # episodes driven by a random walk of joint targets instead of the expert
    random_step_rad: float = 0.25  # the walk's largest step per control step: about the expert's largest
    image_size: int = 64

    def __post_init__(self):
        if not self.episode_seconds > 0:
            raise ValueError(f"`episode_seconds` must be > 0, got {self.episode_seconds}")
        if not self.noise_rad >= 0:
            raise ValueError(f"`noise_rad` must be >= 0, got {self.noise_rad}")
        if not 0.0 <= self.random_fraction <= 1.0:
            raise ValueError(f"`random_fraction` must be between 0 and 1, got {self.random_fraction}")


def vsync_config() -> VSyncConfig:
    """The brain's stream configuration (launch/graphs/sim.yaml), under this module's stream names."""
    return VSyncConfig(
        streams=(
            StreamConfig("camera", CAMERA_HZ, Assemble.NEAREST),
            StreamConfig("audio", 100.0, Assemble.CONCAT),
            StreamConfig("joint", 100.0, Assemble.HOLD),
            StreamConfig("action", 10.0, Assemble.HOLD),
        )
    )


def collect_episode(cfg: CollectConfig, seed: int, shift=None, controller=None) -> dict[str, np.ndarray]:
    """One episode's ticks; `seed` fixes the scene and the policy's randomness. `shift` (an
    `envs.dynamics_shift.DynamicsShift`) changes the world's rules for the whole episode (for adaptation).
    `controller` replaces the expert and the random walk: `reset(env)` after the env's reset,
    `observe(ticks)` with each batch of ticks as the scheduler emits them, `act(state)` at each control step
    (the closed loop of `launch.eval control`)."""
    env = envs.make(
        "manipulation",
        cfg.task,
        image_size=cfg.image_size,
        action_mode="absolute",
        episode_seconds=cfg.episode_seconds,
    )
    try:
        if shift is not None:
            env.unwrapped.apply_shift(shift)  # kept across reset (envs/dynamics_shift.py)
        return _run(env, cfg, seed, controller)
    finally:
        env.close()


def _run(env, cfg: CollectConfig, seed: int, controller=None) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    obs, _ = env.reset(seed=seed)
    base = env.unwrapped
    expert = ScriptedExpert(env)
    if controller is not None:
        controller.reset(env)
    random_policy = rng.random() < cfg.random_fraction
    env.action_space.seed(seed)
    t0 = 10**12
    vsync = VSync(vsync_config(), clock=lambda: t0)
    steps = int(round(ITERATION_NS / 1e9 / base.model.opt.timestep))
    control_every = int(round(1e9 / base.control_hz / ITERATION_NS))
    truth: dict[int, dict] = {}
    seqs = dict.fromkeys(STREAMS, 0)
    next_frame_ns = 0.0
    walked = base.action_for_targets(base.arm_target, base.gripper_command)  # the random walk starts at rest
    ticks = []
    i = 0
    while True:
        t = t0 + i * ITERATION_NS
        batch = []
        if i % control_every == 0:
            terminated, truncated = base.episode_end()
            if i and (terminated or truncated):
                break
            state = base.state()
            if controller is not None:
                action = np.asarray(controller.act(state), np.float32)
            elif random_policy:  # uniform targets would teleport a position-controlled arm (metres per tick)
                low, high = env.action_space.low, env.action_space.high
                walk = rng.uniform(-cfg.random_step_rad, cfg.random_step_rad, len(low))
                action = walked = np.clip(walked + walk, low, high).astype(np.float32)
            else:
                action = expert.act({k: state[k] for k in ("ee", "object", "goal", "joint")})
                action[:4] += rng.normal(0.0, cfg.noise_rad, 4)
                action = np.clip(action, env.action_space.low, env.action_space.high)
            base.apply_action(action)
            batch.append(("action", t, np.asarray(action, np.float32)))
        base.advance_physics(steps)
        now = t + ITERATION_NS
        batch.append(("audio", t, base.microphone.pull()[0]))  # stamped at its first sample
        state = base.state()
        batch.append(("joint", now, envs.proprioception(state)))
        if now - t0 >= next_frame_ns:
            next_frame_ns += 1e9 / CAMERA_HZ
            truth[seqs["camera"]] = state
            batch.append(("camera", now, base.render_camera()))
        names = [b[0] for b in batch]
        numbers = []
        for name in names:
            numbers.append(seqs[name])
            seqs[name] += 1
        stamps = [b[1] for b in batch]
        new = vsync.push_many(
            names, numbers, stamps, [b[2] for b in batch], [s + TRANSPORT_NS for s in stamps]
        )
        if controller is not None and new:
            controller.observe(new)
        ticks += new
        i += 1
    ticks += vsync.flush()
    episode = _to_arrays(ticks, truth, cfg.image_size)
    episode["success"] = np.array(base.success())
    episode["seed"] = np.array(seed)
    return episode


def tick_fields(tick, image_size: int) -> dict[str, np.ndarray]:
    """One V-sync tick as the world model's inputs (streams in STREAMS order: camera, audio, joint, action).

    A missing frame is zeros (and masked); audio is the fresh chunks, at most MAX_CHUNKS."""
    camera, audio, joint, action = tick.data[:4]  # streams after these are extra modalities (the brain's)
    out = {
        "image": np.zeros((image_size, image_size, 3), np.uint8),
        "audio": np.zeros((MAX_CHUNKS, 160), np.float32),
        "audio_chunks": np.array(0, np.int64),
        "joint": np.zeros(envs.PROPRIO_DIM, np.float32),
        "action": np.zeros(5, np.float32),
        "mask": np.asarray(tick.mask[:4], bool),
        "dt_eff": np.array(tick.dt_eff, np.float64),
    }
    if camera is not None:
        out["image"] = np.asarray(camera, np.uint8)
    if audio is not None and tick.status[1, 1] > 0:  # fresh: held audio would repeat old sound
        chunks = np.asarray(audio, np.float32).reshape(-1, 160)[:MAX_CHUNKS]  # more than 6: a 60 ms window
        out["audio"][: len(chunks)] = chunks
        out["audio_chunks"] = np.array(len(chunks), np.int64)
    if joint is not None:
        out["joint"] = np.asarray(joint, np.float32)
    if action is not None:
        out["action"] = np.asarray(action, np.float32)
    return out


def _to_arrays(ticks, truth: dict[int, dict], image_size: int) -> dict[str, np.ndarray]:
    n = len(ticks)
    out = {
        "image": np.zeros((n, image_size, image_size, 3), np.uint8),
        "audio": np.zeros((n, MAX_CHUNKS, 160), np.float32),
        "audio_chunks": np.zeros(n, np.int64),
        "joint": np.zeros((n, envs.PROPRIO_DIM), np.float32),
        "action": np.zeros((n, 5), np.float32),
        "dt_eff": np.zeros(n, np.float64),
        "mask": np.zeros((n, len(STREAMS)), bool),
        "ages": np.zeros((n, len(STREAMS)), np.float32),
        "true_ee": np.full((n, 3), np.nan, np.float32),
        "true_object": np.full((n, 7), np.nan, np.float32),
        "true_joint": np.full((n, 10), np.nan, np.float32),
    }
    for i, tick in enumerate(ticks):
        for name, value in tick_fields(tick, image_size).items():
            out[name][i] = value
        out["ages"][i] = tick.ages
        if tick.data[0] is not None:
            frame = truth[int(tick.streams["camera"].seqs[-1])]
            out["true_ee"][i], out["true_object"][i], out["true_joint"][i] = (
                frame["ee"],
                frame["object"],
                frame["joint"],
            )
    return out


def save_episode(path: Path, episode: dict[str, np.ndarray]) -> None:
    """Atomically: a reader never sees half an episode."""
    tmp = path.with_suffix(".tmp.npz")
    np.savez_compressed(tmp, **episode)
    tmp.replace(path)


def load_episode(path: Path) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as f:
        return {k: f[k] for k in f.files}
