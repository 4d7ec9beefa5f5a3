"""Metrics: hand-computed tiny cases (with ties) and agreement with pytorch-ood."""

import numpy as np
import pytest
import torch
from pytorch_ood.metrics import OODMetrics

from nero_lite import metrics

# ID scores and OOD scores with one tie (0.4) across the two sets.
ID = [0.9, 0.8, 0.4]
OOD = [0.7, 0.4, 0.1]


def test_auroc_counts_ties_as_half():
    # 9 pairs: 0.9 beats 3, 0.8 beats 3, 0.4 beats 0.1 and ties 0.4 -> 7.5 / 9
    assert metrics.auroc(ID, OOD) == pytest.approx(7.5 / 9)


def test_fpr95_accepts_tied_ood_scores():
    # 95 % TPR needs every ID sample accepted: threshold 0.4 accepts OOD 0.7 and 0.4
    assert metrics.fpr_at_tpr(ID, OOD) == pytest.approx(2 / 3)
    # 60 % TPR: threshold 0.8 accepts two ID samples and no OOD sample
    assert metrics.fpr_at_tpr(ID, OOD, tpr=0.6) == pytest.approx(0.0)


def test_aupr_in_and_out_by_hand():
    # ID positive, ranks 0.9 I, 0.8 I, 0.7 O, {0.4 I, 0.4 O}, 0.1 O
    assert metrics.aupr_in(ID, OOD) == pytest.approx(1 / 3 + 1 / 3 + (1 / 3) * (3 / 5))
    # OOD positive on negated scores: 0.1 O, {0.4 O, 0.4 I}, 0.7 O, 0.8 I, 0.9 I
    assert metrics.aupr_out(ID, OOD) == pytest.approx(1 / 3 + (1 / 3) * (2 / 3) + (1 / 3) * (3 / 4))


def test_perfect_and_inverted_detectors():
    assert metrics.evaluate([2, 3], [0, 1]) == {"auroc": 1.0, "fpr95": 0.0, "aupr_in": 1.0, "aupr_out": 1.0}
    assert metrics.auroc([0, 1], [2, 3]) == 0.0
    assert metrics.fpr_at_tpr([0, 1], [2, 3]) == 1.0


def test_threshold_at_tpr_accepts_the_requested_fraction():
    scores = np.arange(100.0)
    threshold = metrics.threshold_at_tpr(scores, 0.95)
    assert np.mean(scores >= threshold) >= 0.95
    assert np.mean(scores >= threshold + 1) < 0.95


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_agrees_with_pytorch_ood(seed):
    rng = np.random.default_rng(seed)
    id_scores = np.round(rng.normal(1.0, 1.0, 300), 1)  # rounding makes many ties
    ood_scores = np.round(rng.normal(0.0, 1.0, 200), 1)
    ours = metrics.evaluate(torch.tensor(id_scores), torch.tensor(ood_scores))

    # pytorch-ood: OOD is the positive class (labels < 0) and larger scores mean more OOD.
    theirs = OODMetrics()
    theirs.update(torch.tensor(-np.concatenate([id_scores, ood_scores])), torch.tensor([0] * 300 + [-1] * 200))
    theirs = theirs.compute()
    assert ours["auroc"] == pytest.approx(theirs["AUROC"], abs=1e-6)
    # AUPR: we use average precision (step-wise, scikit-learn), pytorch-ood the
    # trapezoidal rule, which interpolates linearly and reads slightly higher.
    assert ours["aupr_in"] == pytest.approx(theirs["AUPR-IN"], abs=0.02)
    assert ours["aupr_out"] == pytest.approx(theirs["AUPR-OUT"], abs=0.02)

    # Our FPR95 (ID positive) is theirs with the roles of ID and OOD swapped.
    swapped = OODMetrics()
    swapped.update(torch.tensor(np.concatenate([id_scores, ood_scores])), torch.tensor([-1] * 300 + [0] * 200))
    assert ours["fpr95"] == pytest.approx(swapped.compute()["FPR95TPR"], abs=1e-6)


def test_table_per_class_and_pooled():
    table = metrics.evaluate_table([3.0, 4.0], [0.0, 5.0, 1.0], [0, 1, 1], ["a", "b"])
    assert list(table.index) == ["a", "b", "all"]
    assert table.loc["a", "auroc"] == 1.0
    assert table.loc["b", "auroc"] == pytest.approx(0.5)
    grouped = metrics.evaluate_table([3.0, 4.0], [0.0, 5.0, 1.0], [0, 1, 1], ["a", "b"], {"a": "far", "b": "near"})
    assert list(grouped.index) == ["a", "b", "far-OOD", "near-OOD", "all"]
    assert grouped.loc["near-OOD", "auroc"] == grouped.loc["b", "auroc"]


@pytest.mark.parametrize("bad", [[], [np.nan, 1.0], [np.inf]])
def test_rejects_empty_or_non_finite(bad):
    with pytest.raises(ValueError):
        metrics.auroc(bad, [0.0])


def test_mean_std_text_cells():
    assert metrics.mean_std_text(0.81234, 0.0456) == "0.812 ± 0.046"
    assert metrics.mean_std_text(81.2, 4.56, 1) == "81.2 ± 4.6"
    assert metrics.mean_std_text(0.81234, float("nan")) == "0.812 (1 seed)"
    assert metrics.mean_std_text(float("nan"), float("nan")) == "—"
    assert metrics.mean_std_text(float("nan"), 0.0) == "—"
    assert metrics.mean_std_text(0.01234, 0.00456, 3, "g", std_digits=2) == "0.0123 ± 0.0046"


def test_mean_std_table_marks_single_runs_and_missing_figures():
    import pandas as pd

    frame = pd.DataFrame({"map": ["b", "a", "a", "b", "c"], "aopc": [0.5, 0.1, 0.3, float("nan"), float("nan")]})
    text = metrics.mean_std_table(frame, ["map"], ["aopc"], 3, "g", std_digits=2)["aopc"].to_dict()
    assert text == {"b": "0.5 (1 seed)", "a": "0.2 ± 0.14", "c": "—"}  # groups in order of appearance
    assert list(metrics.mean_std_table(frame, ["map"], ["aopc"]).index) == ["b", "a", "c"]


def test_importing_the_metrics_loads_neither_the_models_nor_the_attribution_stack():
    import subprocess
    import sys

    code = ("import sys, nero_lite.metrics; heavy = [m for m in ('timm', 'zennit', 'crp', 'nero_lite.bundle') if m in sys.modules]; "
            "print(heavy); import nero_lite; assert nero_lite.load_bundle.__module__ == 'nero_lite.bundle'")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"
