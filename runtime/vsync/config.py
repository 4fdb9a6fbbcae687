"""Typed, validated configuration of the V-sync scheduler: streams, the master clock, `dt_eff`, faults."""

import math
from dataclasses import dataclass
from enum import StrEnum


class Assemble(StrEnum):
    """How the samples that fall in one tick window become that tick's entry for a stream."""

    CONCAT = "concat"  # every sample, in capture order, concatenated on axis 0 (audio chunks)
    NEAREST = "nearest"  # the one captured nearest the tick time; the others are counted as superseded
    HOLD = "hold"  # the newest; with none in the window the previous one is held, with its age


class DtEffMode(StrEnum):
    MEASURED = "measured"  # the capture-time interval between this tick and the previous one
    PHASE = "phase"  # dt * (1 + 1/K sum_k cos theta_k), theta_k the tracked phases (seed 000, eq. 8)
    FIXED = "fixed"  # the nominal tick period


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)  # `yes` in YAML is True, an int


def _finite_positive(where: str, value) -> float:
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not math.isfinite(value)
        or value <= 0
    ):
        raise ValueError(f"`{where}` must be a finite number > 0, got {value!r}")
    return float(value)


def _in_range(where: str, value, low: float, high: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high:
        raise ValueError(f"`{where}` must be between {low:g} and {high:g}, got {value!r}")
    return float(value)


@dataclass(frozen=True)
class StreamConfig:
    name: str  # the topic, e.g. `sim/camera`
    nominal_hz: float  # from the profile or graph; the oscillator starts here and tracks the real rate
    assemble: Assemble = Assemble.NEAREST
    max_rate_error: float = (
        0.25  # the tracked rate stays within nominal * (1 +- this): a wrong nominal shows as drops
    )
    fit_seconds: float = (
        120.0  # the oscillator's window: longer averages more jitter; a rate step re-locks anyway
    )
    max_coast_cycles: int = (
        50  # a gap longer than this re-locks: the phase is no longer trusted to 0.1 period
    )
    wait: bool = True  # ticks wait (up to max_wait_s past their window) for this stream to cover the window;
    # false: they go out without it, and its samples stamped in a window already out join the next tick
    # (a planning brain that acts on each frame, not on the audio chunk that ends 10 ms after it)

    def __post_init__(self):
        if not isinstance(self.name, str) or not self.name:
            raise ValueError(f"stream `name` must be a non-empty string, got {self.name!r}")
        where = f"streams[{self.name}]"
        _finite_positive(f"{where}.nominal_hz", self.nominal_hz)
        try:
            object.__setattr__(self, "assemble", Assemble(self.assemble))
        except ValueError:
            raise ValueError(
                f"`{where}.assemble` must be one of {[a.value for a in Assemble]}, got {self.assemble!r}"
            ) from None
        if not isinstance(self.wait, bool):
            raise ValueError(f"`{where}.wait` must be true or false, got {self.wait!r}")
        _in_range(f"{where}.max_rate_error", self.max_rate_error, 0.001, 0.5)
        _in_range(f"{where}.fit_seconds", self.fit_seconds, 1.0, 3600.0)
        if not _is_int(self.max_coast_cycles) or not 2 <= self.max_coast_cycles <= 10_000:
            raise ValueError(
                f"`{where}.max_coast_cycles` must be an integer in [2, 10000], got {self.max_coast_cycles!r}"
            )

    @property
    def period_ns(self) -> float:
        return 1e9 / self.nominal_hz

    @property
    def fit_cycles(self) -> int:
        return max(64, int(self.fit_seconds * self.nominal_hz))


@dataclass(frozen=True)
class VSyncConfig:
    """The scheduler's configuration; every problem raises ValueError naming the field, before anything runs.

    Ticks follow the `master` stream's tracked clock (its rate and phase) unless `tick_hz` sets a free-running
    rate, or `event_stream` names a stream each of whose samples is a tick.
    """

    streams: tuple[StreamConfig, ...]
    master: str | None = None  # default: the first NEAREST stream (the camera), else the first stream
    tick_hz: float | None = None  # a free-running master clock at this rate instead of following `master`
    event_stream: str | None = None  # one tick per sample of this stream, its window ending at that sample
    dt_eff: DtEffMode = DtEffMode.MEASURED
    stale_after_periods: float = 3.0  # DESIGN.md: silent for a few periods -> masked; 3 rides out 2 drops
    max_wait_s: float = (
        0.002  # past a window's end a tick goes out without the streams that have not covered it
    )
    future_tolerance_s: float = (
        0.01  # stamps ahead of arrival by more than this are refused (clock error bound)
    )
    max_delay_s: float = 1.0  # stamps older than this at arrival are refused: nothing waits that long
    max_pending: int = 4096  # per stream; a flood beyond this is dropped and counted, memory stays bounded
    dedup_window: int = 256  # sequence numbers remembered per stream to recognise duplicates

    def __post_init__(self):
        streams = tuple(self.streams)
        object.__setattr__(self, "streams", streams)
        if not streams:
            raise ValueError("`streams` must name at least one stream")
        for s in streams:
            if not isinstance(s, StreamConfig):
                raise ValueError(f"`streams` entries must be StreamConfig, got {type(s).__name__}")
        names = [s.name for s in streams]
        if len(set(names)) != len(names):
            raise ValueError(f"`streams` names must be unique, got {names}")
        if self.master is not None and self.master not in names:
            raise ValueError(f"`master` must be one of the streams {names}, got {self.master!r}")
        if self.event_stream is not None and self.event_stream not in names:
            raise ValueError(f"`event_stream` must be one of the streams {names}, got {self.event_stream!r}")
        master = next(st for st in streams if st.name == self.master_stream)
        if not master.wait and self.tick_hz is None:
            raise ValueError(
                f"`streams[{master.name}].wait`: the master stream clocks the ticks, it cannot be false"
            )
        if self.tick_hz is not None:
            _finite_positive("tick_hz", self.tick_hz)
            if self.event_stream is not None:
                raise ValueError("`tick_hz` and `event_stream` are exclusive: pick one master clock")
        try:
            object.__setattr__(self, "dt_eff", DtEffMode(self.dt_eff))
        except ValueError:
            raise ValueError(
                f"`dt_eff` must be one of {[m.value for m in DtEffMode]}, got {self.dt_eff!r}"
            ) from None
        _in_range("stale_after_periods", self.stale_after_periods, 1.0, 1000.0)
        _in_range("max_wait_s", self.max_wait_s, 0.0, 10.0)
        _in_range("future_tolerance_s", self.future_tolerance_s, 0.0, 10.0)
        _finite_positive("max_delay_s", self.max_delay_s)
        if not _is_int(self.max_pending) or self.max_pending < 16:
            raise ValueError(f"`max_pending` must be an integer >= 16, got {self.max_pending!r}")
        if not _is_int(self.dedup_window) or self.dedup_window < 1:
            raise ValueError(f"`dedup_window` must be an integer >= 1, got {self.dedup_window!r}")

    @property
    def master_stream(self) -> str:
        if self.event_stream is not None:
            return self.event_stream
        if self.master is not None:
            return self.master
        nearest = [s.name for s in self.streams if s.assemble is Assemble.NEAREST]
        return nearest[0] if nearest else self.streams[0].name

    @property
    def tick_period_ns(self) -> float:
        """The nominal tick period: `tick_hz`, else the master (or event) stream's nominal period."""
        if self.tick_hz is not None:
            return 1e9 / self.tick_hz
        return self.stream(self.master_stream).period_ns

    def stream(self, name: str) -> StreamConfig:
        for s in self.streams:
            if s.name == name:
                return s
        raise KeyError(name)

    @classmethod
    def from_dict(cls, raw: dict, nominal_hz: dict[str, float] | None = None) -> "VSyncConfig":
        """From YAML-shaped data: `{streams: {topic: {nominal_hz, assemble, ...}}, master, tick_hz, ...}`.

        `nominal_hz` supplies a default rate per topic (from the graph's `publishes` entries).
        """
        if not isinstance(raw, dict):
            raise ValueError(f"vsync config must be a mapping, got {type(raw).__name__}")
        raw = dict(raw)
        streams_raw = raw.pop("streams", None)
        if not isinstance(streams_raw, dict) or not streams_raw:
            raise ValueError("`streams` must be a mapping of topic -> {nominal_hz, assemble, ...}")
        known = set(cls.__dataclass_fields__) - {"streams"}
        unknown = set(raw) - known
        if unknown:
            raise ValueError(f"unknown vsync field(s) {sorted(unknown)}; known: {sorted(known)}")
        streams = []
        stream_fields = set(StreamConfig.__dataclass_fields__) - {"name"}
        for name, spec in streams_raw.items():
            spec = dict(spec or {})
            bad = set(spec) - stream_fields
            if bad:
                raise ValueError(
                    f"unknown field(s) {sorted(bad)} in `streams[{name}]`; known: {sorted(stream_fields)}"
                )
            if "nominal_hz" not in spec and nominal_hz and name in nominal_hz:
                spec["nominal_hz"] = nominal_hz[name]
            if "nominal_hz" not in spec:
                raise ValueError(f"`streams[{name}].nominal_hz` is required (no rate known for this topic)")
            streams.append(StreamConfig(name=name, **spec))
        return cls(streams=tuple(streams), **raw)
