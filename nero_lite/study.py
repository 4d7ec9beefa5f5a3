"""Repeated experiments: every detector on one data set, over seeds, with and without shortcut masking.

One :class:`Run` is the whole pipeline once — load the data (masked or not), train a
classifier (or reuse it from the cache), extract its outputs in one pass, fit and score
the detectors (:func:`~nero_lite.compare.compare_detectors`). :func:`run_study` repeats
it over seeds and masking settings; :meth:`Study.summary` turns the runs into a
mean ± standard deviation table, the form in which the book reports real-image results::

    study = run_study("hyperkvasir", seeds=(0, 1, 2), masks=(False, True), size=64)
    study.summary("auroc")
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch
from torch import nn

from . import data as _data
from . import detectors as _detectors
from .compare import ExtractedSplits, compare_detectors, extract_splits
from .detectors import NeroDetector
from .extraction import accuracy, extract
from .metrics import auroc as _auroc
from .metrics import mean_std_text, threshold_at_tpr
from .training import Recipe, train_classifier

__all__ = ["Run", "Study", "run_study", "mean_std", "test_time_masking"]


@dataclass
class Run:
    """One seed and one masking setting: the data, the model, its outputs and the detectors' metrics.

    ``table`` has one row per (detector, OOD class incl. ``"all"``) with ``auroc, fpr95,
    aupr_in, aupr_out``; ``scores`` maps a detector to its ``(id_scores, ood_scores)``
    (higher = more ID); ``train_seconds`` is 0-ish when the model came from the cache.
    """

    seed: int
    masked: bool
    splits: _data.Splits
    model: nn.Module
    outputs: ExtractedSplits
    accuracy: float
    train_seconds: float
    table: pd.DataFrame
    scores: dict[str, tuple[torch.Tensor, torch.Tensor]] = field(repr=False)

    @property
    def setting(self) -> str:
        """``"masked"`` or ``"unmasked"``."""
        return "masked" if self.masked else "unmasked"

    def fitted_nero(self, tpr: float = 0.95) -> tuple[NeroDetector, float]:
        """NERO fitted on this run's training outputs, and its threshold at ``tpr`` ID TPR.

        The threshold (:func:`~nero_lite.metrics.threshold_at_tpr`) is set on every other ID
        test image, the calibration half, as chapter 1 teaches: never on all the images it
        then judges.
        """
        nero = _detectors.create("nero").fit(self.outputs.train)
        calibration = self.outputs.test.subset(torch.arange(len(self.outputs.test)) % 2 == 0)
        return nero, threshold_at_tpr(nero.score(calibration), tpr)


@dataclass
class Study:
    """The runs of :func:`run_study`, with tables across them."""

    runs: list[Run]

    def run(self, seed: int, masked: bool) -> Run:
        """The run of one seed and masking setting."""
        for run in self.runs:
            if run.seed == seed and run.masked == masked:
                return run
        raise KeyError(f"no run with seed={seed}, masked={masked}")

    @property
    def table(self) -> pd.DataFrame:
        """Every run's metric rows, with ``seed``, ``setting`` and the classifier's ``accuracy``."""
        return pd.concat(
            [run.table.assign(seed=run.seed, setting=run.setting, accuracy=run.accuracy) for run in self.runs],
            ignore_index=True,
        )

    def accuracies(self) -> pd.DataFrame:
        """ID test accuracy and training seconds per run."""
        return pd.DataFrame(
            [
                {"setting": r.setting, "seed": r.seed, "accuracy": r.accuracy, "train_s": r.train_seconds}
                for r in self.runs
            ]
        )

    def summary(self, metric: str = "auroc", ood_classes: list[str] | None = None) -> pd.DataFrame:
        """Mean and standard deviation (over seeds) of ``metric`` per detector, setting and OOD class.

        Columns are a MultiIndex ``(setting, ood_class, "mean"|"std")``; rows are the
        detectors in the order they were run. ``ood_classes`` selects and orders the
        OOD classes (default: the data set's classes, then ``"all"``).
        """
        table = self.table
        if ood_classes is None:
            ood_classes = [*self.runs[0].splits.ood_classes, "all"]
        table = table[table.ood_class.isin(ood_classes)]
        grouped = table.groupby(["detector", "setting", "ood_class"], sort=False)[metric].agg(["mean", "std"])
        wide = grouped.unstack(["setting", "ood_class"])
        wide.columns = wide.columns.reorder_levels([1, 2, 0])
        settings = [s for s in ("unmasked", "masked") if s in table.setting.unique()]
        order = [(s, c, stat) for s in settings for c in ood_classes for stat in ("mean", "std")]
        detectors = list(dict.fromkeys(table.detector))
        return wide.reindex(columns=pd.MultiIndex.from_tuples(order)).loc[detectors]

    def split_auroc(self, ood_class: str, flag) -> pd.DataFrame:
        """How far each detector's score separates flagged from unflagged images of one OOD class.

        ``flag`` marks images of ``ood_class`` (bool, in their order in ``splits.ood``,
        the same in every run), e.g. ``corner_box_present`` of the unmasked images. Per
        run, the AUROC of the flagged images' scores against the others' (flagged =
        the group expected to score higher); returned as mean and std over seeds per
        detector and setting. 0.5: the score ignores what ``flag`` marks; towards 1: the
        flagged images look more in-distribution.
        """
        flag = np.asarray(flag, dtype=bool)
        rows = []
        for run in self.runs:
            k = run.splits.ood_classes.index(ood_class)
            members = (run.splits.ood.labels == k).numpy()
            if members.sum() != len(flag):
                raise ValueError(f"flag has {len(flag)} entries but {ood_class!r} has {members.sum()} images")
            if flag.all() or not flag.any():
                raise ValueError("flag must mark some but not all images")
            for name, (_, ood_scores) in run.scores.items():
                scores = ood_scores.numpy()[members]
                rows.append({"detector": name, "setting": run.setting, "seed": run.seed,
                             "auroc": _auroc(scores[flag], scores[~flag])})
        frame = pd.DataFrame(rows).groupby(["detector", "setting"], sort=False).auroc.agg(["mean", "std"])
        return frame.unstack("setting").reorder_levels([1, 0], axis=1).sort_index(axis=1, level=0, ascending=False)


def mean_std(summary: pd.DataFrame, percent: bool = True, digits: int = 1) -> pd.DataFrame:
    """Format a :meth:`Study.summary` as ``"mean ± std"`` strings (in % by default), one column per (setting, class).

    Cells follow :func:`nero_lite.metrics.mean_std_text`: ``"(1 seed)"`` for a single run, ``"—"`` where there is no value.
    """
    scale = 100.0 if percent else 1.0
    columns = list(dict.fromkeys((s, c) for s, c, _ in summary.columns))
    text = {
        column: [
            mean_std_text(scale * m, scale * sd, digits)
            for m, sd in zip(summary[(*column, "mean")], summary[(*column, "std")])
        ]
        for column in columns
    }
    return pd.DataFrame(text, index=summary.index, columns=pd.MultiIndex.from_tuples(columns))


def run_study(
    dataset: str = "hyperkvasir",
    *,
    seeds: tuple[int, ...] = (0, 1, 2),
    masks: tuple[bool, ...] = (False, True),
    arch: str = "resnet18d",
    size: int = 64,
    recipe: Recipe | None = None,
    pretrained: bool = False,
    weights: str | os.PathLike | None = None,
    detectors: list[str] | None = None,
    params: dict[str, dict] | None = None,
    device: str | torch.device = "auto",
    progress: bool = True,
    **load_options,
) -> Study:
    """Run the whole pipeline for every (mask, seed) pair.

    Parameters
    ----------
    dataset : str
        Anything :func:`nero_lite.data.load` accepts.
    seeds : tuple of int
        Each seed sets the ID train/test split, the initialisation and the batch order.
    masks : tuple of bool
        ``True`` applies :func:`~nero_lite.data.mask_shortcut` (lower-left corner) to the
        train, test and OOD images alike.
    arch, recipe, pretrained, weights
        The classifier (:func:`~nero_lite.training.train_classifier`; trained once per
        data, arch, recipe, starting weights and seed, then read from the cache). The NERO
        paper's setting: ``arch="resnet18"`` or ``"deit_small"``, ``size=224``,
        ``recipe=Recipe.paper()``, ``pretrained=True`` (online) or ``weights=`` a local file.
    detectors, params
        Passed to :func:`~nero_lite.compare.compare_detectors` (default: all); ODIN gets
        the model for its input perturbation.
    load_options
        Further keyword arguments of :func:`~nero_lite.data.load` (e.g. ``mask_text``).
    """
    if not seeds or not masks:
        raise ValueError("give at least one seed and one masking setting")
    runs = []
    for masked in masks:
        for seed in seeds:
            splits = _data.load(dataset, size=size, seed=seed, mask_corner=masked, progress=progress, **load_options)
            start = time.perf_counter()
            model = train_classifier(splits.train, arch, recipe, seed=seed, pretrained=pretrained, weights=weights,
                                     device=device, progress=progress)
            seconds = time.perf_counter() - start
            outputs = extract_splits(model, splits, device=device, progress=False)
            table, scores = compare_detectors(outputs, splits, detectors, params, model=model, progress=progress)
            runs.append(Run(seed, masked, splits, model, outputs, accuracy(outputs.test), seconds, table, scores))
    return Study(runs)


def test_time_masking(
    run: Run,
    regions: dict[str, torch.Tensor],
    detectors: list[str] | None = None,
    params: dict[str, dict] | None = None,
    device: str | torch.device = "auto",
) -> pd.DataFrame:
    """An intervention at test time: the run's classifier and detectors as trained, on test images with a region blacked out.

    For each ``name -> region`` (an ``H×W`` boolean mask), the ID test and OOD images are
    masked with :func:`nero_lite.data.mask_region`, extracted with the run's model, and
    scored by the detectors fitted, as in the run, on its unmasked training outputs. A
    detector that does not use the region keeps its AUROC; masking a control region of the
    same size tells the effect of the region apart from the effect of masking anything.

    Returns the rows of :func:`nero_lite.compare.compare_detectors` for each region, with a
    ``region`` column, after the run's own rows (``region = "none"``). ``detectors``
    defaults to those of ``run.table``, in its order; pass the ``params`` the study used.
    """
    names = detectors or list(dict.fromkeys(run.table.detector))
    rows = [run.table[run.table.detector.isin(names)].assign(region="none")]
    for name, region in regions.items():
        test, ood = (_data.ImageSet(_data.mask_region(part.images, region), part.labels, part.classes, part.files)
                     for part in (run.splits.test, run.splits.ood))
        splits = _data.Splits(run.splits.name, run.splits.train, test, ood, run.splits.ood_kind)
        outputs = ExtractedSplits(run.outputs.train, extract(run.model, test, device, progress=False),
                                  extract(run.model, ood, device, progress=False))
        table, _ = compare_detectors(outputs, splits, names, params, model=run.model, progress=False)
        rows.append(table.assign(region=name))
    return pd.concat(rows, ignore_index=True)

