"""Exceptions that fakefinder raises on purpose; anything else is a bug."""

from __future__ import annotations


class FakefinderError(Exception):
    """Base class: the message is one line that a user can act on."""


class UsageError(FakefinderError):
    """The arguments cannot work at all (missing folder, no labels, OUT is a file): the CLI exits 2."""


class InputError(FakefinderError):
    """One input cannot be used; the batch records it and goes on."""


def one_line(exc: BaseException) -> str:
    """An exception as a single line, for `reason` columns and error output."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if isinstance(exc, FakefinderError) else f"{type(exc).__name__}: {text}"
