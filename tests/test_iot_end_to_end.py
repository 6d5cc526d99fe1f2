"""A small fleet through the CLI (in-process grid): sampling, dropouts, 8-bit updates."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from flwr.app import ArrayRecord, RecordDict

from domains.iot.config import IotParams
from domains.iot.scenario import make_task
from flcore import keys
from flcore.cli import main
from flcore.data.site import FeatureStats
from flcore.experiment.results import validate_results
from flcore.federation.monitor import message_bytes

DEVICES = 10


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Path:
    data = tmp_path_factory.mktemp("fleet") / "fleet"
    assert main(["data", "make", "iot-vibration-fleet", "--out", str(data), "--devices", str(DEVICES)]) == 0
    return data


@pytest.fixture(scope="module")
def results(fleet: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    out = tmp_path_factory.mktemp("iot-out")
    # min-sites=1: five devices sampled, 30% offline; a round with a single reply still counts here.
    sets = ["fraction-train=0.5", "fraction-evaluate=0.5", "dropout-rate=0.3", "update-compression=int8", "min-sites=1"]
    args = ["run", "iot-vibration-fleet", "--data", str(fleet), "--rounds", "4", "--out", str(out), "--quiet"]
    args += ["--engine", "inprocess"]  # the ClientApp's dropout mod plays dropouts alike under both engines
    assert main([*args, *[a for s in sets for a in ("--set", s)]]) == 0
    return json.loads((out / "results.json").read_text())


def test_data_make_writes_the_requested_fleet(fleet: Path) -> None:
    devices = sorted(p for p in fleet.iterdir() if p.is_dir())
    assert len(devices) == DEVICES
    assert all((d / "device.json").is_file() and (d / "labels.csv").is_file() for d in devices)


def test_results_are_valid_and_scored_on_labelled_windows_only(results: dict) -> None:
    validate_results(results)
    assert results["data"]["left_out"] == []
    assert results["domain"] == "iot" and results["primary_metric"] == "roc_auc"
    sites = {s["name"]: s for s in results["data"]["sites"]}
    assert len(sites) == DEVICES
    assert all(s["positives_train"] == 0 and s["n_val"] > 0 for s in sites.values())  # trained on normal data
    for arm in ("federated", "centralised", "local_only"):
        a = results["arms"][arm]
        assert a["union"]["n"] == sum(s["n_test"] for s in sites.values())
        for name, m in a["per_site"].items():
            assert m["n"] == sites[name]["n_test"] and m["n_positive"] == sites[name]["positives_test"]
            assert (m["roc_auc"] is None) == (m["n_positive"] in (0, m["n"]))
            assert m["threshold"] is not None  # each device calibrated its own
        assert a["union"]["f1"] is not None


def test_rounds_go_on_with_the_devices_that_answer(results: dict) -> None:
    fed = results["arms"]["federated"]
    history = fed["history"]
    assert [r["round"] for r in history] == [1, 2, 3, 4]
    for r in history:
        assert r["sites_sampled"] == DEVICES // 2
        assert r["sites_replied"] + r["sites_failed"] == r["sites_sampled"]
        assert r["sites_dropped"] == r["sites_failed"]  # nothing else failed
        assert len(r["sites_trained"]) == r["sites_replied"]
    part = fed["participation"]
    assert part["sampled"] == 4 * DEVICES // 2 and part["dropped"] == sum(r["sites_dropped"] for r in history)
    assert part["dropped"] > 0  # at 30% over 20 draws, no dropout at all has probability 0.0008
    assert part["epochs_per_site"]["max"] <= 4 * results["config"]["local-epochs"]


def test_updates_travel_in_8_bits(results: dict) -> None:
    fed = results["arms"]["federated"]
    model = make_task(IotParams()).init_model(FeatureStats.of(np.zeros((2, 75), dtype=np.float32)), 0)
    float_reply = message_bytes(RecordDict({keys.ARRAYS: ArrayRecord(model.state_dict())}))
    for r in fed["history"]:
        per_reply = r["bytes_received_train"] / r["sites_replied"]
        per_message = r["bytes_sent_train"] / r["sites_sampled"]
        assert per_reply < 0.3 * float_reply
        assert per_message < 0.3 * float_reply + 3000  # the model, plus the run configuration as text
    assert fed["compression"]["codec"] == "int8" and fed["compression"]["broadcast"] is True


def test_a_flat_lined_device_stops_the_run_before_anything_is_written(fleet: Path, tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    data = tmp_path / "fleet"
    shutil.copytree(fleet, data)
    device = sorted(p for p in data.iterdir() if p.is_dir())[3]
    np.save(device / "recordings" / "rec-0000.npy", np.zeros(12_800, dtype=np.float32))
    out = tmp_path / "out"
    code = main(
        ["run", "iot-vibration-fleet", "--data", str(data), "--out", str(out), "--rounds", "1", "--engine", "inprocess"]
    )
    assert code == 2 and not out.exists()
    err = capsys.readouterr().err
    assert "rec-0000.npy" in err and "flat-lined" in err and "'accel'" in err
    assert "Traceback" not in err


def test_lenient_mode_leaves_out_an_unusable_device(fleet: Path, tmp_path: Path) -> None:
    from domains.iot.scenario import SCENARIO
    from flcore.experiment.prepare import load_sites

    data = tmp_path / "fleet"
    shutil.copytree(fleet, data)
    devices = sorted(p for p in data.iterdir() if p.is_dir())
    broken, tiny = devices[0], devices[1]
    (broken / "device.json").write_text(json.dumps({"sampling_rate_hz": 0}))
    for f in (tiny / "recordings").iterdir():  # one second of service data left: 7 windows, below 8
        if f.name != "rec-0000.npy":
            f.unlink()
    (tiny / "labels.csv").write_text("file,label\n")
    said: list[str] = []
    left_out: list[dict[str, str]] = []
    sites = load_sites(SCENARIO, data, strict=False, progress=said.append, left_out=left_out)
    assert len(sites) == DEVICES - 2 and not {broken.name, tiny.name} & {s.name for s in sites}
    reasons = {item["name"]: item["reason"] for item in left_out}
    assert "no usable unlabelled recording" in reasons[broken.name] and "bad rate" in reasons[broken.name]
    assert "min-cohort" in reasons[tiny.name] and "7 records" in reasons[tiny.name]
    assert any(broken.name in line for line in said)
    with pytest.raises(Exception, match="sampling rate must be a positive number"):
        load_sites(SCENARIO, data, strict=True)


def test_devices_option_is_refused_for_fixed_scenarios(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    code = main(["data", "make", "finance-five-banks", "--out", str(tmp_path / "x"), "--devices", "9"])
    assert code == 2 and "--devices is not available for finance-five-banks" in capsys.readouterr().err


def test_repartitioning_a_fleet_is_refused(fleet: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    code = main(
        ["run", "iot-vibration-fleet", "--data", str(fleet), "--set", "partition=dirichlet", "--engine", "inprocess"]
    )
    assert code == 2 and "partition=dirichlet does not apply to iot-vibration-fleet" in capsys.readouterr().err
