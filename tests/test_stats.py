"""Statistics over seeds (flcore.experiment.stats): intervals, paired tests, Holm, convergence, summaries and rankings.

Every expected value is worked out by hand from Student's t table and the
closed form of its distribution function (for an even number of degrees of
freedom), never by calling the code under test:

* ``t(0.975, 2) = 4.3026527`` and ``t(0.975, 4) = 2.7764451``;
* two-sided p with 2 degrees of freedom: ``p = 1 - |t| / sqrt(2 + t^2)``;
* with 4: ``p = 1 - x (1 + (1 - x^2) / 2)`` where ``x = |t| / sqrt(4 + t^2)``.
"""

from __future__ import annotations

from typing import Any

import pytest
from handmade import make_run

from flcore.experiment.stats import curve_of, holm, interval, paired, rank, rounds_to, summarise, t_quantile

T2 = 4.30265273  # t(0.975, 2 degrees of freedom)
T4 = 2.77644511  # t(0.975, 4 degrees of freedom)


def approx(value: float) -> Any:
    return pytest.approx(value, rel=1e-6)


# --------------------------------------------------------------------------------------
# interval
# --------------------------------------------------------------------------------------


def test_t_quantile_matches_the_table() -> None:
    assert t_quantile(3) == approx(T2)
    assert t_quantile(5) == approx(T4)
    assert t_quantile(5, confidence=0.90) == approx(2.13184679)


def test_interval_of_five_values() -> None:
    # Prepare: mean 0.82; squared deviations 0.0004 + 0 + 0.0009 + 0.0009 + 0.0004 = 0.0026.
    values = [0.80, 0.82, 0.85, 0.79, 0.84]

    # Execute
    iv = interval(values)

    # Assert: sd = sqrt(0.0026 / 4); half width = t(0.975, 4) * sd / sqrt(5).
    assert iv["n"] == 5
    assert iv["mean"] == approx(0.82)
    assert iv["sd"] == approx(0.0254950976)
    assert iv["half_width"] == approx(0.0316563448)
    assert iv["ci_low"] == approx(0.788343655)
    assert iv["ci_high"] == approx(0.851656345)
    assert iv["values"] == values


def test_interval_at_another_confidence() -> None:
    iv = interval([0.80, 0.82, 0.85, 0.79, 0.84], confidence=0.90)

    assert iv["half_width"] == approx(0.0243067932)  # t(0.95, 4) = 2.13184679
    assert iv["ci_low"] == approx(0.795693207)


def test_interval_leaves_out_missing_values() -> None:
    iv = interval([0.80, None, 0.82, float("nan"), 0.85, float("inf"), 0.79, 0.84])

    assert iv["n"] == 5
    assert iv["values"] == [0.80, 0.82, 0.85, 0.79, 0.84]
    assert iv["mean"] == approx(0.82)
    assert iv["ci_low"] == approx(0.788343655)


def test_one_value_has_a_mean_but_no_interval() -> None:
    iv = interval([None, 0.7])

    assert iv == {"n": 1, "mean": 0.7, "sd": None, "ci_low": None, "ci_high": None, "half_width": None, "values": [0.7]}


@pytest.mark.parametrize("values", [[], [None, float("nan")]])
def test_no_value_has_no_mean(values: list[float | None]) -> None:
    iv = interval(values)

    assert iv == {"n": 0, "mean": None, "sd": None, "ci_low": None, "ci_high": None, "half_width": None, "values": []}


def test_equal_values_have_an_interval_of_width_zero() -> None:
    iv = interval([0.5, 0.5, 0.5])

    assert (iv["mean"], iv["sd"], iv["ci_low"], iv["ci_high"], iv["half_width"]) == (0.5, 0.0, 0.5, 0.5, 0.0)


# --------------------------------------------------------------------------------------
# paired
# --------------------------------------------------------------------------------------

# Differences 0.01, 0.03, 0.02, 0.04, 0.00: mean 0.02, sd sqrt(0.001 / 4) = 0.0158114,
# t = 0.02 / (0.0158114 / sqrt 5) = 2 sqrt 2 = 2.8284271 (just above t(0.975, 4) = 2.7764451),
# p = 1 - (7/6) sqrt(2/3) = 0.0474207, d_z = 0.02 / 0.0158114 = sqrt(8/5) = 1.2649111,
# half width 2.7764451 * 0.0158114 / sqrt 5 = 0.0196324.
HIGHER_A = [0.81, 0.83, 0.82, 0.84, 0.80]
BASE = [0.80, 0.80, 0.80, 0.80, 0.80]


def test_paired_difference_beyond_noise() -> None:
    p = paired(HIGHER_A, BASE)

    assert p["n"] == 5
    assert p["differences"] == [approx(d) for d in (0.01, 0.03, 0.02, 0.04, 0.0)]
    assert p["mean_difference"] == approx(0.02)
    assert p["sd"] == approx(0.0158113883)
    assert p["ci_low"] == approx(0.000367568385)
    assert p["ci_high"] == approx(0.0396324316)
    assert p["t"] == approx(2.82842712)
    assert p["p_value"] == approx(0.0474206556)
    assert p["effect_size_dz"] == approx(1.26491106)
    assert p["verdict"] == "higher"


def test_paired_difference_the_other_way_round() -> None:
    p = paired(BASE, HIGHER_A)

    assert p["mean_difference"] == approx(-0.02)
    assert (p["ci_low"], p["ci_high"]) == (approx(-0.0396324316), approx(-0.000367568385))
    assert p["t"] == approx(-2.8284271)
    assert p["p_value"] == approx(0.0474206556)
    assert p["effect_size_dz"] == approx(-1.26491106)
    assert p["verdict"] == "lower"


def test_paired_difference_within_noise() -> None:
    # Differences 0.02, -0.01, 0.01, 0.00, 0.03: mean 0.01, sd 0.0158114, t = sqrt 2,
    # p = 1 - (4/3) sqrt(1/3) = 0.2301996, d_z = 0.6324555; interval 0.01 -+ 0.0196324 includes 0.
    p = paired([0.82, 0.79, 0.81, 0.80, 0.83], BASE)

    assert p["mean_difference"] == approx(0.01)
    assert (p["ci_low"], p["ci_high"]) == (approx(-0.00963243161), approx(0.0296324316))
    assert p["t"] == approx(1.41421356)
    assert p["p_value"] == approx(0.230199641)
    assert p["effect_size_dz"] == approx(0.632455532)
    assert p["verdict"] == "within noise"


def test_pairs_with_a_missing_value_are_left_out() -> None:
    # Seed 1 lacks a, seed 6 lacks b (NaN): the other five pairs are those of the test above it.
    a = [0.81, None, 0.83, 0.82, 0.84, 0.80, 0.9]
    b = [0.80, 0.80, 0.80, 0.80, 0.80, 0.80, float("nan")]

    p = paired(a, b)

    assert p["n"] == 5
    assert p["mean_difference"] == approx(0.02)
    assert p["p_value"] == approx(0.0474206556)
    assert p["verdict"] == "higher"


def test_the_same_difference_at_every_seed_needs_no_test() -> None:
    # 0.75 - 0.5 and 0.5 - 0.25 are both exactly 0.25: sd 0, nothing to test against.
    up = paired([0.75, 0.5], [0.5, 0.25])
    down = paired([0.5, 0.25], [0.75, 0.5])
    same = paired([0.75, 0.5], [0.75, 0.5])

    assert (up["mean_difference"], up["sd"], up["verdict"]) == (0.25, 0.0, "higher")
    assert (down["mean_difference"], down["verdict"]) == (-0.25, "lower")
    assert (same["mean_difference"], same["verdict"]) == (0.0, "identical")
    for p in (up, down, same):
        assert p["t"] is None and p["p_value"] is None and p["effect_size_dz"] is None


def test_one_seed_gives_a_difference_without_a_test() -> None:
    one = paired([0.75, None], [0.5, 0.5])
    none = paired([None], [0.5])

    assert (one["n"], one["mean_difference"], one["ci_low"], one["p_value"], one["verdict"]) == (
        1,
        0.25,
        None,
        None,
        "one seed",
    )
    assert (none["n"], none["mean_difference"], none["verdict"]) == (0, None, None)


def test_paired_values_must_come_in_pairs() -> None:
    with pytest.raises(ValueError, match=r"one pair per seed; got 2 and 1 values"):
        paired([0.8, 0.9], [0.8])


# --------------------------------------------------------------------------------------
# holm
# --------------------------------------------------------------------------------------


def test_holm_multiplies_by_the_remaining_comparisons_and_stays_monotone() -> None:
    # Sorted: 0.01 x 4 = 0.04; 0.03 x 3 = 0.09; 0.04 x 2 = 0.08, raised to 0.09; 0.5 x 1 = 0.5.
    assert holm([0.01, 0.04, 0.03, None, 0.5]) == [
        approx(0.04),
        approx(0.09),
        approx(0.09),
        None,
        approx(0.5),
    ]


def test_holm_caps_at_one() -> None:
    # 0.6 x 2 = 1.2 -> 1; 0.7 x 1 = 0.7, raised to 1.
    assert holm([0.7, 0.6]) == [1.0, 1.0]
    # 0.3 x 2 = 0.6; 0.4 x 1 = 0.4, raised to 0.6.
    assert holm([0.3, 0.4]) == [approx(0.6), approx(0.6)]


def test_holm_of_nothing() -> None:
    assert holm([]) == []
    assert holm([None, None]) == [None, None]
    assert holm([0.02]) == [0.02]


# --------------------------------------------------------------------------------------
# rounds_to
# --------------------------------------------------------------------------------------


def test_rounds_to_95_percent_of_the_final_value() -> None:
    # 95% of 0.95 is 0.9025: round 3 (0.90) falls short, round 4 (0.92) reaches it.
    assert rounds_to([0.5, 0.7, 0.9, 0.92, 0.95]) == 4
    # 95% of 1.0 is exactly 0.95, reached in round 2; a missing round is skipped.
    assert rounds_to([None, 0.95, 1.0]) == 2
    assert rounds_to([0.2, 0.5, 1.0], fraction=0.5) == 2
    assert rounds_to([0.8]) == 1


@pytest.mark.parametrize("curve", [[], [0.5, None], [0.5, float("nan")], [0.5, 0.0], [-0.3, -0.2]])
def test_rounds_to_is_undefined_without_a_positive_last_value(curve: list[float | None]) -> None:
    assert rounds_to(curve) is None


# --------------------------------------------------------------------------------------
# summarise
# --------------------------------------------------------------------------------------

A, B, C = "hospital-a", "hospital-b", "hospital-c"


def three_seeds(epsilon: bool = True) -> list[dict[str, Any]]:
    """Three seeds with hand-picked values: hospital C is better off alone, A and B gain from the federation.

    federated union 0.90, 0.92, 0.94; centralised 0.91, 0.94, 0.94; local-only 0.80 at every seed.
    Per site (A, B, C) federated 0.95/0.90/0.70 + 0.01/0.02/0.02 per seed; local-only
    0.90/0.80/0.75 + 0.02/0.03/0.03 per seed; centralised 0.96/0.91/0.80 at every seed.
    """
    fed_union = (0.90, 0.92, 0.94)
    cen_union = (0.91, 0.94, 0.94)
    fed_sites = ((0.95, 0.90, 0.70), (0.96, 0.92, 0.72), (0.97, 0.94, 0.74))
    loc_sites = ((0.90, 0.80, 0.75), (0.92, 0.83, 0.78), (0.94, 0.86, 0.81))
    fed_curves = ([0.5, 0.85, 0.90], [0.88, 0.90, 0.92], [0.6, 0.9, 0.94])  # 95% reached in round 3, 1, 2
    secondary = ({"pr_auc": 0.5, "f1": 0.4}, {"pr_auc": 0.6}, {"pr_auc": 0.7})
    return [
        make_run(
            s,
            union={"federated": fed_union[s], "centralised": cen_union[s], "local_only": 0.80},
            per_site={"federated": fed_sites[s], "centralised": (0.96, 0.91, 0.80), "local_only": loc_sites[s]},
            curves={"federated": fed_curves[s], "centralised": None, "local_only": [None, 0.8, 0.8]},
            wall_time_s={"federated": 10.0 + 2 * s, "centralised": 2.0, "local_only": 3.0},
            bytes_sent=1000 + 200 * s,
            bytes_received=2000,
            epsilon=(1.0, 1.5, 2.0)[s] if epsilon else None,
            peak_rss_bytes=100 * (s + 1),
            secondary={"federated": secondary[s]},
        )
        for s in range(3)
    ]


@pytest.fixture(scope="module")
def stats() -> dict[str, Any]:
    return summarise(three_seeds())


def test_summary_names_the_metric_and_seeds(stats: dict[str, Any]) -> None:
    assert (stats["metric"], stats["seeds"], stats["n_seeds"], stats["confidence"]) == ("roc_auc", [0, 1, 2], 3, 0.95)


def test_summary_arm_intervals(stats: dict[str, Any]) -> None:
    fed = stats["arms"]["federated"]
    # 0.90, 0.92, 0.94: mean 0.92, sd 0.02, half width 4.3026527 * 0.02 / sqrt 3 = 0.0496828.
    assert fed["union"]["mean"] == approx(0.92)
    assert fed["union"]["sd"] == approx(0.02)
    assert (fed["union"]["ci_low"], fed["union"]["ci_high"]) == (approx(0.870317246), approx(0.969682754))
    # Mean over sites 0.85, 0.8666667, 0.8833333: sd 1/60, half width 0.0414023.
    assert fed["mean_over_sites"]["mean"] == approx(0.866666667)
    assert fed["mean_over_sites"]["half_width"] == approx(0.0414022952)
    # The worst site is C at every seed: 0.70, 0.72, 0.74.
    assert fed["worst_site_value"]["mean"] == approx(0.72)
    assert fed["worst_site_value"]["values"] == [0.70, 0.72, 0.74]
    # Secondary metrics: pr_auc at every seed; f1 at seed 0 only (one value, no interval); never the primary.
    assert sorted(fed["secondary"]) == ["f1", "pr_auc"]
    assert fed["secondary"]["pr_auc"]["mean"] == approx(0.6)
    assert (fed["secondary"]["f1"]["n"], fed["secondary"]["f1"]["mean"], fed["secondary"]["f1"]["ci_low"]) == (
        1,
        0.4,
        None,
    )
    cen, loc = stats["arms"]["centralised"], stats["arms"]["local_only"]
    assert cen["secondary"] == {} and loc["secondary"] == {}
    assert cen["union"]["mean"] == approx(0.93)
    # 0.89 at every seed: an interval of width 0.
    assert cen["mean_over_sites"]["mean"] == approx(0.89)
    assert cen["mean_over_sites"]["half_width"] == pytest.approx(0.0, abs=1e-12)
    assert cen["worst_site_value"]["values"] == [0.80, 0.80, 0.80]
    assert loc["union"]["values"] == [0.80, 0.80, 0.80]
    assert loc["mean_over_sites"]["mean"] == approx(0.843333333)


def test_summary_paired_federated_against_centralised(stats: dict[str, Any]) -> None:
    fc = stats["paired"]["federated_vs_centralised"]
    # Differences -0.01, -0.02, 0.00: mean -0.01, sd 0.01, t = -sqrt 3, p = 1 - sqrt(3/5) = 0.2254033.
    union = fc["union"]
    assert union["differences"] == [approx(-0.01), approx(-0.02), pytest.approx(0.0, abs=1e-12)]
    assert union["mean_difference"] == approx(-0.01)
    assert (union["ci_low"], union["ci_high"]) == (approx(-0.0348413771), approx(0.0148413771))
    assert union["t"] == approx(-1.73205081)
    assert union["p_value"] == approx(0.225403331)
    assert union["effect_size_dz"] == approx(-1.0)
    assert union["verdict"] == "within noise"
    # Mean over sites: -0.04, -0.0233333, -0.0066667.
    assert fc["mean_over_sites"]["mean_difference"] == approx(-0.0233333333)
    assert fc["mean_over_sites"]["verdict"] == "within noise"
    # Ratio 0.90/0.91, 0.92/0.94, 0.94/0.94 = 0.9890110, 0.9787234, 1.
    assert fc["ratio"]["values"] == [approx(0.989010989), approx(0.978723404), 1.0]
    assert fc["ratio"]["mean"] == approx(0.989244798)


def test_summary_paired_federated_against_local_only(stats: dict[str, Any]) -> None:
    fl = stats["paired"]["federated_vs_local_only"]
    # Differences 0.10, 0.12, 0.14: mean 0.12, sd 0.02, t = 6 sqrt 3, p = 1 - t / sqrt(2 + t^2) = 0.0091326.
    union = fl["union"]
    assert union["mean_difference"] == approx(0.12)
    assert (union["ci_low"], union["ci_high"]) == (approx(0.0703172458), approx(0.169682754))
    assert union["t"] == approx(10.3923048)
    assert union["p_value"] == approx(0.00913261139)
    assert union["effect_size_dz"] == approx(6.0)
    assert union["verdict"] == "higher"
    # Mean over sites: 0.0333333, 0.0233333, 0.0133333: sd 0.01, t = 0.07 / sqrt 3 / 0.01 = 4.0414519,
    # p = 0.0561202 and the interval 0.0233333 -+ 0.0248414 includes 0: not enough seeds to tell.
    mean_over_sites = fl["mean_over_sites"]
    assert mean_over_sites["mean_difference"] == approx(0.0233333333)
    assert mean_over_sites["ci_low"] == approx(-0.00150804378)
    assert mean_over_sites["p_value"] == approx(0.0561201926)
    assert mean_over_sites["verdict"] == "within noise"


def test_summary_per_site_gain_worst_site_and_spread(stats: dict[str, Any]) -> None:
    sites = stats["sites"]
    assert list(sites) == [A, B, C]
    # Gains over local-only: A 0.05, 0.04, 0.03 (t = 4 sqrt 3, p = 0.0202041); B 0.10, 0.09, 0.08; C -0.05..-0.07.
    gain_a = sites[A]["gain_over_local"]
    assert gain_a["mean_difference"] == approx(0.04)
    assert (gain_a["ci_low"], gain_a["ci_high"]) == (approx(0.0151586229), approx(0.0648413771))
    assert gain_a["p_value"] == approx(0.0202041029)
    assert gain_a["verdict"] == "higher"
    assert sites[B]["gain_over_local"]["mean_difference"] == approx(0.09)
    assert sites[C]["gain_over_local"]["mean_difference"] == approx(-0.06)
    assert sites[C]["gain_over_local"]["p_value"] == approx(0.00913261139)
    assert sites[C]["gain_over_local"]["verdict"] == "lower"
    # Against centralised (0.96 at every seed), A is -0.01, 0.00, +0.01.
    assert sites[A]["gap_to_centralised"]["mean_difference"] == pytest.approx(0.0, abs=1e-12)
    assert sites[A]["gap_to_centralised"]["verdict"] == "within noise"
    assert sites[A]["federated"]["mean"] == approx(0.96)
    assert sites[C]["local_only"]["mean"] == approx(0.78)
    assert sites[B]["centralised"]["values"] == [0.91, 0.91, 0.91]

    assert stats["worst_site"]["site"] == C
    assert stats["worst_site"]["federated"]["mean"] == approx(0.72)
    assert stats["worst_site"]["federated"]["ci_low"] == approx(0.670317246)
    assert stats["worst_site"]["gain_over_local"]["verdict"] == "lower"
    assert stats["best_site"]["site"] == A
    assert stats["least_gain_site"]["site"] == C
    assert stats["sites_worse_off"] == [C]
    assert stats["sites_better_off"] == [A, B]
    # Best minus worst site per seed: federated 0.25, 0.24, 0.23; local-only 0.15, 0.14, 0.13; centralised 0.16.
    assert stats["spread"]["federated"]["mean"] == approx(0.24)
    assert stats["spread"]["federated"]["sd"] == approx(0.01)
    assert stats["spread"]["local_only"]["mean"] == approx(0.14)
    assert stats["spread"]["centralised"]["values"] == [approx(0.16)] * 3


def test_summary_costs(stats: dict[str, Any]) -> None:
    fed = stats["costs"]["federated"]
    assert fed["wall_time_s"]["values"] == [10.0, 12.0, 14.0]
    assert fed["wall_time_s"]["mean"] == approx(12.0)
    # 95% of the final value first reached in rounds 3, 1 and 2.
    assert fed["rounds_to_95pct"]["values"] == [3.0, 1.0, 2.0]
    assert (fed["rounds_to_95pct"]["mean"], fed["rounds_to_95pct"]["sd"]) == (approx(2.0), approx(1.0))
    assert fed["bytes_sent"]["values"] == [1000.0, 1200.0, 1400.0]
    assert fed["bytes_received"]["mean"] == approx(2000.0)
    # 3000, 3200, 3400 bytes: mean 3200, sd 200, half width 4.3026527 * 200 / sqrt 3 = 496.8275.
    assert fed["bytes_total"]["mean"] == approx(3200.0)
    assert (fed["bytes_total"]["ci_low"], fed["bytes_total"]["ci_high"]) == (approx(2703.17246), approx(3696.82754))
    assert fed["epsilon"]["values"] == [1.0, 1.5, 2.0]
    assert fed["epsilon"]["mean"] == approx(1.5)
    assert fed["epsilon_all_seeds"] == approx(4.5)
    # The baselines exchange nothing and spend no privacy budget; centralised recorded no curve.
    loc, cen = stats["costs"]["local_only"], stats["costs"]["centralised"]
    assert set(loc) == set(cen) == {"wall_time_s", "rounds_to_95pct"}
    assert loc["rounds_to_95pct"]["values"] == [2.0, 2.0, 2.0]
    assert (cen["rounds_to_95pct"]["n"], cen["rounds_to_95pct"]["mean"]) == (0, None)
    assert cen["wall_time_s"]["mean"] == approx(2.0)
    assert stats["peak_memory_bytes"]["mean"] == approx(200.0)


def test_summary_without_privacy_or_memory_has_no_epsilon() -> None:
    runs = three_seeds(epsilon=False)
    for r in runs:
        del r["resources"]

    s = summarise(runs)

    assert s["costs"]["federated"]["epsilon"] is None
    assert s["costs"]["federated"]["epsilon_all_seeds"] is None
    assert s["peak_memory_bytes"] is None


def test_summary_of_one_seed_has_no_intervals_or_tests() -> None:
    s = summarise(three_seeds()[:1])

    assert (s["n_seeds"], s["seeds"]) == (1, [0])
    assert s["arms"]["federated"]["union"]["mean"] == approx(0.90)
    assert s["arms"]["federated"]["union"]["ci_low"] is None
    assert s["paired"]["federated_vs_local_only"]["union"]["mean_difference"] == approx(0.10)
    assert s["paired"]["federated_vs_local_only"]["union"]["verdict"] == "one seed"
    assert s["sites"][C]["gain_over_local"]["verdict"] == "one seed"
    # A single draw is never "worse off beyond noise".
    assert s["sites_worse_off"] == [] and s["sites_better_off"] == []
    assert s["worst_site"]["site"] == C
    assert s["costs"]["federated"]["epsilon_all_seeds"] == approx(1.0)


def test_summary_keeps_the_sites_every_seed_has() -> None:
    # Seed 1 lost hospital C (e.g. left out in lenient mode): only A and B are compared over seeds.
    runs = three_seeds()[:2]
    runs[1] = make_run(
        1,
        union={"federated": 0.92, "centralised": 0.94, "local_only": 0.80},
        per_site={"federated": (0.96, 0.92), "centralised": (0.96, 0.91), "local_only": (0.92, 0.83)},
        sites=(A, B),
    )

    s = summarise(runs)

    assert list(s["sites"]) == [A, B]
    assert s["worst_site"]["site"] == B
    assert s["sites"][A]["federated"]["values"] == [0.95, 0.96]


def test_curve_of_falls_back_to_the_federated_history() -> None:
    run = three_seeds()[0]
    del run["arms"]["federated"]["curve"]
    history = [{"evaluate": {"roc_auc": 0.6}}, {"evaluate": {}}, {"evaluate": {"roc_auc": 0.9}}]
    run["arms"]["federated"]["history"] = history

    assert curve_of(run, "federated") == [0.6, None, 0.9]
    assert curve_of(run, "centralised") == []  # no curve recorded for this baseline
    assert curve_of(run, "local_only") == [None, 0.8, 0.8]


def test_summarise_refuses_two_runs_of_one_seed() -> None:
    runs = three_seeds()
    runs[2]["seed"] = 0

    with pytest.raises(ValueError, match=r"each run must have its own seed; got seeds \[0, 1, 0\]"):
        summarise(runs)


def test_summarise_needs_a_run() -> None:
    with pytest.raises(ValueError, match="no runs to summarise"):
        summarise([])


# --------------------------------------------------------------------------------------
# rank
# --------------------------------------------------------------------------------------


def pair(ranking: dict[str, Any], a: str, b: str) -> dict[str, Any]:
    (found,) = [p for p in ranking["pairs"] if (p["a"], p["b"]) == (a, b)]
    return found


def test_rank_separates_only_differences_beyond_noise() -> None:
    # A - B: 0.02, -0.01, 0.01, 0.00, 0.03 (t = sqrt 2, p = 0.2301996).
    # A - C: 0.11, 0.13, 0.12, 0.14, 0.10 (mean 0.12, sd 0.0158114, t = 12 sqrt 2, p = 7.0693497e-5).
    # B - C: 0.09, 0.14, 0.11, 0.14, 0.07 (mean 0.11, sd sqrt(0.0038 / 4), t = 7.9802388, p = 0.0013364).
    groups = {
        "C": [0.79, 0.78, 0.80, 0.79, 0.84],
        "A": [0.90, 0.91, 0.92, 0.93, 0.94],
        "B": [0.88, 0.92, 0.91, 0.93, 0.91],
    }

    r = rank(groups)

    assert r["order"] == ["A", "B", "C"]
    assert {k: iv["mean"] for k, iv in r["means"].items()} == {"A": approx(0.92), "B": approx(0.91), "C": approx(0.80)}
    assert [(p["a"], p["b"]) for p in r["pairs"]] == [("A", "B"), ("A", "C"), ("B", "C")]
    ab, ac, bc = pair(r, "A", "B"), pair(r, "A", "C"), pair(r, "B", "C")
    assert (ab["p_value"], ac["p_value"], bc["p_value"]) == (
        approx(0.230199641),
        approx(7.06934969e-5),
        approx(0.00133640761),
    )
    assert ac["t"] == approx(16.9705627)
    assert bc["t"] == approx(7.98023875)
    # Holm over 3 pairs: 7.07e-5 x 3 = 2.1208049e-4; 0.0013364 x 2 = 0.0026728; 0.2302 x 1.
    assert ac["p_holm"] == approx(2.12080491e-4)
    assert bc["p_holm"] == approx(0.00267281523)
    assert ab["p_holm"] == approx(0.230199641)
    assert (ab["verdict"], ac["verdict"], bc["verdict"]) == ("within noise", "higher", "higher")
    assert r["ranks"] == {"A": 1, "B": 1, "C": 3}
    assert r["tied_with_best"] == ["A", "B"]


def test_rank_holm_can_turn_a_difference_into_noise() -> None:
    # X - Y alone is beyond noise (p = 0.0474207 < 0.05, as in the paired test above), but it is one of
    # three comparisons and the smallest p: 3 x 0.0474207 = 0.1422621 >= 0.05.
    y = [0.80, 0.80, 0.80, 0.80, 0.80]
    groups = {"X": [0.81, 0.83, 0.82, 0.84, 0.80], "Y": y, "Z": [0.74, 0.84, 0.75, 0.83, 0.79]}
    assert paired(groups["X"], y)["verdict"] == "higher"

    r = rank(groups)

    xy = pair(r, "X", "Y")
    assert xy["p_value"] == approx(0.0474206556)
    assert xy["p_holm"] == approx(0.142261967)
    assert xy["verdict"] == "within noise"
    assert r["ranks"] == {"X": 1, "Y": 1, "Z": 1}
    assert r["tied_with_best"] == ["X", "Y", "Z"]


def test_rank_uses_the_seeds_both_labels_have() -> None:
    # P has the higher mean over all its seeds (0.4166667 against 0.375), but on the two seeds both have,
    # Q is ahead by exactly 0.25 each time (sd 0: beyond noise without a p-value): Q ranks above P.
    r = rank({"P": [1.0, 0.0, 0.25], "Q": [None, 0.25, 0.5]})

    assert r["order"] == ["P", "Q"]
    pq = pair(r, "P", "Q")
    assert (pq["n"], pq["mean_difference"], pq["p_holm"], pq["verdict"]) == (2, -0.25, None, "lower")
    assert r["ranks"] == {"P": 2, "Q": 1}


def test_rank_of_one_seed_separates_nothing() -> None:
    r = rank({"A": [0.9], "B": [0.8]})

    assert r["order"] == ["A", "B"]
    assert r["pairs"][0]["verdict"] == "one seed"
    assert r["ranks"] == {"A": 1, "B": 1}
    assert r["tied_with_best"] == ["A", "B"]


def test_rank_orders_a_mean_of_zero_above_negative_means() -> None:
    # Z - P: 0.1, 0.2, 0.15 (t = 3 sqrt 3, p = 0.0354): Z is ahead beyond noise.
    r = rank({"P": [-0.1, -0.2, -0.15], "Z": [0.0, 0.0, 0.0]})

    assert r["ranks"] == {"P": 2, "Z": 1}
    assert r["order"] == ["Z", "P"]
    assert r["tied_with_best"] == ["Z"]
