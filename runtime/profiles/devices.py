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

import functools
import tomllib
import typing
from dataclasses import MISSING, dataclass, fields, is_dataclass
from pathlib import Path
from typing import Any, ClassVar

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


class ProfileError(ValueError):
    """A profile refused: the message names the file (when there is one) and the field by its dotted path."""


@dataclass(frozen=True)
class _Table:
    """A profile table: the field types are checked (ints promoted to float where a float goes), then
    `_validate` checks the values. `TABLE` is the table's name in the file, the prefix of its messages."""

    TABLE: ClassVar[str] = ""

    def __post_init__(self) -> None:
        for f in fields(self):
            self._check_type(f.name, _field_types(type(self))[f.name])
        self._validate()

    def _where(self, name: str) -> str:
        return f"{self.TABLE}.{name}" if self.TABLE else name

    def _check_type(self, name: str, kind: type) -> None:
        value = getattr(self, name)
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            object.__setattr__(self, name, float(value))  # `tick_hz = 30` in TOML is an int
            return
        # bool is an int subclass: `cores = true` must not pass as 1
        if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
            raise ProfileError(
                f"`{self._where(name)}` must be {_type_name(kind)}, got {type(value).__name__} {value!r}"
            )

    def _one_of(self, name: str, allowed) -> None:
        value = getattr(self, name)
        if value not in allowed:
            raise ProfileError(f"`{self._where(name)}` must be one of {tuple(allowed)}, got {value!r}")

    def _between(self, name: str, low: float, high: float, low_open: bool = False) -> None:
        value = getattr(self, name)
        inside = (low < value if low_open else low <= value) and value <= high  # False for NaN, valid TOML
        if not inside:
            interval = f"{'(' if low_open else '['}{low:g}, {high:g}]"
            raise ProfileError(f"`{self._where(name)}` must be in {interval}, got {value!r}")

    def _at_least(self, name: str, low: int) -> None:
        value = getattr(self, name)
        if not value >= low:  # not `value < low`: False for NaN
            raise ProfileError(f"`{self._where(name)}` must be >= {low}, got {value!r}")

    def _validate(self) -> None:
        pass


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
    tick_hz: float  # the control loop's rate

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


@functools.cache
def _field_types(cls: type) -> dict[str, type]:
    return typing.get_type_hints(cls)


def _type_name(kind: type) -> str:
    if is_dataclass(kind):
        return f"a table [{kind.TABLE}]"
    return {int: "an integer", float: "a number", str: "a string", bool: "true or false"}[kind]


def _build(cls: type, raw: Any, where: str = "") -> Any:
    """`cls` from a TOML table: unknown and missing keys refused by name, nested tables built the same way."""
    if not isinstance(raw, dict):
        raise ProfileError(f"`{where}` must be a table [{where}], got {type(raw).__name__} {raw!r}")
    types = _field_types(cls)
    known = [f.name for f in fields(cls)]
    prefix = f"{where}." if where else ""
    for key, value in raw.items():
        if key not in types:
            what = "table" if isinstance(value, dict) else "field"
            raise ProfileError(f"`{prefix}{key}` is not a known {what}; known: {', '.join(known)}")
    missing = [f.name for f in fields(cls) if f.name not in raw and f.default is MISSING]
    if missing:
        raise ProfileError(f"`{prefix}{missing[0]}` is missing ({cls.__name__} needs {', '.join(known)})")
    values = {
        key: _build(types[key], value, prefix + key) if is_dataclass(types[key]) else value
        for key, value in raw.items()
    }
    return cls(**values)


def device_names() -> list[str]:
    """The shipped profiles: the sorted stems of DEVICES_DIR/*.toml."""
    return sorted(path.stem for path in DEVICES_DIR.glob("*.toml"))


def load_device(name_or_path: str | Path) -> DeviceProfile:
    """A profile by name (a file stem in DEVICES_DIR) or by a path to a .toml file; ProfileError if not."""
    text = str(name_or_path)
    if isinstance(name_or_path, Path) or text.endswith(".toml") or "/" in text:
        path = Path(name_or_path)
    else:
        path = DEVICES_DIR / f"{text}.toml"
        if not path.is_file():
            raise ProfileError(f"unknown device {text!r}; known: {', '.join(device_names())}")
    try:
        with open(path, "rb") as f:
            raw = tomllib.load(f)
    except OSError as e:
        raise ProfileError(f"{path}: cannot read: {e.strerror}") from None
    except tomllib.TOMLDecodeError as e:
        raise ProfileError(f"{path.name}: not valid TOML: {e}") from None
    try:
        profile = _build(DeviceProfile, raw)
        # a shipped profile is asked for by its file's name, so the two must agree
        if path.resolve().parent == DEVICES_DIR and profile.name != path.stem:
            raise ProfileError(f"`name` must be the file's stem {path.stem!r}, got {profile.name!r}")
    except ProfileError as e:
        raise ProfileError(f"{path.name}: {e}") from None
    return profile


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
