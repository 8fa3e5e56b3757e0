"""Argument checks of the library's constructors: one-line errors that name the argument.

Every check raises `InvalidSetting` (a `ValueError`) naming the constructor's own
argument, the value and what is allowed; applications word it for their users
(the CLI writes each named argument as its flag).
"""

import math


class InvalidSetting(ValueError):
    """A setting with a value its owner does not allow.

    Args:
        message: the one-line reason, naming each setting as `name=value`.
        names: the arguments the message names (an application may rename them).
    """

    def __init__(self, message, names=()):
        super().__init__(message)
        self.names = tuple(names)


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
