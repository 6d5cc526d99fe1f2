"""One session of XGBoost's distributed ``hist`` learner at a site: trees grown together with the other sites.

Every site loads only its own rows and joins a communicator (XGBoost's collective:
the rabit tracker on loopback in simulation, the federated gRPC server in a
deployment). XGBoost then grows each tree as it would on the pooled rows, on bin
boundaries merged from the sites' quantile sketches (once per session); at every tree level the
sites' gradient/hessian histograms are summed (an allreduce), so every site ends
the session holding the same trees. A session continues from the model it is given,
so a Flower round can be one session of K trees, checkpointed and retried as a whole.

Why a separate process (:func:`grow_in_subprocess`): a site blocks in the collective
until every other site has joined, XGBoost keeps one communicator per process (the
in-process grid runs the sites as threads of one process), and a session that hangs
(a site gone mid-session) can only be ended by killing it.
"""

from __future__ import annotations

import dataclasses
import os
import pickle
import socket
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

# struct tcp_info (linux/tcp.h): tcpi_bytes_acked and tcpi_bytes_received, both u64, at these offsets since
# Linux 4.1/4.2; older kernels return a shorter struct, and then bytes are not measured.
_TCP_INFO = getattr(socket, "TCP_INFO", 11)
_BYTES_ACKED, _BYTES_RECEIVED = 120, 128


def socket_bytes() -> tuple[int, int] | None:
    """Bytes sent (acknowledged by the peer) and received over every TCP socket this process holds, or None.

    Read from the kernel's ``TCP_INFO`` of each socket: XGBoost's communicator opens
    its sockets in C++, so this is how Python sees what went over them. None where
    the kernel does not report byte counts (not Linux, or older than 4.2).
    """
    sent = received = 0
    try:
        fds = os.listdir("/proc/self/fd")
    except OSError:
        return None
    for name in fds:
        try:
            dup = os.dup(int(name))
        except OSError:  # closed since the listing
            continue
        try:
            sock = socket.socket(fileno=dup)
        except OSError:  # not a socket
            os.close(dup)
            continue
        with sock:
            if sock.family not in (socket.AF_INET, socket.AF_INET6) or sock.type != socket.SOCK_STREAM:
                continue
            try:
                info = sock.getsockopt(socket.IPPROTO_TCP, _TCP_INFO, 256)
            except OSError:
                continue
            if len(info) < _BYTES_RECEIVED + 8:
                return None
            sent += struct.unpack_from("Q", info, _BYTES_ACKED)[0]
            received += struct.unpack_from("Q", info, _BYTES_RECEIVED)[0]
    return sent, received


@dataclass(frozen=True)
class SessionResult:
    """What a site's session produced: the whole ensemble (every site's is the same) and what it cost."""

    booster: bytes
    train_loss: float
    seconds: float
    bytes_sent: int | None
    bytes_received: int | None


def grow(
    params: Mapping[str, Any],
    x: np.ndarray,
    y: np.ndarray,
    model: bytes,
    trees: int,
    communicator: Mapping[str, Any],
) -> SessionResult:
    """Join the communicator with this site's rows, add ``trees`` trees to ``model`` together, and leave.

    ``communicator`` holds the keys of ``xgboost.collective.init`` for this site
    (its rank or task id included). Bytes are read from the communicator's sockets
    before it closes them.
    """
    import xgboost as xgb
    from xgboost import collective

    t0 = time.perf_counter()
    with collective.CommunicatorContext(**communicator):
        dtrain = xgb.DMatrix(x, label=y)
        history: dict[str, Any] = {}
        booster = xgb.train(
            dict(params),
            dtrain,
            num_boost_round=trees,
            xgb_model=xgb.Booster(model_file=bytearray(model)),
            evals=[(dtrain, "train")],  # the train loss is allreduced too: the federation's, not this site's
            evals_result=history,
            verbose_eval=False,
        )
        measured = socket_bytes()
        raw = bytes(booster.save_raw("json"))
    return SessionResult(
        booster=raw,
        train_loss=float(history["train"]["logloss"][-1]),
        seconds=time.perf_counter() - t0,
        bytes_sent=measured[0] if measured else None,
        bytes_received=measured[1] if measured else None,
    )


class SessionFailed(RuntimeError):
    """The session did not finish: another site left it, the communicator failed, or it ran out of time."""


def grow_in_subprocess(
    params: Mapping[str, Any],
    x: np.ndarray,
    y: np.ndarray,
    model: bytes,
    trees: int,
    communicator: Mapping[str, Any],
    timeout_s: float,
) -> SessionResult:
    """:func:`grow` in a fresh Python process, killed if it has not finished after ``timeout_s`` seconds.

    The process is ``python -m flcore.learning.xgbsession`` rather than a
    ``multiprocessing`` child: a spawned child re-imports the caller's main module,
    which breaks scripts without a ``__main__`` guard, and a forked one hangs next to
    a running gRPC server. Arguments and result travel as pickles in a private
    temporary folder, between this process and its own child.

    Raises
    ------
    SessionFailed
        With the end of XGBoost's own error when the session failed, or the timeout.
    """
    with tempfile.TemporaryDirectory(prefix="flsuite-xgb-") as tmp:
        job, out = Path(tmp) / "job.pkl", Path(tmp) / "result.pkl"
        with job.open("wb") as fh:
            pickle.dump((dict(params), x, y, model, trees, dict(communicator)), fh, protocol=pickle.HIGHEST_PROTOCOL)
        with (Path(tmp) / "stderr.txt").open("w+") as err:
            proc = subprocess.Popen(
                [sys.executable, "-m", "flcore.learning.xgbsession", str(job), str(out)],
                stdin=subprocess.DEVNULL,
                stdout=err,
                stderr=err,
            )
            try:
                proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
                raise SessionFailed(
                    f"the XGBoost session did not finish within {timeout_s:.0f} s (a site did not join, or left it)"
                ) from None
            if proc.returncode != 0 or not out.exists():
                err.seek(0)
                lines = [line.strip() for line in err.read().splitlines() if line.strip()]
                raise SessionFailed(f"the XGBoost session failed (exit code {proc.returncode}): " + _last_error(lines))
        with out.open("rb") as fh:
            fields = pickle.load(fh)  # written by our own child process, just now
    return SessionResult(**fields)


def _last_error(lines: list[str]) -> str:
    """The line that says what went wrong, from a session's output (XGBoost's error, or Python's last line)."""
    for line in reversed(lines):
        if "XGBoostError" in line or "Error" in line.split(":")[0]:
            return " ".join(line.split())[:400]
    return " ".join(lines[-1].split())[:400] if lines else "no output"


def _main(job: str, out: str) -> None:
    with open(job, "rb") as fh:
        args = pickle.load(fh)  # written by the parent, in its private temporary folder
    result = dataclasses.asdict(grow(*args))  # plain fields: this module runs as __main__ here
    with open(out + ".tmp", "wb") as fh:
        pickle.dump(result, fh, protocol=pickle.HIGHEST_PROTOCOL)
    os.replace(out + ".tmp", out)


if __name__ == "__main__":
    _main(sys.argv[1], sys.argv[2])
