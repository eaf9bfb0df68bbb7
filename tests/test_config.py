"""The config core (arcscope.config) and the CLI options generated from config dataclasses."""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, field

import pytest
import typer.main

from arcscope import config as core
from arcscope.config import Config, ConfigError


class ToyError(ConfigError):
    """Errors of the toy config."""


@dataclass
class Inner(Config):
    """A nested group."""

    width: int = 8
    """Width of the thing."""


@dataclass
class Toy(Config):
    """A config with one field of each kind the core parses."""

    config_error = ToyError
    config_name = "toy"
    identity_exclude = ("device",)

    name: str = "a"
    """The name."""
    count: int = 3
    """How many."""
    rate: float = 0.5
    """How fast,
    over two lines."""
    flag: bool = False
    """Whether."""
    limit: int | None = None
    """At most this many (None: no limit)."""
    hooks: list[str] = field(default_factory=lambda: ["x.{0,1}.y", "z"])
    """Sites."""
    betas: tuple[float, float] = (0.9, 0.99)
    """Two numbers."""
    inner: Inner = field(default_factory=Inner)
    """The nested group."""
    device: str = "cpu"
    """Where."""

    def validate(self) -> Toy:
        """Counts are positive."""
        if self.count < 1:
            raise ToyError(f"count must be >= 1, got {self.count}")
        return self


def test_field_docs_and_help():
    docs = core.field_docs(Toy)
    assert docs["name"] == "The name." and docs["rate"] == "How fast, over two lines."
    assert core.field_help(Toy, "count") == "How many. [default: 3]"
    rows = dict((n, (d, h)) for n, d, h in core.config_help(Toy))
    assert rows["inner.width"] == ("8", "Width of the thing.") and rows["limit"][0] == "None"


def test_overrides_parse_by_field_type():
    t = Toy().with_overrides(
        [
            "count=1e3",
            "rate=2",
            "flag=yes",
            "limit=none",
            "hooks=a.{1,2}.b,c",
            "betas=0.1,0.2",
            "inner.width=4",
        ]
    )
    assert (t.count, t.rate, t.flag, t.limit) == (1000, 2.0, True, None)
    assert t.hooks == ["a.{1,2}.b", "c"] and t.betas == (0.1, 0.2) and t.inner == Inner(4)
    assert Toy().with_overrides({"limit": 7}).limit == 7


@pytest.mark.parametrize(
    ("items", "message"),
    [
        (["cout=2"], r"override: unknown setting 'cout' \(did you mean 'count'\?\); known: betas, count"),
        (["inner.widht=2"], r"unknown setting 'inner.widht' \(did you mean 'inner.width'\?\)"),
        (["count=many"], r"'count' must be an integer, got 'many'"),
        (["flag=maybe"], r"'flag' must be true or false"),
        (["betas=1"], r"'betas' must have 2 items"),
        (["count=0"], r"count must be >= 1, got 0"),
        (["count"], r"'count' is not KEY=VALUE"),
    ],
)
def test_bad_overrides_raise_the_configs_error(items, message):
    with pytest.raises(ToyError, match=message):
        Toy().with_overrides(items)


def test_dict_and_yaml_round_trip(tmp_path):
    t = Toy(name="b", hooks=["q"], inner=Inner(2))
    d = t.to_dict()
    assert d["betas"] == [0.9, 0.99] and d["inner"] == {"width": 2}
    assert Toy.from_dict(d) == t
    assert "device" not in t.identity() and "inner" in t.identity()
    p = tmp_path / "t.yaml"
    p.write_text("name: c\ninner: {width: 5}\nnope: 1\n")
    with pytest.raises(ToyError, match=r"t\.yaml: unknown setting 'nope'"):
        Toy.from_yaml(p)
    p.write_text("- a\n")
    with pytest.raises(ToyError, match="must be a mapping"):
        Toy.from_yaml(p)
    p.write_text("name: c\ninner: {width: 5}\n")
    assert Toy.from_yaml(p) == Toy(name="c", inner=Inner(5))


def test_make_config_takes_object_dict_or_none_plus_keywords():
    assert core.make_config(Toy, None, {"count": 2}).count == 2
    assert core.make_config(Toy, {"name": "z"}, {}).name == "z"
    assert core.make_config(Toy, Toy(name="y"), {"count": 4}) == Toy(name="y", count=4)
    with pytest.raises(ToyError, match="expected a Toy or a dict"):
        core.make_config(Toy, 3, {})


def test_the_four_config_systems_share_the_core_wording():
    from arcscope.datasets.records import DatasetError
    from arcscope.datasets.steps import DedupeConfig, make_config
    from arcscope.engine.job import JobConfig, JobConfigError
    from arcscope.reasoning.config import TrainConfig as ReasoningConfig
    from arcscope.reasoning.config import apply_overrides
    from arcscope.sae.config import SAEError
    from arcscope.sae.config import TrainConfig as SaeConfig

    cases = [
        (JobConfigError, lambda: JobConfig.from_dict({"hook": "x"}), "'hook' (did you mean 'hooks'?)"),
        (SAEError, lambda: SaeConfig().with_overrides(["latent=4"]), "'latent' (did you mean 'latents'?)"),
        (
            ConfigError,
            lambda: apply_overrides(ReasoningConfig(), ["lr_warmup=1"]),
            "'lr_warmup' (did you mean",
        ),
        (DatasetError, lambda: make_config(DedupeConfig, {"kee": 1}, {}), "'kee' (did you mean 'key'?)"),
    ]
    for error, call, said in cases:
        with pytest.raises(error) as e:
            call()
        assert f"unknown setting {said}" in str(e.value) and "; known: " in str(e.value)


# ------------------------------------------------------------------------------------ generated options


def _commands(group, path=()):
    for name, cmd in group.commands.items():
        if hasattr(cmd, "commands"):
            yield from _commands(cmd, (*path, name))
        else:
            yield " ".join((*path, name)), cmd


def _expected(value, tp):
    """A dataclass default as a click option holds it: lists as lists of text, tuples/dicts as text."""
    origin = typing.get_origin(tp)
    args = [a for a in typing.get_args(tp) if a is not type(None)]
    if origin is list or (args and len(args) == 1 and typing.get_origin(args[0]) is list):
        return None if value is None else [str(v) for v in value]
    if isinstance(value, tuple):
        return ",".join(map(str, value))
    if isinstance(value, dict):
        return ",".join(f"{k}={v}" for k, v in value.items()) or None
    return value


def test_every_option_default_equals_its_dataclass_field():
    from arcscope.cli import app

    root = typer.main.get_command(app)
    checked, configured = 0, set()
    for path, cmd in _commands(root):
        mapping = getattr(cmd.callback, "__config_options__", {})
        if mapping:
            configured.add(path)
        classes = {cls for cls, _ in mapping.values()}
        for param in cmd.params:
            target = mapping.get(param.name)
            if target is None:
                # A hand-written option named like a field of the command's config must agree with it too.
                target = next(
                    (
                        (c, param.name)
                        for c in classes
                        if param.name in {f.name for f in dataclasses.fields(c)}
                    ),
                    None,
                )
            if target is None or param.required:  # a required option has no default to disagree with
                continue
            cls, name = target
            f = {x.name: x for x in dataclasses.fields(cls)}[name]
            default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
            want = _expected(default, typing.get_type_hints(cls)[name])
            empty = (None, [], {}, "", ())
            if want in empty and param.default in empty:  # "none given" spelled two ways
                continue
            assert param.default == want, f"arcscope {path} --{param.name}: {param.default!r} != {want!r}"
            checked += 1
    named = {"run", "sae train", "sae eval", "rnn train", "reasoning eval", "reasoning capture"}
    named |= {"puzzles build arc", "puzzles build sudoku", "puzzles build maze", "data dedupe", "data split"}
    assert named <= configured, named - configured
    assert checked > 100


def test_command_line_overrides_config_file_which_overrides_defaults(tmp_path):
    import typer
    from typer.testing import CliRunner

    from arcscope.cli.options import config_options

    seen = {}
    app = typer.Typer()

    @app.command()
    @config_options(Toy, config_file=True, flags={"count": ("--count", "-n")})
    def go(cfg: Toy, extra: int = typer.Option(1, "--extra")) -> None:
        seen["cfg"], seen["extra"] = cfg, extra

    p = tmp_path / "toy.yaml"
    p.write_text("name: fromfile\ncount: 5\ninner: {width: 3}\n")
    r = CliRunner().invoke(app, ["--config", str(p), "-n", "7", "--hooks", "a,b", "--hooks", "c", "--flag"])
    assert r.exit_code == 0, r.output
    assert seen["cfg"] == Toy(name="fromfile", count=7, hooks=["a", "b", "c"], flag=True, inner=Inner(3))
    r = CliRunner().invoke(app, ["--count", "0"])
    assert r.exit_code == 1 and isinstance(r.exception, ToyError)
    r = CliRunner().invoke(app, ["--betas", "0.5,0.6", "--limit", "2"])
    assert r.exit_code == 0 and seen["cfg"].betas == (0.5, 0.6) and seen["cfg"].limit == 2
