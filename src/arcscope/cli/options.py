"""Command-line options built from config dataclasses, and the option types every command shares.

:func:`config_options` turns the fields of a config dataclass into typer options: the option's default is
the field's default and its help the docstring under the field, so neither is typed twice. Values given on
the command line override a ``--config`` YAML file, which overrides the defaults; the command receives one
validated config object. Every command built this way records which option fills which field
(``__config_options__``), which the test that walks every command reads.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import json
import types
import typing
from collections.abc import Callable, Iterable
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer

from arcscope.config import (
    field_defaults,
    field_help,
    from_dict,
    load_yaml,
    nested_class,
    show_value,
    split_list,
)

__all__ = [
    "ConfigFileOpt",
    "OnError",
    "OnErrorOpt",
    "QuietOpt",
    "StorageOptionsOpt",
    "cli_default",
    "config_options",
    "parse_storage_options",
]


class OnError(StrEnum):
    """What a batch command does at a bad item: stop with its error, or skip it and count it."""

    raise_ = "raise"
    skip = "skip"


def parse_storage_options(text: str | dict | None) -> dict | None:
    """The ``--storage-options`` JSON object (fsspec options), or None when not given."""
    if text is None or isinstance(text, dict):
        return text
    if not text.strip():
        return None
    try:
        opts = json.loads(text)
    except ValueError as e:
        raise typer.BadParameter(f"not valid JSON: {e}") from None
    if not isinstance(opts, dict):
        raise typer.BadParameter('must be a JSON object, e.g. \'{"endpoint_url": "http://127.0.0.1:9000"}\'')
    return opts


QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")]
NoResumeOpt = Annotated[bool, typer.Option("--no-resume", help="Fail instead of resuming a run in --out.")]
RunOverwriteOpt = Annotated[bool, typer.Option("--overwrite", help="Discard a run already in --out.")]
"""The two options of every resumable training command (train-lm, sae train)."""
OnErrorOpt = Annotated[
    OnError,
    typer.Option("--on-error", help="At a bad item: raise (stop and name it) or skip (go on, count it)."),
]
StorageOptionsOpt = Annotated[
    dict | None,
    typer.Option(
        "--storage-options",
        parser=parse_storage_options,
        metavar="JSON",
        help="fsspec storage options for remote URLs, as a JSON object (e.g. an S3 endpoint_url).",
    ),
]
ConfigFileOpt = Annotated[
    Path | None,
    typer.Option("--config", help="YAML file of settings; options given on the command line override it."),
]

_SCALARS = (bool, int, float, str)
_CTX = "_config_ctx"  # typer passes the click context here: it tells which options the user gave


def _cli_type(tp: Any) -> Any:
    """The type typer parses for a field of annotation ``tp``.

    Scalars stay scalars; a list field is a repeatable text option (each value may also be ``a,b``);
    anything else is text that the config core parses."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if tp in _SCALARS:
        return tp
    if origin in (typing.Union, types.UnionType):
        rest = [a for a in args if a is not type(None)]
        if len(rest) == 1:
            inner = _cli_type(rest[0])
            return inner if typing.get_origin(inner) is list else inner | None
    if origin is list:
        return list[str]
    return str | None


def _is_list(tp: Any) -> bool:
    return typing.get_origin(_cli_type(tp)) is list


def cli_default(value: Any, tp: Any = None) -> Any:
    """A field default as the command line shows and parses it (lists as lists of text, tuples as ``a,b``)."""
    if tp is not None and _is_list(tp):
        return None if value is None else [str(v) for v in value]
    if isinstance(value, (list, tuple)):
        return show_value(value)
    if isinstance(value, dict):
        return ",".join(f"{k}={v}" for k, v in value.items()) if value else None
    if isinstance(value, Path):
        return str(value)
    return value


def config_options(
    cls: type,
    *,
    fields: Iterable[str] | None = None,
    exclude: Iterable[str] = (),
    flags: dict[str, tuple[str, ...] | str] | None = None,
    help_prefix: dict[str, str] | None = None,
    param: str = "cfg",
    config_file: bool = False,
    build: bool = True,
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Give a command one option per field of ``cls`` (all, or ``fields``) and call it with ``param=cfg``.

    ``flags`` renames options (``{"augmentations": "--augment"}``, or a tuple with short forms),
    ``config_file`` adds ``--config FILE.yaml``. With ``build=False`` the command gets the mapping of the
    settings given (file, then command line) instead of a config, for a command that adds more before the
    library builds it.
    """
    flags = flags or {}
    help_prefix = help_prefix or {}
    exclude = set(exclude)

    def deco(fn: Callable[..., Any]) -> Callable[..., Any]:
        defaults = field_defaults(cls)
        hints = typing.get_type_hints(cls)
        names = list(fields) if fields is not None else [f.name for f in dataclasses.fields(cls)]
        known = {f.name for f in dataclasses.fields(cls)}
        missing = [n for n in names if n not in known]
        if missing:  # a programming error in a command, caught at import
            raise TypeError(f"{fn.__name__}: {cls.__name__} has no field(s) {missing}")
        sig = inspect.signature(fn, eval_str=True)
        fn_hints = typing.get_type_hints(fn, include_extras=True)
        params = [
            p.replace(kind=inspect.Parameter.KEYWORD_ONLY, annotation=fn_hints.get(p.name, p.annotation))
            for p in sig.parameters.values()
            if p.name != param
        ]
        own, params = params, []
        taken = {p.name for p in own}
        mapping: dict[str, str] = {}
        for name in names:
            if name in exclude or nested_class(hints[name]) is not None:
                continue  # a nested group is set from --config or KEY=VALUE, not an option
            pname = name if name not in taken else f"{cls.__name__.lower()}_{name}"
            flag = name.replace("_", "-")
            is_bool = _cli_type(hints[name]) is bool
            decl = flags.get(name) or ((f"--{flag}/--no-{flag}",) if is_bool else (f"--{flag}",))
            decl = (decl,) if isinstance(decl, str) else tuple(decl)
            text = help_prefix.get(name, "") + field_help(cls, name, default=False)
            default = cli_default(defaults.get(name), hints[name])
            extra: dict[str, Any] = {}
            if _is_list(hints[name]):
                text += " Repeatable, or comma-separated."
                extra["metavar"] = "A,B,.."
            option = typer.Option(*decl, help=text, show_default=default is not None, **extra)
            ann = Annotated[_cli_type(hints[name]), option]  # type: ignore[valid-type]
            params.append(
                inspect.Parameter(pname, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=ann)
            )
            mapping[pname] = name
            taken.add(pname)
        params.extend(own)
        if config_file:
            params.append(
                inspect.Parameter(
                    "config_file", inspect.Parameter.KEYWORD_ONLY, default=None, annotation=ConfigFileOpt
                )
            )

        @functools.wraps(fn)
        def command(**kw: Any) -> Any:
            ctx = kw.pop(_CTX)
            given: dict[str, Any] = {}
            for pname, name in mapping.items():
                value = kw.pop(pname)
                source = ctx.get_parameter_source(pname)
                if source is not None and source.name not in ("DEFAULT", "DEFAULT_MAP"):
                    if isinstance(value, list):  # repeated and/or comma-separated values
                        value = [item for v in value for item in split_list(v)]
                    given[name] = value
            path = kw.pop("config_file", None) if config_file else None
            from_file = load_yaml(path, _error(cls)) if path is not None else {}
            if not build:
                return fn(**kw, **{param: {**from_file, **given}})
            base = from_dict(cls, from_file, where=str(path)) if path is not None else None
            return fn(**kw, **{param: from_dict(cls, given, where="command line", base=base)})

        params.append(inspect.Parameter(_CTX, inspect.Parameter.KEYWORD_ONLY, annotation=typer.Context))
        command.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
        command.__annotations__ = {p.name: p.annotation for p in params}
        del command.__wrapped__  # typer must read the new signature, not the wrapped function's
        prev = getattr(fn, "__config_options__", {})
        command.__config_options__ = {**prev, **{p: (cls, n) for p, n in mapping.items()}}  # type: ignore[attr-defined]
        return command

    return deco


def _error(cls: type) -> type:
    from arcscope.config import ConfigError

    return getattr(cls, "config_error", ConfigError)
