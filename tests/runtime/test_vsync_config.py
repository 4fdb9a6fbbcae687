"""V-sync configuration: bad values are refused with a message naming the field; valid ones get defaults."""

import math
import re

import pytest

from runtime.vsync import Assemble, DtEffMode, StreamConfig, VSyncConfig


def cam(**kw) -> StreamConfig:
    return StreamConfig("cam", 30.0, **kw)


def refused(field: str):
    """pytest.raises(ValueError) whose message names `field` in backticks, e.g. `streams[cam].nominal_hz`."""
    return pytest.raises(ValueError, match=re.escape(f"`{field}`"))


# ------------------------------------------------------------------------------------------ stream fields
@pytest.mark.parametrize("rate", [math.nan, math.inf, -math.inf, 0, 0.0, -1, -30.0, True, "30", None])
def test_bad_nominal_rate_refused_naming_the_stream(rate):
    """A rate that is NaN, infinite, zero, negative, a bool or not a number is refused, naming the stream."""
    with refused("streams[cam].nominal_hz") as err:
        StreamConfig("cam", rate)
    assert repr(rate) in str(err.value)


def test_nan_rate_message():
    """The message names the field and shows the value (the issue's example)."""
    with pytest.raises(ValueError) as err:
        StreamConfig("cam", float("nan"))
    assert str(err.value) == "`streams[cam].nominal_hz` must be a finite number > 0, got nan"


@pytest.mark.parametrize("assemble", ["nearst", "", "CONCAT ", 3, None])
def test_unknown_assemble_refused(assemble):
    """An assemble mode that is not one of concat/nearest/hold is refused, naming the stream's field."""
    with refused("streams[cam].assemble") as err:
        cam(assemble=assemble)
    for mode in ("concat", "nearest", "hold"):
        assert mode in str(err.value)


@pytest.mark.parametrize("assemble", ["concat", "nearest", "hold", Assemble.HOLD])
def test_assemble_strings_become_the_enum(assemble):
    """A valid assemble mode given as a string (from YAML) is stored as the Assemble enum."""
    s = cam(assemble=assemble)
    assert isinstance(s.assemble, Assemble)
    assert s.assemble == Assemble(assemble)


@pytest.mark.parametrize(
    "field, value",
    [
        ("max_rate_error", 0.0),
        ("max_rate_error", 0.9),
        ("max_rate_error", math.nan),
        ("fit_seconds", 0.5),
        ("fit_seconds", 1e6),
        ("max_coast_cycles", 1),
        ("max_coast_cycles", 20_000),
        ("max_coast_cycles", 50.0),
    ],
)
def test_other_stream_fields_refused(field, value):
    """Out-of-range tracking parameters are refused, naming `streams[<name>].<field>`."""
    with refused(f"streams[cam].{field}"):
        cam(**{field: value})


@pytest.mark.parametrize("name", ["", None, 5])
def test_stream_name_must_be_a_non_empty_string(name):
    """A stream without a usable name is refused, naming the `name` field."""
    with refused("name"):
        StreamConfig(name, 30.0)


# ------------------------------------------------------------------------------------------ scheduler fields
def test_no_streams_refused():
    """A scheduler with no stream at all is refused, naming `streams`."""
    with refused("streams"):
        VSyncConfig(streams=())


def test_stream_entries_must_be_stream_configs():
    """A raw dict among the streams is refused (from_dict is the way to build from mappings)."""
    with refused("streams"):
        VSyncConfig(streams=({"name": "cam", "nominal_hz": 30.0},))


def test_duplicate_stream_names_refused():
    """Two streams with the same name are refused, naming `streams` and listing the names."""
    with refused("streams") as err:
        VSyncConfig(streams=(cam(), StreamConfig("mic", 100.0), StreamConfig("cam", 15.0)))
    assert "unique" in str(err.value)
    assert "'cam'" in str(err.value)


def test_master_must_be_a_stream():
    """A master that is not one of the streams is refused, naming `master` and the offending value."""
    with refused("master") as err:
        VSyncConfig(streams=(cam(),), master="camera")
    assert "'camera'" in str(err.value)


def test_event_stream_must_be_a_stream():
    """An event_stream that is not one of the streams is refused, naming `event_stream`."""
    with refused("event_stream") as err:
        VSyncConfig(streams=(cam(),), event_stream="trigger")
    assert "'trigger'" in str(err.value)


def test_tick_hz_and_event_stream_are_exclusive():
    """A free-running tick rate and an event stream are two master clocks: refused, naming both fields."""
    streams = (cam(), StreamConfig("trigger", 5.0))
    with pytest.raises(ValueError) as err:
        VSyncConfig(streams=streams, tick_hz=50.0, event_stream="trigger")
    assert "`tick_hz`" in str(err.value) and "`event_stream`" in str(err.value)


@pytest.mark.parametrize("tick_hz", [0, -10.0, math.nan, math.inf])
def test_bad_tick_hz_refused(tick_hz):
    """A free-running rate that is not a finite positive number is refused, naming `tick_hz`."""
    with refused("tick_hz"):
        VSyncConfig(streams=(cam(),), tick_hz=tick_hz)


@pytest.mark.parametrize(
    "field, value",
    [
        ("dt_eff", "measure"),
        ("dt_eff", None),
        ("stale_after_periods", 0.5),
        ("stale_after_periods", math.nan),
        ("max_wait_s", -0.001),
        ("max_wait_s", 11.0),
        ("future_tolerance_s", -1.0),
        ("max_delay_s", 0.0),
        ("max_delay_s", math.inf),
        ("max_pending", 15),
        ("max_pending", 100.0),
        ("dedup_window", 0),
        ("dedup_window", 2.5),
    ],
)
def test_other_scheduler_fields_refused(field, value):
    """Every scheduler field out of range or of the wrong type is refused, naming the field."""
    with refused(field):
        VSyncConfig(streams=(cam(),), **{field: value})


# Regression: a bool passed the integer check (True is an int >= 1).
def test_bool_dedup_window_refused():
    """A bool is not a window size (as for max_pending and max_coast_cycles): refused, naming the field."""
    with refused("dedup_window"):
        VSyncConfig(streams=(cam(),), dedup_window=True)


# ------------------------------------------------------------------------------------------ defaults
def test_defaults():
    """A config with only streams gets the documented defaults."""
    cfg = VSyncConfig(streams=(cam(),))
    assert cfg.master is None and cfg.tick_hz is None and cfg.event_stream is None
    assert cfg.dt_eff is DtEffMode.MEASURED
    assert cfg.stale_after_periods == 3.0
    assert cfg.max_wait_s == 0.002
    assert cfg.future_tolerance_s == 0.01
    assert cfg.max_delay_s == 1.0
    assert cfg.max_pending == 4096
    assert cfg.dedup_window == 256
    s = cfg.streams[0]
    assert s.assemble is Assemble.NEAREST
    assert s.period_ns == pytest.approx(1e9 / 30.0)


def test_streams_list_becomes_a_tuple():
    """Streams given as a list are stored as a tuple (the config is frozen)."""
    cfg = VSyncConfig(streams=[cam()])
    assert isinstance(cfg.streams, tuple)


def test_default_master_is_the_first_nearest_stream():
    """Without `master`, the first NEAREST stream is the master, and the tick period is its period."""
    cfg = VSyncConfig(
        streams=(
            StreamConfig("mic", 100.0, Assemble.CONCAT),
            StreamConfig("action", 10.0, Assemble.HOLD),
            StreamConfig("cam", 30.0, Assemble.NEAREST),
            StreamConfig("depth", 15.0, Assemble.NEAREST),
        )
    )
    assert cfg.master_stream == "cam"
    assert cfg.tick_period_ns == pytest.approx(1e9 / 30.0)


def test_default_master_without_nearest_is_the_first_stream():
    """With no NEAREST stream, the first stream is the master."""
    cfg = VSyncConfig(
        streams=(StreamConfig("mic", 100.0, Assemble.CONCAT), StreamConfig("act", 10.0, "hold"))
    )
    assert cfg.master_stream == "mic"
    assert cfg.tick_period_ns == pytest.approx(1e7)


def test_explicit_master_tick_hz_and_event_stream():
    """An explicit master sets the tick period; tick_hz overrides it; an event stream is the master."""
    streams = (cam(), StreamConfig("mic", 100.0, Assemble.CONCAT), StreamConfig("trigger", 4.0))
    assert VSyncConfig(streams=streams, master="mic").master_stream == "mic"
    assert VSyncConfig(streams=streams, master="mic").tick_period_ns == pytest.approx(1e7)
    assert VSyncConfig(streams=streams, tick_hz=50).tick_period_ns == pytest.approx(2e7)
    ev = VSyncConfig(streams=streams, event_stream="trigger")
    assert ev.master_stream == "trigger"
    assert ev.tick_period_ns == pytest.approx(2.5e8)


def test_stream_lookup():
    """`stream(name)` finds a stream's config; an unknown name is a KeyError."""
    cfg = VSyncConfig(streams=(cam(), StreamConfig("mic", 100.0, Assemble.CONCAT)))
    assert cfg.stream("mic").nominal_hz == 100.0
    with pytest.raises(KeyError):
        cfg.stream("nope")


def test_fit_cycles():
    """The oscillator window is fit_seconds of cycles, at least 64."""
    assert StreamConfig("a", 30.0, fit_seconds=120.0).fit_cycles == 3600
    assert StreamConfig("a", 1.0, fit_seconds=2.0).fit_cycles == 64


# ------------------------------------------------------------------------------------------ from_dict
def test_from_dict_builds_streams_and_fields():
    """YAML-shaped data becomes a config: assemble and dt_eff strings become enums, rates default from the
    graph."""
    raw = {
        "streams": {
            "sim/camera": {"assemble": "nearest"},
            "sim/audio": {"nominal_hz": 100, "assemble": "concat", "max_coast_cycles": 20},
            "sim/action": None,
        },
        "dt_eff": "phase",
        "max_wait_s": 0.005,
    }
    cfg = VSyncConfig.from_dict(raw, nominal_hz={"sim/camera": 30.0, "sim/action": 10.0, "sim/audio": 50.0})
    assert [s.name for s in cfg.streams] == ["sim/camera", "sim/audio", "sim/action"]
    assert [s.nominal_hz for s in cfg.streams] == [
        30.0,
        100.0,
        10.0,
    ]  # an explicit rate wins over the graph's
    assert [s.assemble for s in cfg.streams] == [Assemble.NEAREST, Assemble.CONCAT, Assemble.NEAREST]
    assert cfg.streams[1].max_coast_cycles == 20
    assert cfg.dt_eff is DtEffMode.PHASE
    assert cfg.max_wait_s == 0.005
    assert cfg.master_stream == "sim/camera"
    assert raw["dt_eff"] == "phase" and "streams" in raw  # the caller's mapping is left alone


def test_from_dict_unknown_top_level_key_refused():
    """An unknown scheduler key (a typo) is refused, naming it."""
    with pytest.raises(ValueError, match=r"unknown vsync field\(s\) \['max_wiat_s'\]"):
        VSyncConfig.from_dict({"streams": {"cam": {"nominal_hz": 30}}, "max_wiat_s": 0.01})


def test_from_dict_unknown_stream_key_refused():
    """An unknown key inside a stream's mapping is refused, naming it and the stream."""
    with pytest.raises(ValueError, match=r"\['rate'\] in `streams\[cam\]`"):
        VSyncConfig.from_dict({"streams": {"cam": {"rate": 30}}})


def test_from_dict_name_inside_a_stream_refused():
    """The stream's name is its key; a `name` entry inside is an unknown field, not a silent rename."""
    with pytest.raises(ValueError, match=r"\['name'\] in `streams\[cam\]`"):
        VSyncConfig.from_dict({"streams": {"cam": {"name": "other", "nominal_hz": 30}}})


@pytest.mark.parametrize("nominal_hz", [None, {}, {"other": 30.0}])
def test_from_dict_without_a_rate_refused(nominal_hz):
    """A stream with no nominal_hz and none known from the graph is refused, naming its nominal_hz."""
    with refused("streams[cam].nominal_hz") as err:
        VSyncConfig.from_dict({"streams": {"cam": {"assemble": "nearest"}}}, nominal_hz=nominal_hz)
    assert "required" in str(err.value)


def test_from_dict_invalid_values_name_the_field():
    """Values are validated as in the constructors: a bad graph rate, a bad assemble, a bad master."""
    with refused("streams[cam].nominal_hz"):
        VSyncConfig.from_dict({"streams": {"cam": {}}}, nominal_hz={"cam": float("nan")})
    with refused("streams[cam].assemble"):
        VSyncConfig.from_dict({"streams": {"cam": {"nominal_hz": 30, "assemble": "first"}}})
    with refused("master"):
        VSyncConfig.from_dict({"streams": {"cam": {"nominal_hz": 30}}, "master": "mic"})
    with pytest.raises(ValueError, match="exclusive"):
        VSyncConfig.from_dict(
            {"streams": {"cam": {"nominal_hz": 30}}, "tick_hz": 30, "event_stream": "cam"},
        )


@pytest.mark.parametrize("raw", [None, [], "streams: {}", {"streams": {}}, {"streams": ["cam"]}, {}])
def test_from_dict_needs_a_mapping_of_streams(raw):
    """Anything but a mapping with a non-empty `streams` mapping is refused with a ValueError."""
    with pytest.raises(ValueError):
        VSyncConfig.from_dict(raw, nominal_hz={"cam": 30.0})
