"""The strict YAML -> frozen-dataclass builder behind every config schema of endofed.

It serves the experiment, site and server configs (:mod:`endofed.config`), the synthetic site profiles
(:mod:`endofed.synth.profile`) and the comparison spec (:mod:`endofed.compare.spec`): unknown keys are refused
with a did-you-mean, every value is checked against its field's annotation (lists become tuples, strings
paths), and the dataclass then validates its own ranges in ``__post_init__``. Errors are
:class:`~endofed.errors.ConfigError` naming the dotted key, and the file when there is one.

Pure: PyYAML only (no torch, no ``flwr``), so any process can load a config cheaply.
"""

from __future__ import annotations

import dataclasses
import difflib
import re
import types
import typing
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import yaml

from endofed.errors import ConfigError
from endofed.io.files import special_file

T = TypeVar("T")

_SCIENTIFIC = re.compile(r"[-+]?\d+(\.\d*)?[eE][-+]?\d+")  # a number YAML 1.1 leaves as a string, e.g. 1e-5


def require(ok: bool, message: str) -> None:
    """Raise ``ConfigError(message)`` unless ``ok`` (the range checks of every config's ``__post_init__``)."""
    if not ok:
        raise ConfigError(message)


def _suggest(key: str, choices: Sequence[str]) -> str:
    """Return a ' (did you mean X?)' hint for a mistyped key, or ''."""
    close = difflib.get_close_matches(key, list(choices), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _coerce(value: Any, annotation: Any, where: str) -> Any:
    """Check ``value`` against a field annotation and convert YAML lists to tuples, str to Path."""
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _coerce(value, inner[0], where)
    if origin is tuple and len(args) == 2 and args[1] is Ellipsis:  # tuple[X, ...]: any length
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where} must be a list, got {value!r}")
        return tuple(_coerce(v, args[0], f"{where}[{i}]") for i, v in enumerate(value))
    if origin is tuple:
        if not isinstance(value, (list, tuple)) or len(value) != len(args):
            raise ConfigError(f"{where} must be a list of {len(args)} values, got {value!r}")
        return tuple(_coerce(v, a, f"{where}[{i}]") for i, (v, a) in enumerate(zip(value, args, strict=True)))
    if annotation is Path:
        if not isinstance(value, (str, Path)):
            raise ConfigError(f"{where} must be a path string, got {value!r}")
        return Path(value)
    if annotation is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where} must be true or false, got {value!r}")
        return value
    if annotation is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where} must be an integer, got {value!r}")
        return value
    if annotation is float:
        if isinstance(value, str) and _SCIENTIFIC.fullmatch(value.strip()):
            value = float(value)  # YAML 1.1 reads 1e-5 (no dot) as a string
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where} must be a number, got {value!r}")
        return float(value)
    if annotation is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where} must be a string, got {value!r}")
        return value
    raise AssertionError(f"unsupported annotation {annotation!r} at {where}")  # internal invariant


def build(cls: type[T], raw: Mapping[str, Any] | None, where: str = "") -> T:
    """Build dataclass ``cls`` from a mapping, refusing unknown keys and ill-typed values.

    Args:
        cls: a frozen dataclass whose fields are ``bool``, ``int``, ``float``, ``str``, ``Path``, tuples and
            optionals of those, or nested dataclasses of the same kind.
        raw: parsed YAML mapping (``None`` means all defaults).
        where: dotted prefix used in error messages, e.g. ``"data"``.

    Returns:
        The validated instance.

    Raises:
        ConfigError: naming the offending key or value.
    """
    raw = {} if raw is None else raw
    label = where or "config"
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{label} must be a mapping of keys to values, got {raw!r}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    kwargs: dict[str, Any] = {}
    for key, value in raw.items():
        dotted = f"{where}.{key}" if where else str(key)
        if key not in fields:
            raise ConfigError(f"unknown config key {dotted!r}{_suggest(str(key), list(fields))}")
        annotation = hints[key]
        if dataclasses.is_dataclass(annotation):
            kwargs[key] = build(annotation, value, dotted)  # type: ignore[arg-type]
        else:
            kwargs[key] = _coerce(value, annotation, dotted)
    return cls(**kwargs)


class _PlainLoader(yaml.SafeLoader):
    """YAML without aliases: a config needs none, and an alias tree (a "billion laughs") expands without bound."""

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise yaml.composer.ComposerError(
                None, None, f"aliases (*{event.anchor}) are not allowed in endofed configs", event.start_mark
            )
        return super().compose_node(parent, index)


MAX_CONFIG_BYTES = 1 << 20  # a config or site YAML is a few kB; a bigger file is a mistake or an attack


def load_plain_yaml(text: str) -> Any:
    """``yaml.safe_load`` that refuses aliases; raises ``yaml.YAMLError``.

    Also for values nested too deeply or numbers too long for Python to hold (``RecursionError``, ``ValueError``).
    """
    try:
        return yaml.load(text, Loader=_PlainLoader)  # noqa: S506 (a SafeLoader subclass)
    except RecursionError:
        raise yaml.YAMLError("values nested too deeply") from None
    except ValueError as exc:  # e.g. an integer of more than 4300 digits
        raise yaml.YAMLError(f"a value cannot be read: {str(exc)[:120]}") from None


def read_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML file that must hold a mapping; errors name the file."""
    path = Path(path)
    if special_file(path):
        raise ConfigError(f"config file {path} is not a regular file (a folder, FIFO or device)")
    try:
        if path.stat().st_size > MAX_CONFIG_BYTES:
            raise ConfigError(f"config file {path} is {path.stat().st_size:,} bytes, more than a config can need "
                              f"({MAX_CONFIG_BYTES:,})")  # fmt: skip
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read config file {path}: {exc}") from None
    try:
        data = load_plain_yaml(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(f"malformed YAML in {path}{at}: {problem}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path} must hold a mapping of keys to values, got {type(data).__name__}")
    return data


def apply_overrides(raw: dict[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    """Return a copy of ``raw`` with ``section.key=value`` overrides applied (values parsed as YAML).

    >>> apply_overrides({"data": {"roi_size": [1, 2, 3]}}, ["data.roi_size=[4, 4, 4]", "seed=3"])
    {'data': {'roi_size': [4, 4, 4]}, 'seed': 3}
    """
    result: dict[str, Any] = {k: (dict(v) if isinstance(v, dict) else v) for k, v in raw.items()}
    for item in overrides:
        key, sep, text = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"override must look like section.key=value, got {item!r}")
        try:
            value = load_plain_yaml(text)
        except yaml.YAMLError:
            raise ConfigError(f"cannot parse the value of override {item!r}") from None
        parts = key.strip().split(".")
        node = result
        for part in parts[:-1]:
            child = node.get(part)
            node[part] = dict(child) if isinstance(child, dict) else {}
            node = node[part]
        node[parts[-1]] = value
    return result


def load_dataclass(cls: type[T], path: str | Path | None, overrides: Sequence[str] = (), where: str = "") -> T:
    """Read a YAML file (``None`` = all defaults), apply ``section.key=value`` overrides and :func:`build` ``cls``.

    Raises:
        ConfigError: as :func:`build`, prefixed with the file's path and ``--set overrides`` when there are any.
    """
    raw = apply_overrides(read_yaml(path) if path is not None else {}, overrides)
    try:
        return build(cls, raw, where)
    except ConfigError as exc:
        source = " + ".join([*([str(path)] if path is not None else []), *(["--set overrides"] if overrides else [])])
        raise ConfigError(f"{source}: {exc}" if source else str(exc)) from None


def resolve_paths(cfg: T, base: Path, names: Sequence[str]) -> T:
    """A copy of dataclass ``cfg`` with the named path fields made absolute against ``base``.

    A field may be a ``Path``, ``None`` (left as is) or a tuple of paths (each resolved).
    """
    resolved: dict[str, Any] = {}
    for name in names:
        value = getattr(cfg, name)
        if isinstance(value, tuple):
            resolved[name] = tuple((base / item).resolve() for item in value)
        elif value is not None:
            resolved[name] = (base / value).resolve()
    return dataclasses.replace(cfg, **resolved)  # type: ignore[type-var]


def to_dict(cfg: Any) -> dict[str, Any]:
    """Plain, YAML/JSON-serialisable dict of a config (tuples -> lists, paths -> str)."""

    def plain(value: Any) -> Any:
        if isinstance(value, tuple):
            return [plain(v) for v in value]
        if isinstance(value, Path):
            return str(value)
        if isinstance(value, dict):
            return {k: plain(v) for k, v in value.items()}
        return value

    result: dict[str, Any] = plain(dataclasses.asdict(cfg))
    return result
