"""A trained model loaded back from its folder, scoring new records through the same adapter and checks as training.

::

    from flcore import load_model

    model = load_model("runs/banks/models/federated")      # or the run folder: its federated model
    model.predict_proba("new_rows.csv")                    # a table file, a site folder, or a DataFrame
    model.scores("new_rows.csv")                           # record, score, decision (at the model's threshold)

Loading checks every byte against the manifest (:func:`flcore.learning.artifact.read_model`)
and rebuilds the model from the suite's own code for the manifest's scenario and
settings: nothing in the folder is executed.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from flcore import scenario as scenario_registry
from flcore.data.preprocess import Preprocessing, is_raw
from flcore.data.schema import TableSchema
from flcore.data.schematable import SchemaTableAdapter
from flcore.data.site import UNLABELLED, FeatureStats, SiteData
from flcore.exceptions import DataValidationError
from flcore.governance.policy import site_drop_columns
from flcore.learning.artifact import MANIFEST, load_weights, read_model

#: Where a run folder keeps its federated model.
RUN_MODEL = Path("models") / "federated"


class TrainedModel:
    """A model folder's model, its manifest and how to read records for it.

    Use :func:`load_model` to get one.
    """

    def __init__(self, folder: Path, manifest: dict[str, Any], files: dict[str, bytes]) -> None:
        self.folder, self.manifest = folder, manifest
        self.scenario = scenario_registry.get(str(manifest["scenario"]))
        self.params = self.scenario.params_from_dict(dict(manifest["params"]))
        self.task = self.scenario.make_task(self.params)
        shape = tuple(int(d) for d in manifest["input"]["shape"])
        self.model = self.task.init_model(FeatureStats.of(np.zeros((1, *shape), dtype=np.float32)), 0)
        load_weights(str(manifest["task"]["family"]), self.model, files, folder)
        prep = manifest.get("preprocessing")
        self.preprocessing = Preprocessing.from_json(prep) if prep else None
        schema = (
            TableSchema.from_dict(manifest["schema"], source=str(folder / MANIFEST)) if manifest.get("schema") else None
        )
        if schema is not None and not schema.features:
            # Exactly the columns the model was trained on: a missing one is named, an extra one is no feature.
            columns = tuple(self.preprocessing.columns if self.preprocessing else self.feature_names)
            categorical = tuple(c for c in schema.categorical if c in columns)
            schema = dataclasses.replace(schema, features=columns, categorical=categorical)
        self.schema = schema

    # -- what the manifest says ----------------------------------------------------------

    @property
    def threshold(self) -> float | None:
        """The operating threshold chosen on validation data (None: the task chooses none, or each site its own)."""
        value = self.manifest.get("threshold", {}).get("value")
        return float(value) if value is not None else None

    @property
    def feature_names(self) -> list[str]:
        """The model's input features, in order (encoded: a category is ``column=value``)."""
        return list(self.manifest["input"]["feature_names"])

    @property
    def digest(self) -> str:
        """The manifest's digest, as results.json and the audit trail record it."""
        return str(self.manifest["digest"])

    def __str__(self) -> str:
        m = self.manifest
        whose = f"site {m['site']}'s local-only" if m.get("site") else m["arm"]
        return f"{m['scenario']}, {whose} model ({self.folder}), trained on {', '.join(m.get('trained_on') or [])}"

    def __repr__(self) -> str:
        where = f", site {self.manifest['site']}" if self.manifest.get("site") else ""
        return f"TrainedModel({self.manifest['scenario']}, {self.manifest['arm']}{where}, {self.folder})"

    # -- reading records -------------------------------------------------------------------

    def read(
        self, data: pd.DataFrame | Path | str | SiteData, *, strict: bool = True, labelled: bool = False
    ) -> SiteData:
        """Records as the model's input: read through the scenario's adapter, checked, encoded like training.

        Parameters
        ----------
        data : DataFrame, path or SiteData
            A table (in memory or a file), or a site folder in the scenario's format.
        labelled : bool
            Require labels (external validation) instead of using them where present.

        Raises
        ------
        DataValidationError
            For data the adapter refuses, or whose schema (columns, features, shape) is not the model's.
        """
        if isinstance(data, SiteData):
            site = data
        elif isinstance(data, pd.DataFrame):
            if self.schema is None:
                raise DataValidationError(
                    "the DataFrame",
                    f"a {self.scenario.name} model scores {self.scenario.site_noun} folders, not tables.",
                    "Pass a folder in the format the model was trained on.",
                )
            site = self.adapter().from_frame(data, "frame")
        else:
            site = self._read_path(Path(data), strict=strict, labelled=labelled)
        if is_raw(site):
            prep = self.preprocessing or Preprocessing(self._raw_columns(), {}, {}, "refuse")
            site = prep.transform(site)
        self._check_input(site)
        if labelled and (site.y == UNLABELLED).any():
            raise DataValidationError(
                site.source or site.name,
                f"{int((site.y == UNLABELLED).sum())} record(s) have no label; evaluation needs every label.",
                "Pass labelled data (the label column or labels file the scenario reads).",
            )
        return site

    def adapter(self) -> Any:
        """The adapter that reads records for this model: its schema's table adapter, else the scenario's."""
        if self.schema is not None:
            return SchemaTableAdapter(self.schema, drop_columns=site_drop_columns)
        return self.scenario.adapter_for(self.params)

    def _read_path(self, path: Path, *, strict: bool, labelled: bool) -> SiteData:
        if not path.exists():
            raise DataValidationError(path, "the data path does not exist.", "Pass a table file or a site folder.")
        adapter = self.adapter()
        if labelled and path.is_dir():
            return adapter.read(path, strict=strict)  # type: ignore[no-any-return]
        reader = getattr(adapter, "read_unlabelled", None)
        if reader is None:
            if not path.is_dir():
                raise DataValidationError(
                    path,
                    f"{self.scenario.name} reads {self.scenario.site_noun} folders, not files.",
                    "Pass the folder.",
                )
            return adapter.read(path, strict=strict)  # type: ignore[no-any-return]
        return reader(path, strict=strict)  # type: ignore[no-any-return]

    def _raw_columns(self) -> list[str]:
        return list(self.schema.features) if self.schema is not None and self.schema.features else self.feature_names

    def _check_input(self, site: SiteData) -> None:
        shape = list(site.x.shape[1:])
        expected = list(self.manifest["input"]["shape"])
        names = site.info.get("feature_names")
        if shape != expected or (names is not None and self.feature_names and list(names) != self.feature_names):  # type: ignore[call-overload]
            got = list(names) if names is not None else shape  # type: ignore[call-overload]
            want = self.feature_names or expected
            first = next(
                (i for i, (a, b) in enumerate(zip(got, want, strict=False)) if a != b), min(len(got), len(want))
            )
            raise DataValidationError(
                site.source or site.name,
                f"the records do not have the model's input: {len(got)} feature(s) against the model's {len(want)}, "
                f"first difference at position {first + 1} ({_at(got, first)} instead of {_at(want, first)}).",
                "Score data with the same columns (or image size, or recording layout) the model was trained on; "
                "the model's manifest lists its features.",
            )

    # -- scoring ---------------------------------------------------------------------------

    def predict_proba(self, data: pd.DataFrame | Path | str | SiteData, *, strict: bool = True) -> np.ndarray:
        """The model's score of every record (a probability for classifiers; an anomaly score for detectors)."""
        return np.asarray(self.task.predict(self.model, self.read(data, strict=strict).x), dtype=np.float64)

    def scores(self, data: pd.DataFrame | Path | str | SiteData, *, strict: bool = True) -> pd.DataFrame:
        """One row per record: ``record``, ``score``, ``decision`` (at the model's threshold, if any), ``label``."""
        site = self.read(data, strict=strict)
        scores = np.asarray(self.task.predict(self.model, site.x), dtype=np.float64)
        ids = site.ids if site.ids is not None else np.asarray([f"{site.name}:{i}" for i in range(len(site))])
        frame = pd.DataFrame({"record": ids, "score": scores})
        if self.threshold is not None:
            frame["decision"] = (scores >= self.threshold).astype(int)
        frame.attrs["unseen_categories"] = int(site.info.get("unseen_categories", 0))  # type: ignore[call-overload]
        frame.attrs["skipped"] = dict(site.info.get("skipped", {}))  # type: ignore[call-overload]
        if (site.y != UNLABELLED).any():
            labels = pd.array(site.y, dtype="Int64")
            labels[site.y == UNLABELLED] = pd.NA
            frame["label"] = labels
        return frame


def _at(values: list[Any], i: int) -> str:
    return repr(values[i]) if i < len(values) else "nothing"


def load_model(path: Path | str) -> TrainedModel:
    """The model in a model folder (``OUT/models/<arm>``) or a run folder (its federated model), checked byte by byte.

    Raises
    ------
    DataValidationError
        For a folder that holds no model, or a model altered after the run wrote it.
    """
    folder = Path(path)
    if not folder.exists():
        raise DataValidationError(
            folder, "the model folder does not exist.", "Pass OUT/models/<arm> of a run, or the run folder itself."
        )
    if not (folder / MANIFEST).is_file() and (folder / RUN_MODEL / MANIFEST).is_file():
        folder = folder / RUN_MODEL
    manifest, files = read_model(folder)
    return TrainedModel(folder, manifest, files)
