"""fedxgb-hist: sites growing XGBoost trees together (real rabit sessions), its strategy, retries, TLS identities."""

from __future__ import annotations

import json
import math
import os
import shutil
import socket
import stat
import threading
import time
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import xgboost as xgb
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from flwr.app import ConfigRecord, Message, MetricRecord, RecordDict

from flcore import keys
from flcore.config import RunConfig, apply_settings
from flcore.data.site import SITE_STATE, FeatureStats
from flcore.deploy.certs import CertBundle, init_certs, pem_private_key
from flcore.deploy.join import JoinOptions, collective_identity, supernode_command
from flcore.exceptions import ConfigError, FlsuiteError, QuorumError
from flcore.experiment.histcost import collective_record
from flcore.federation import collective
from flcore.federation.collective import (
    COLLECTIVE,
    NODE_CA,
    NODE_CLIENT_CERT,
    NODE_CLIENT_KEY,
    NODE_HOST,
    TlsFiles,
    open_session,
    worker_args,
)
from flcore.federation.monitor import RoundRecord
from flcore.federation.rounds import run_rounds
from flcore.federation.strategies import build_strategy
from flcore.federation.strategies.xgbhist import FedXgbHist
from flcore.learning.artifact import TREE_WEIGHTS, model_files
from flcore.learning.xgb import (
    XGBoostModel,
    XGBoostTask,
    booster_bytes,
    booster_from_bytes,
    booster_problem,
    booster_record,
    record_bytes,
    tree_count,
    without_cover,
)
from flcore.learning.xgbsession import SessionFailed, SessionResult, grow_in_subprocess, socket_bytes

#: Small trees, few bins, one thread: a session's cost is its processes' start, not the training.
PARAMS: dict[str, Any] = {
    "objective": "binary:logistic",
    "eval_metric": "logloss",
    "tree_method": "hist",
    "nthread": 1,
    "seed": 0,
    "eta": 0.3,
    "max_depth": 3,
    "max_bin": 16,
}
FEATURES = 6
SITES = ["alpha", "beta", "gamma"]
#: Seconds a session may take before its process is killed (generous: the test machine may be busy).
SESSION_TIMEOUT_S = 180.0


def site_rows(seed: int, n: int) -> tuple[np.ndarray, np.ndarray]:
    """A learnable binary problem: the label follows the first two features, about a quarter positives."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, FEATURES)).astype(np.float32)
    y = (x[:, 0] + 0.5 * x[:, 1] + 0.3 * rng.normal(size=n) > 0.7).astype(np.float32)
    return x, y


#: Each site's own rows (of different sizes).
DATA = {site: site_rows(i, n) for i, (site, n) in enumerate(zip(SITES, (200, 160, 120), strict=True))}


def pooled() -> tuple[np.ndarray, np.ndarray]:
    return np.concatenate([DATA[s][0] for s in SITES]), np.concatenate([DATA[s][1] for s in SITES])


def empty_model() -> bytes:
    """An ensemble without trees whose base score is the pooled positive rate, as the ServerApp starts one."""
    x, y = pooled()
    task = XGBoostTask(booster_params={k: PARAMS[k] for k in ("eta", "max_depth", "max_bin")}, threads=1)
    return booster_bytes(task.init_model(FeatureStats.of(x, y), seed=0).booster)


def run_session(
    model: bytes, trees: int, started: list[str] | None = None, timeout_s: float = SESSION_TIMEOUT_S
) -> tuple[Any, list[SessionResult | BaseException], float]:
    """A rabit session for all of SITES; the ``started`` sites (default: all) each grow in a thread of their own.

    Returns the (closed) session, each started site's result or exception, and the wall time.
    """
    session = open_session("rabit", SITES)
    t0 = time.perf_counter()
    try:
        # The description travels in the train message as JSON; each site adds its own task id.
        described = json.loads(json.dumps(session.worker_args()))
        workers = started if started is not None else SITES
        with ThreadPoolExecutor(max_workers=len(workers)) as pool:
            futures = [
                pool.submit(
                    grow_in_subprocess,
                    PARAMS,
                    DATA[s][0],
                    DATA[s][1],
                    model,
                    trees,
                    worker_args(described, s, {}),
                    timeout_s,
                )
                for s in workers
            ]
            outcomes: list[SessionResult | BaseException] = [f.exception() or f.result() for f in futures]
    finally:
        session.close()
    return session, outcomes, time.perf_counter() - t0


def results(outcomes: list[SessionResult | BaseException]) -> list[SessionResult]:
    for outcome in outcomes:
        if isinstance(outcome, BaseException):
            raise outcome
    return outcomes  # type: ignore[return-value]


def logloss(y: np.ndarray, p: np.ndarray) -> float:
    p = np.clip(p.astype(np.float64), 1e-16, 1 - 1e-16)
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))


@pytest.fixture(scope="module")
def first_session() -> tuple[Any, list[SessionResult], list[SessionResult]]:
    """Three sites grow 3 trees together from an empty ensemble; in another session at once, 6 trees.

    The two sessions run side by side (each with its own tracker) to save the tests' wall time.
    """
    with ThreadPoolExecutor(max_workers=2) as pool:
        three, six = pool.submit(run_session, empty_model(), 3), pool.submit(run_session, empty_model(), 6)
        session, outcomes, _ = three.result()
        _, outcomes_six, _ = six.result()
    return session, results(outcomes), results(outcomes_six)


# --------------------------------------------------------------------------------------
# 1-3. Real sessions: rabit tracker + one process per site
# --------------------------------------------------------------------------------------


def test_three_sites_grow_the_same_trees_together(first_session: tuple[Any, list[SessionResult], Any]) -> None:
    session, grown, _ = first_session
    assert len(grown) == 3
    # Every site ends the session holding the same ensemble, byte for byte, with exactly 3 new trees.
    assert len({r.booster for r in grown}) == 1
    raw = grown[0].booster
    assert booster_problem(raw) is None
    assert tree_count(raw) == tree_count(empty_model()) + 3 == 3
    assert booster_from_bytes(raw).num_boosted_rounds() == 3
    # The train loss is the federation's (allreduced), the same at every site: the pooled rows' logloss.
    x, y = pooled()
    losses = {r.train_loss for r in grown}
    assert len(losses) == 1 and math.isfinite(grown[0].train_loss)
    pooled_loss = logloss(y, booster_from_bytes(raw).predict(xgb.DMatrix(x)))
    assert grown[0].train_loss == pytest.approx(pooled_loss, rel=1e-4)
    # ... and not one site's own: each site's loss differs from the pooled one.
    own = [logloss(DATA[s][1], booster_from_bytes(raw).predict(xgb.DMatrix(DATA[s][0]))) for s in SITES]
    assert all(abs(o - pooled_loss) > 1e-6 for o in own)
    for r in grown:
        assert r.seconds > 0
        if socket_bytes() is None:  # the kernel does not count bytes: none are reported
            assert r.bytes_sent is None and r.bytes_received is None
        else:
            assert r.bytes_sent is not None and r.bytes_sent > 0
            assert r.bytes_received is not None and r.bytes_received > 0
    # The tracker's process is gone once the session is closed.
    assert session.process.poll() is not None
    with pytest.raises(ProcessLookupError):
        os.kill(session.process.pid, 0)


def test_two_sessions_of_three_trees_equal_one_session_of_six(
    first_session: tuple[Any, list[SessionResult], list[SessionResult]],
) -> None:
    _, grown, six = first_session
    _, continued, _ = run_session(grown[0].booster, 3)
    second = results(continued)
    assert len({r.booster for r in second}) == 1 and len({r.booster for r in six}) == 1
    assert tree_count(second[0].booster) == 6
    # A round is one session continuing the previous round's model: nothing is lost or redone between them.
    assert second[0].booster == six[0].booster


def test_a_site_that_never_joins_fails_the_session_within_its_timeout() -> None:
    timeout = 8.0
    session, outcomes, seconds = run_session(empty_model(), 2, started=SITES[:2], timeout_s=timeout)
    assert len(outcomes) == 2
    for outcome in outcomes:
        assert isinstance(outcome, SessionFailed)
        assert "did not finish within 8 s" in str(outcome)
    assert timeout <= seconds < timeout + 30  # killed at the timeout, not left hanging
    assert session.process.poll() is not None  # the tracker that waited for the third site is stopped


# --------------------------------------------------------------------------------------
# 4. socket_bytes
# --------------------------------------------------------------------------------------


def test_socket_bytes_counts_a_loopback_transfer() -> None:
    if socket_bytes() is None:
        pytest.skip("this kernel does not report TCP byte counts")
    n = 300_000
    with socket.create_server(("127.0.0.1", 0)) as server:
        client = socket.create_connection(server.getsockname()[:2])
        peer, _ = server.accept()
        with client, peer:
            before = socket_bytes()
            assert before is not None
            sender = threading.Thread(target=client.sendall, args=(b"x" * n,))
            sender.start()
            got = 0
            while got < n:
                got += len(peer.recv(65536))
            sender.join()
            deadline = time.monotonic() + 5
            while True:  # the peer's acknowledgement may trail the data by a moment
                after = socket_bytes()
                assert after is not None
                if after[0] - before[0] >= n or time.monotonic() > deadline:
                    break
                time.sleep(0.01)
    sent, received = after[0] - before[0], after[1] - before[1]
    # At least N each way, and not counted twice (both ends of the connection are this process's sockets).
    assert n <= sent < 2 * n
    assert n <= received < 2 * n


# --------------------------------------------------------------------------------------
# 5-6. FedXgbHist and the round loop's retries, with fake sessions and a fake grid
# --------------------------------------------------------------------------------------


class FakeSession:
    """What FedXgbHist needs of a session; counts its closes."""

    def __init__(self, sites: list[str]) -> None:
        self.sites = sites
        self.closed = 0

    def worker_args(self) -> dict[str, Any]:
        return {"kind": "rabit", "port": 4242, "sites": self.sites}

    def close(self) -> None:
        self.closed += 1

    def seconds(self) -> float:
        return 1.5


class Opener:
    """A session opener that records the sessions it opened."""

    def __init__(self) -> None:
        self.opened: list[FakeSession] = []

    def __call__(self, sites: list[str]) -> FakeSession:
        self.opened.append(FakeSession(list(sites)))
        return self.opened[-1]


def tiny_booster(trees: int = 1) -> bytes:
    x, y = pooled()
    return booster_bytes(xgb.train(PARAMS, xgb.DMatrix(x, label=y), num_boost_round=trees))


def train_reply(msg: Message, raw: bytes, site: str) -> Message:
    content = RecordDict(
        {
            keys.ARRAYS: booster_record(raw),
            keys.METRICS: MetricRecord({keys.NUM_EXAMPLES: 100, keys.TRAIN_LOSS: 0.25}),
            keys.SITE: ConfigRecord({keys.SITE_NAME: site}),
        }
    )
    return Message(content, reply_to=msg)


class NamedGrid:
    """Nodes with site names; every train message is answered with ``booster`` except by the nodes in ``silent``.

    ``silent`` holds one set of silent nodes per training step, in order (the last one repeats).
    """

    def __init__(self, names: dict[int, str], booster: bytes = b"", silent: list[set[int]] | None = None) -> None:
        self.names = names
        self.booster = booster
        self.silent = silent or [set()]
        self.train_steps = 0

    def get_node_ids(self) -> list[int]:
        return list(self.names)

    def site_name(self, node: int) -> str:
        return self.names[node]

    def push_messages(self, messages: Iterable[Message]) -> list[str]:
        raise NotImplementedError  # answers send_and_receive only, as the in-process engine's grid does

    def send_and_receive(self, messages: Iterable[Message], *, timeout: float | None = None) -> list[Message]:
        messages = list(messages)
        if messages and messages[0].metadata.message_type == "train":
            silent = self.silent[min(self.train_steps, len(self.silent) - 1)]
            self.train_steps += 1
            return [
                train_reply(m, self.booster, self.names[m.metadata.dst_node_id])
                for m in messages
                if m.metadata.dst_node_id not in silent
            ]
        out = []
        for m in messages:
            content = RecordDict(
                {
                    keys.METRICS: MetricRecord({keys.NUM_EXAMPLES: 10, keys.EVAL_LOSS: 0.3}),
                    keys.SITE: ConfigRecord({keys.SITE_NAME: self.names[m.metadata.dst_node_id]}),
                }
            )
            out.append(Message(content, reply_to=m))
        return out


@pytest.mark.usefixtures("flower_task")
def test_configure_train_opens_one_session_for_every_site_in_name_order() -> None:
    opener = Opener()
    strategy = FedXgbHist(open_session=opener, min_train_nodes=3)  # type: ignore[arg-type]
    grid = NamedGrid({7: "gamma", 3: "alpha", 5: "beta"})
    start = booster_record(empty_model())
    messages = list(strategy.configure_train(4, start, ConfigRecord(), grid))  # type: ignore[arg-type]
    # Ranks follow the sites' names, not the node ids.
    assert [s.sites for s in opener.opened] == [["alpha", "beta", "gamma"]]
    assert [m.metadata.dst_node_id for m in messages] == [3, 5, 7]
    assert all(m.metadata.message_type == "train" for m in messages)
    for m in messages:
        config = m.content[keys.CONFIG]
        assert json.loads(str(config[COLLECTIVE])) == opener.opened[0].worker_args()  # type: ignore[index]
        assert config[keys.SERVER_ROUND] == 4  # type: ignore[index]
        assert record_bytes(m.content[keys.ARRAYS]) == record_bytes(start)  # type: ignore[arg-type]
    # A new round's session replaces the last one, which is closed first.
    list(strategy.configure_train(5, start, ConfigRecord(), grid))  # type: ignore[arg-type]
    assert [s.closed for s in opener.opened] == [1, 0]


@pytest.mark.usefixtures("flower_task")
def test_configure_train_with_too_few_sites_opens_no_session() -> None:
    opener = Opener()
    strategy = FedXgbHist(open_session=opener, min_train_nodes=3)  # type: ignore[arg-type]
    grid = NamedGrid({1: "alpha", 2: "beta"})
    assert list(strategy.configure_train(1, booster_record(empty_model()), ConfigRecord(), grid)) == []  # type: ignore[arg-type]
    assert opener.opened == []


@pytest.mark.usefixtures("flower_task")
def test_aggregate_train_keeps_the_agreed_ensemble_and_names_the_odd_site() -> None:
    opener = Opener()
    disagreed: list[tuple[int, str, str]] = []
    strategy = FedXgbHist(
        open_session=opener,  # type: ignore[arg-type]
        on_disagree=lambda r, site, why: disagreed.append((r, site, why)),
        min_train_nodes=3,
    )
    grid = NamedGrid({1: "alpha", 2: "beta", 3: "gamma"})
    messages = list(strategy.configure_train(2, booster_record(empty_model()), ConfigRecord(), grid))  # type: ignore[arg-type]
    agreed, odd = tiny_booster(1), tiny_booster(2)
    replies = [
        train_reply(messages[0], agreed, "alpha"),
        train_reply(messages[1], odd, "beta"),
        train_reply(messages[2], agreed, "gamma"),
    ]
    arrays, metrics = strategy.aggregate_train(2, replies)
    assert arrays is not None and record_bytes(arrays) == agreed
    assert [(r, site) for r, site, _ in disagreed] == [(2, "beta")]
    assert "differs" in disagreed[0][2]
    assert metrics is not None and metrics[keys.TRAIN_LOSS] == pytest.approx(0.25)
    # The round's session is closed and its time kept.
    assert opener.opened[0].closed == 1 and strategy.session is None
    assert strategy.session_seconds == {2: 1.5}


def _retry_setup(silent: list[set[int]]) -> tuple[Any, NamedGrid, Opener, list[tuple[int, int, list[str]]]]:
    opener = Opener()
    strategy = build_strategy(
        apply_settings(RunConfig(), {"strategy": "fedxgb-hist"}), 3, open_session=opener, on_disagree=None
    )
    grid = NamedGrid({1: "alpha", 2: "beta", 3: "gamma"}, booster=tiny_booster(1), silent=silent)
    retries: list[tuple[int, int, list[str]]] = []
    return strategy, grid, opener, retries


def _rounds(strategy: Any, grid: NamedGrid, retries: list[Any], after: list[int], min_sites: int = 3) -> Any:
    return run_rounds(
        strategy,
        grid,  # type: ignore[arg-type]
        booster_record(empty_model()),
        first_round=1,
        num_rounds=1,
        timeout=1.0,
        min_sites=min_sites,
        train_config=ConfigRecord(),
        evaluate_config=ConfigRecord(),
        after_round=lambda r, arrays: after.append(r),
        site_names=lambda ids: [grid.names[n] for n in ids],
        on_retry=lambda r, attempt, silent: retries.append((r, attempt, silent)),
    )


@pytest.mark.usefixtures("flower_task")
def test_a_training_step_a_site_missed_is_tried_again() -> None:
    strategy, grid, opener, retries = _retry_setup([{2}, set()])  # beta silent in the first attempt only
    after: list[int] = []
    arrays = _rounds(strategy, grid, retries, after)
    # round_attempts is read through the screen that wraps FedXgbHist.
    assert grid.train_steps == 2
    assert retries == [(1, 1, ["beta"])]
    assert len(opener.opened) == 2 and opener.opened[0].closed == 1  # a fresh session for the retry
    assert after == [1] and record_bytes(arrays) == grid.booster


@pytest.mark.usefixtures("flower_task")
def test_a_round_incomplete_in_every_attempt_still_fails_the_quorum() -> None:
    strategy, grid, opener, retries = _retry_setup([{3}])  # gamma never answers
    after: list[int] = []
    with pytest.raises(QuorumError, match=r"Round 1: only 2 of 3 sampled sites answered") as err:
        _rounds(strategy, grid, retries, after)
    assert err.value.missing == ["gamma"]
    assert grid.train_steps == FedXgbHist.round_attempts == 3
    assert retries == [(1, 1, ["gamma"]), (1, 2, ["gamma"])]  # not after the last attempt
    assert len(opener.opened) == 3  # a session per attempt
    assert after == []


@pytest.mark.usefixtures("flower_task")
def test_a_round_that_fails_its_quorum_closes_its_session() -> None:
    strategy, grid, opener, retries = _retry_setup([{3}])
    with pytest.raises(QuorumError):
        _rounds(strategy, grid, retries, [])
    assert [s.closed for s in opener.opened] == [1, 1, 1]


# --------------------------------------------------------------------------------------
# 7-9. Communicator arguments, the strategy's minimum, and the ServerApp's opener
# --------------------------------------------------------------------------------------


def test_worker_args_for_the_rabit_tracker() -> None:
    session = {"kind": "rabit", "port": 9091, "sites": SITES}
    assert worker_args(session, "beta", {}) == {
        "dmlc_tracker_uri": "127.0.0.1",
        "dmlc_tracker_port": 9091,
        "dmlc_task_id": "beta",
    }


def test_worker_args_for_the_federated_server() -> None:
    session = {"kind": "federated", "port": 9093, "sites": SITES}
    with pytest.raises(ConfigError, match=r"coordinator-host, ca-cert, xgb-client-cert, xgb-client-key"):
        worker_args(session, "beta", {})
    with pytest.raises(ConfigError, match=r"needs ca-cert, xgb-client-cert, xgb-client-key in"):
        worker_args(session, "beta", {NODE_HOST: "fl.example.org"})
    node = {
        NODE_HOST: "fl.example.org",
        NODE_CA: "/c/ca.crt",
        NODE_CLIENT_CERT: "/c/b.crt",
        NODE_CLIENT_KEY: "/c/b.pem",
    }
    args = {site: worker_args(session, site, node) for site in SITES}
    assert args["gamma"] == {
        "dmlc_communicator": "federated",
        "federated_server_address": "fl.example.org:9093",
        "federated_world_size": 3,
        "federated_rank": 2,
        "federated_server_cert_path": "/c/ca.crt",
        "federated_client_key_path": "/c/b.pem",
        "federated_client_cert_path": "/c/b.crt",
    }
    assert [args[s]["federated_rank"] for s in SITES] == [0, 1, 2]


def test_worker_args_refuses_a_site_outside_the_session() -> None:
    with pytest.raises(FlsuiteError, match=r"site 'delta' is not among this session's sites \(alpha, beta, gamma\)"):
        worker_args({"kind": "rabit", "port": 1, "sites": SITES}, "delta", {})


def test_fedxgb_hist_needs_three_sites() -> None:
    cfg = apply_settings(RunConfig(), {"strategy": "fedxgb-hist"})
    with pytest.raises(ConfigError, match=r"'fedxgb-hist' needs at least 3 sites per round"):
        build_strategy(cfg, 2)


def test_session_opener_in_simulation_opens_rabit(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[Any, ...]] = []
    monkeypatch.setattr(collective, "open_session", lambda *args: calls.append(args))
    collective.session_opener(False, None, 0)(SITES)
    assert calls == [("rabit", SITES)]


def test_session_opener_in_a_deployment_needs_tls_and_the_federated_build(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    with pytest.raises(ConfigError, match=r"mutual TLS.*--certs"):
        collective.session_opener(True, None, 9093)
    tls = TlsFiles(tmp_path / "superlink.crt", tmp_path / "superlink.key", tmp_path / "ca.crt")
    monkeypatch.setattr(collective, "federated_available", lambda: False)
    with pytest.raises(FlsuiteError, match=r"pip install --no-deps 'xgboost==3\.2\.0'") as err:
        collective.session_opener(True, tls, 9093)
    assert not isinstance(err.value, ConfigError)
    # With the federated build: the federated server, with the coordinator's certificates and port.
    calls: list[tuple[Any, ...]] = []
    monkeypatch.setattr(collective, "federated_available", lambda: True)
    monkeypatch.setattr(collective, "open_session", lambda *args: calls.append(args))
    collective.session_opener(True, tls, 9093)(SITES)
    assert calls == [("federated", SITES, tls, 9093)]


def test_open_session_refuses_the_federated_server_without_tls() -> None:
    with pytest.raises(ConfigError, match="only with mutual TLS"):
        open_session("federated", SITES)


# --------------------------------------------------------------------------------------
# 10. Cover statistics
# --------------------------------------------------------------------------------------


def _trees(raw: bytes) -> list[dict[str, Any]]:
    return json.loads(raw)["learner"]["gradient_booster"]["model"]["trees"]  # type: ignore[no-any-return]


def test_without_cover_zeroes_every_hessian_sum_and_keeps_predictions_bit_identical() -> None:
    raw = tiny_booster(4)
    stripped = without_cover(raw)
    before, after = _trees(raw), _trees(stripped)
    assert any(h > 0 for t in before for h in t["sum_hessian"])  # there were covers to remove
    assert len(after) == len(before) == 4
    for old, new in zip(before, after, strict=True):
        assert new["sum_hessian"] == [0.0] * len(old["sum_hessian"])
        for field in ("split_conditions", "split_indices", "left_children", "right_children", "base_weights"):
            assert new[field] == old[field]
    assert booster_problem(stripped) is None
    x = np.concatenate([pooled()[0], site_rows(99, 50)[0]])
    for margin in (False, True):
        p_old = booster_from_bytes(raw).predict(xgb.DMatrix(x), output_margin=margin)
        p_new = booster_from_bytes(stripped).predict(xgb.DMatrix(x), output_margin=margin)
        assert p_old.tobytes() == p_new.tobytes()


def test_exported_tree_model_has_no_cover() -> None:
    booster = booster_from_bytes(tiny_booster(3))
    files = model_files("xgboost", XGBoostModel(booster))
    assert list(files) == [TREE_WEIGHTS]
    trees = _trees(files[TREE_WEIGHTS])
    assert len(trees) == 3 and all(h == 0.0 for t in trees for h in t["sum_hessian"])
    assert booster_problem(files[TREE_WEIGHTS]) is None
    # The model in memory keeps its covers (SHAP values need them); only the export drops them.
    assert any(h > 0 for t in _trees(booster_bytes(booster)) for h in t["sum_hessian"])


# --------------------------------------------------------------------------------------
# 11-12. Client certificates and a bank's identity in the federated communicator
# --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> CertBundle:
    return init_certs(tmp_path_factory.mktemp("pki") / "certs", SITES)


def _public_bytes(key: Any) -> bytes:
    return key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)  # type: ignore[no-any-return]


def test_every_site_gets_a_client_certificate_for_its_key(bundle: CertBundle) -> None:
    ca = x509.load_pem_x509_certificate(bundle.ca_cert.read_bytes())
    for site in SITES:
        path = bundle.root / "sites" / f"{site}.crt"
        cert = x509.load_pem_x509_certificate(path.read_bytes())
        cert.verify_directly_issued_by(ca)  # raises unless the CA signed it
        assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == site
        usage = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
        assert list(usage) == [ExtendedKeyUsageOID.CLIENT_AUTH]
        assert cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is False
        ssh_key = serialization.load_ssh_private_key(bundle.site_keys[site].read_bytes(), password=None)
        assert _public_bytes(cert.public_key()) == _public_bytes(ssh_key.public_key())
        pem = serialization.load_pem_private_key(pem_private_key(bundle.site_keys[site]), password=None)
        assert _public_bytes(pem.public_key()) == _public_bytes(cert.public_key())
    # Each site's certificate is its own.
    certs = {x509.load_pem_x509_certificate((bundle.root / "sites" / f"{s}.crt").read_bytes()) for s in SITES}
    assert len({_public_bytes(c.public_key()) for c in certs}) == 3


def _join(bundle: CertBundle, data: Path, superlink: str = "coordinator.example:9092", **kw: Any) -> JoinOptions:
    fields: dict[str, Any] = {"key": bundle.site_keys["beta"], "ca": bundle.ca_cert, **kw}
    return JoinOptions(superlink=superlink, domain="finance", data=data, clientapp="warm", **fields)


def test_collective_identity_from_the_join_options(bundle: CertBundle, tmp_path: Path) -> None:
    data = tmp_path / "beta"
    data.mkdir()
    node = collective_identity(_join(bundle, data))
    pem = data.resolve() / SITE_STATE / "xgb-client.key"
    assert node == {
        NODE_HOST: "coordinator.example",
        NODE_CA: bundle.ca_cert.resolve(),
        NODE_CLIENT_CERT: (bundle.root / "sites" / "beta.crt").resolve(),
        NODE_CLIENT_KEY: pem,
    }
    assert stat.S_IMODE(pem.stat().st_mode) == 0o600
    key = serialization.load_pem_private_key(pem.read_bytes(), password=None)
    ssh_key = serialization.load_ssh_private_key(bundle.site_keys["beta"].read_bytes(), password=None)
    assert _public_bytes(key.public_key()) == _public_bytes(ssh_key.public_key())
    # An IPv6 SuperLink address: the host without its brackets.
    assert collective_identity(_join(bundle, data, superlink="[::1]:9092"))[NODE_HOST] == "::1"
    # The SuperNode's node config carries them.
    cmd = supernode_command(_join(bundle, data), 9999)
    config = cmd[cmd.index("--node-config") + 1]
    assert 'coordinator-host="coordinator.example"' in config
    assert f'xgb-client-key="{pem}"' in config


def test_no_collective_identity_without_tls_or_certificate(bundle: CertBundle, tmp_path: Path) -> None:
    data = tmp_path / "beta"
    data.mkdir()
    assert collective_identity(_join(bundle, data, key=None, ca=None, insecure=True)) == {}
    lone = tmp_path / "keys" / "beta.key"  # the key without its certificate beside it
    lone.parent.mkdir()
    shutil.copy(bundle.site_keys["beta"], lone)
    assert collective_identity(_join(bundle, data, key=lone)) == {}
    assert not (data / SITE_STATE / "xgb-client.key").exists()  # no private key written for nothing
    cmd = supernode_command(_join(bundle, data, key=lone), 9999)
    assert "coordinator-host" not in cmd[cmd.index("--node-config") + 1]


# --------------------------------------------------------------------------------------
# histcost: what the communicator cost each site
# --------------------------------------------------------------------------------------


def test_collective_record_sums_each_sites_cost() -> None:
    cfg = apply_settings(RunConfig(), {"strategy": "fedxgb-hist", "local-epochs": 2})
    cost = {keys.XGB_SECONDS: 0.5}
    rounds = [
        RoundRecord(
            1,
            wall_time_s=2.0,
            per_site_train={
                "alpha": {**cost, keys.XGB_BYTES_SENT: 100, keys.XGB_BYTES_RECEIVED: 200},
                "beta": {**cost, keys.XGB_BYTES_SENT: 50, keys.XGB_BYTES_RECEIVED: 70},
            },
        ),
        RoundRecord(
            2,
            wall_time_s=3.0,
            per_site_train={"alpha": {**cost, keys.XGB_BYTES_SENT: 300, keys.XGB_BYTES_RECEIVED: 200}},
        ),
        RoundRecord(3, wall_time_s=1.0),  # nobody trained: no trees
    ]
    record = collective_record(rounds, cfg, SimpleNamespace(xgb_max_bin=32), deployed=False)
    assert record["trees"] == 4 and record["trees_per_round"] == 2 and record["max_bin"] == 32
    assert record["bytes_measured"] is True
    alpha = record["per_site"]["alpha"]
    assert (alpha["bytes_sent"], alpha["bytes_received"], alpha["session_seconds"]) == (400, 400, 1.0)
    assert alpha["bytes_per_tree"] == 200  # (400 + 400) / 4 trees
    assert record["per_site"]["beta"]["bytes_sent"] == 50
    assert record["wall_time_s"] == 6.0 and record["seconds_per_tree"] == 1.5
    assert "rabit" in record["communicator"]
    deployed = collective_record(rounds[:1], cfg, None, deployed=True)
    assert "mutual TLS" in deployed["communicator"] and deployed["max_bin"] is None
    unmeasured = [RoundRecord(1, per_site_train={"alpha": dict(cost)})]
    assert collective_record(unmeasured, cfg, None, deployed=False)["bytes_measured"] is False
