"""The one config core: dataclasses <-> dicts and YAML, ``KEY=VALUE`` overrides, field docstrings as help.

Every setting of arcscope is a field of a dataclass with a one-line docstring under it (the style of
EleutherAI's sparsify). This module is the only code that turns dicts, YAML files and ``KEY=VALUE`` strings
into such dataclasses, and the only code that reads the docstrings; the CLI builds its options from the same
fields (``arcscope.cli.options``), so a default lives in one place.

A config class subclasses :class:`Config` (or is any dataclass passed to the functions below). It may set
``config_error`` (the :class:`ConfigError` subclass its errors raise), ``config_name`` (how messages call
it), override ``validate()`` (called after every build) and ``identity()`` (the fields a resumed run must
match). A nested dataclass field is built from a nested mapping; a nested class with a ``config_variant``
classmethod picks the concrete class from the mapping (HRM or TRM by ``name``).

Unknown keys are rejected with one wording everywhere: ``WHERE: unknown setting 'KEY' (did you mean
'NEAR'?); known: ...``.
"""

from __future__ import annotations

import ast
import dataclasses
import difflib
import inspect
import os
import textwrap
import types
import typing
from collections.abc import Iterable, Mapping
from functools import cache
from pathlib import Path
from typing import Any, ClassVar, Self, TypeVar

from arcscope.errors import ArcscopeError

__all__ = [
    "Config",
    "ConfigError",
    "apply_overrides",
    "coerce",
    "config_help",
    "field_defaults",
    "field_docs",
    "field_help",
    "from_dict",
    "load_yaml",
    "make_config",
    "nested_class",
    "parse_overrides",
    "show_value",
    "split_list",
    "to_dict",
    "unknown_setting",
]

C = TypeVar("C")


class ConfigError(ArcscopeError, ValueError):
    """A setting is unknown, has the wrong type or breaks a rule; the message names it and the source."""


# ------------------------------------------------------------------------------------------- field docs


@cache
def _own_docs(cls: type) -> dict[str, str]:
    try:
        tree = ast.parse(textwrap.dedent(inspect.getsource(cls)))
    except (OSError, TypeError):  # no source (e.g. built in a REPL): help stays empty
        return {}
    body = tree.body[0].body  # type: ignore[attr-defined]
    out: dict[str, str] = {}
    for node, nxt in zip(body, body[1:], strict=False):
        if (
            isinstance(node, ast.AnnAssign)
            and isinstance(node.target, ast.Name)
            and isinstance(nxt, ast.Expr)
            and isinstance(nxt.value, ast.Constant)
            and isinstance(nxt.value.value, str)
        ):
            out[node.target.id] = " ".join(nxt.value.value.split())
    return out


def field_docs(cls: type) -> dict[str, str]:
    """The one-line docstring under each field of dataclass ``cls`` (a subclass's text wins)."""
    out: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if dataclasses.is_dataclass(klass):
            out.update(_own_docs(klass))
    return out


def field_help(cls: type, name: str, *, default: bool = True) -> str:
    """The docstring under field ``name`` of ``cls``, with ``[default: X]`` unless ``default`` is False."""
    text = field_docs(cls).get(name, "")
    if not default:
        return text
    value = field_defaults(cls).get(name)
    return f"{text} [default: {show_value(value)}]".strip()


def show_value(value: Any) -> str:
    """A default as help text shows it (lists as ``a,b``)."""
    if isinstance(value, (list, tuple)):
        return ",".join(str(v) for v in value)
    return str(value)


def field_defaults(cls: type) -> dict[str, Any]:
    """Each field's default value (a fresh one from a default factory), without building the class."""
    out = {}
    for f in dataclasses.fields(cls):
        if f.default is not dataclasses.MISSING:
            out[f.name] = f.default
        elif f.default_factory is not dataclasses.MISSING:
            out[f.name] = f.default_factory()
    return out


def config_help(cls: type, prefix: str = "") -> list[tuple[str, str, str]]:
    """``(name, default, help)`` for every field of ``cls`` in order; nested dataclasses as dotted names."""
    docs, defaults = field_docs(cls), field_defaults(cls)
    rows: list[tuple[str, str, str]] = []
    for f in dataclasses.fields(cls):
        value = defaults.get(f.name)
        if dataclasses.is_dataclass(value):
            rows.extend(config_help(type(value), f"{prefix}{f.name}."))
            continue
        rows.append((prefix + f.name, repr(value), docs.get(f.name, "")))
    return rows


# ------------------------------------------------------------------------------------------ errors


def unknown_setting(
    keys: Iterable[str], known: Iterable[str], where: str, error: type[ArcscopeError] = ConfigError
) -> ArcscopeError:
    """The one error for unknown keys: each with its nearest known key, then the list of known ones."""
    keys, known = list(keys), sorted(known)
    said = []
    for k in keys:
        near = difflib.get_close_matches(k, known, n=1)
        said.append(f"'{k}'" + (f" (did you mean '{near[0]}'?)" if near else ""))
    noun = "setting" if len(keys) == 1 else "settings"
    return error(f"{where}: unknown {noun} {', '.join(said)}; known: {', '.join(known)}")


def _error_of(cls: type) -> type[ArcscopeError]:
    return getattr(cls, "config_error", ConfigError)


def _name_of(cls: type) -> str:
    return getattr(cls, "config_name", cls.__name__)


# ------------------------------------------------------------------------------------------- values


@cache
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def nested_class(tp: Any) -> type | None:
    """The dataclass an annotation names (``X`` or ``X | None``), or None."""
    if tp is None:
        return None
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        return tp
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        for a in typing.get_args(tp):
            if isinstance(a, type) and dataclasses.is_dataclass(a):
                return a
    return None


def split_list(text: str) -> list[str]:
    """Split ``a,b,c`` at top-level commas, keeping commas inside braces (``blocks.{0,3}.attn_out``)."""
    out, depth, cur = [], 0, []
    for ch in text:
        if ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
        if ch == "," and depth == 0:
            out.append("".join(cur).strip())
            cur = []
        else:
            cur.append(ch)
    out.append("".join(cur).strip())
    return [h for h in out if h]


_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")


def coerce(
    value: Any, tp: Any, key: str, where: str = "config", error: type[ArcscopeError] = ConfigError
) -> Any:
    """``value`` (from YAML, JSON or a command line string) as annotation ``tp``, or ``error`` naming ``key``."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if tp is Any or tp is object:
        return value
    if origin in (typing.Union, types.UnionType):
        if type(None) in args and (
            value is None or (isinstance(value, str) and value.lower() in ("none", "null"))
        ):
            return None
        first: ArcscopeError | None = None
        for a in args:
            if a is type(None):
                continue
            try:
                return coerce(value, a, key, where, error)
            except ArcscopeError as e:
                first = first or e
        raise first or error(f"{where}: bad value for '{key}': {value!r}")
    if origin is typing.Literal:
        if value in args:
            return value
        raise error(f"{where}: '{key}' must be one of {', '.join(map(str, args))}, got {value!r}")
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, int) and value in (0, 1):
            return bool(value)
        if isinstance(value, str) and value.lower() in _TRUE + _FALSE:
            return value.lower() in _TRUE
        raise error(f"{where}: '{key}' must be true or false, got {value!r}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str):
            try:
                return int(value)
            except ValueError:
                try:
                    f = float(value)
                except ValueError:
                    pass
                else:
                    if f.is_integer():
                        return int(f)
        raise error(f"{where}: '{key}' must be an integer, got {value!r}")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                pass
        raise error(f"{where}: '{key}' must be a number, got {value!r}")
    if tp is str:
        if isinstance(value, str):
            return value
        if isinstance(value, os.PathLike):
            return os.fspath(value)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)
        raise error(f"{where}: '{key}' must be a string, got {value!r}")
    if origin in (list, tuple):
        items = split_list(value) if isinstance(value, str) else value
        if isinstance(items, (int, float)) and not isinstance(items, bool):
            items = [items]  # ks=1 on a command line is a list of one
        if not isinstance(items, (list, tuple)):
            raise error(f"{where}: '{key}' must be a list, got {value!r}")
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(items) != len(args):
                raise error(f"{where}: '{key}' must have {len(args)} items, got {value!r}")
            return tuple(coerce(v, a, key, where, error) for v, a in zip(items, args, strict=True))
        inner = args[0] if args else Any
        out = [coerce(v, inner, key, where, error) for v in items]
        return tuple(out) if origin is tuple else out
    if origin is dict or tp is dict:
        if isinstance(value, Mapping):
            return dict(value)
        raise error(f"{where}: '{key}' must be a mapping, got {value!r}")
    sub = nested_class(tp)
    if sub is not None:
        if isinstance(value, sub):
            return value
        if isinstance(value, Mapping):
            return from_dict(sub, value, where=where, prefix=f"{key}.", error=error)
        raise error(f"{where}: '{key}' must be a mapping of settings, got {value!r}")
    return value


# -------------------------------------------------------------------------------------- dict <-> config


def to_dict(obj: Any) -> dict[str, Any]:
    """A plain JSON/YAML-able dict of a config (nested configs as dicts, tuples as lists)."""

    def plain(v: Any) -> Any:
        if dataclasses.is_dataclass(v) and not isinstance(v, type):
            return {f.name: plain(getattr(v, f.name)) for f in dataclasses.fields(v)}
        if isinstance(v, (list, tuple)):
            return [plain(x) for x in v]
        if isinstance(v, dict):
            return {k: plain(x) for k, x in v.items()}
        if isinstance(v, os.PathLike):
            return os.fspath(v)
        return v

    return plain(obj)


def from_dict(
    cls: type[C],
    data: Mapping[str, Any],
    *,
    where: str | None = None,
    prefix: str = "",
    error: type[ArcscopeError] | None = None,
    base: C | None = None,
) -> C:
    """Build ``cls`` from a mapping (over ``base``'s values when given); unknown keys name the nearest one."""
    error = error or _error_of(cls)
    where = where or _name_of(cls)
    if not isinstance(data, Mapping):
        raise error(f"{where}: settings must be a mapping of keys to values, got {type(data).__name__}")
    pick = getattr(cls, "config_variant", None)
    if pick is not None:
        cls = pick(data, where)
    names = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = [k for k in data if k not in names]
    if unknown:
        known = [prefix + n for n in names]
        hint = getattr(cls, "config_unknown_hint", None)
        if hint is not None:
            hint(unknown[0], where, prefix)
        raise unknown_setting([prefix + str(k) for k in unknown], known, where, error)
    hints = _hints(cls)
    values: dict[str, Any] = {}
    if base is not None and type(base) is cls:
        values = {f.name: getattr(base, f.name) for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    for k, v in data.items():
        current = values.get(k)
        sub = nested_class(hints[k])
        if isinstance(v, Mapping) and dataclasses.is_dataclass(current) and sub is not None:
            merged = {**to_dict(current), **v}
            pick = getattr(sub, "config_variant", None)
            if pick is not None and pick(merged, where) is not type(current):
                merged = dict(v)  # another variant (arch.name=trm): start from its defaults
            values[k] = from_dict(sub, merged, where=where, prefix=f"{prefix}{k}.", error=error)
        else:
            values[k] = coerce(v, hints[k], prefix + k, where, error)
    try:
        obj = cls(**values)
    except TypeError as e:  # a required field is missing
        raise error(f"{where}: {e}") from None
    validate = getattr(obj, "validate", None)
    return validate() if callable(validate) else obj  # type: ignore[return-value]


def make_config(
    cls: type[C],
    config: C | Mapping[str, Any] | None = None,
    options: Mapping[str, Any] | None = None,
    *,
    error: type[ArcscopeError] | None = None,
) -> C:
    """A ``cls`` from a config object, a mapping or None, with keyword ``options`` on top (a library call's
    ``f(x, config, key=value)`` form); unknown keys and wrong types raise the class's config error."""
    error = error or _error_of(cls)
    if isinstance(config, cls):
        base: dict[str, Any] = {f.name: getattr(config, f.name) for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    elif isinstance(config, Mapping):
        base = dict(config)
    elif config is None:
        base = {}
    else:
        raise error(f"{_name_of(cls)}: expected a {cls.__name__} or a dict, got {type(config).__name__}")
    base.update(options or {})
    return from_dict(cls, base, where=_name_of(cls), error=error)


def load_yaml(path: str | os.PathLike[str], error: type[ArcscopeError] = ConfigError) -> dict[str, Any]:
    """The mapping in a YAML file, or ``error`` naming the file and what is wrong."""
    import yaml

    p = Path(path)
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8"))
    except OSError as e:
        raise error(f"{p}: cannot read config ({e.strerror or e})") from None
    except yaml.YAMLError as e:
        raise error(f"{p}: not valid YAML ({e})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise error(f"{p}: a config file must be a mapping of settings, got {type(data).__name__}")
    return data


def parse_overrides(
    items: Iterable[str], where: str = "override", error: type[ArcscopeError] = ConfigError
) -> dict[str, Any]:
    """``KEY=VALUE`` strings as a nested dict (dotted keys nest); values are parsed as YAML scalars."""
    import yaml

    out: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        key = key.strip().lstrip("+").replace("-", "_")
        if not sep or not key:
            raise error(f"{where}: '{item}' is not KEY=VALUE (e.g. lr=3e-4 or arch.hidden_size=128)")
        try:
            value = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError:
            value = raw
        if isinstance(value, (dict, list)) and not raw.strip().startswith(("{", "[")):
            value = raw  # "a: b" or "- x" typed on a command line is text, not YAML structure
        node = out
        *parents, leaf = key.split(".")
        for p in parents:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise error(f"{where}: '{item}' sets inside '{p}', which is not a group of settings")
        node[leaf] = value
    return out


def apply_overrides(obj: C, items: Iterable[str] | Mapping[str, Any], where: str = "override") -> C:
    """A copy of config ``obj`` with ``KEY=VALUE`` strings (or a nested mapping) applied, then validated."""
    cls = type(obj)
    error = _error_of(cls)
    data = dict(items) if isinstance(items, Mapping) else parse_overrides(items, where, error)
    return from_dict(cls, data, where=where, error=error, base=obj)


# ------------------------------------------------------------------------------------------- mixin


class Config:
    """Mixin for config dataclasses: the core's functions as methods, plus ``validate``/``identity`` hooks."""

    config_error: ClassVar[type[ArcscopeError]] = ConfigError
    config_name: ClassVar[str] = "config"
    identity_exclude: ClassVar[tuple[str, ...]] = ()
    """Fields that do not change what a run computes (left out of :meth:`identity`)."""

    def validate(self) -> Self:
        """Check the fields together; a subclass raises ``config_error`` naming the field."""
        return self

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON/YAML-able dict of all fields."""
        return to_dict(self)

    def identity(self) -> dict[str, Any]:
        """The fields that decide a run's output; a resumed run must match these exactly."""
        d = self.to_dict()
        for k in self.identity_exclude:
            d.pop(k, None)
        return d

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], where: str | None = None) -> Self:
        """Build from a mapping, rejecting unknown keys with the nearest known one."""
        return from_dict(cls, data, where=where)

    @classmethod
    def from_yaml(cls, path: str | os.PathLike[str]) -> Self:
        """Load from a YAML file of settings."""
        return from_dict(cls, load_yaml(path, cls.config_error), where=str(path))

    def with_overrides(self, items: Iterable[str] | Mapping[str, Any], where: str = "override") -> Self:
        """A copy with ``KEY=VALUE`` strings (or a mapping) applied, validated."""
        return apply_overrides(self, items, where)
