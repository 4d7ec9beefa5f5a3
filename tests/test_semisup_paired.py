"""The paired tests of semisup.paired_difference over class × seed, against hand-computed values."""

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from nero_lite import semisup


def _results(pairs: dict[tuple[str, int], tuple[float, float]], **extra) -> pd.DataFrame:
    """One row per (normal class, seed, method); ``pairs`` maps (class, seed) to (auroc of a, auroc of b)."""
    rows = []
    for (normal, seed), (a, b) in pairs.items():
        rows += [{"method": "a", "normal_class": normal, "seed": seed, "auroc": a, **extra},
                 {"method": "b", "normal_class": normal, "seed": seed, "auroc": b, **extra}]
    return pd.DataFrame(rows)


def test_pairs_are_one_difference_per_class_and_seed():
    results = _results({("x", 0): (0.9, 0.5), ("y", 0): (0.6, 0.5), ("x", 1): (0.7, 0.6), ("y", 1): (0.5, 0.6)})
    diff = semisup.paired_difference(results, "a", "b")
    assert diff.n_pairs == 4 and diff.pairs_ahead == 3
    assert diff.pairs.loc[("x", 0)] == pytest.approx(0.4) and diff.pairs.loc[("y", 1)] == pytest.approx(-0.1)
    # per seed the class mean comes first: seed 0 (0.4 + 0.1) / 2, seed 1 (0.1 - 0.1) / 2
    assert diff.differences.tolist() == pytest.approx([0.25, 0.0])
    assert diff.pair_mean == pytest.approx(diff.mean) == pytest.approx(0.125)


def test_sign_test_is_the_exact_binomial_test_of_the_signs():
    # six pairs, five ahead: P(X >= 5) = (6 + 1) / 64 under Binomial(6, 1/2); two-sided: 14 / 64
    d = [0.1, 0.2, 0.3, -0.05, 0.4, 0.5]
    results = _results({(str(c), 0): (0.5 + v, 0.5) for c, v in enumerate(d)})
    diff = semisup.paired_difference(results, "a", "b")
    assert diff.sign_test_p == pytest.approx(14 / 64)
    assert diff.sign_test_p == pytest.approx(stats.binomtest(5, 6, 0.5).pvalue)
    # Wilcoxon: |d| ranks 1..6, the one negative pair has rank 1, so W- = 1; the subsets of
    # {1..6} with rank sum <= 1 are {} and {1}: P(W- <= 1) = 2 / 64, two-sided 4 / 64
    assert diff.wilcoxon_p == pytest.approx(4 / 64)
    assert not diff.significant() and diff.significant(alpha=0.1) and diff.leads(alpha=0.1)


def test_nine_pairs_of_one_sign_reach_the_smallest_p_value():
    # 3 classes x 3 seeds, all ahead: both tests give 2 / 2**9; 3 seeds alone could at best give 2 / 2**3
    results = _results({(c, s): (0.7 + 0.01 * (3 * i + s), 0.6) for i, c in enumerate("xyz") for s in range(3)})
    diff = semisup.paired_difference(results, "a", "b")
    assert diff.n_pairs == 9 and diff.pairs_ahead == 9
    assert diff.sign_test_p == pytest.approx(2 / 512) and diff.wilcoxon_p == pytest.approx(2 / 512)
    assert diff.significant() and diff.leads()
    reverse = semisup.paired_difference(results, "b", "a")
    assert reverse.significant() and not reverse.leads() and reverse.pair_mean < 0
    # b − a is negative: the second method of the pair, here "a", is the one ahead
    assert reverse.verdict() == ("-0.140, 95 % CI [-0.157, -0.123], ahead in 0 of 9 class × seed pairs; "
                                 "Wilcoxon p = 0.004, sign test p = 0.004: a ahead (Wilcoxon p < 0.05)")


def test_consistent_seeds_are_weaker_evidence_than_the_tests_need():
    # every seed has the same sign, yet within each seed one class goes the other way
    results = _results({("x", s): (0.80, 0.70) for s in range(3)} | {("y", s): (0.60, 0.62) for s in range(3)})
    diff = semisup.paired_difference(results, "a", "b")
    assert diff.consistent_lead  # the old per-seed reading
    assert diff.pairs_ahead == 3 and diff.sign_test_p == pytest.approx(1.0)  # 3 of 6 ahead
    assert not diff.significant()
    assert diff.verdict().endswith("no difference shown at α = 0.05")


def test_bootstrap_interval():
    # two pairs, 0 and 1: a resample's mean is 0, 1/2 or 1 with probabilities 1/4, 1/2, 1/4,
    # so the 2.5 % and 97.5 % quantiles are 0 and 1
    results = _results({("x", 0): (0.5, 0.5), ("y", 0): (1.0, 0.0)})
    diff = semisup.paired_difference(results, "a", "b")
    assert diff.interval() == pytest.approx((0.0, 1.0))
    # identical pairs: no spread at all
    same = semisup.paired_difference(_results({(c, 0): (0.8, 0.6) for c in "xyz"}), "a", "b")
    assert same.interval() == pytest.approx((0.2, 0.2))
    # all pairs positive: the interval lies in [min, max] and excludes 0; it is reproducible
    d = np.array([0.02, 0.05, 0.01, 0.08, 0.03, 0.04])
    spread = semisup.paired_difference(_results({(str(c), 0): (0.5 + v, 0.5) for c, v in enumerate(d)}), "a", "b")
    low, high = spread.interval()
    assert d.min() <= low < d.mean() < high <= d.max() and spread.interval() == (low, high)
    assert spread.interval(0.5)[0] > low  # a narrower level, a narrower interval
    with pytest.raises(ValueError, match="level"):
        spread.interval(1.0)


def test_where_selects_lists_and_results_without_classes_have_no_pairs():
    results = _results({(c, s): (0.7, 0.6) for c in "xyz" for s in range(2)})
    two = semisup.paired_difference(results, "a", "b", normal_class=["x", "z"])
    assert two.n_pairs == 4 and set(two.pairs.index.get_level_values(0)) == {"x", "z"}
    no_classes = semisup.paired_difference(results.rename(columns={"normal_class": "normal"}), "a", "b")
    assert no_classes.pairs is None and no_classes.mean == pytest.approx(0.1)
    with pytest.raises(ValueError, match="no class × seed pairs"):
        no_classes.wilcoxon_p
    zero = semisup.paired_difference(_results({(c, 0): (0.6, 0.6) for c in "xy"}), "a", "b")
    assert np.isnan(zero.wilcoxon_p) and np.isnan(zero.sign_test_p) and not zero.significant()


def test_mean_std_formats_the_summary():
    results = _results({(c, s): (0.7 + 0.1 * s, 0.6) for c in "xy" for s in range(3)})
    text = semisup.mean_std(results, ["method"])
    # a: seeds 0.7, 0.8, 0.9 -> 0.8 ± 0.1; b: 0.6 in every seed
    assert text.to_dict() == {"a": "0.800 ± 0.100", "b": "0.600 ± 0.000"}
    assert semisup.mean_std(results, ["method"], digits=1)["a"] == "0.8 ± 0.1"


def test_mean_std_says_when_one_seed_was_run():
    results = _results({("x", 0): (0.7, 0.6), ("y", 0): (0.9, 0.6)})
    assert semisup.mean_std(results, ["method"]).to_dict() == {"a": "0.800 (1 seed)", "b": "0.600 (1 seed)"}


def test_the_verdict_names_what_was_paired():
    results = _results({(c, s): (0.6 + 0.01 * s, 0.5) for c in "xyz" for s in range(2)}).rename(columns={"normal_class": "detector"})
    diff = semisup.paired_difference(results, "a", "b", unit="detector")
    assert diff.unit == "detector" and "ahead in 6 of 6 detector × seed pairs" in diff.verdict()
    assert semisup.paired_difference(_results({("x", 0): (0.6, 0.5)}), "a", "b").unit == "class"
