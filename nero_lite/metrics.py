"""OOD evaluation metrics with one sign convention.

**Convention (everywhere in nero_lite): a higher score means more in-distribution**,
as scikit-learn's ``score_samples``. In-distribution (ID) samples are the positive
class of every metric below; out-of-distribution (OOD) samples are the negatives.

* AUROC: area under the ROC curve, the probability that a random ID sample scores
  higher than a random OOD sample (ties count one half).
* FPR95: the fraction of OOD samples accepted as ID at the threshold where 95 % of
  the ID samples are accepted (the false-positive rate at 95 % true-positive rate).
  :func:`fpr_at_tpr` also computes it as NERO's official code counts it and as
  OpenOOD defines it (OOD as the positive class): ``convention=``, see there.
* AUPR-In: average precision with ID as the positive class.
* AUPR-Out: average precision with OOD as the positive class (scores negated).

Deployment: a threshold fitted on a *calibration* split of ID images
(:func:`threshold_at_tpr`) accepts a different fraction of *new* ID images
(:func:`accepted_fraction`); :func:`calibration_runs` measures that spread over repeated
random calibration/evaluation splits, and :func:`flag_precision` turns the two rates into
the share of flagged images that are OOD at a given prevalence of OOD images.

The curves come from :mod:`sklearn.metrics`; this module only fixes the convention.
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import torch
from sklearn.metrics import average_precision_score, roc_auc_score, roc_curve

__all__ = [
    "FPR_CONVENTIONS",
    "auroc",
    "fpr_at_tpr",
    "aupr_in",
    "aupr_out",
    "evaluate",
    "threshold_at_tpr",
    "evaluate_table",
    "accepted_fraction",
    "flag_precision",
    "calibration_runs",
    "mean_std_table",
    "mean_std_text",
]

#: The names :func:`fpr_at_tpr` accepts as ``convention``: ours (the default), NERO's official code's, OpenOOD's.
FPR_CONVENTIONS = ("ours", "official", "openood")


def _to_numpy(scores, name: str) -> np.ndarray:
    if isinstance(scores, torch.Tensor):
        scores = scores.detach().cpu().numpy()
    scores = np.asarray(scores, dtype=np.float64).ravel()
    if scores.size == 0:
        raise ValueError(f"{name} is empty: need at least one score")
    if not np.all(np.isfinite(scores)):
        raise ValueError(f"{name} contains NaN or inf")
    return scores


def _labels_and_scores(id_scores, ood_scores) -> tuple[np.ndarray, np.ndarray]:
    id_scores = _to_numpy(id_scores, "id_scores")
    ood_scores = _to_numpy(ood_scores, "ood_scores")
    y = np.concatenate([np.ones(id_scores.size), np.zeros(ood_scores.size)])
    return y, np.concatenate([id_scores, ood_scores])


def auroc(id_scores, ood_scores) -> float:
    """Area under the ROC curve, ID as positives (0.5 = chance, 1 = perfect)."""
    y, s = _labels_and_scores(id_scores, ood_scores)
    return float(roc_auc_score(y, s))


def fpr_at_tpr(id_scores, ood_scores, tpr: float = 0.95, convention: str = "ours") -> float:
    r"""False-positive rate at a true-positive rate of ``tpr``, in one of three conventions.

    With :math:`n` ID scores sorted descending, :math:`s_{(1)} \ge \dots \ge s_{(n)}`, and
    :math:`m` OOD scores :math:`o_i`:

    * ``"ours"`` (default): ID is the positive class; the first ROC point with TPR ≥ ``tpr``,
      i.e. the threshold :math:`\tau = s_{(\lceil \mathrm{tpr} \cdot n \rceil)}` and

      .. math:: \mathrm{FPR} = \frac{|\{i : o_i \ge \tau\}|}{m}

      (OOD accepted as ID). Tied scores are never split: a threshold accepts all samples
      with a given score or none of them, so with ties the reached TPR can exceed ``tpr``.
    * ``"official"``: as NERO's official code counts (Chhetri et al., MICCAI 2025;
      ``ood/run_nero.py`` and ``ood/run_other_algos.py``: ``thresh =
      np.sort(scores_in)[int(np.floor(0.95 * num_ind))]`` on outlier scores): the same
      formula with :math:`\tau = s_{(\lfloor \mathrm{tpr} \cdot n \rfloor + 1)}`. It
      accepts one ID sample more than ours when :math:`\mathrm{tpr} \cdot n` is whole
      (for ``tpr=0.95``: when n is a multiple of 20), and the same otherwise; ``tpr`` must
      be below 1.
    * ``"openood"``: as OpenOOD v1.5 (Zhang et al., "OpenOOD v1.5: Enhanced Benchmark for
      Out-of-Distribution Detection", arXiv:2306.09301, 2023; ``openood/evaluators/metrics.py``,
      ``auc_and_fpr_recall``) defines it: **OOD is the positive class** (scores
      negated), ``tpr`` is the fraction of OOD samples flagged, and the result is the
      fraction of *ID* samples flagged as OOD at the first ROC point where at least ``tpr``
      of the OOD samples are, the threshold :math:`\tau = o_{(\lceil \mathrm{tpr} \cdot m
      \rceil)}` of the OOD scores sorted ascending:

      .. math:: \mathrm{FPR} = \frac{|\{j : s_j \le \tau\}|}{n}

      A different quantity from the other two: it reads the ROC curve at the other end.

    ``"reference"``, the previous name of ``"official"``, works for one release with a
    :class:`DeprecationWarning`.
    """
    if convention == "reference":
        warnings.warn('convention="reference" is now convention="official" (as NERO\'s official code counts)',
                      DeprecationWarning, stacklevel=2)
        convention = "official"
    if convention not in FPR_CONVENTIONS:
        raise ValueError(f"unknown convention {convention!r}; choose one of {FPR_CONVENTIONS}")
    if not 0.0 < tpr <= 1.0:
        raise ValueError(f"tpr must be in (0, 1], got {tpr}")
    if convention == "official":
        if tpr == 1.0:
            raise ValueError("convention='official' needs tpr < 1: it accepts floor(tpr * n) + 1 of n ID samples")
        ids, oods = _to_numpy(id_scores, "id_scores"), _to_numpy(ood_scores, "ood_scores")
        threshold = np.sort(ids)[::-1][int(np.floor(tpr * ids.size))]
        return float(np.mean(oods >= threshold))
    y, s = _labels_and_scores(id_scores, ood_scores)
    if convention == "openood":
        fpr, tprs, _ = roc_curve(1 - y, -s, drop_intermediate=False)
        return float(fpr[np.argmax(tprs >= tpr)])
    fpr, tprs, _ = roc_curve(y, s, drop_intermediate=False)
    return float(fpr[np.searchsorted(tprs, tpr - 1e-12, side="left")])


def aupr_in(id_scores, ood_scores) -> float:
    """Average precision with ID as the positive class."""
    y, s = _labels_and_scores(id_scores, ood_scores)
    return float(average_precision_score(y, s))


def aupr_out(id_scores, ood_scores) -> float:
    """Average precision with OOD as the positive class (scores negated)."""
    y, s = _labels_and_scores(id_scores, ood_scores)
    return float(average_precision_score(1 - y, -s))


def threshold_at_tpr(id_scores, tpr: float = 0.95) -> float:
    """The highest threshold that accepts (score ≥ threshold) at least a fraction ``tpr`` of ``id_scores``.

    Used to turn a detector into a decision: flag a sample as OOD when its score is
    below the threshold fitted on held-out ID data.
    """
    if not 0.0 < tpr <= 1.0:
        raise ValueError(f"tpr must be in (0, 1], got {tpr}")
    descending = np.sort(_to_numpy(id_scores, "id_scores"))[::-1]
    return float(descending[int(np.ceil(tpr * descending.size)) - 1])


def evaluate(id_scores, ood_scores, convention: str = "ours") -> dict[str, float]:
    """All four metrics as fractions in [0, 1]: ``auroc, fpr95, aupr_in, aupr_out``.

    ``convention`` is that of ``fpr95`` (:func:`fpr_at_tpr`); the other three have one.
    """
    return {
        "auroc": auroc(id_scores, ood_scores),
        "fpr95": fpr_at_tpr(id_scores, ood_scores, 0.95, convention),
        "aupr_in": aupr_in(id_scores, ood_scores),
        "aupr_out": aupr_out(id_scores, ood_scores),
    }


def evaluate_table(
    id_scores, ood_scores, ood_labels, ood_classes, ood_kind: dict[str, str] | None = None, convention: str = "ours"
) -> pd.DataFrame:
    """Metrics per OOD class, per kind of OOD and pooled, one row each.

    ``ood_labels`` indexes ``ood_classes`` for every entry of ``ood_scores``. With
    ``ood_kind`` (class name → e.g. ``"near"``/``"far"``) a pooled row is added for each
    kind (``"near-OOD"``, ``"far-OOD"``); the last row, ``"all"``, pools every OOD sample.
    ``convention`` is that of the ``fpr95`` column (:func:`fpr_at_tpr`).
    """
    ood_scores = _to_numpy(ood_scores, "ood_scores")
    ood_labels = np.asarray(ood_labels.cpu() if isinstance(ood_labels, torch.Tensor) else ood_labels)
    groups = {name: [k] for k, name in enumerate(ood_classes)}
    for kind in dict.fromkeys((ood_kind or {}).values()):
        groups[f"{kind}-OOD"] = [k for k, name in enumerate(ood_classes) if ood_kind.get(name) == kind]
    rows = []
    for group, members in groups.items():
        mask = np.isin(ood_labels, members)
        if mask.any():
            rows.append({"ood_class": group, **evaluate(id_scores, ood_scores[mask], convention)})
    rows.append({"ood_class": "all", **evaluate(id_scores, ood_scores, convention)})
    return pd.DataFrame(rows).set_index("ood_class")


def accepted_fraction(scores, threshold: float) -> float:
    """The fraction of ``scores`` at or above ``threshold``: accepted as ID, not flagged.

    On ID images it is the realised true-positive rate (TPR) of the threshold; on OOD
    images its false-positive rate (FPR), the share of OOD images accepted as ID.
    """
    return float(np.mean(_to_numpy(scores, "scores") >= threshold))


def flag_precision(tpr, fpr, prevalence):
    r"""The share of flagged images that are OOD, from the two rates and the prevalence of OOD.

    An image is flagged when its score is below the threshold: an ID image with
    probability :math:`1 - \mathrm{TPR}`, an OOD image with probability
    :math:`1 - \mathrm{FPR}` (FPR: the share of OOD images accepted as ID). Among images
    of which a fraction :math:`\pi` (``prevalence``) is OOD, Bayes' rule gives

    .. math::

        P(\text{OOD} \mid \text{flagged})
        = \frac{\pi\,(1 - \mathrm{FPR})}{\pi\,(1 - \mathrm{FPR}) + (1 - \pi)\,(1 - \mathrm{TPR})}

    Arguments broadcast (floats or arrays). ``nan`` where nothing is flagged.
    """
    tpr, fpr, prevalence = (np.asarray(v, dtype=np.float64) for v in (tpr, fpr, prevalence))
    for name, value in (("tpr", tpr), ("fpr", fpr), ("prevalence", prevalence)):
        if np.any((value < 0) | (value > 1)) or not np.all(np.isfinite(value)):
            raise ValueError(f"{name} must lie in [0, 1], got {value}")
    flagged_ood = prevalence * (1 - fpr)
    flagged = flagged_ood + (1 - prevalence) * (1 - tpr)
    flagged_ood, flagged = np.broadcast_arrays(flagged_ood, flagged)
    precision = np.divide(flagged_ood, flagged, out=np.full(flagged.shape, np.nan), where=flagged > 0)
    return float(precision) if precision.ndim == 0 else precision


def calibration_runs(
    id_scores, ood_scores, tpr: float = 0.95, calibration_fraction: float = 0.5, repeats: int = 200, seed: int = 0
) -> pd.DataFrame:
    """Thresholds fitted on a calibration split of the ID images, rates measured on the rest.

    Each of ``repeats`` runs draws a random ``calibration_fraction`` of ``id_scores``
    (without replacement), sets the threshold that accepts ``tpr`` of them
    (:func:`threshold_at_tpr`) and measures, with :func:`accepted_fraction`, the realised
    TPR on the other ID images (the evaluation split) and the FPR on all of ``ood_scores``
    (OOD images are never used to set the threshold).

    Returns one row per run: ``threshold``, ``calibration_tpr`` (accepted fraction of the
    calibration split, ≥ ``tpr``), ``tpr`` (evaluation split) and ``fpr``.
    """
    ids, oods = _to_numpy(id_scores, "id_scores"), _to_numpy(ood_scores, "ood_scores")
    if not 0.0 < calibration_fraction < 1.0:
        raise ValueError(f"calibration_fraction must be in (0, 1), got {calibration_fraction}")
    n_calibration = int(round(calibration_fraction * ids.size))
    if not 1 <= n_calibration < ids.size:
        raise ValueError(f"{ids.size} ID scores cannot be split with calibration_fraction={calibration_fraction}")
    if repeats < 1:
        raise ValueError(f"repeats must be at least 1, got {repeats}")
    rng = np.random.default_rng(seed)
    rows = []
    for _ in range(repeats):
        order = rng.permutation(ids.size)
        calibration, evaluation = ids[order[:n_calibration]], ids[order[n_calibration:]]
        threshold = threshold_at_tpr(calibration, tpr)
        rows.append({
            "threshold": threshold,
            "calibration_tpr": accepted_fraction(calibration, threshold),
            "tpr": accepted_fraction(evaluation, threshold),
            "fpr": accepted_fraction(oods, threshold),
        })
    return pd.DataFrame(rows)


def mean_std_text(mean: float, std: float, digits: int = 3, spec: str = "f", std_digits: int | None = None) -> str:
    """One table cell for a figure measured over several runs (seeds).

    ``"mean ± std"``, both written with the format ``.{digits}{spec}`` (``std_digits`` for
    the standard deviation when given); ``"mean (1 seed)"`` when ``std`` is NaN, which is
    what a standard deviation with ddof 1 is for a single run; ``"—"`` when ``mean`` is NaN,
    where the figure does not apply (no run gave a value). Every "mean ± std" table of the
    book (:func:`mean_std_table`, :func:`nero_lite.study.mean_std`) is written with it.
    """
    if mean is None or not np.isfinite(mean):
        return "—"
    text = f"{mean:.{digits}{spec}}"
    if std is None or not np.isfinite(std):
        return f"{text} (1 seed)"
    return f"{text} ± {std:.{digits if std_digits is None else std_digits}{spec}}"



def mean_std_table(frame: pd.DataFrame, by: list[str], columns: list[str], digits: int = 3, spec: str = "f",
                   std_digits: int | None = None) -> pd.DataFrame:
    """``"mean ± std"`` cells (:func:`mean_std_text`) of ``columns`` over the rows of each ``by`` group, in order of appearance.

    The standard deviation has ddof 1: a group of one row (one seed) reads ``"mean (1 seed)"``,
    a group without a value ``"—"``. :func:`nero_lite.faithfulness` tables and
    :func:`nero_lite.semisup.protocol.mean_std` are written with it; :func:`nero_lite.study.mean_std`
    formats a summary whose means and deviations are already taken.
    """
    grouped = frame.groupby(list(by), sort=False)[list(columns)]
    means, stds = grouped.mean(), grouped.std()
    return pd.DataFrame(
        {c: [mean_std_text(m, sd, digits, spec, std_digits) for m, sd in zip(means[c], stds[c])] for c in columns},
        index=means.index,
    )
