"""Settings described once, by the constructor that uses them.

A layer or model lists its user-facing options in a class attribute
`SETTINGS = describe(Cls, names, ...)`: each `Setting`'s default and type come
from the constructor's signature, its help from the constructor docstring's
`Args:` entry. The CLI flags, the Keras Tuner search space and `hparams.json`
are generated from these records, so a new option is one edit in its layer.

Checks raise `InvalidSetting` (a `ValueError`) naming the parameter, the value
and what is allowed; `flag_message()` words the same error for the CLI.
"""

import dataclasses
import inspect
import math
import re
import types
import typing


class InvalidSetting(ValueError):
    """A setting with a value its owner does not allow.

    Args:
        message: the one-line reason, naming each setting as `name=value`.
        names: the settings the message names (the CLI prefixes them `--`).
    """

    def __init__(self, message, names=()):
        super().__init__(message)
        self.names = tuple(names)

    def flag_message(self):
        """The message with each named setting written as its flag, `flag --name=value …`."""
        text = str(self)
        for name in self.names:
            text = re.sub(rf"(?<![\w-]){re.escape(name)}=", f"--{name}=", text)
        return f"flag {text}" if text.startswith("--") else text


def check_choice(name, value, allowed):
    if value not in tuple(allowed):
        raise InvalidSetting(
            f"{name}={value!r} is not allowed; use one of {tuple(allowed)}.", [name]
        )


def check_int(name, value, minimum=1, hint=""):
    """`value` is an integer (not a bool) >= minimum."""
    ok = not isinstance(value, bool) and isinstance(value, (int, float)) and int(value) == value
    if not ok or value < minimum:
        raise InvalidSetting(
            f"{name}={value!r} is not allowed; use an integer >= {minimum}{hint}.", [name]
        )


def check_optional_int(name, value, minimum=1, hint=""):
    if value is not None:
        check_int(name, value, minimum, hint)


def check_number(name, value, minimum=None, maximum=None, *, exclusive_minimum=False, hint=""):
    """`value` is a finite number in [minimum, maximum) (or (minimum, …) when exclusive_minimum)."""
    ok = not isinstance(value, bool) and isinstance(value, (int, float)) and math.isfinite(value)
    if ok and minimum is not None:
        ok = value > minimum if exclusive_minimum else value >= minimum
    if ok and maximum is not None:
        ok = value < maximum
    if not ok:
        if minimum is not None and maximum is not None:
            allowed = f"a number in [{minimum}, {maximum})"
        elif minimum is not None:
            allowed = f"a number {'>' if exclusive_minimum else '>='} {minimum}"
        else:
            allowed = "a finite number"
        raise InvalidSetting(f"{name}={value!r} is not allowed; use {allowed}{hint}.", [name])


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
