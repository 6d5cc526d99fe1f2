"""Run folders and reports (flcore.experiment.seeds, flcore.reporting.report, `flsuite report`) from hand-made seeds.

The folders are written as ``flsuite run --seeds N`` writes them (each seed's
results.json, then the summary with their SHA-256); every number the report
shows is checked against the results.json it was built from.
"""

from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
from handmade import simple_run, write_seeds_folder, write_single_folder

from flcore.cli import main
from flcore.experiment.results import validate_results, write_json
from flcore.experiment.seeds import RunFolderError, file_sha256, read_run_folder

SVG = "http://www.w3.org/2000/svg"
XLINK = "http://www.w3.org/1999/xlink"
SECTIONS = [
    "## Summary",
    "## Arms",
    "## Paired comparisons",
    "## Convergence",
    "## Per hospital",
    "## Costs",
    "## Per seed",
    "## Settings",
    "## How to read this report",
]
ARM_NAMES = {"federated": "federated", "centralised": "centralised", "local_only": "local-only"}
#: Per-seed offsets of the weaker configuration, so its differences to the stronger one vary by seed.
NOISE = (0.004, -0.003, 0.006, 0.0, -0.005)


def five_seeds(level: float = 0.90, strategy: str = "fedavg", **kwargs: Any) -> list[dict[str, Any]]:
    return [simple_run(s, level, strategy=strategy, **kwargs) for s in range(5)]


def weaker_seeds(strategy: str = "fedprox") -> list[dict[str, Any]]:
    return [simple_run(s, 0.80 + NOISE[s], strategy=strategy) for s in range(5)]


# -- reading what was written ---------------------------------------------------------------


def ci(iv: dict[str, Any]) -> str:
    return f"{iv['mean']:.3f} [{iv['ci_low']:.3f}, {iv['ci_high']:.3f}]"


def diff(p: dict[str, Any]) -> str:
    return f"{p['mean_difference']:+.3f} [{p['ci_low']:+.3f}, {p['ci_high']:+.3f}]"


def md_table(markdown: str, first_header: str, section: str | None = None) -> list[list[str]]:
    """The rows (cells) of the first Markdown table whose header starts with ``| first_header |``.

    With ``section``, the first such table after that heading.
    """
    lines = markdown.splitlines()
    begin = lines.index(section) if section else 0
    start = next(i for i in range(begin, len(lines)) if lines[i].startswith(f"| {first_header} |"))
    rows = []
    for line in lines[start + 2 :]:
        if not line.startswith("|"):
            break
        rows.append([c.strip() for c in line.strip("|").split(" | ")])
    return rows


class Page(HTMLParser):
    """Every start tag of an HTML page with its attributes, and the text of its <style> elements."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.styles: list[str] = []
        self._in_style = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))
        self._in_style = tag == "style"

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))

    def handle_endtag(self, tag: str) -> None:
        self._in_style = False

    def handle_data(self, data: str) -> None:
        if self._in_style:
            self.styles.append(data)


def parse_page(text: str) -> Page:
    page = Page()
    page.feed(text)
    page.close()
    return page


def svgs(text: str) -> list[str]:
    return re.findall(r"<svg\b.*?</svg>", text, flags=re.DOTALL)


def figure_titles(page: Page) -> list[str | None]:
    return [attrs.get("data-title") for tag, attrs in page.tags if tag == "figure"]


# -- a five-seed run folder ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def seeds_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Five seeds of one configuration, its summary, and `flsuite report` run on the folder."""
    out = tmp_path_factory.mktemp("report") / "fedavg"
    write_seeds_folder(out, five_seeds())
    assert main(["report", str(out)]) == 0
    return out


@pytest.fixture(scope="module")
def summary(seeds_dir: Path) -> dict[str, Any]:
    return json.loads((seeds_dir / "results.json").read_text())  # type: ignore[no-any-return]


@pytest.fixture(scope="module")
def markdown(seeds_dir: Path) -> str:
    return (seeds_dir / "report.md").read_text()


@pytest.fixture(scope="module")
def page(seeds_dir: Path) -> str:
    return (seeds_dir / "report.html").read_text()


def test_summary_lists_each_seed_file_with_its_sha256(seeds_dir: Path, summary: dict[str, Any]) -> None:
    validate_results(summary)
    assert summary["kind"] == "seeds"
    assert summary["seeds"] == [0, 1, 2, 3, 4]
    assert summary["scenario"] == "medical-clinical" and summary["strategy"] == "fedavg"
    assert "seed" not in summary["config"]  # what the seeds share, not what sets them apart
    assert summary["runs"] == [
        {"seed": s, "results": f"seed-{s}/results.json", "sha256": file_sha256(seeds_dir / f"seed-{s}/results.json")}
        for s in range(5)
    ]
    assert summary["statistics"]["n_seeds"] == 5


def test_read_run_folder_reads_the_seeds_back(seeds_dir: Path, summary: dict[str, Any]) -> None:
    run = read_run_folder(seeds_dir)

    assert run.path == seeds_dir
    assert run.summary == summary
    assert [r["seed"] for r in run.runs] == [0, 1, 2, 3, 4]
    assert run.runs[3] == json.loads((seeds_dir / "seed-3/results.json").read_text())
    assert run.statistics == summary["statistics"]
    assert run.label == "fedavg"
    # The results.json itself may be named instead of its folder.
    assert read_run_folder(seeds_dir / "results.json").runs == run.runs


def test_report_has_every_section(markdown: str) -> None:
    headings = [line for line in markdown.splitlines() if line.startswith("## ")]

    assert headings == SECTIONS
    assert markdown.startswith("# flsuite report: medical-clinical\n")


def test_arms_table_shows_the_intervals_of_results_json(markdown: str, summary: dict[str, Any]) -> None:
    arms = summary["statistics"]["arms"]

    rows = md_table(markdown, "arm")

    assert [r[0] for r in rows] == ["federated", "centralised", "local-only"]
    for row, arm in zip(rows, ARM_NAMES, strict=True):
        assert row[1] == ci(arms[arm]["union"])
        assert row[2] == ci(arms[arm]["mean_over_sites"])
        assert row[3] == ci(arms[arm]["worst_site_value"])
    # Spot check against the hand-made values: federated union 0.900, 0.912, 0.893, 0.904, 0.890.
    assert rows[0][1].startswith("0.900 [")


def test_paired_table_shows_the_differences_and_verdicts_of_results_json(
    markdown: str, summary: dict[str, Any]
) -> None:
    paired = summary["statistics"]["paired"]

    rows = md_table(markdown, "comparison")

    expected = [
        (key, measure)
        for key in ("federated_vs_centralised", "federated_vs_local_only")
        for measure in ("union", "mean_over_sites")
    ]
    assert len(rows) == len(expected)
    for row, (key, measure) in zip(rows, expected, strict=True):
        p = paired[key][measure]
        assert row[0] == "federated - " + ("centralised" if key.endswith("centralised") else "local-only")
        assert row[2] == diff(p)
        assert row[3] == ("<0.001" if p["p_value"] < 0.001 else f"{p['p_value']:.3f}")
        assert row[4] == f"{p['effect_size_dz']:.2f}"
        assert (row[5], row[6]) == ("5", p["verdict"])
    # The hand-made federated union is 0.01 + wobble / 2 below centralised at every seed: lower beyond noise.
    assert rows[0][6] == "lower"


def test_per_site_table_and_summary_name_the_worst_site(markdown: str, summary: dict[str, Any]) -> None:
    stats = summary["statistics"]
    worst = stats["worst_site"]["site"]
    assert worst == "hospital-c"  # 0.06 below the mean at every seed in the hand-made values

    rows = md_table(markdown, "hospital")

    assert [r[0] for r in rows] == ["hospital-a", "hospital-b", "hospital-c"]
    for row in rows:
        site = stats["sites"][row[0]]
        assert row[1:4] == ["80", "20", "5"]
        assert row[4:7] == [ci(site["federated"]), ci(site["centralised"]), ci(site["local_only"])]
        assert row[7:9] == [diff(site["gain_over_local"]), site["gain_over_local"]["verdict"]]
    assert f"Worst hospital under the federated model: **{worst}**, {ci(stats['worst_site']['federated'])}" in markdown
    assert "**Hospitals worse off federated than alone, beyond noise: hospital-c.**" in markdown


def test_per_seed_table_shows_each_seed_file(markdown: str, seeds_dir: Path) -> None:
    rows = md_table(markdown, "seed")

    assert [r[0] for r in rows] == ["0", "1", "2", "3", "4"]
    for row in rows:
        run = json.loads((seeds_dir / f"seed-{row[0]}/results.json").read_text())
        arms = run["arms"]
        assert row[1:4] == [f"{arms[a]['union']['roc_auc']:.3f}" for a in ARM_NAMES]
        assert row[4] == f"{arms['federated']['worst_site']['site']} {arms['federated']['worst_site']['value']:.3f}"
        assert row[6] == f"seed-{row[0]}/results.json"


def test_costs_table_shows_rounds_to_95_percent_and_no_privacy(markdown: str, summary: dict[str, Any]) -> None:
    costs = summary["statistics"]["costs"]

    rows = md_table(markdown, "arm", section="## Costs")

    assert [r[0] for r in rows] == ["federated", "centralised", "local-only"]
    # Hand-made curves 0.5, 0.8, final: 95% of the final value is first reached in round 3 at every seed.
    assert costs["federated"]["rounds_to_95pct"]["values"] == [3.0] * 5
    assert rows[0][5] == "3.0"
    assert rows[0][4] == "none (no DP)"
    assert rows[1][2] == "0 (no exchange)"


def test_html_is_self_contained(page: str) -> None:
    parsed = parse_page(page)
    tags = [tag for tag, _ in parsed.tags]

    assert tags[0] == "html" and "body" in tags
    for banned in ("script", "link", "img", "iframe", "object", "embed", "base"):
        assert banned not in tags
    fetchable = ("src", "href", "xlink:href", "srcset", "action", "formaction", "poster", "data", "background")
    for tag, attrs in parsed.tags:
        assert not any(name.startswith("on") for name in attrs), tag  # no inline event handler either
        for name in fetchable:
            value = attrs.get(name)
            assert value is None or value.startswith("#"), (tag, name, value)
    for style in parsed.styles:
        assert "@import" not in style and "url(" not in style.replace("url(#", "")
    # Outside the figures' metadata, the only addresses are the SVG and XLink namespace names.
    outside = re.sub(r"<metadata>.*?</metadata>", "", page, flags=re.DOTALL)
    assert set(re.findall(r"https?://[^\s\"'<>]*", outside)) == {SVG, XLINK}


def test_html_has_one_inline_svg_per_figure(page: str) -> None:
    parsed = parse_page(page)

    assert figure_titles(parsed) == ["convergence", "per hospital", "utility against cost"]  # no DP: no epsilon
    drawn = svgs(page)
    assert len(drawn) == 3
    for svg in drawn:
        root = ET.fromstring(svg)
        assert root.tag == f"{{{SVG}}}svg"
        paths = [p for p in root.iter(f"{{{SVG}}}path") if p.get("d", "").strip()]
        assert len(paths) >= 10  # axes, ticks, and the data drawn on them
        # matplotlib's element ids, behind the per-figure prefix that keeps them unique on the page
        drawn_ids = [re.sub(r"^f\d+-", "", g.get("id", "")) for g in root.iter(f"{{{SVG}}}g")]
        assert any(i.startswith(("line2d", "patch", "PolyCollection")) for i in drawn_ids)


def test_html_figure_references_resolve_to_one_element(page: str) -> None:
    ids = re.findall(r'\sid="([^"]+)"', page)
    refs = set(re.findall(r'(?:href="#|url\(#)([^")]+)', page))

    assert refs  # clip paths, markers and the table of contents
    for ref in refs:
        assert ids.count(ref) == 1, ref


def test_html_ids_are_unique_across_the_page(page: str) -> None:
    ids = re.findall(r'\sid="([^"]+)"', page)

    assert len(ids) == len(set(ids))


def test_html_shows_the_numbers_of_report_md(page: str, markdown: str) -> None:
    for row in md_table(markdown, "arm"):
        assert "".join(f"<td>{c}</td>" for c in row) in page


# -- refusing folders that cannot be reported ----------------------------------------------------


@pytest.fixture
def fresh_seeds(tmp_path: Path) -> Path:
    out = tmp_path / "run"
    write_seeds_folder(out, five_seeds()[:3])
    return out


def test_a_seed_file_changed_after_the_summary_is_refused(fresh_seeds: Path, capsys: pytest.CaptureFixture) -> None:
    seed_file = fresh_seeds / "seed-1" / "results.json"
    doc = json.loads(seed_file.read_text())
    doc["arms"]["federated"]["union"]["roc_auc"] = 0.99
    write_json(seed_file, doc)

    with pytest.raises(RunFolderError, match=r"seed-1/results.json changed after .*SHA-256 differs"):
        read_run_folder(fresh_seeds)
    assert main(["report", str(fresh_seeds)]) == 2
    assert "seed-1/results.json changed after" in capsys.readouterr().err
    assert not (fresh_seeds / "report.md").exists()


def test_a_missing_seed_file_is_refused(fresh_seeds: Path) -> None:
    (fresh_seeds / "seed-2" / "results.json").unlink()

    with pytest.raises(RunFolderError, match=r"seed-2/results.json does not exist\. It is seed 2's results"):
        read_run_folder(fresh_seeds)


def test_a_folder_without_results_says_how_to_make_them(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()

    with pytest.raises(
        RunFolderError, match=re.escape(f"{empty}/results.json does not exist. Run `flsuite run SCENARIO --out")
    ):
        read_run_folder(empty)
    assert main(["report", str(empty)]) == 2
    assert "flsuite: error:" in capsys.readouterr().err


def test_a_missing_folder_is_named_in_the_hint(tmp_path: Path) -> None:
    missing = tmp_path / "never-run"

    with pytest.raises(RunFolderError, match=re.escape(f"--out {missing}`")):
        read_run_folder(missing)


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("{not json", "is not a readable results.json"),
        ('{"kind": "seeds"}', r"is not an flsuite results.json \(no scenario or primary_metric\)"),
    ],
)
def test_a_results_json_that_is_not_one_is_refused(tmp_path: Path, text: str, match: str) -> None:
    (tmp_path / "results.json").write_text(text)

    with pytest.raises(RunFolderError, match=match):
        read_run_folder(tmp_path)


def test_a_summary_without_runs_is_refused(fresh_seeds: Path) -> None:
    doc = json.loads((fresh_seeds / "results.json").read_text())
    doc["runs"] = []
    write_json(fresh_seeds / "results.json", doc)

    with pytest.raises(RunFolderError, match="lists no runs"):
        read_run_folder(fresh_seeds)


def test_seeds_of_different_settings_are_not_summarised(tmp_path: Path) -> None:
    runs = five_seeds()[:2]
    runs[1]["config"]["local-epochs"] = 2

    with pytest.raises(ValueError, match="must share their scenario and settings but the seed"):
        write_seeds_folder(tmp_path, runs)


# -- one seed, privacy ------------------------------------------------------------------------------------


def test_a_single_seed_report_says_so_and_shows_no_interval(tmp_path: Path) -> None:
    doc = write_single_folder(tmp_path, simple_run(0, 0.90))
    validate_results(doc)

    assert main(["report", str(tmp_path)]) == 0

    markdown = (tmp_path / "report.md").read_text()
    assert "**One seed.**" in markdown
    assert [line for line in markdown.splitlines() if line.startswith("## ")] == SECTIONS
    arms = md_table(markdown, "arm")
    for row, arm in zip(arms, ARM_NAMES, strict=True):
        assert row[1] == f"{doc['arms'][arm]['union']['roc_auc']:.3f}"
        assert "[" not in "".join(row)
    assert [r[6] for r in md_table(markdown, "comparison")] == ["one seed"] * 4
    assert "No hospital is worse off" not in markdown and "worse off federated than alone, beyond" not in markdown
    assert figure_titles(parse_page((tmp_path / "report.html").read_text())) == [
        "convergence",
        "per hospital",
        "utility against cost",
    ]


def test_a_private_run_adds_the_privacy_figure(tmp_path: Path) -> None:
    out = tmp_path / "dp"
    write_seeds_folder(out, five_seeds(epsilon=2.0))

    assert main(["report", str(out)]) == 0

    markdown = (out / "report.md").read_text()
    assert "Privacy (dp): epsilon 2.000 per run at delta 1e-05" in markdown
    assert "the 5 seed(s) together spent epsilon 10.000" in markdown
    page = (out / "report.html").read_text()
    assert figure_titles(parse_page(page)) == [
        "convergence",
        "per hospital",
        "utility against cost",
        "utility against privacy",
    ]
    assert len(svgs(page)) == 4
    for svg in svgs(page):
        ET.fromstring(svg)


# -- several run folders ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def compared(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """fedavg (about 0.90) against fedprox (about 0.80) over the same five seeds, reported together."""
    root = tmp_path_factory.mktemp("compare")
    write_seeds_folder(root / "fedavg", five_seeds())
    write_seeds_folder(root / "fedprox", weaker_seeds())
    assert main(["report", str(root / "fedprox"), str(root / "fedavg"), "--out", str(root / "out")]) == 0
    return root


def test_two_runs_are_compared_and_ranked(compared: Path) -> None:
    markdown = (compared / "out" / "report.md").read_text()
    comparison = json.loads((compared / "out" / "comparison.json").read_text())
    means = {
        name: json.loads((compared / name / "results.json").read_text())["statistics"]["arms"]["federated"]["union"]
        for name in ("fedavg", "fedprox")
    }

    headings = [line for line in markdown.splitlines() if line.startswith("## ")]
    assert headings == ["## Runs compared", "## Ranking", "## Run: fedprox", "## Run: fedavg", SECTIONS[-1]]
    assert markdown.count("### Per seed") == 2
    assert comparison["metric"] == "roc_auc" and comparison["seeds"] == [0, 1, 2, 3, 4]
    ranking = comparison["ranking"]
    assert ranking["order"] == ["fedavg", "fedprox"]
    assert ranking["ranks"] == {"fedavg": 1, "fedprox": 2}
    assert ranking["tied_with_best"] == ["fedavg"]
    (pair,) = ranking["pairs"]
    assert (pair["a"], pair["b"], pair["verdict"]) == ("fedavg", "fedprox", "higher")
    assert pair["p_holm"] == pair["p_value"] < 0.001  # one comparison: Holm changes nothing
    # fedavg - fedprox per seed: 0.1 minus the weaker run's offsets.
    assert pair["differences"] == [pytest.approx(0.1 - n) for n in NOISE]
    for name in ("fedavg", "fedprox"):
        assert ranking["means"][name]["mean"] == pytest.approx(means[name]["mean"])
    assert md_table(markdown, "rank") == [["1", "fedavg", ci(means["fedavg"])], ["2", "fedprox", ci(means["fedprox"])]]
    assert "fedavg alone has the top rank: every other run is behind at least one run beyond noise." in markdown
    runs = md_table(markdown, "run")
    assert [r[0] for r in runs] == ["fedprox", "fedavg"]
    assert [r[3] for r in runs] == [ci(means["fedprox"]), ci(means["fedavg"])]


def test_runs_of_different_scenarios_are_shown_side_by_side(tmp_path: Path) -> None:
    write_seeds_folder(tmp_path / "clinical", five_seeds())
    write_seeds_folder(tmp_path / "imaging", five_seeds(scenario="medical-three-hospitals"))

    assert main(["report", str(tmp_path / "clinical"), str(tmp_path / "imaging"), "--out", str(tmp_path / "out")]) == 0

    markdown = (tmp_path / "out" / "report.md").read_text()
    assert markdown.startswith("# flsuite report: medical-clinical, medical-three-hospitals, 2 runs compared\n")
    assert "## Runs compared" in markdown and "## Ranking" in markdown
    assert "The runs are of different scenarios or metrics: they are shown side by side, not ranked." in markdown
    assert "| rank |" not in markdown
    assert not (tmp_path / "out" / "comparison.json").exists()
    # Same strategy twice: the folder tells them apart.
    assert [r[0] for r in md_table(markdown, "run")] == ["fedavg (clinical)", "fedavg (imaging)"]


def test_runs_sharing_one_seed_are_not_ranked(tmp_path: Path) -> None:
    write_seeds_folder(tmp_path / "a", five_seeds())
    write_single_folder(tmp_path / "b", simple_run(4, 0.8, strategy="fedprox"))

    assert main(["report", str(tmp_path / "a"), str(tmp_path / "b"), "--out", str(tmp_path / "out")]) == 0

    comparison = json.loads((tmp_path / "out" / "comparison.json").read_text())
    assert comparison == {"metric": "roc_auc", "seeds": [4], "ranking": None}
    markdown = (tmp_path / "out" / "report.md").read_text()
    assert "The runs share 1 seed(s); a ranking needs at least 2 shared seeds" in markdown
