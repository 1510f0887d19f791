"""Error types whose message is a single line that names the problem and, where possible, the fix."""

from __future__ import annotations

import difflib
import unicodedata
from collections.abc import Iterable

MAX_SHOWN = 400  # characters of one user value echoed in a message


class RobustBenchError(Exception):
    """Base class: the CLI prints ``str(exc)`` as one line and exits with :attr:`exit_code`."""

    exit_code = 1


class SuiteError(RobustBenchError):
    """A suite file is malformed or names something that does not exist (exit code 2).

    ``problems`` holds every problem found, each one line (``file: field.path: problem; fix``);
    ``str(exc)`` is those lines joined by newlines (a single problem: a single line).
    """

    exit_code = 2

    def __init__(self, *problems: str) -> None:
        self.problems: tuple[str, ...] = tuple(one_line(p) for p in problems) or ("invalid suite",)
        super().__init__("\n".join(self.problems))


class UnknownNameError(RobustBenchError, ValueError):
    """A name (architecture, attack, parameter, ...) is not registered; suggests the closest."""

    exit_code = 2


class CheckpointError(RobustBenchError):
    """A cached or user-supplied checkpoint is missing, corrupt or does not match its model."""


class InputError(RobustBenchError):
    """A command was pointed at something it cannot use (not a run directory, a non-empty output)."""

    exit_code = 2


class AttackContractError(RobustBenchError):
    """An attack returned examples outside the eps ball or outside [0, 1]."""


def did_you_mean(name: str, choices: Iterable[str]) -> str:
    """Return ``"; did you mean 'x'?"`` for the closest choice, else the list of valid choices."""
    choices = sorted(choices)
    close = difflib.get_close_matches(name, choices, n=1, cutoff=0.5)
    if close:
        return f"; did you mean '{close[0]}'?"
    return f"; choose one of: {', '.join(choices)}" if choices else ""


def one_line(text: str, limit: int = 4 * MAX_SHOWN) -> str:
    """``text`` with control, format and line-separator characters escaped repr-style (``\\n``,
    ``\\x00``, ``\\u2028``) so it prints as exactly one line; the middle of an over-long text is elided."""
    out = "".join(repr(c)[1:-1] if _breaks(c) else c for c in text)
    return out if len(out) <= limit else f"{out[: limit // 2]}...{out[-limit // 2 :]}"


def _breaks(c: str) -> bool:
    return unicodedata.category(c) in ("Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp")


def shown(value: object, limit: int = MAX_SHOWN) -> str:
    """A user value quoted for a message: ``'abc'``, escaped to one line and elided when long."""
    return f"'{one_line(str(value), limit)}'"


def storage_error(exc: BaseException) -> bool:
    """A full, read-only or forbidden results directory: not a measurement's fault, so a run stops
    (exit 2) instead of recording every later cell as failed."""
    import errno

    return isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EFBIG, errno.EROFS, errno.EACCES)
