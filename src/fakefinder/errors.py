"""Exceptions that fakefinder raises on purpose; anything else is a bug."""

from __future__ import annotations


class FakefinderError(Exception):
    """Base class: the message is one line that a user can act on."""


class UsageError(FakefinderError):
    """The arguments cannot work at all (missing folder, no labels, OUT is a file): the CLI exits 2."""


class InputError(FakefinderError):
    """One input cannot be used; the batch records it and goes on."""


class DeadlineError(FakefinderError, TimeoutError):
    """Work given a deadline (serve's --inference-timeout) was still running when it passed, and was stopped."""


class OptionError(UsageError):
    """Settings that their declarations reject. Each problem names its setting (`lr must be > 0`); the CLI
    names the flag instead (`--lr must be > 0`)."""

    def __init__(self, option: str, why: str) -> None:
        self.problems: list[tuple[str, str]] = [(option, why)]
        super().__init__(self.render())

    @classmethod
    def many(cls, problems: list[tuple[str, str]]) -> OptionError:
        error = cls(*problems[0])
        error.problems = list(problems)
        error.args = (error.render(),)
        return error

    def render(self, name=lambda option: option) -> str:
        """One line; `name` turns a setting's name into what the user typed (a flag, a grid key)."""
        return "; ".join(f"{name(option)} {why}" for option, why in self.problems)


def one_line(exc: BaseException, *, limit: int | None = None, typed: bool | None = None) -> str:
    """An exception as a single line, for `reason` columns and error output: its text with white space folded, cut
    to `limit` characters, after its type's name when `typed` (by default: unless it is one of fakefinder's own)."""
    text, name = " ".join(str(exc).split())[:limit], type(exc).__name__
    typed = not isinstance(exc, FakefinderError) if typed is None else typed
    return (f"{name}: {text}" if typed else text) if text else name
