"""Every exception flcore raises on purpose, in one place; user mistakes derive from ``FlsuiteUserError``."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


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


class GovernanceError(FlsuiteUserError):
    """A run breaks a governance rule; it is refused before any training.

    ``refusals`` holds the :class:`flcore.governance.rules.Refusal` of every rule broken.
    """

    def __init__(self, message: str, refusals: Sequence[Any] = ()) -> None:
        super().__init__(message)
        self.refusals = list(refusals)


class LedgerError(FlsuiteUserError):
    """The ledger cannot be read or written; no run may spend budget until it can."""


class AuditError(FlsuiteUserError):
    """An audit trail is broken (altered, truncated or reordered) and must not be extended."""


class CheckpointError(FlsuiteUserError):
    """A checkpoint is missing, unreadable or does not belong to the run being resumed."""


class QuorumError(FlsuiteUserError):
    """Fewer sites than ``min-sites`` were available or sent a usable update in a round; the run stops, resumable.

    Attributes
    ----------
    server_round : int
        The round that was not aggregated (the checkpoint holds the one before).
    answered : int
        Sites that answered the round's training without error.
    needed : int
        The quorum (``min-sites``, at least the strategy's own minimum).
    missing : list of str
        Sampled sites that did not answer, or answered with an error.
    rejected : dict
        Site -> reason, for the updates that answered but were rejected (not finite,
        or not decodable); empty when the round stopped before the screen.
    """

    exit_code = 3

    def __init__(
        self,
        server_round: int,
        answered: int,
        needed: int,
        missing: list[str],
        detail: str,
        rejected: dict[str, str] | None = None,
    ) -> None:
        self.server_round = server_round
        self.answered = answered
        self.needed = needed
        self.missing = missing
        self.rejected = dict(rejected or {})
        super().__init__(detail)


class TooFewUpdates(FlsuiteError):
    """Fewer usable updates than the screen's quorum: the round was not aggregated.

    :func:`flcore.federation.rounds.run_rounds` turns it into a :class:`~flcore.federation.rounds.QuorumError`
    that also names the sites that did not answer.

    Parameters
    ----------
    server_round : int
        The round.
    usable : list of str
        Sites whose update passed the screen.
    needed : int
        The quorum.
    rejected : dict
        Site -> reason, for every update dropped in the round (the screen's and those
        reported to :meth:`ScreenedUpdates.reject` by an outer wrapper).
    """

    def __init__(self, server_round: int, usable: list[str], needed: int, rejected: dict[str, str]) -> None:
        self.server_round = server_round
        self.usable = usable
        self.needed = needed
        self.rejected = rejected
        reasons = "; ".join(f"{site}: {why}" for site, why in sorted(rejected.items()))
        super().__init__(
            f"Round {server_round}: {len(usable)} usable update(s), fewer than the quorum of {needed}"
            + (f" (rejected: {reasons})" if reasons else "")
            + "."
        )


class DeploymentError(FlsuiteUserError):
    """A Flower process could not start, a site could not be registered, or the run failed."""

    exit_code = 3


class RunFolderError(FlsuiteUserError):
    """A run folder given to ``flsuite report`` cannot be read."""


class OutputFolderError(FlsuiteUserError):
    """An output folder or file cannot be used: it is a file, not writable, or holds a finished run's results."""


# -- conformance checks (flcore.checks): a plug-in that breaks its contract ---------------------


class ConformanceError(AssertionError):
    """A plug-in failed one or more conformance checks of its contract.

    Parameters
    ----------
    subject : str
        What was checked (``strategy fedavg``, ``scenario medical-clinical``).
    failures : list of str
        One line per failed check: the check's name and what went wrong.
    """

    def __init__(self, subject: str, failures: list[str]) -> None:
        self.subject = subject
        self.failures = list(failures)
        lines = "\n".join(f"  - {line}" for line in self.failures)
        super().__init__(f"{subject} fails {len(self.failures)} conformance check(s):\n{lines}")


class AdapterCheckError(AssertionError):
    """An adapter failed one conformance check."""


class TaskCheckError(AssertionError):
    """A task failed one conformance check."""


class ScenarioCheckError(AssertionError):
    """A scenario failed one conformance check."""


class StrategyCheckError(AssertionError):
    """A strategy failed one conformance check."""
