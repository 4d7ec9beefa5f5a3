"""Run several detectors on the same extracted outputs and tabulate their metrics.

This is the loop every comparison in the book (and the benchmark and the CLI) needs:
fit each detector on the ID training outputs, score the ID test and OOD test outputs,
and measure per OOD class and pooled with :mod:`nero_lite.metrics`.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import pandas as pd
import torch
from torch import nn

from . import detectors as _detectors
from .data import ImageSet, Splits, to_input
from .devices import resolve_device
from .extraction import extract
from .metrics import evaluate_table
from .outputs import Outputs
from .training import Recipe, train_classifier

__all__ = ["ExtractedSplits", "compare_detectors", "compare_over_seeds", "extract_splits", "odin_scores"]


@dataclass
class ExtractedSplits:
    """The outputs of one model on the three sets of a :class:`~nero_lite.data.Splits`."""

    train: Outputs
    test: Outputs
    ood: Outputs


def extract_splits(model: nn.Module, splits: Splits, device="auto", progress: bool = True) -> ExtractedSplits:
    """:func:`~nero_lite.extraction.extract` on the ID train, ID test and OOD test sets."""
    return ExtractedSplits(*(extract(model, s, device, progress=progress) for s in (splits.train, splits.test, splits.ood)))


def odin_scores(
    detector: _detectors.Detector, model: nn.Module, images: ImageSet, device="auto", batch_size: int = 128
) -> torch.Tensor:
    """A detector that needs the images (``needs_images``, ODIN) over a whole :class:`~nero_lite.data.ImageSet`, in batches."""
    device = resolve_device(device)
    model = model.to(device).eval()
    return torch.cat(
        [
            detector.score_images(model, to_input(images.images[i : i + batch_size], device))
            for i in range(0, len(images), batch_size)
        ]
    )


def compare_detectors(
    outputs: ExtractedSplits,
    splits: Splits,
    names: list[str] | dict[str, _detectors.Detector] | None = None,
    params: dict[str, dict] | None = None,
    model: nn.Module | None = None,
    progress: bool = True,
    skip_failing: bool = False,
    *,
    preset: str = "ours",
    arch: str | None = None,
    convention: str = "ours",
) -> tuple[pd.DataFrame, dict[str, tuple[torch.Tensor, torch.Tensor]]]:
    """Fit and score detectors by name; metrics per OOD class and pooled.

    Parameters
    ----------
    outputs : ExtractedSplits
        Outputs of the model on ``splits`` (see :func:`extract_splits`).
    splits : Splits
        Gives the OOD class of every OOD sample and the class names.
    names : list of str or dict, optional
        Registry names (default: all of :func:`nero_lite.detectors.available`), or
        ``{label: detector}`` to compare configured (unfitted) detectors under labels.
    params : dict, optional
        Hyperparameters per name, e.g. ``{"knn": {"k": 10}}``.
    model : nn.Module, optional
        Needed for ODIN's input perturbation; without it ODIN is temperature scaling only.
    skip_failing : bool
        A detector whose ``fit`` rejects the training outputs (``ValueError``, e.g. SHE
        with a class that has no correctly classified training image) is left out with a
        warning instead of stopping the comparison; ``table.attrs["skipped"]`` gives
        ``{name: reason}``.
    preset, arch : str
        The hyperparameters of detectors given by name (:func:`nero_lite.detectors.create`):
        ``"ours"``, or ``"official"`` (NERO's official code) for the architecture ``arch``;
        ``params`` override them.
    convention : str
        How FPR95 is counted (:func:`nero_lite.metrics.fpr_at_tpr`).

    Returns
    -------
    table : DataFrame
        One row per (detector name or label, OOD class incl. ``"all"``) with ``auroc, fpr95, aupr_in,
        aupr_out`` and the ``fit_s`` / ``score_s`` seconds of the detector.
    scores : dict
        ``name -> (id_scores, ood_scores)`` (higher = more in-distribution).
    """
    params = params or {}
    if not isinstance(names, dict):
        names = {name: _detectors.create(name, preset, arch, **params.get(name, {}))
                 for name in names or _detectors.available()}
    fitted = _detectors.fit_each(names, outputs.train, skip_failing=skip_failing, progress=progress, desc="detectors")
    for name, reason in fitted.skipped.items():
        warnings.warn(f"skipped detector {name}: {reason}", stacklevel=2)
    rows, scores = [], {}
    for name, detector in fitted.detectors.items():
        start = time.perf_counter()
        if detector.needs_images and model is not None:
            id_scores = odin_scores(detector, model, splits.test)
            ood_scores = odin_scores(detector, model, splits.ood)
        else:
            id_scores, ood_scores = detector.score(outputs.test), detector.score(outputs.ood)
        scored = time.perf_counter()
        scores[name] = (id_scores.cpu(), ood_scores.cpu())
        table = evaluate_table(id_scores, ood_scores, splits.ood.labels, splits.ood_classes, splits.ood_kind,
                               convention=convention)
        table = table.assign(detector=name, fit_s=fitted.seconds[name], score_s=scored - start).reset_index()
        rows.append(table)
    if not rows:
        raise ValueError(f"every detector was skipped: {fitted.skipped}")
    table = pd.concat(rows, ignore_index=True)
    table.attrs["skipped"] = fitted.skipped
    return table, scores


def compare_over_seeds(
    splits: Splits,
    make_detectors: Callable[[], dict[str, _detectors.Detector]],
    *,
    arch: str = "resnet18",
    seeds: Sequence[int] = (0, 1, 2),
    recipe: Recipe | None = None,
) -> tuple[pd.DataFrame, dict[int, ExtractedSplits]]:
    """:func:`compare_detectors` on the classifier of each seed: one table with a ``seed`` column, and each seed's outputs.

    The classifier of each seed is :func:`~nero_lite.training.train_classifier`'s (trained
    once, then loaded from the cache); ``make_detectors()`` gives fresh detectors for each
    seed (name -> unfitted detector). The seeds are what the chapters' paired tests pair
    over (:mod:`nero_lite.paired`).
    """
    tables, outputs = [], {}
    for seed in seeds:
        model = train_classifier(splits.train, arch, recipe, seed=seed, progress=False)
        outputs[seed] = extract_splits(model, splits, progress=False)
        table, _ = compare_detectors(outputs[seed], splits, make_detectors(), progress=False)
        tables.append(table.assign(seed=seed))
    return pd.concat(tables, ignore_index=True), outputs
