"""Settings described once, by the library constructor that uses them.

`describe(Cls, names, ...)` turns constructor arguments into `Setting`s: each
one's default and type come from the signature, its help from the
constructor docstring's `Args:` entry; the application adds what only it
knows (which models use it, its tuner search space). The CLI flags, the Keras
Tuner search space and `hparams.json` are generated from these records
(`model_settings` lists the library's), so a new option is one edit in its
layer and one line there.

The library's checks raise `validation.InvalidSetting` naming the
constructor's own argument; `flag_message()` words it for the CLI, each
argument as its flag (`FLAG_NAMES` maps layer arguments to model flags).
"""

import dataclasses
import inspect
import re
import types
import typing

from relperf_tf.validation import (  # noqa: F401  (the application's checks are the library's)
    InvalidSetting,
    check_choice,
    check_int,
    check_number,
    check_optional_int,
)

# Layer arguments whose flag has another name (the model's argument they come from).
FLAG_NAMES = {"num_heads": "heads"}


def flag_message(error):
    """`error`'s message with each argument it names written as its flag, `flag --name=value …`."""
    text = str(error)
    for name in getattr(error, "names", ()):
        flag = FLAG_NAMES.get(name, name)
        text = re.sub(rf"(?<![\w-]){re.escape(name)}=", f"--{flag}=", text)
    return f"flag {text}" if text.startswith("--") else text


# --- search spaces ----------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Int:
    """A Keras Tuner integer range [low, high]."""

    low: int
    high: int

    def sample(self, hp, name):
        return hp.Int(name, self.low, self.high)


@dataclasses.dataclass(frozen=True)
class Float:
    """A Keras Tuner float range [low, high] on a grid of `step` (or log-sampled)."""

    low: float
    high: float
    step: float = None
    sampling: str = "linear"

    def sample(self, hp, name):
        return hp.Float(name, self.low, self.high, step=self.step, sampling=self.sampling)


@dataclasses.dataclass(frozen=True)
class Choice:
    """A Keras Tuner choice among `values`."""

    values: tuple

    def sample(self, hp, name):
        return hp.Choice(name, list(self.values))


@dataclasses.dataclass(frozen=True)
class Boolean:
    """A Keras Tuner boolean."""

    def sample(self, hp, name):
        return hp.Boolean(name)


# --- descriptions -----------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Setting:
    """One user-facing option, as its owner's constructor defines it.

    Attributes:
        name: the constructor argument (and the flag, hparams.json key).
        kind: `int`, `float`, `bool` or `str`.
        default: the constructor's default.
        help: the constructor docstring's description.
        owner: the class whose constructor takes it.
        choices: the allowed values of a `str` setting, or None.
        models: the model names it applies to, or None for all.
        search: a search space (`Int`, `Float`, `Choice`, `Boolean`) when tunable.
    """

    name: str
    kind: type
    default: typing.Any
    help: str
    owner: type
    choices: tuple = None
    models: tuple = None
    search: typing.Any = None

    def applies_to(self, model):
        return self.models is None or model in self.models


def docstring_entries(obj, section="Args"):
    """`{name: description}` of a Google-style docstring section (joined lines).

    An entry naming several arguments (`a, b: …`) is given to each.
    """
    entries, current = {}, None
    lines = inspect.getdoc(obj).splitlines() if inspect.getdoc(obj) else []
    inside = False
    for line in lines:
        if not line.strip():
            continue
        if re.fullmatch(r"[A-Z][\w ]*:", line.strip()) and not line.startswith(" "):
            inside = line.strip() == f"{section}:"
            current = None
            continue
        if not inside:
            continue
        match = re.fullmatch(r"    (\**\w+(?:, \**\w+)*): ?(.*)", line)
        if match:
            current = [n.strip().lstrip("*") for n in match.group(1).split(",")]
            for name in current:
                entries[name] = match.group(2).strip()
        elif current and line.startswith("        "):
            for name in current:
                entries[name] = f"{entries[name]} {line.strip()}".strip()
    return entries


def _kind(parameter):
    annotation = parameter.annotation
    if annotation is not inspect.Parameter.empty:
        if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
            annotation = next(a for a in typing.get_args(annotation) if a is not type(None))
        return annotation
    if parameter.default is None:
        raise TypeError(
            f"{parameter.name}: a setting that defaults to None needs a type annotation."
        )
    return type(parameter.default)


def describe(owner, names, *, choices=None, models=None, search=None):
    """The `Setting`s `names` of `owner`'s constructor.

    Args:
        owner: a class; its `__init__` signature gives defaults and types,
            its docstring's `Args:` the help.
        names: constructor arguments to expose.
        choices: `{name: allowed values}` of string settings.
        models: `{name: model names}` of settings only some models use.
        search: `{name: search space}` of tunable settings.
    """
    choices, models, search = choices or {}, models or {}, search or {}
    parameters = inspect.signature(owner.__init__).parameters
    helps = docstring_entries(owner)
    described = []
    for name in names:
        if name not in parameters or name not in helps:
            raise TypeError(f"{owner.__name__} has no documented constructor argument {name!r}.")
        parameter = parameters[name]
        described.append(
            Setting(
                name=name,
                kind=_kind(parameter),
                default=parameter.default,
                help=helps[name],
                owner=owner,
                choices=tuple(choices[name]) if name in choices else None,
                models=tuple(models[name]) if name in models else None,
                search=search.get(name),
            )
        )
    return tuple(described)
