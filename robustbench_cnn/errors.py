"""Error types whose message is a single line that names the problem and, where possible, the fix."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class RobustBenchError(Exception):
    """Base class: the CLI prints ``str(exc)`` as one line and exits with :attr:`exit_code`."""

    exit_code = 1


class SuiteError(RobustBenchError):
    """A suite file is malformed or names something that does not exist (exit code 2)."""

    exit_code = 2


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
