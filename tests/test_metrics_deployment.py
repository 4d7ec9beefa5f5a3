"""Thresholds as in deployment: accepted fractions, calibration runs, precision of the flags."""

import numpy as np
import pytest

from nero_lite import metrics


def test_accepted_fraction_counts_ties_as_accepted():
    assert metrics.accepted_fraction([0.1, 0.5, 0.5, 0.9], 0.5) == 0.75
    assert metrics.accepted_fraction([0.1, 0.2], 0.3) == 0.0


def test_flag_precision_by_hand():
    # 1 % OOD, TPR 0.95, FPR 0.5: flagged OOD 0.01 * 0.5 = 0.005, flagged ID 0.99 * 0.05 = 0.0495
    assert metrics.flag_precision(0.95, 0.5, 0.01) == pytest.approx(0.005 / 0.0545)
    # 10 % OOD, TPR 0.9, FPR 0.2: 0.1 * 0.8 = 0.08 against 0.9 * 0.1 = 0.09
    assert metrics.flag_precision(0.9, 0.2, 0.1) == pytest.approx(0.08 / 0.17)
    # a perfect detector flags only OOD images; nothing flagged gives nan
    assert metrics.flag_precision(1.0, 0.0, 0.01) == 1.0
    assert np.isnan(metrics.flag_precision(1.0, 1.0, 0.3))
    # broadcasting over arrays
    np.testing.assert_allclose(metrics.flag_precision(0.95, [0.5, 0.0], 0.5), [0.5 / 0.55, 1 / 1.05])
    with pytest.raises(ValueError):
        metrics.flag_precision(1.2, 0.5, 0.1)


def test_calibration_runs_by_hand():
    # ID scores 1..10, calibration half: the threshold accepting 95 % of 5 scores is their
    # minimum; every row must agree with a direct count on its own split
    ids = np.arange(1.0, 11.0)
    oods = np.array([0.0, 2.5, 4.5, 11.0])
    runs = metrics.calibration_runs(ids, oods, tpr=0.95, calibration_fraction=0.5, repeats=50, seed=1)
    assert list(runs.columns) == ["threshold", "calibration_tpr", "tpr", "fpr"]
    assert len(runs) == 50
    assert (runs.calibration_tpr == 1.0).all()
    for threshold, tpr, fpr in runs[["threshold", "tpr", "fpr"]].itertuples(index=False):
        # 5 evaluation scores; threshold t = min of the calibration half
        evaluation_accepted = np.sum(ids >= threshold) - 5
        assert tpr == pytest.approx(evaluation_accepted / 5)
        assert fpr == np.mean(oods >= threshold)
    # the threshold is the calibration minimum, so it can only be one of 1..6
    assert set(runs.threshold) <= {1.0, 2.0, 3.0, 4.0, 5.0, 6.0}
    assert runs.equals(metrics.calibration_runs(ids, oods, 0.95, 0.5, 50, seed=1))


def test_calibration_runs_rejects_bad_splits():
    with pytest.raises(ValueError):
        metrics.calibration_runs([1.0, 2.0], [0.0], calibration_fraction=1.0)
    with pytest.raises(ValueError):
        metrics.calibration_runs([1.0], [0.0])
