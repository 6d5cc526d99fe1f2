"""SecAgg+: the securely aggregated model matches plain FedAvg of the same updates within quantisation error."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from flcore import scenario
from flcore.config import RunConfig
from flcore.exceptions import ConfigError
from flcore.experiment.prepare import prepare_data
from flcore.federation.engines import in_process_simulation
from flcore.federation.mods.secagg import check_secagg


def test_secagg_refuses_what_it_cannot_serve() -> None:
    base = dataclasses.replace(RunConfig(), secure_aggregation="secagg+")
    check_secagg(base, 3)
    with pytest.raises(ConfigError, match="strategy=fedavg"):
        check_secagg(dataclasses.replace(base, strategy="krum"), 5)
    with pytest.raises(ConfigError, match="client-dp"):
        check_secagg(dataclasses.replace(base, privacy="client-dp"), 5)
    with pytest.raises(ConfigError, match="update-compression=none"):
        check_secagg(dataclasses.replace(base, update_compression="int8"), 5)
    with pytest.raises(ConfigError, match="at least 3 sites"):
        check_secagg(base, 2)


def test_secagg_matches_fedavg_within_quantisation_error(tmp_path) -> None:  # type: ignore[no-untyped-def]
    sc = scenario.get("medical-clinical")
    cfg, params = sc.configure({"num-server-rounds": 2, "local-epochs": 1})
    splits = prepare_data(sc, cfg, None, lambda _: None, params).splits
    plain = in_process_simulation(sc.name, cfg, params, splits, tmp_path / "plain")
    secure_cfg = dataclasses.replace(cfg, secure_aggregation="secagg+")
    secure = in_process_simulation(sc.name, secure_cfg, params, splits, tmp_path / "secure")

    assert plain.arrays is not None and secure.arrays is not None
    diffs = [float(np.abs(secure.arrays[k].numpy() - v.numpy()).max()) for k, v in plain.arrays.items()]  # type: ignore[union-attr]
    scale = max(float(np.abs(v.numpy()).max()) for v in plain.arrays.values())  # type: ignore[union-attr]
    # Fixed-point encoding of 8.0 over 2^22 levels per weighted update: errors of order 1e-6.
    assert max(diffs) < 1e-4 * max(1.0, scale)
    assert max(diffs) > 0  # the aggregate really went through SecAgg+'s quantisation
    # Both ran every round, trained every site, and evaluated the same way.
    assert [r.replies for r in secure.monitor.rounds] == [3, 3]  # type: ignore[union-attr]
    assert [sorted(r.per_site_train) for r in secure.monitor.rounds] == [  # type: ignore[union-attr]
        sorted(r.per_site_train)
        for r in plain.monitor.rounds  # type: ignore[union-attr]
    ]
    # The protocol's extra stages cost bytes, which are counted in the round.
    assert secure.monitor.rounds[0].bytes_sent_train > plain.monitor.rounds[0].bytes_sent_train  # type: ignore[union-attr]
