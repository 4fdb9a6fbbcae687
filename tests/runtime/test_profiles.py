"""Device profiles: the shipped files load and explain themselves; broken files are refused by field name."""

import re
from pathlib import Path

import pytest

from runtime.profiles import (
    DEVICES_DIR,
    DeviceProfile,
    ProfileError,
    check_provider_available,
    device_names,
    load_device,
)

SHIPPED = ("apple-m2", "host-x86-2core", "intel-nuc-i5", "jetson-orin-nano", "raspberry-pi-5")


def test_every_shipped_profile_loads_under_its_file_name():
    """Each devices/*.toml loads into a DeviceProfile whose `name` is its file's stem."""
    assert device_names() == sorted(SHIPPED)
    for name in device_names():
        profile = load_device(name)
        assert isinstance(profile, DeviceProfile)
        assert profile.name == name
        assert name in profile.summary() and profile.runtime.provider in profile.summary()


def test_every_shipped_value_has_a_reason():
    """Every `key = value` line of a shipped profile ends with a `# reason` comment of a few words."""
    for path in sorted(DEVICES_DIR.glob("*.toml")):
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if "=" not in line or line.lstrip().startswith("#"):
                continue
            match = re.search(r"\s#\s*(\S.*)$", line)
            assert match and len(match.group(1).split()) >= 3, f"{path.name}:{number} has no reason: {line}"


def test_floats_written_as_integers_become_floats():
    """`tick_hz = 30` (a TOML integer) loads as the float 30.0, as its field's type says."""
    profile = load_device("host-x86-2core")
    assert isinstance(profile.budget.tick_hz, float) and profile.budget.tick_hz == 30.0
    assert isinstance(profile.compute.cores, int)


def _variant(tmp_path: Path, name: str, edit) -> Path:
    """The host profile, edited by `edit(text) -> text`, written to tmp_path/name.toml."""
    text = (DEVICES_DIR / "host-x86-2core.toml").read_text()
    edited = edit(text)
    assert edited != text, "the edit changed nothing: the test would check the shipped file"
    path = tmp_path / f"{name}.toml"
    path.write_text(edited)
    return path


def _set(key: str, value: str):
    """An edit that sets the line `key = ...` to `key = value`."""
    return lambda text: re.sub(rf"(?m)^{key} = .*$", f"{key} = {value}", text, count=1)


BROKEN = {
    "unknown-key": (
        lambda t: t.replace("[compute]\n", "[compute]\ngpu_count = 1\n"),
        "`compute.gpu_count` is not a known field; known: cores, threads, accelerator",
    ),
    "unknown-table": (lambda t: t + "\n[gpu]\nmemory_gb = 8\n", "`gpu` is not a known table"),
    "missing-key": (lambda t: re.sub(r"(?m)^audio_chunk = .*\n", "", t), "`sensors.audio_chunk` is missing"),
    "missing-table": (lambda t: re.sub(r"\[model\]\npreset = .*\n", "", t), "`model` is missing"),
    "string-for-int": (_set("cores", '"2"'), "`compute.cores` must be an integer, got str"),
    "bool-for-int": (_set("candidates", "true"), "`policy.candidates` must be an integer, got bool"),
    "string-for-float": (_set("frame_ms", '"33.3"'), "`budget.frame_ms` must be a number, got str"),
    "float-for-int": (_set("audio_chunk", "160.0"), "`sensors.audio_chunk` must be an integer, got float"),
    "scalar-for-table": (
        lambda t: "model = 3\n" + re.sub(r"\[model\]\npreset = .*\n", "", t),
        "`model` must be a table",
    ),
    "threads-zero": (_set("threads", "0"), "`compute.threads` must be between 1 and 2 x `compute.cores`"),
    "threads-past-smt": (_set("threads", "5"), "`compute.threads`"),
    "precision-fp16": (
        _set("precision", '"fp16"'),
        "`runtime.precision` must be one of ('fp32', 'int8'), got 'fp16'",
    ),
    "torch-int8": (
        lambda t: _set("precision", '"int8"')(_set("engine", '"torch"')(t)),
        "`runtime.precision` 'int8' needs engine 'onnxruntime'",
    ),
    "torch-cuda": (
        lambda t: _set("provider", '"CUDAExecutionProvider"')(_set("engine", '"torch"')(t)),
        "`runtime.provider` must be 'CPUExecutionProvider' with engine 'torch'",
    ),
    "deadline-past-frame": (_set("plan_deadline_ms", "33.3"), "`policy.plan_deadline_ms` must be <"),
    "cuda-without-accelerator": (
        _set("provider", '"CUDAExecutionProvider"'),
        "`runtime.provider` 'CUDAExecutionProvider' needs `compute.accelerator` 'cuda', got 'none'",
    ),
    "coreml-on-cuda": (
        lambda t: _set("provider", '"CoreMLExecutionProvider"')(_set("accelerator", '"cuda"')(t)),
        "needs `compute.accelerator` 'apple-neural-engine'",
    ),
    "unknown-provider": (_set("provider", '"ROCMExecutionProvider"'), "`runtime.provider` must be one of"),
    "unknown-preset": (_set("preset", '"large"'), "`model.preset` must be one of ('default',)"),
    "policy-kind": (_set("kind", '"random"'), "`policy.kind` must be one of ('mpc', 'actor')"),
    "few-candidates": (_set("candidates", "4"), "`policy.candidates` must be >= 8, got 4"),
    "frame-too-long": (_set("frame_ms", "2000"), "`budget.frame_ms` must be in (0, 1000]"),
    "frame-nan": (_set("frame_ms", "nan"), "`budget.frame_ms` must be in (0, 1000], got nan"),
    "tick-too-fast": (_set("tick_hz", "500"), "`budget.tick_hz` must be in (0, 120]"),
    "tick-off-camera": (_set("tick_hz", "15"), "`budget.tick_hz` must equal `sensors.camera_hz` (30)"),
    "camera-too-small": (_set("camera_width", "8"), "`sensors.camera_width` must be in [16, 4096]"),
    "audio-rate": (_set("audio_rate_hz", "12345"), "`sensors.audio_rate_hz` must be one of"),
    "empty-name": (_set("name", '""'), "`name` must not be empty"),
}


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_a_broken_profile_is_refused_naming_file_and_field(tmp_path, case):
    """Each broken variant of the host profile raises ProfileError naming the file and the dotted field."""
    edit, expected = BROKEN[case]
    path = _variant(tmp_path, case, edit)
    with pytest.raises(ProfileError) as refused:
        load_device(path)
    message = str(refused.value)
    assert message.startswith(f"{case}.toml: "), message
    assert expected in message


def test_a_profile_in_a_strange_place_loads_by_path(tmp_path):
    """A copy anywhere loads by its path (as a Path or a str), under the name written in it."""
    path = tmp_path / "my-copy.toml"
    path.write_text((DEVICES_DIR / "raspberry-pi-5.toml").read_text())
    assert load_device(path) == load_device("raspberry-pi-5")
    assert load_device(str(path)).name == "raspberry-pi-5"


def test_unknown_names_and_unreadable_files_are_refused(tmp_path):
    """An unknown name lists the known ones; a missing file and invalid TOML are ProfileErrors too."""
    with pytest.raises(ProfileError, match="unknown device 'pdp-11'; known: apple-m2, host-x86-2core"):
        load_device("pdp-11")
    with pytest.raises(ProfileError, match="cannot read"):
        load_device(tmp_path / "absent.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("name = \n")
    with pytest.raises(ProfileError, match="bad.toml: not valid TOML"):
        load_device(bad)


def test_a_shipped_file_must_carry_its_own_name(tmp_path, monkeypatch):
    """In DEVICES_DIR, a file whose `name` differs from its stem is refused naming `name`."""
    monkeypatch.setattr("runtime.profiles.devices.DEVICES_DIR", tmp_path.resolve())
    (tmp_path / "renamed.toml").write_text((DEVICES_DIR / "apple-m2.toml").read_text())
    with pytest.raises(ProfileError, match="renamed.toml: `name` must be the file's stem 'renamed'"):
        load_device("renamed")


def test_profiles_are_frozen():
    """A loaded profile cannot be changed in place: a variant is a new, validated profile."""
    profile = load_device("host-x86-2core")
    with pytest.raises(AttributeError):
        profile.compute.threads = 8  # type: ignore[misc]


def test_provider_check_asks_this_machines_onnxruntime():
    """The host profile's CPU provider is available here; the Jetson's CUDA provider, absent here, is refused
    with a message listing the providers this onnxruntime has."""
    onnxruntime = pytest.importorskip("onnxruntime")
    check_provider_available(load_device("host-x86-2core"))
    available = onnxruntime.get_available_providers()
    if "CUDAExecutionProvider" in available:
        pytest.skip("this machine's onnxruntime has CUDA: the Jetson profile's provider is available")
    with pytest.raises(ProfileError) as refused:
        check_provider_available(load_device("jetson-orin-nano"))
    message = str(refused.value)
    assert "`runtime.provider` 'CUDAExecutionProvider' is not available" in message
    assert all(provider in message for provider in available)
