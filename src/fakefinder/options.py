"""Settings declared once, on their dataclass fields: type, default, bounds, choices and help.

Validation, the CLI's flags, grid-file coercion and the params a tracker records are all derived from these
declarations, as scikit-learn derives validation from `_parameter_constraints`. Choices that come from a
registry are given as a function returning its names (declared in `registries`, below every stage).
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import functools
import math
import re
import types
import typing
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from .errors import OptionError

KEY = "fakefinder.option"
T = TypeVar("T")


@dataclass(frozen=True)
class Option:
    """What a field's declaration says beyond its type and default."""

    help: str
    low: float | None = None
    high: float | None = None
    low_open: bool = False  # low < value rather than low <= value
    high_open: bool = False
    choices: Callable[[], Iterable[str]] | None = None  # a registry's names, read when needed
    group: str = ""  # the CLI's help section
    metavar: str | None = None


def option(default: Any, help: str, **kwargs: Any) -> Any:
    """A dataclass field with its declaration."""
    return dataclasses.field(default=default, metadata={KEY: Option(help, **kwargs)})


def like(settings: type, name: str, **changes: Any) -> Any:
    """A field declared as `settings`' field `name` (bounds, choices, help, default), with `changes` to any of
    them: for a record that stores a setting, such as the model card, so that the two cannot disagree."""
    field = next(f for f in dataclasses.fields(settings) if f.name == name)
    default = changes.pop("default", field.default)
    return dataclasses.field(default=default, metadata={KEY: dataclasses.replace(field.metadata[KEY], **changes)})


_TRUE, _FALSE = {"true", "yes", "1", "on"}, {"false", "no", "0", "off"}
# Without the registries (see without_registries), a registry's name is still a name: short, plain characters.
REGISTERED_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.+-]{0,63}")
_REGISTRIES: contextvars.ContextVar[bool] = contextvars.ContextVar("fakefinder_registries", default=True)


@contextlib.contextmanager
def without_registries() -> Iterator[None]:
    """Within it, a setting whose choices come from a registry takes any value of its type: for records of a
    self-contained artefact (an ONNX detector names its base but never builds it), which this fakefinder need not
    know how to build."""
    token = _REGISTRIES.set(False)
    try:
        yield
    finally:
        _REGISTRIES.reset(token)


def _cut(value: Any, limit: int = 60) -> str:
    """`value`'s repr, cut to `limit` characters: a message quotes what it refuses, not 50 MB of it."""
    text = repr(value) if not isinstance(value, str) or len(value) <= 4 * limit else repr(value[:4 * limit])
    return text if len(text) <= limit else text[:limit] + "..."


@dataclass(frozen=True)
class Declared:
    """One declared setting, its type taken apart: `kind` plus `literals` (fixed words) and `nullable`."""

    name: str
    kind: type | None  # int, float, str or bool; None when only `literals` are allowed
    literals: tuple[str, ...]
    nullable: bool
    default: Any
    option: Option

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    def choices(self) -> tuple[str, ...] | None:
        if self.option.choices is not None:
            if not _REGISTRIES.get():
                return None
            return tuple(self.option.choices()) + self.literals
        return self.literals if self.kind is None and self.literals else None

    def coerce(self, value: Any) -> Any:
        """A value from the command line or a grid file (YAML reads 1e-5 as text) as this setting's type."""
        if value is None or (self.nullable and isinstance(value, str) and value.lower() in ("none", "null")):
            if self.nullable:
                return None
            raise OptionError(self.name, "must be given")
        if isinstance(value, str) and value in self.literals:
            return value
        kind = self.kind
        if kind is None:
            return str(value) if isinstance(value, (str, int, float)) else value  # `problem` names the choices
        try:
            if kind is bool:
                if isinstance(value, bool):
                    return value
                if str(value).lower() in _TRUE | _FALSE:
                    return str(value).lower() in _TRUE
                raise ValueError
            if kind is int:
                if isinstance(value, bool):
                    raise ValueError
                number = float(value) if isinstance(value, (str, float)) else value
                if not isinstance(number, int) and not (isinstance(number, float) and number.is_integer()):
                    raise ValueError
                return int(number)
            if kind is float:
                if isinstance(value, bool):
                    raise ValueError
                return float(value)
            if kind is str:
                if isinstance(value, (dict, list)):
                    raise ValueError
                return str(value)
        except (TypeError, ValueError, OverflowError):
            pass
        raise OptionError(self.name, f"must be {self.describe()}, got {value!r}")

    def describe(self) -> str:
        words = {int: "an integer", float: "a number", str: "text", bool: "true or false", None: "one of"}
        text = words[self.kind]
        if self.literals:
            text = f"{text} or {' or '.join(self.literals)}" if self.kind else f"one of {', '.join(self.literals)}"
        return text

    def problem(self, value: Any) -> str | None:
        """Why `value` is not allowed, without the name; None when it is."""
        if value is None:
            return None if self.nullable else "must be given"
        if isinstance(value, str) and value in self.literals:
            return None
        if self.kind is None:
            return f"must be one of {', '.join(self.literals)}, got {_cut(value)}"
        ok_type = isinstance(value, self.kind) and not (self.kind is not bool and isinstance(value, bool))
        if self.kind is float and isinstance(value, int) and not isinstance(value, bool):
            ok_type = True
        if not ok_type:
            return f"must be {self.describe()}, got {value!r}"
        if self.kind is float and not math.isfinite(value):
            return f"must be a finite number, got {value!r}"
        choices = self.choices()
        if choices is not None and value not in choices:
            return f"must be one of {', '.join(choices)}, got {_cut(value)}"
        if self.option.choices is not None and not (isinstance(value, str) and REGISTERED_NAME.fullmatch(value)):
            return f"must be a name (letters, digits, _ . + -; at most 64), got {_cut(value)}"
        o = self.option
        too_low = o.low is not None and (value < o.low or (o.low_open and value == o.low))
        too_high = o.high is not None and (value > o.high or (o.high_open and value == o.high))
        return f"must be {self.range_text()}, got {value!r}" if too_low or too_high else None

    def range_text(self) -> str:
        """The allowed values: `in (0, 10]`, `>= 1`, `< 1`."""
        o = self.option
        if o.low is not None and o.high is not None:
            return f"in {'(' if o.low_open else '['}{o.low:g}, {o.high:g}{')' if o.high_open else ']'}"
        if o.low is not None:
            return f"{'>' if o.low_open else '>='} {o.low:g}"
        return f"{'<' if o.high_open else '<='} {o.high:g}"

    def help_text(self, default: Any = None) -> str:
        """The help, with `default` (the declared one when None) as the user will get it."""
        from ._text import shown

        default = self.default if default is None else default
        said = "none" if default is None else "''" if default == "" else shown(default, significant=6)
        return f"{self.option.help} (default {said})"


def _split_type(hint: Any) -> tuple[type | None, tuple[str, ...], bool]:
    args = typing.get_args(hint) if typing.get_origin(hint) in (typing.Union, types.UnionType) else (hint,)
    kind, literals, nullable = None, (), False
    for arg in args:
        if arg is type(None):
            nullable = True
        elif typing.get_origin(arg) is typing.Literal:
            literals += tuple(str(v) for v in typing.get_args(arg))
        elif arg in (int, float, str, bool):
            kind = arg
        else:
            raise TypeError(f"undeclarable type {arg!r}")
    return kind, literals, nullable


@functools.cache
def declared(cls: type) -> dict[str, Declared]:
    """The declared settings of a dataclass, in field order."""
    hints = typing.get_type_hints(cls)
    out = {}
    for f in dataclasses.fields(cls):
        if KEY not in f.metadata:
            continue
        kind, literals, nullable = _split_type(hints[f.name])
        out[f.name] = Declared(f.name, kind, literals, nullable, f.default, f.metadata[KEY])
    return out


def problems(obj: Any) -> list[tuple[str, str]]:
    """(setting, why) for every value of `obj` that its declaration rejects, then its own cross-checks."""
    found = []
    for name, d in declared(type(obj)).items():
        why = d.problem(getattr(obj, name))
        if why:
            found.append((name, why))
    if not found and hasattr(obj, "_cross_check"):
        found += obj._cross_check()
    return found


def check(obj: Any) -> None:
    """Raises OptionError naming every rejected setting; call it from `__post_init__`."""
    found = problems(obj)
    if found:
        raise OptionError.many(found)


class Checked:
    """Dataclasses that inherit this validate their declared settings when made: an invalid one never exists."""

    def __post_init__(self) -> None:
        check(self)


def build(cls: type[T], values: Mapping[str, Any], *, base: T | None = None, what: str = "option",
          complete: bool = False, prefix: str = "") -> T:
    """`cls` from loosely typed values (a grid file, a form, a file header), each coerced by its declaration,
    over `base`; `complete` requires every declared setting (an untrusted header must not lean on defaults);
    `prefix` goes before every name in the errors (head.n_neurons)."""
    try:
        return _build(cls, values, base, what, complete)
    except OptionError as exc:
        if not prefix:
            raise
        raise OptionError.many([(prefix + name, why) for name, why in exc.problems]) from None


def _build(cls, values, base, what: str, complete: bool):
    table = declared(cls)
    coerced, errors = {}, []
    if not isinstance(values, Mapping):
        raise OptionError(what, f"must be a mapping, got {type(values).__name__}")
    for key, value in values.items():
        if key not in table:
            errors.append((str(key), f"is not a known {what}"))
            continue
        try:
            coerced[key] = table[key].coerce(value)
        except OptionError as exc:
            errors += exc.problems
    if complete:
        errors += [(key, "is missing") for key in table if key not in values]
    if errors:
        raise OptionError.many(errors)
    return dataclasses.replace(base, **coerced) if base is not None else cls(**coerced)


def params(obj: Any) -> dict[str, str]:
    """Every declared setting as text, as a tracker records it."""
    return {name: "none" if (v := getattr(obj, name)) is None else str(v) for name in declared(type(obj))}
