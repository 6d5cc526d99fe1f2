"""Exceptions raised by flcore; user mistakes derive from ``FlsuiteUserError``."""

from __future__ import annotations


class FlsuiteError(Exception):
    """Base class of every error raised on purpose by the suite."""


class FlsuiteUserError(FlsuiteError):
    """A mistake the user can fix (bad data, bad setting, unknown name).

    The CLI prints the message as one paragraph and exits with ``exit_code``;
    no traceback is shown.
    """

    exit_code = 2


class DataValidationError(FlsuiteUserError):
    """A site's data does not meet the adapter's contract.

    Parameters
    ----------
    path : str
        The file or folder at fault.
    problem : str
        What was expected and what was found.
    fix : str
        How the user can fix it.
    field : str, optional
        The column, tag or field at fault.
    """

    def __init__(self, path: object, problem: str, fix: str, field: str | None = None):
        self.path = str(path)
        self.field = field
        self.problem = problem
        self.fix = fix
        where = f"{self.path}" + (f", field '{field}'" if field else "")
        super().__init__(f"Invalid data in {where}: {problem} {fix}")


class ConfigError(FlsuiteUserError):
    """A setting has an invalid name or value."""


class UnknownNameError(FlsuiteUserError):
    """A scenario, strategy or partitioner name is not registered."""
