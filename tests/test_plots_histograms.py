"""plots.score_histograms: the label says "score" only for scores; a clipped axis counts what it hides."""

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
import pytest

from nero_lite import plots


def _legend(fig):
    return [text.get_text() for text in fig.axes[0].get_legend().get_texts()]


def test_label_claims_higher_is_in_distribution_only_for_scores():
    ids, oods, labels = np.arange(10.0), np.arange(6.0), np.array([0, 1] * 3)
    score = plots.score_histograms(ids, oods, labels, ["a", "b"], xlabel="MSP")
    other = plots.score_histograms(ids, oods, labels, ["a", "b"], xlabel="cosine", is_score=False)
    assert score.axes[0].get_xlabel() == "MSP (higher = more in-distribution)"
    assert other.axes[0].get_xlabel() == "cosine"
    plt.close("all")


def test_clip_window_by_hand():
    # ID values 0..100: quantiles 0.5 and 99.5 at 0.5 and 99.5, span 99: window [-98.5, 198.5]
    assert plots.clip_window(np.arange(101.0)) == pytest.approx((-98.5, 198.5))
    assert plots.clip_window(np.ones(5)) is None


def test_clipped_axis_counts_the_values_beyond_it_per_set():
    rng = np.random.default_rng(0)
    ids = rng.normal(0, 1, 400)
    # class "far": 30 values at -12000 and 10 in the bulk; class "near": all in the bulk
    oods = np.concatenate([np.full(30, -12000.0), rng.normal(0, 1, 10), rng.normal(-1, 1, 40)])
    labels = np.array([0] * 40 + [1] * 40)
    fig = plots.score_histograms(ids, oods, labels, ["far", "near"], clip="auto")
    low, high = plots.clip_window(ids)
    high = min(high, max(ids.max(), oods.max()))  # the window never reaches past the data
    assert fig.axes[0].get_xlim() == pytest.approx((low, high))
    assert high < plots.clip_window(ids)[1]
    beyond_id = int(((ids < low) | (ids > high)).sum())
    near = oods[40:]
    beyond_near = int(((near < low) | (near > high)).sum())
    expected = {"ID test": beyond_id, "OOD: far": 30, "OOD: near": beyond_near}
    for text in _legend(fig):
        name = text.split(" (")[0]
        if expected[name]:
            assert text == f"{name} ({expected[name]} beyond the axis)"
        else:
            assert text == name
    assert "edge bins" in fig.axes[0].get_xlabel()
    unclipped = plots.score_histograms(ids, oods, labels, ["far", "near"])
    assert unclipped.axes[0].get_xlim()[0] < -11000
    plt.close("all")
