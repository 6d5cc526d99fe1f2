"""The warm ClientApp worker of a site's SuperNode: imports the ClientApp once, forks a process per message."""

from __future__ import annotations

import importlib
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from flcore import scenario
from flcore.deploy.processes import QUIET, Say
from flcore.federation.flowerwaits import FlowerPatchError, shorten_pull_backoff

#: Exit status of the ClientApp worker (:func:`clientapp_worker`) when it gives up, after saying why; ``flsuite
#: site join`` then stops its SuperNode and exits with it, instead of starting the worker again.
WORKER_FAILED_EXIT = 6

#: Modules the worker imports before its first message: the ClientApp (``[tool.flwr.app.components]`` of
#: :func:`flcore.deploy.serve.write_app_project`) and ``torch._dynamo``, which torch imports on the first
#: optimiser it builds (about 2 s, in every training message of a per-message ClientApp). Every registered
#: scenario's domain is loaded as well, as ``flcore.scenario.get`` does on each message.
WORKER_PRELOAD = ("flcore.federation.clientapp", "torch._dynamo")


#: Seconds between the worker's log lines about one stretch of failed requests (the first is logged at once).
WORKER_LOG_EVERY_S = 30.0
#: Seconds of requests failing without a break, while the SuperNode lives, after which the worker gives up.
WORKER_GIVE_UP_S = 300.0


def transient_failure(err: BaseException) -> bool:
    """Whether a failed ``AcquireTask`` may succeed if simply tried again.

    Transient: the Runtime API cannot be reached or answers "try later", as while
    the SuperNode starts or stops (``httpx.TransportError``: connection refused or
    reset, timeouts; HTTP 502, 503, 504, which Flower's own HTTP retries also
    retry). Anything else will fail the same way every time: the Runtime API
    refusing the worker (HTTP 401, 403), not knowing the request (another Flower
    version: 400, 404), or something that is not a Runtime API at that address (a
    response that is not protobuf: ValueError).
    """
    import httpx

    if isinstance(err, httpx.TransportError):
        return True
    if isinstance(err, httpx.HTTPStatusError):
        return err.response.status_code in (502, 503, 504)
    return False


def _describe(err: BaseException) -> str:
    import httpx

    if isinstance(err, httpx.HTTPStatusError):
        body = err.response.text.strip().replace("\n", " ")[:200]
        return f"HTTP {err.response.status_code} {err.response.reason_phrase}" + (f": {body}" if body else "")
    if isinstance(err, SystemExit):
        return f"Flower ended it with exit status {err.code}, after logging why"
    return f"{type(err).__name__}: {str(err)[:300]}"


class WorkerFailures:
    """The ClientApp worker's stretch of failed requests: logged, rate-limited, bounded in time.

    The first failure is logged at once, then at most one line every ``log_every_s``
    seconds with the count so far, and one when a request succeeds again.

    Parameters
    ----------
    address : str
        The Runtime API, for the messages.
    give_up_after_s : float
        Seconds of failures without a success after which :meth:`failed` says to give up.
    log_every_s : float
        Seconds between two log lines of one stretch.
    say : callable
        Where lines go (standard error).
    clock : callable
        Monotonic seconds (a test passes its own).
    """

    def __init__(
        self,
        address: str,
        give_up_after_s: float = WORKER_GIVE_UP_S,
        log_every_s: float = WORKER_LOG_EVERY_S,
        say: Say | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.address = address
        self.give_up_after_s = give_up_after_s
        self.log_every_s = log_every_s
        self.say: Say = say or (lambda line: print(line, file=sys.stderr, flush=True))
        self.clock = clock
        self.count = 0
        self.since: float | None = None
        self._logged = 0.0

    def failed(self, err: BaseException) -> bool:
        """Count a transient failure; ``False`` once they have lasted ``give_up_after_s`` (the caller gives up)."""
        now = self.clock()
        self.count += 1
        if self.since is None:
            self.since, self._logged = now, now
            self.say(
                f"flsuite ClientApp worker: the SuperNode's Runtime API at {self.address} did not answer "
                f"({_describe(err)}); retrying (the SuperNode may be starting or stopping)."
            )
        elif now - self._logged >= self.log_every_s:
            self._logged = now
            self.say(
                f"flsuite ClientApp worker: still no answer from {self.address} after {now - self.since:.0f} s "
                f"({self.count} failed requests; last: {_describe(err)})."
            )
        return now - self.since < self.give_up_after_s

    def succeeded(self) -> None:
        """A request got through: end the stretch (and say so, if it was logged)."""
        if self.since is not None:
            self.say(
                f"flsuite ClientApp worker: the Runtime API at {self.address} answers again "
                f"(after {self.count} failed requests in {self.clock() - self.since:.0f} s)."
            )
        self.count, self.since = 0, None

    def gave_up(self, err: BaseException, permanent: bool) -> str:
        """The one-paragraph message of a worker that stops trying."""
        if permanent:
            why = (
                f"its request for a task failed in a way a retry cannot fix ({_describe(err)}): the Runtime API "
                "refused the worker, runs another Flower version than this flsuite's, or is not a SuperNode's "
                "Runtime API."
            )
        else:
            elapsed = 0.0 if self.since is None else self.clock() - self.since
            why = (
                f"its requests have failed for {elapsed:.0f} s without a break "
                f"({self.count} failed requests; last: {_describe(err)}), while the SuperNode process still runs."
            )
        return (
            f"flsuite ClientApp worker: giving up on the SuperNode's Runtime API at {self.address}: {why} "
            "This site answers no training until it is fixed. Check the SuperNode's log above, that flsuite and "
            "Flower are the same versions as the SuperNode's, then run `flsuite site join` again."
        )


def clientapp_worker(
    runtime_api_address: str,
    parent_pid: int | None = None,
    poll_s: float = 0.2,
    preload: Sequence[str] = WORKER_PRELOAD,
    retry_s: float = 1.0,
    failures: WorkerFailures | None = None,
) -> int:
    """Serve a ``--isolation process`` SuperNode's ClientApp messages from one pre-imported process.

    Flower 1.41's ``flwr-clientapp`` answers exactly one message (it needs the
    one-off token the SuperNode's Runtime API hands out for it, and ends with
    ``flwr_exit``), so the SuperExec of a default (``--isolation subprocess``)
    SuperNode starts a new one, which imports Flower, torch, scikit-learn and the
    suite again, for every message. This worker takes the SuperExec's place: it
    imports all that once, asks the Runtime API for tasks (``AcquireTask``, as
    ``flower-superexec`` does) every ``poll_s`` seconds, and runs each ClientApp
    task with Flower's own ``run_clientapp`` in a process forked for it, so every
    message still gets a fresh process, as before, only without the imports.

    A request that fails transiently (:func:`transient_failure`: the SuperNode
    starting or stopping) is tried again every ``retry_s`` seconds, logged to
    standard error as :class:`WorkerFailures` says. The worker gives up, with a
    one-paragraph message on standard error and :data:`WORKER_FAILED_EXIT`, when a
    module in ``preload`` (the ClientApp) cannot be imported, when a request fails
    in a way a retry cannot fix, or when transient failures last
    ``failures.give_up_after_s``. (A Runtime API of an incompatible Flower version
    may also end the process through Flower's own ``flwr_exit``, which logs why.)

    Returns
    -------
    int
        0 when the SuperNode (``parent_pid``) is gone or on SIGTERM/SIGINT;
        :data:`WORKER_FAILED_EXIT` when it gave up.
    """
    import psutil
    from flwr.proto.runtime_pb2 import AcquireTaskRequest  # type: ignore[attr-defined]
    from flwr.supercore.constant import TaskType
    from flwr.supercore.interceptors import RuntimeVersionHttpInterceptor
    from flwr.supercore.runtime import RuntimeHttpClient
    from flwr.supernode.runtime.run_clientapp import run_clientapp

    failures = failures or WorkerFailures(runtime_api_address)
    for module in preload:
        try:
            importlib.import_module(module)
        except ImportError as err:
            failures.say(
                f"flsuite ClientApp worker: cannot import {module} ({type(err).__name__}: {err}), so this site "
                "cannot run the ClientApp. Install flsuite with the extras of this site's domain in the Python "
                f"environment the SuperNode uses ({sys.executable}), then run `flsuite site join` again."
            )
            return WORKER_FAILED_EXIT
    scenario.available()
    # A task's process pulls its message's objects as soon as the SuperNode has the message, often before the
    # SuperNode has them all; Flower's back-off for that is 1 s, then 2 s, ... (measured: 2-3 s a message).
    import flwr.supernode.runtime.run_clientapp as runtime

    try:
        shorten_pull_backoff(runtime, "pull_and_inflate_object_from_tree")
    except FlowerPatchError as err:
        failures.say(f"flsuite ClientApp worker: {err}")
        return WORKER_FAILED_EXIT
    stop = threading.Event()

    def request_stop(signum: int, frame: Any) -> None:
        stop.set()

    previous = {sig: signal.signal(sig, request_stop) for sig in (signal.SIGTERM, signal.SIGINT)}
    client = RuntimeHttpClient.from_server_address(
        server_address=runtime_api_address,
        insecure=True,  # the SuperNode's Runtime API listens on 127.0.0.1 without TLS, as for its own SuperExec
        root_certificates=None,
        interceptors=[RuntimeVersionHttpInterceptor(component_name="SuperExec")],
        retry_invoker=None,  # a failed request is retried by the loop below, which also watches the SuperNode
    )
    request = AcquireTaskRequest(supported_task_types=[TaskType.CLIENT_APP])
    running: set[int] = set()
    exit_code = 0
    try:
        while not stop.is_set() and (parent_pid is None or psutil.pid_exists(parent_pid)):
            _reap(running)
            try:
                reply = client.AcquireTask(request)
            except Exception as err:  # any failure: logged to stderr (WorkerFailures), retried or given up
                if transient_failure(err) and failures.failed(err):
                    stop.wait(retry_s)
                    continue
                failures.say(failures.gave_up(err, permanent=not transient_failure(err)))
                exit_code = WORKER_FAILED_EXIT
                break
            except SystemExit as done:  # Flower's flwr_exit, e.g. the Runtime API's version is incompatible
                failures.say(failures.gave_up(done, permanent=True))
                exit_code = WORKER_FAILED_EXIT
                break
            failures.succeeded()
            if not (reply.HasField("task") and reply.token):
                stop.wait(poll_s)
                continue
            sys.stdout.flush()
            sys.stderr.flush()
            pid = os.fork()
            if pid == 0:  # the task's own process: Flower's ClientApp runner, then exit without our cleanup
                code = 1
                try:
                    for sig, handler in previous.items():
                        signal.signal(sig, handler)
                    run_clientapp(
                        runtime_api_address=runtime_api_address,
                        token=reply.token,
                        insecure=True,
                        parent_pid=os.getppid(),
                    )
                    code = 0
                except SystemExit as done:  # run_clientapp ends with flwr_exit, i.e. sys.exit
                    code = done.code if isinstance(done.code, int) else 0 if done.code is None else 1
                except BaseException:  # the task's process ends here: its traceback goes to the site's log
                    import traceback

                    traceback.print_exc()
                finally:
                    sys.stdout.flush()
                    sys.stderr.flush()
                    os._exit(code)
            running.add(pid)
    finally:
        client.close()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        for pid in running:  # the SuperNode is gone or we were stopped: so are the tasks
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + 5
        while running and time.monotonic() < deadline:
            _reap(running)
            time.sleep(0.1)
        for pid in running:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        _reap(running)
    return exit_code


def _reap(running: set[int]) -> None:
    """Collect the finished task processes among ``running``."""
    for pid in list(running):
        try:
            done, _ = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            done = pid
        if done:
            running.discard(pid)


def _main(argv: Sequence[str]) -> int:
    """``python -m flcore.deploy.worker clientapp-worker --runtime-api-address HOST:PORT [--parent-pid PID]``."""
    import argparse

    parser = argparse.ArgumentParser(
        prog="python -m flcore.deploy.worker", description="A SuperNode's ClientApp worker."
    )
    parser.add_argument("command", choices=["clientapp-worker"])
    parser.add_argument("--runtime-api-address", required=True, help="the SuperNode's Runtime API (HOST:PORT)")
    parser.add_argument("--parent-pid", type=int, help="the SuperNode's pid: stop when it is gone")
    parser.add_argument("--poll", type=float, default=0.2, help="seconds between requests for a task (default 0.2)")
    args = parser.parse_args(list(argv))
    os.environ.update(QUIET)
    return clientapp_worker(args.runtime_api_address, args.parent_pid, poll_s=args.poll)


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
