"""plots.roc_curve: the marked operating point is the FPR95 of nero_lite.metrics."""

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch

from nero_lite import metrics, plots


def _points(fig):
    return [line for line in fig.axes[0].lines if line.get_gid() == "operating-point"]


def test_marked_point_is_fpr_at_tpr():
    rng = np.random.default_rng(0)
    ids, oods = rng.normal(1.0, 1.0, 300), rng.normal(0.0, 1.0, 200)
    fig = plots.roc_curve(ids, oods)
    (point,) = _points(fig)
    fpr, tpr = point.get_xdata()[0], point.get_ydata()[0]
    assert fpr == pytest.approx(metrics.fpr_at_tpr(ids, oods, 0.95))
    threshold = metrics.threshold_at_tpr(ids, 0.95)
    assert tpr == pytest.approx(np.mean(ids >= threshold))
    assert tpr >= 0.95
    plt.close(fig)


def test_hand_computed_point_with_ties_and_several_curves():
    # 10 ID scores: 95 % TPR needs all 10 accepted, threshold 0.1 (the lowest ID score);
    # OOD "a" has 2 of 4 scores ≥ 0.1, OOD "b" (torch) 1 of 2; at 50 % TPR (threshold 0.6)
    # "a" accepts 1 of 4 (the tie at 0.6 counts as accepted)
    ids = np.array([0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0])
    a = np.array([0.0, 0.05, 0.1, 0.6])
    b = torch.tensor([0.15, 0.0])
    fig = plots.roc_curve(ids, {"a": a, "b": b})
    points = _points(fig)
    assert [(p.get_xdata()[0], p.get_ydata()[0]) for p in points] == [(0.5, 1.0), (0.5, 1.0)]
    plt.close(fig)
    fig = plots.roc_curve(ids, {"a": a}, tpr=0.5)
    (point,) = _points(fig)
    assert (point.get_xdata()[0], point.get_ydata()[0]) == (0.25, 0.5)
    assert metrics.fpr_at_tpr(ids, a, 0.5) == 0.25
    plt.close(fig)


def test_draws_on_a_given_axis():
    fig, ax = plt.subplots()
    assert plots.roc_curve([1.0, 2.0], [0.0], ax=ax) is fig
    assert len(_points(fig)) == 1
    plt.close(fig)
