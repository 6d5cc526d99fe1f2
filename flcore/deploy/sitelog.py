"""What a site's SuperNode says: its output passed on without tracebacks, and why it stopped, in plain words.

``flower-supernode`` reports a failed connection as one exit code (305) for causes that
need different remedies, prints Python tracebacks for network conditions, and stops
after its session is refused. :class:`SupernodeLog` reads its output line by line: it
writes every line to the site's log file, passes the lines to the console without the
tracebacks (the file keeps them), notes when the coordinator is unreachable and when the
connection is back, and, when the SuperNode stops, names the cause with
:func:`diagnose`, as a :class:`Cause` that says what to do and whether trying again helps.
"""

from __future__ import annotations

import collections
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from flcore.deploy.gateway import NOT_REGISTERED, STILL_ACTIVE

#: Exit status of ``flsuite site join`` when the coordinator does not know the site's key.
REFUSED_EXIT = 5
#: ... when the coordinator's certificate is not signed by the CA the site was given.
UNTRUSTED_EXIT = 7
#: ... when the coordinator runs a Flower version this site's cannot talk to.
VERSION_EXIT = 8


@dataclass(frozen=True)
class Cause:
    """Why a SuperNode stopped: ``what`` happened, what to ``do`` (may be empty), whether trying again may help."""

    key: str
    what: str
    do: str
    retry: bool
    exit_code: int = 1

    def text(self) -> str:
        return f"{self.what} {self.do}".strip()


def diagnose(tail: list[str], superlink: str, ca: Path | None, returncode: int | None) -> Cause:
    """The cause of a SuperNode's end, from the last lines it printed (Flower's exit report among them)."""
    text = "\n".join(tail)
    low = text.lower()
    if "exit code: 606" in low or ("version" in low and "incompatib" in low):
        return Cause(
            "version",
            f"The coordinator at {superlink} runs a Flower version this site's Flower cannot talk to.",
            "Install the suite at the version the coordinator uses (same constraints file), then start again.",
            retry=False,
            exit_code=VERSION_EXIT,
        )
    if "certificate verify failed" in low or "ssl/tls handshake" in low or "certificate_verify_failed" in low:
        return Cause(
            "untrusted",
            f"The certificate the coordinator at {superlink} presented is not signed by {ca} "
            "(or does not name that address).",
            "Ask the coordinator for the pilot CA (ca.crt) that signed its certificate and pass it with --ca; "
            "check that --superlink uses a name or address its certificate lists.",
            retry=False,
            exit_code=UNTRUSTED_EXIT,
        )
    if NOT_REGISTERED.lower() in low or "no supernode found with the given public key" in low:
        return Cause(
            "unregistered",
            f"The coordinator at {superlink} does not know this site's key: it was never registered there.",
            "Send the coordinator this site's public key (sites/<name>.pub) to register (it is read when the "
            "coordinator service starts), then start again.",
            retry=False,
            exit_code=REFUSED_EXIT,
        )
    if STILL_ACTIVE.lower() in low or "could not be activated" in low:
        return Cause(
            "session-active",
            "The coordinator still counts this site's previous session as connected (a SuperNode stopped "
            "without saying goodbye stays connected until it misses two heartbeats, about 20 s).",
            "Nothing to do.",
            retry=True,
        )
    if "exit code: 302" in low:
        return Cause(
            "bad-key",
            "The SuperNode cannot use its key file (--key).",
            "Pass this site's private key (sites/<name>.key, ECDSA in OpenSSH format).",
            retry=False,
            exit_code=2,
        )
    if "failed to activate supernode" in low:  # a SuperLink without the suite's gateway does not say which
        return Cause(
            "refused",
            f"The coordinator at {superlink} refused to activate this site: either its key is not registered "
            "there, or its previous session still counts as connected (for about 20 s after it stopped).",
            "Check with the coordinator that this site's key is registered.",
            retry=True,
        )
    if "exit code: 305" in low:
        return Cause(
            "unreachable",
            f"The SuperNode could not connect to the coordinator at {superlink}.",
            "Check the address and that the coordinator is running.",
            retry=True,
        )
    return Cause(
        "lost",
        f"The SuperNode's session with the coordinator at {superlink} ended (exit code {returncode}): the coordinator "
        "restarted without this session, or dropped it.",
        "",
        retry=True,
    )


#: Lines that join the tracebacks of chained exceptions (``raise ... from``, an error while handling another).
_CHAINED = ("The above exception was the direct cause", "During handling of the above exception")


class SupernodeLog:
    """Reads a SuperNode's output: the log file gets every line, the console every line but tracebacks."""

    def __init__(self, path: Path, echo: Callable[[str], None], superlink: str) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.echo = echo
        self.superlink = superlink
        self.tail: collections.deque[str] = collections.deque(maxlen=60)
        self.connected = False
        self._in_traceback = False
        self._last_error = ""  # the latest exception line of the traceback being left out
        self._unreachable_said = False

    def new_session(self) -> None:
        """Forget the previous SuperNode's lines and connection: a new one starts."""
        self.tail.clear()
        self.connected = False

    def read(self, stream: TextIO) -> None:
        """Consume ``stream`` to its end (run in a thread)."""
        with self.path.open("a") as log:
            for line in stream:
                log.write(line)
                log.flush()
                self.line(line.rstrip("\n"))
        self._end_traceback()

    def line(self, line: str) -> None:
        self.tail.append(line)
        if line.startswith("Traceback (most recent call last):"):
            self._in_traceback = True
            self._last_error = ""  # a chained exception's traceback: its own exception line is the last word
            return
        if self._in_traceback:
            if line.startswith((" ", "\t")) or not line.strip() or line.startswith(_CHAINED):
                return  # frames, and the links of a chained exception
            if not self._last_error:
                self._last_error = line.strip()  # an exception line: the traceback may go on (chained)
                return
            self._end_traceback()  # a line after the exception line: the traceback is over
        if "Connection attempt failed, retrying" in line:
            if not self._unreachable_said:
                self._unreachable_said = True
                self.echo(
                    f"flsuite: the coordinator at {self.superlink} does not answer; Flower keeps retrying with "
                    "back-off (its attempts are in the log file)"
                )
            return
        if "SuperNode ID:" in line or "Connection successful" in line:
            if not self.connected or self._unreachable_said:
                self.echo(f"flsuite: connected to the coordinator at {self.superlink}")
            self.connected = True
            self._unreachable_said = False
        self.echo(line)

    def _end_traceback(self) -> None:
        if self._in_traceback and self._last_error:
            self.echo(f"(Flower printed a traceback ending in {self._last_error[:200]!r}; it is in {self.path})")
        self._in_traceback = False
        self._last_error = ""
