"""The public Python API: list scenarios, run one (or several seeds, or a sweep), write a report, check a site.

Each call goes through the same code as the matching ``flsuite`` command (its
checks, outputs and refusals), raising the suite's exceptions instead of printing
them, and returns objects a notebook can use::

    import flcore

    flcore.scenarios()                                     # a DataFrame of what can run
    run = flcore.run("medical-clinical", rounds=2, out="runs/try")
    run.figures                                            # arms x (metric, interval, worst site, time)
    run.per_site                                           # sites x arms, the primary metric
    run.paths                                              # results.json, report.md/.html, audit trail, ...
    flcore.check_site("medical", "data/hospitals").ok
    model = flcore.load_model(run.out)                     # the federated model, checked byte by byte
    model.predict_proba("new_patients.csv")                # scores through the same adapter and checks

Heavy libraries (torch, Flower, the scenarios) load on the first call, not on import.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from flcore.cli import build_parser
from flcore.commands.run import cmd_run
from flcore.commands.sweep import cmd_sweep

if TYPE_CHECKING:
    import pandas as pd

    from flcore.experiment.sitecheck import CheckReport
    from flcore.serving.model import TrainedModel

_ARMS = ("federated", "centralised", "local_only")


@dataclass
class Run:
    """A finished run's folder and what it holds.

    Parameters
    ----------
    out : Path
        The run's output folder.
    results : dict
        Its ``results.json`` (one seed, or the summary over seeds with ``statistics``).
    """

    out: Path
    results: dict[str, Any] = field(repr=False)

    @classmethod
    def read(cls, out: Path | str) -> Run:
        """The run written in ``out`` (by :func:`run` or ``flsuite run``)."""
        out = Path(out)
        return cls(out, json.loads((out / "results.json").read_text(encoding="utf-8")))

    @property
    def metric(self) -> str:
        """The primary metric (``pr_auc``, ``roc_auc``, ...)."""
        return str(self.results["statistics"]["metric"])

    @property
    def figures(self) -> pd.DataFrame:
        """One row per arm: the primary metric and its interval over seeds, site mean, worst site, wall time.

        The metric is computed on the union of the sites' test splits; with one seed the interval is empty.
        """
        import pandas as pd

        stats = self.results["statistics"]
        rows = []
        for arm in _ARMS:
            a, cost = stats["arms"][arm], stats["costs"][arm]
            rows.append(
                {
                    "arm": arm,
                    self.metric: a["union"]["mean"],
                    "ci_low": a["union"]["ci_low"],
                    "ci_high": a["union"]["ci_high"],
                    "mean_over_sites": a["mean_over_sites"]["mean"],
                    "worst_site_value": a["worst_site_value"]["mean"],
                    "wall_time_s": cost["wall_time_s"]["mean"],
                    **{name: value["mean"] for name, value in a["secondary"].items()},
                }
            )
        return pd.DataFrame(rows).set_index("arm")

    @property
    def per_site(self) -> pd.DataFrame:
        """One row per site, one column per arm: the primary metric (mean over seeds)."""
        import pandas as pd

        sites = self.results["statistics"]["sites"]
        return pd.DataFrame({arm: {name: s[arm]["mean"] for name, s in sites.items()} for arm in _ARMS})

    @property
    def models(self) -> dict[str, Path]:
        """Every arm's exported model folder: ``federated``, ``centralised``, ``local_only/<site>`` (one seed's run).

        Load one with :func:`load_model`. A multi-seed summary has none of its own: each seed folder
        (``Run.read(out / "seed-S")``) holds its models.
        """
        models = self.results.get("models") or {}
        found = {arm: self.out / models[arm]["path"] for arm in ("federated", "centralised") if arm in models}
        found.update({f"local_only/{site}": self.out / m["path"] for site, m in models.get("local_only", {}).items()})
        return found

    def load_model(self, arm: str = "federated") -> TrainedModel:
        """One of :attr:`models`, loaded and checked byte by byte (:func:`load_model`)."""
        if arm not in self.models:
            raise KeyError(f"no model {arm!r} in {self.out}; models: {', '.join(self.models) or 'none'}")
        return load_model(self.models[arm])

    @property
    def paths(self) -> dict[str, Path]:
        """Everything the run wrote that exists: results, reports, audit trail, checkpoint, seed folders."""
        names = ("results.json", "report.md", "report.html", "audit.jsonl", "checkpoint.npz", "models")
        found = {name: self.out / name for name in names if (self.out / name).exists()}
        found.update({p.name: p for p in sorted(self.out.glob("seed-*")) if p.is_dir()})
        return found


def scenarios() -> pd.DataFrame:
    """Every registered scenario: its domain, what a site is, and what it does."""
    import pandas as pd

    from flcore import scenario

    rows = [
        {"scenario": name, "domain": sc.domain, "site": sc.site_noun, "description": sc.description}
        for name, sc in scenario.available().items()
    ]
    return pd.DataFrame(rows).set_index("scenario")


def run(
    scenario: str,
    *,
    data: Path | str | None = None,
    out: Path | str | None = None,
    seeds: int = 1,
    seed: int | None = None,
    rounds: int | None = None,
    strategy: str | None = None,
    settings: Mapping[str, Any] | None = None,
    policy: Path | str | None = None,
    force: bool = False,
    report: bool = True,
    quiet: bool = True,
    engine: str = "simulation",
) -> Run:
    """Run a scenario's three arms (federated, centralised, local-only), as ``flsuite run`` does.

    Parameters
    ----------
    scenario : str
        A name from :func:`scenarios`.
    data : Path or str, optional
        One sub-folder per site (default: the scenario's synthetic data).
    out : Path or str, optional
        The output folder (default ``runs/SCENARIO``).
    seeds : int
        Seeds to run (each in ``OUT/seed-S``, with intervals over them).
    seed, rounds, strategy : optional
        Shortcuts for the settings of the same names.
    settings : mapping, optional
        Any setting, by its ``flsuite settings`` name (``{"local-epochs": 1}``).
    policy : Path or str, optional
        The federation's governance policy over the domain's defaults.
    force : bool
        Overwrite a finished run in ``out``.
    report : bool
        Write report.md and report.html beside results.json.
    quiet : bool
        Print only the summary.
    engine : str
        Who runs the federated arm: ``"simulation"`` (Flower's simulation engine, on
        Ray) or ``"inprocess"`` (the same apps in this process, no Ray).

    Raises
    ------
    flcore.exceptions.FlsuiteUserError
        For bad data, settings or folders, and governance refusals, before any training.
    """
    argv = [scenario, "--seeds", str(seeds), *_common(out, seed, rounds, settings, policy, engine)]
    argv += [*(["--data", str(data)] if data is not None else []), *(["--strategy", strategy] if strategy else [])]
    argv += [*(["--force"] if force else []), *([] if report else ["--no-report"]), *(["--quiet"] if quiet else [])]
    args = _parse("run", argv)
    cmd_run(args)
    return Run.read(Path(args.out) if args.out else Path(f"runs/{scenario}"))


def sweep(
    scenario: str,
    strategies: Sequence[str],
    *,
    seeds: int = 5,
    data: Path | str | None = None,
    out: Path | str | None = None,
    seed: int | None = None,
    rounds: int | None = None,
    settings: Mapping[str, Any] | None = None,
    policy: Path | str | None = None,
    force: bool = False,
    quiet: bool = True,
    engine: str = "simulation",
) -> dict[str, Run]:
    """Run each strategy over the same seeds and rank them (``flsuite sweep``); the runs by strategy.

    The arguments are those of :func:`run`, with ``strategies`` in place of ``strategy``.
    """
    argv = [scenario, "--strategies", ",".join(strategies), "--seeds", str(seeds)]
    argv += [
        *_common(out, seed, rounds, settings, policy, engine),
        *(["--data", str(data)] if data is not None else []),
    ]
    argv += [*(["--force"] if force else []), *(["--quiet"] if quiet else [])]
    args = _parse("sweep", argv)
    cmd_sweep(args)
    root = Path(args.out or f"runs/{scenario}-sweep")
    return {name: Run.read(root / name) for name in strategies}


def write_report(*runs: Run | Path | str, out: Path | str | None = None) -> list[Path]:
    """report.md and a self-contained report.html for one run, or a comparison of several (``flsuite report``)."""
    from flcore.reporting import report

    folders = [r.out if isinstance(r, Run) else Path(r) for r in runs]
    target = Path(out) if out is not None else folders[0] if len(folders) == 1 else Path("runs/comparison")
    return report.write_report(folders, target)


def check_site(
    domain: str,
    data: Path | str,
    *,
    lenient: bool = False,
    policy: Path | str | None = None,
    schema: Path | str | None = None,
) -> CheckReport:
    """What ``flsuite site check`` finds in a site folder (or a folder of sites): ``.ok``, ``.text()``, per site."""
    from flcore.experiment.sitecheck import check_sites

    return check_sites(
        domain,
        Path(data),
        strict=not lenient,
        policy_file=Path(policy) if policy else None,
        schema=Path(schema) if schema else None,
    )


def load_model(path: Path | str) -> TrainedModel:
    """A run's exported model (``OUT/models/<arm>``, or a run folder for its federated model), checked byte by byte.

    ``model.predict_proba(frame_or_path)`` scores new records through the same adapter and checks as training;
    ``model.scores(...)`` adds record ids and decisions at the model's threshold (``flsuite predict``).
    """
    from flcore.serving.model import load_model as load

    return load(path)


def evaluate(model: Path | str | TrainedModel, data: Path | str, *, lenient: bool = False) -> dict[str, Any]:
    """External validation of a model on labelled sites that did not train it (``flsuite evaluate``'s document)."""
    from flcore.serving.evaluate import evaluate_model

    trained = model if not isinstance(model, Path | str) else load_model(model)
    return evaluate_model(trained, Path(data), strict=not lenient)


def _common(
    out: Path | str | None,
    seed: int | None,
    rounds: int | None,
    settings: Mapping[str, Any] | None,
    policy: Path | str | None,
    engine: str,
) -> list[str]:
    argv = [*(["--out", str(out)] if out is not None else []), *(["--seed", str(seed)] if seed is not None else [])]
    argv += ["--engine", engine]
    argv += [*(["--rounds", str(rounds)] if rounds is not None else []), *(["--policy", str(policy)] if policy else [])]
    for key, value in (settings or {}).items():
        argv += ["--set", f"{key}={str(value).lower() if isinstance(value, bool) else value}"]
    return argv


def _parse(command: str, argv: list[str]) -> Any:
    return build_parser().parse_args([command, *argv])
