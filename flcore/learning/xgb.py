"""Gradient-boosted trees (XGBoost) as a federated task, exchanged the way Flower's FedXgb strategies expect.

A booster travels as ``bst.save_raw("json")`` in one ``uint8`` array (Flower's
``FedXgbBagging`` and ``FedXgbCyclic`` read the array named ``"0"``).

* **Bagging** (``fedxgb-bagging``): every round, each site loads the global
  ensemble, boosts ``local-epochs`` (recommended: 1) rounds on its own data and
  sends only the trees it added. The server appends every site's new tree to the
  ensemble (Flower appends the first tree of each reply, hence one local round).
* **Cyclic** (``fedxgb-cyclic``): one site per round, in turn, boosts on the
  whole ensemble and sends it back; the server takes it as the new global model.
* **Histogram** (``fedxgb-hist``, the default): every round, all sites grow
  ``local-epochs`` trees together with XGBoost's distributed learner
  (:meth:`XGBoostTask.fit_together`, :mod:`flcore.federation.strategies.xgbhist`); each
  sends back the whole ensemble, the same at every site.

The global ensemble starts with no tree and the federation's fraud rate as its
base score (from the counts of the statistics round), so every site's trees
correct the same starting point. The three arms use the same booster parameters
and grow the same number of trees (:meth:`XGBoostTask.baseline_rounds`).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from flwr.app import ArrayRecord

from flcore import keys
from flcore.config import RunConfig
from flcore.data.site import FeatureStats, SiteData
from flcore.exceptions import ConfigError
from flcore.learning import metrics

#: Strategies that exchange boosters instead of averaging arrays.
TREE_STRATEGIES = ("fedxgb-hist", "fedxgb-bagging", "fedxgb-cyclic")


@dataclass
class XGBoostModel:
    """A booster and the number of trees it held when it was loaded (its own trees come after)."""

    booster: Any  # xgboost.Booster
    loaded_trees: int = 0

    @property
    def trees(self) -> int:
        return int(self.booster.num_boosted_rounds())


def _torch_threads() -> int:
    import torch

    return max(1, torch.get_num_threads())


def booster_bytes(booster: Any) -> bytes:
    """The booster as the JSON bytes Flower's tree strategies exchange."""
    return bytes(booster.save_raw("json"))


def booster_from_bytes(raw: bytes) -> Any:
    """Inverse of :func:`booster_bytes`."""
    import xgboost as xgb

    return xgb.Booster(model_file=bytearray(raw))


def booster_record(raw: bytes) -> ArrayRecord:
    """One ``uint8`` array named ``"0"``, as ``FedXgbBagging`` and ``FedXgbCyclic`` expect."""
    return ArrayRecord([np.frombuffer(raw, dtype=np.uint8)])


def is_booster(arrays: ArrayRecord) -> bool:
    """Whether ``arrays`` is a booster record: a single ``uint8`` array (what the tree strategies exchange)."""
    return len(arrays) == 1 and next(iter(arrays.values())).numpy().dtype == np.uint8  # type: ignore[union-attr]


def record_bytes(arrays: ArrayRecord) -> bytes:
    """Inverse of :func:`booster_record`."""
    if len(arrays) != 1:
        raise ValueError(f"a booster travels as exactly one array, got {len(arrays)}")
    return next(iter(arrays.values())).numpy().tobytes()  # type: ignore[union-attr]


def _reject_constant(name: str) -> float:
    raise ValueError(f"non-finite number {name}")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"non-finite number {text}")
    return value


def booster_problem(raw: bytes) -> str | None:
    """Why a booster received from a site cannot be used, or ``None`` if it can.

    Checks that every number in it is finite (a NaN or infinite leaf would make every
    prediction NaN or infinite), that it holds what Flower's tree merge reads, and
    that XGBoost itself loads it (so a malformed ensemble cannot break the sites that
    load the merged model next round).
    """
    try:
        model = json.loads(raw, parse_constant=_reject_constant, parse_float=_finite_float)
        gbtree = model["learner"]["gradient_booster"]["model"]
        trees, param = gbtree["trees"], gbtree["gbtree_model_param"]
        int(param["num_trees"]), int(param["num_parallel_tree"])
        list(gbtree["iteration_indptr"]), list(gbtree["tree_info"])
    except RecursionError:  # JSON nested deeper than Python's parser goes: no booster is
        return "not XGBoost JSON (nested too deeply)"
    except ValueError as err:
        return f"the booster holds a {str(err).split(':')[0]}" if "non-finite" in str(err) else "not XGBoost JSON"
    except (KeyError, TypeError):
        return "not an XGBoost tree ensemble (JSON without its learner, trees or tree parameters)"
    if not isinstance(trees, list):
        return "not an XGBoost tree ensemble (trees is not a list)"
    try:
        booster_from_bytes(raw)
    except ValueError as err:  # XGBoostError is a ValueError: what XGBoost refuses, the sites could not load
        return f"XGBoost cannot load it: {(str(err).splitlines() or [''])[0][:200]}"
    return None


def perturb_leaves(raw: bytes, first_tree: int, change: Callable[[np.ndarray], np.ndarray]) -> bytes:
    """The booster with ``change`` applied to the leaf values of trees ``first_tree`` onwards.

    A tree's contribution to the margin is its leaf values, so scaling, flipping or
    replacing them is to trees what the same operation is to a weight update.
    """
    model = json.loads(raw)
    trees = model["learner"]["gradient_booster"]["model"]["trees"]
    for tree in trees[first_tree:]:
        leaves = [i for i, child in enumerate(tree["left_children"]) if child == -1]
        values = change(np.asarray([tree["split_conditions"][i] for i in leaves], dtype=np.float64))
        for i, v in zip(leaves, values.tolist(), strict=True):
            tree["split_conditions"][i] = v
            tree["base_weights"][i] = v
    return json.dumps(model).encode()


def without_cover(raw: bytes) -> bytes:
    """The booster with every node's cover (``sum_hessian``: its training rows' hessian sum) set to zero.

    A node's cover is close to a count of the training rows that reached it
    (``p(1-p)`` per row under logistic loss), so a federated model's covers tell whoever
    holds it how many of the federation's records fall in each region of the feature
    space. Predictions do not use them (they are unchanged, bit for bit); SHAP values
    (``pred_contribs``) do, and come out undefined (NaN) without them.
    """
    model = json.loads(raw)
    for tree in model["learner"]["gradient_booster"]["model"]["trees"]:
        tree["sum_hessian"] = [0.0] * len(tree["sum_hessian"])
    return json.dumps(model, separators=(",", ":")).encode()


def tree_count(raw: bytes) -> int:
    """Trees in a booster's JSON."""
    return len(json.loads(raw)["learner"]["gradient_booster"]["model"]["trees"])


@dataclass(frozen=True)
class XGBoostTask:
    """Binary classification with gradient-boosted trees (``binary:logistic``).

    Parameters
    ----------
    booster_params : mapping
        XGBoost training parameters (``eta``, ``max_depth``, ...); the objective,
        base score, seed and thread count are set here.
    threads : int
        Threads XGBoost may use; 0: as many as torch may use in this process (1 per
        virtual site in simulation).
    threshold_rule : str or None
        ``"youden"``: an operating point is chosen on validation data by Youden's J;
        None: threshold-free metrics only.
    """

    booster_params: Mapping[str, Any] = field(default_factory=dict)
    threads: int = 0
    primary_metric: str = keys.PR_AUC
    threshold_rule: str | None = None
    threshold_scope: str = "pooled"
    score_kind: str = "probability"
    model_family: str = "xgboost"

    def _params(self, seed: int) -> dict[str, Any]:
        return {
            **self.booster_params,
            "objective": "binary:logistic",
            "eval_metric": "logloss",
            "tree_method": "hist",
            "nthread": self.threads or _torch_threads(),
            "seed": seed,
        }

    def init_model(self, stats: FeatureStats, seed: int) -> XGBoostModel:
        """An ensemble without trees whose base score is the positive rate of ``stats`` (within [1e-4, 1 - 1e-4])."""
        import xgboost as xgb

        n_features = int(np.asarray(stats.total).shape[0])
        rate = stats.positives / stats.count if stats.count else 0.5
        params = {**self._params(seed), "base_score": float(np.clip(rate, 1e-4, 1 - 1e-4))}
        empty = xgb.DMatrix(np.zeros((1, n_features), dtype=np.float32), label=np.zeros(1))
        return XGBoostModel(xgb.train(params, empty, num_boost_round=0))

    def fit(
        self,
        model: XGBoostModel,
        data: SiteData,
        cfg: RunConfig,
        *,
        first_round: int,
        num_rounds: int,
        seed: int,
        proximal_mu: float = 0.0,
        dp: Any = None,
        on_round: Callable[[int], None] | None = None,
    ) -> dict[str, float]:
        """Add ``num_rounds * local-epochs`` boosting rounds on ``data`` to the ensemble."""
        import xgboost as xgb

        if dp is not None:
            raise ConfigError("XGBoost trains without DP-SGD; set privacy=none for model=xgboost.")
        dtrain = xgb.DMatrix(data.x, label=data.y)
        history: dict[str, Any] = {}
        model.loaded_trees = model.trees
        callbacks = [_every_round(model, on_round, cfg.local_epochs)] if on_round is not None else None
        model.booster = xgb.train(
            self._params(seed),
            dtrain,
            num_boost_round=num_rounds * cfg.local_epochs,
            xgb_model=model.booster,
            evals=[(dtrain, "train")],
            evals_result=history,
            verbose_eval=False,
            callbacks=callbacks,
        )
        return {keys.TRAIN_LOSS: float(history["train"]["logloss"][-1])}

    def fit_together(
        self,
        model: XGBoostModel,
        data: SiteData,
        cfg: RunConfig,
        communicator: Mapping[str, Any],
        *,
        seed: int,
    ) -> dict[str, float]:
        """Grow ``local-epochs`` trees on ``data`` together with the other sites of a session (``fedxgb-hist``).

        ``communicator`` holds this site's ``xgboost.collective.init`` keys. The
        session runs in its own process (:func:`flcore.learning.xgbsession.grow_in_subprocess`),
        killed after ``reply-timeout`` seconds. The metrics add the session's seconds
        and the bytes this site sent and received on the communicator's sockets.

        Raises
        ------
        SessionFailed
            When the session did not finish (another site left it, or the timeout).
        """
        from flcore.learning.xgbsession import grow_in_subprocess

        model.loaded_trees = model.trees
        result = grow_in_subprocess(
            self._params(seed),
            data.x,
            data.y,
            booster_bytes(model.booster),
            cfg.local_epochs,
            communicator,
            timeout_s=cfg.reply_timeout,
        )
        model.booster = booster_from_bytes(result.booster)
        out = {keys.TRAIN_LOSS: result.train_loss, keys.XGB_SECONDS: result.seconds}
        if result.bytes_sent is not None and result.bytes_received is not None:
            out.update({keys.XGB_BYTES_SENT: result.bytes_sent, keys.XGB_BYTES_RECEIVED: result.bytes_received})
        return out

    def predict(self, model: XGBoostModel, x: np.ndarray) -> np.ndarray:
        import xgboost as xgb

        return np.asarray(model.booster.predict(xgb.DMatrix(x)), dtype=np.float64)

    def choose_threshold(self, y_val: np.ndarray, scores_val: np.ndarray) -> float | None:
        return metrics.youden_threshold(y_val, scores_val) if self.threshold_rule == "youden" else None

    def score(self, y: np.ndarray, scores: np.ndarray, threshold: float | np.ndarray | None = None) -> dict[str, Any]:
        from flcore.learning.training import bce_loss

        out: dict[str, Any] = metrics.binary_metrics(y, scores)
        out["loss"] = bce_loss(scores, y)
        if self.threshold_rule is not None:
            metrics.with_operating_point(out, y, scores, threshold)
        return out

    # -- exchange --------------------------------------------------------------------
    def model_arrays(self, model: XGBoostModel) -> ArrayRecord:
        """The whole ensemble."""
        return booster_record(booster_bytes(model.booster))

    def load_model_arrays(self, model: XGBoostModel, arrays: ArrayRecord) -> None:
        model.booster = booster_from_bytes(record_bytes(arrays))
        model.loaded_trees = model.trees

    def update_arrays(self, model: XGBoostModel, cfg: RunConfig) -> ArrayRecord:
        """What a site sends after training: its new trees (bagging) or the whole ensemble (cyclic, hist)."""
        if cfg.strategy != "fedxgb-bagging":
            return self.model_arrays(model)
        return booster_record(booster_bytes(model.booster[model.loaded_trees : model.trees]))

    def baseline_rounds(self, cfg: RunConfig, num_sites: int) -> int:
        """Rounds the baselines train so that they grow as many trees as the federated ensemble.

        Bagging adds one tree per site per round; cyclic and hist add ``local-epochs``
        trees per round.
        """
        return cfg.num_server_rounds * (num_sites if cfg.strategy == "fedxgb-bagging" else 1)

    def check_config(self, cfg: RunConfig) -> None:
        """Refuse settings that have no meaning for boosted trees, saying what to use instead."""
        if cfg.strategy not in TREE_STRATEGIES:
            raise ConfigError(
                f"model=xgboost needs a tree strategy ({', '.join(TREE_STRATEGIES)}), not strategy={cfg.strategy}: "
                "boosters are merged tree by tree, not averaged. Use --strategy fedxgb-hist."
            )
        if cfg.strategy == "fedxgb-bagging" and cfg.local_epochs != 1:
            raise ConfigError(
                f"fedxgb-bagging with local-epochs={cfg.local_epochs}: Flower's bagging appends only the first new "
                "tree of each site per round, so the others would be trained and thrown away. Set local-epochs=1 "
                "(one boosting round per site per round) and raise num-server-rounds instead."
            )
        for key, value, plain in (
            ("privacy", cfg.privacy, "none"),
            ("secure-aggregation", cfg.secure_aggregation, "none"),
            ("update-compression", cfg.update_compression, "none"),
        ):
            if value != plain:
                raise ConfigError(
                    f"model=xgboost does not support {key}={value}: DP-SGD, SecAgg+ and update codecs work on "
                    f"weight arrays, and a booster is a tree ensemble. Set {key}={plain}, or use the MLP (model=mlp)."
                )


def _every_round(model: XGBoostModel, on_round: Callable[[int], None], local_epochs: int) -> Any:
    """An XGBoost training callback calling ``on_round(k)`` after every ``local_epochs`` boosting rounds.

    ``model.booster`` points at the booster being trained while ``on_round`` runs, so
    that the callback can score the ensemble grown so far.
    """
    import xgboost as xgb

    class EveryRound(xgb.callback.TrainingCallback):
        def __init__(self) -> None:
            super().__init__()
            self.done = 0

        def after_iteration(self, booster: Any, epoch: int, evals_log: Any) -> bool:
            self.done += 1
            if self.done % local_epochs == 0:
                model.booster = booster
                on_round(self.done // local_epochs)
            return False  # never stop early

    return EveryRound()
