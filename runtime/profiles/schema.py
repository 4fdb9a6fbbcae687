"""The machinery every profile kind shares: a TOML file read into nested frozen dataclasses, each table's
fields type-checked and validated, every refusal a `ProfileError` naming the file and the dotted field.

A table is a `_Table` dataclass; `_build` makes one from a TOML table, refusing unknown and missing keys by
name, building nested tables and arrays of tables (`tuple[Joint, ...]`) the same way.
"""

import functools
import tomllib
import typing
from dataclasses import MISSING, dataclass, fields, is_dataclass
from pathlib import Path
from typing import Any, ClassVar


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
        if typing.get_origin(kind) is tuple:  # an array of tables, built by `_build`
            (item, _) = typing.get_args(kind)
            if not isinstance(value, tuple) or not all(isinstance(v, item) for v in value):
                raise ProfileError(f"`{self._where(name)}` must be an array of [[{name}]] tables")
            return
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
    values = {key: _build_value(types[key], value, prefix + key) for key, value in raw.items()}
    try:
        return cls(**values)
    except ProfileError as e:  # an array's table names itself by its place: `joints[2].min_rad`
        table = getattr(cls, "TABLE", "")
        if table and where and where != table:
            raise ProfileError(str(e).replace(f"`{table}.", f"`{where}.")) from None
        raise


def _build_value(kind: type, value: Any, where: str) -> Any:
    if is_dataclass(kind):
        return _build(kind, value, where)
    if typing.get_origin(kind) is tuple and is_dataclass(typing.get_args(kind)[0]):
        if not isinstance(value, list):
            raise ProfileError(f"`{where}` must be an array of tables [[{where}]], got {value!r}")
        return tuple(_build(typing.get_args(kind)[0], v, f"{where}[{i}]") for i, v in enumerate(value))
    return value


def read_toml(path: Path) -> dict:
    """The file's TOML as a dict; ProfileError naming the file if it cannot be read or parsed."""
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except OSError as e:
        raise ProfileError(f"{path}: cannot read: {e.strerror}") from None
    except tomllib.TOMLDecodeError as e:
        raise ProfileError(f"{path.name}: not valid TOML: {e}") from None


def load_profile(cls: type, name_or_path: str | Path, directory: Path, kind: str):
    """A `cls` profile by name (a file stem in `directory`) or by a path to a .toml file."""
    text = str(name_or_path)
    if isinstance(name_or_path, Path) or text.endswith(".toml") or "/" in text:
        path = Path(name_or_path)
    else:
        path = directory / f"{text}.toml"
        if not path.is_file():
            known = sorted(p.stem for p in directory.glob("*.toml"))
            raise ProfileError(f"unknown {kind} {text!r}; known: {', '.join(known)}")
    raw = read_toml(path)
    try:
        profile = _build(cls, raw)
        # a shipped profile is asked for by its file's name, so the two must agree
        if path.resolve().parent == directory.resolve() and profile.name != path.stem:
            raise ProfileError(f"`name` must be the file's stem {path.stem!r}, got {profile.name!r}")
    except ProfileError as e:
        raise ProfileError(f"{path.name}: {e}") from None
    return profile
