"""Device profiles: one edge computer per `firmware_profiles/devices/<name>.toml`, as frozen dataclasses.

A profile says how the runtime runs on that computer: the cores it has and the intra-op threads to use, the
inference engine, execution provider and precision, the model preset, the policy (planner or distilled
actor) with its deadline, the per-frame latency budget and the sensor settings. Every table of the file is
one dataclass here; `load_device` builds them with one generic builder from the dataclass fields and types,
so an unknown table or key, a missing key or a wrong type is refused by the same code for every table.

    profile = load_device("raspberry-pi-5")        # a name from `device_names()`, or a path to a .toml
    print(profile.summary())

Every refusal is a `ProfileError` naming the file and the field by its dotted path, e.g.
"raspberry-pi-5.toml: `runtime.precision` must be one of ('fp32', 'int8'), got 'fp16'". Whether the
profile's execution provider is installed is a separate question (`check_provider_available`): a Jetson
profile must load, and be checked, on an x86 machine without CUDA.
"""

from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from runtime.profiles.schema import ProfileError, _Table, load_profile

# resolved from this file, so the data is found from the checkout that `pip install -e .` points at
DEVICES_DIR = Path(__file__).resolve().parents[2] / "firmware_profiles" / "devices"

ACCELERATORS = ("none", "cuda", "apple-neural-engine", "npu")
ENGINES = ("torch", "onnxruntime")
PROVIDERS = (
    "CPUExecutionProvider",
    "CUDAExecutionProvider",
    "TensorrtExecutionProvider",
    "CoreMLExecutionProvider",
    "OpenVINOExecutionProvider",
    "XnnpackExecutionProvider",
)
# providers that run on an accelerator; the CPU provider runs anywhere (an M2 may keep the model on its CPU)
PROVIDER_ACCELERATOR = {
    "CUDAExecutionProvider": "cuda",
    "TensorrtExecutionProvider": "cuda",
    "CoreMLExecutionProvider": "apple-neural-engine",
}
PRECISIONS = ("fp32", "int8")
MODEL_PRESETS = {"default": "the shipped checkpoint, runtime/world_model/default"}
POLICIES = ("mpc", "actor")
AUDIO_RATES_HZ = (8000, 16000, 22050, 44100, 48000)


@dataclass(frozen=True)
class Compute(_Table):
    TABLE: ClassVar[str] = "compute"
    cores: int  # physical cores of the device
    threads: int  # intra-op threads torch / onnxruntime use for the model
    accelerator: str  # what besides the CPU could run the model (ACCELERATORS)

    def _validate(self) -> None:
        self._at_least("cores", 1)
        if not 1 <= self.threads <= 2 * self.cores:  # past two per core (SMT) threads only contend
            raise ProfileError(
                f"`compute.threads` must be between 1 and 2 x `compute.cores` ({2 * self.cores}), "
                f"got {self.threads}"
            )
        self._one_of("accelerator", ACCELERATORS)


@dataclass(frozen=True)
class Runtime(_Table):
    TABLE: ClassVar[str] = "runtime"
    engine: str  # what runs the model: torch eager, or an exported ONNX graph in onnxruntime
    provider: str  # onnxruntime's execution provider; 'CPUExecutionProvider' with torch, which has none
    precision: str  # weights and activations of the exported graph

    def _validate(self) -> None:
        self._one_of("engine", ENGINES)
        self._one_of("provider", PROVIDERS)
        self._one_of("precision", PRECISIONS)
        if self.engine == "torch" and self.provider != "CPUExecutionProvider":
            raise ProfileError(
                f"`runtime.provider` must be 'CPUExecutionProvider' with engine 'torch' (providers are "
                f"onnxruntime's), got {self.provider!r}"
            )
        if self.engine == "torch" and self.precision == "int8":
            raise ProfileError(
                "`runtime.precision` 'int8' needs engine 'onnxruntime' (the quantized graph is an ONNX "
                "export), got engine 'torch'"
            )


@dataclass(frozen=True)
class Model(_Table):
    TABLE: ClassVar[str] = "model"
    preset: str  # a name in MODEL_PRESETS

    def _validate(self) -> None:
        self._one_of("preset", MODEL_PRESETS)


@dataclass(frozen=True)
class Policy(_Table):
    TABLE: ClassVar[str] = "policy"
    kind: str  # "mpc": plan every control step; "actor": the distilled actor, one forward pass
    plan_deadline_ms: float  # the planner's search stops here (validated for an actor too)
    candidates: int  # action sequences per planner iteration
    iterations: int  # planner refits per control step (the deadline may end the search first)

    def _validate(self) -> None:
        self._one_of("kind", POLICIES)
        self._between("plan_deadline_ms", 0, 1000, low_open=True)
        self._at_least("candidates", 8)  # fewer leave CEM no elites worth refitting to
        self._at_least("iterations", 1)


@dataclass(frozen=True)
class Budget(_Table):
    TABLE: ClassVar[str] = "budget"
    frame_ms: float  # the per-frame latency budget at p99, capture to action
    tick_hz: float  # the brain's tick rate: one tick per camera frame, so `sensors.camera_hz`

    def _validate(self) -> None:
        self._between("frame_ms", 0, 1000, low_open=True)
        self._between("tick_hz", 0, 120, low_open=True)


@dataclass(frozen=True)
class Sensors(_Table):
    TABLE: ClassVar[str] = "sensors"
    camera_width: int  # pixels
    camera_height: int  # pixels
    camera_hz: float
    audio_rate_hz: int
    audio_chunk: int  # samples per published audio message

    def _validate(self) -> None:
        self._between("camera_width", 16, 4096)
        self._between("camera_height", 16, 4096)
        self._between("camera_hz", 0, 240, low_open=True)
        self._one_of("audio_rate_hz", AUDIO_RATES_HZ)
        self._at_least("audio_chunk", 16)


@dataclass(frozen=True)
class DeviceProfile(_Table):
    """How the runtime runs on one edge computer; one field per top-level key or table of its TOML file."""

    name: str  # the file's stem for a shipped profile
    description: str
    compute: Compute
    runtime: Runtime
    model: Model
    policy: Policy
    budget: Budget
    sensors: Sensors

    def _validate(self) -> None:
        for name in ("name", "description"):
            if not getattr(self, name).strip():
                raise ProfileError(f"`{name}` must not be empty")
        needs = PROVIDER_ACCELERATOR.get(self.runtime.provider)
        if needs is not None and self.compute.accelerator != needs:
            raise ProfileError(
                f"`runtime.provider` {self.runtime.provider!r} needs `compute.accelerator` {needs!r}, "
                f"got {self.compute.accelerator!r}"
            )
        if self.budget.tick_hz != self.sensors.camera_hz:  # the brain ticks on each camera frame
            raise ProfileError(
                f"`budget.tick_hz` must equal `sensors.camera_hz` ({self.sensors.camera_hz:g}): the brain "
                f"ticks once per camera frame, got {self.budget.tick_hz:g}"
            )
        # a plan that does not fit in a frame makes every frame late
        if not self.policy.plan_deadline_ms < self.budget.frame_ms:
            raise ProfileError(
                f"`policy.plan_deadline_ms` must be < `budget.frame_ms` ({self.budget.frame_ms:g}), "
                f"got {self.policy.plan_deadline_ms:g}"
            )

    def summary(self) -> str:
        """One paragraph for reports: the device, its threads, how the model runs, the policy, the budget."""
        c, r, p, b, s = self.compute, self.runtime, self.policy, self.budget, self.sensors
        accelerator = "" if c.accelerator == "none" else f", accelerator {c.accelerator}"
        if p.kind == "mpc":
            policy = f"MPC, {p.candidates} candidates x {p.iterations} iterations"
            policy += f" by {p.plan_deadline_ms:g} ms"
        else:
            policy = "distilled actor"
        return (
            f"{self.name}: {self.description} {c.threads} thread{'s' * (c.threads > 1)} on "
            f"{c.cores} cores{accelerator}; "
            f"{r.engine} {r.provider} {r.precision}; model {self.model.preset}; {policy}; frame budget "
            f"{b.frame_ms:g} ms p99 at {b.tick_hz:g} Hz; camera {s.camera_width}x{s.camera_height} at "
            f"{s.camera_hz:g} Hz, audio {s.audio_rate_hz} Hz in chunks of {s.audio_chunk}."
        )


def device_names() -> list[str]:
    """The shipped profiles: the sorted stems of DEVICES_DIR/*.toml."""
    return sorted(path.stem for path in DEVICES_DIR.glob("*.toml"))


def load_device(name_or_path: str | Path) -> DeviceProfile:
    """A profile by name (a file stem in DEVICES_DIR) or by a path to a .toml file; ProfileError if not."""
    return load_profile(DeviceProfile, name_or_path, DEVICES_DIR, "device")


def check_provider_available(profile: DeviceProfile) -> None:
    """ProfileError, listing the providers there are, if this machine's onnxruntime lacks the profile's."""
    if profile.runtime.engine != "onnxruntime":
        return  # torch does not go through onnxruntime's providers
    import onnxruntime  # here, not at import: loading a profile must not need onnxruntime

    available = onnxruntime.get_available_providers()
    if profile.runtime.provider not in available:
        raise ProfileError(
            f"{profile.name}: `runtime.provider` {profile.runtime.provider!r} is not available in this "
            f"onnxruntime build; available: {', '.join(available)}"
        )
