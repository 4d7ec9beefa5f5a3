"""The figures of chapter 7: an image under GEOM's transforms, AUROC curves, the per-layer bars
and the per-class bars of the digits beside the paper.

Every curve and bar shows the paper's statistic (:func:`~nero_lite.semisup.protocol.summarize`):
the AUROC averaged over the normal classes, then mean ± standard deviation over the seeds;
:func:`per_class_bars` shows it per normal class.
"""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
import torch

from ..data import ImageSet
from .protocol import summarize
from .transforms import GeometricTransforms, Transform

__all__ = [
    "METHOD_COLOURS",
    "METHOD_LABELS",
    "class_examples",
    "transform_gallery",
    "auroc_curves",
    "layer_bars",
    "per_class_bars",
]

#: How the figures and tables name the methods of :data:`~nero_lite.semisup.protocol.METHODS`.
METHOD_LABELS = {
    "geom": "GEOM",
    "geom+": "GEOM+",
    "bce": "BCE",
    "proposed": "proposed (z1–z4)",
    "softmax": "g on softmax",
    "z1": "g on z1",
    "z2": "g on z2",
    "z3": "g on z3",
    "z4": "g on z4",
}


#: One colour per method, the same in every figure.
METHOD_COLOURS = dict(zip(METHOD_LABELS, sns.color_palette("colorblind", len(METHOD_LABELS))))


def _colour(method: str):
    return METHOD_COLOURS.get(method, "grey")


def _label(method: str) -> str:
    return METHOD_LABELS.get(method, method)


def _describe(t: Transform) -> str:
    parts = []
    if t.flip:
        parts.append("flip")
    if t.tx or t.ty:
        parts.append(f"shift ({t.tx:+d},{t.ty:+d})")
    if t.rot:
        parts.append(f"rot {90 * t.rot}°")
    return ", ".join(parts) or "identity"


def class_examples(
    images: ImageSet, per_class: int = 2, title: str | None = None, classes: Sequence[str] | None = None
) -> plt.Figure:
    """A grid with one column per class of ``images`` (or per name in ``classes``) and its first ``per_class`` images in the rows."""
    classes = list(images.classes if classes is None else classes)
    fig, axes = plt.subplots(per_class, len(classes), figsize=(1.25 * len(classes), 1.3 * per_class + 0.4), squeeze=False)
    for column, name in enumerate(classes):
        c = images.classes.index(name)
        members = torch.nonzero(images.labels == c).flatten()[:per_class]
        for r, ax in enumerate(axes[:, column]):
            ax.set_xticks([])
            ax.set_yticks([])
            if r < len(members):
                ax.imshow(images.images[members[r]].permute(1, 2, 0).numpy())
            else:
                ax.axis("off")
        axes[0, column].set_title(name, fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def transform_gallery(
    image: torch.Tensor, transform_sets: dict[str, GeometricTransforms], title: str = "one ID image under GEOM's transforms"
) -> plt.Figure:
    """One row per transform set: the uint8 image (3×H×W) under each of its transforms, labelled."""
    width = max(len(t) for t in transform_sets.values())
    fig, axes = plt.subplots(len(transform_sets), width, figsize=(1.25 * width, 1.55 * len(transform_sets)), squeeze=False)
    x = image.unsqueeze(0).float()
    for axes_row, (name, transforms) in zip(axes, transform_sets.items()):
        for k, ax in enumerate(axes_row):
            ax.set_xticks([])
            ax.set_yticks([])
            if k >= len(transforms):
                ax.axis("off")
                continue
            shown = transforms.apply(x, k)[0].round().clamp(0, 255).to(torch.uint8)
            ax.imshow(shown.permute(1, 2, 0).numpy())
            ax.set_title(f"k={k}\n{_describe(transforms[k])}", fontsize=6.5)
        axes_row[0].set_ylabel(f"{name}\nK={len(transforms)}", rotation=0, ha="right", va="center", fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def auroc_curves(
    results: pd.DataFrame,
    x: str,
    methods: Sequence[str] | None = None,
    *,
    metric: str = "auroc",
    title: str | None = None,
    xlabel: str | None = None,
    log_x: bool = True,
    ax: plt.Axes | None = None,
) -> plt.Figure:
    """AUROC (mean ± std over seeds of the class average) against the column ``x``, one line per method."""
    methods = list(methods or dict.fromkeys(results["method"]))
    summary = summarize(results[results["method"].isin(methods)], by=["method", x], metric=metric).reset_index()
    if ax is None:
        fig, ax = plt.subplots(figsize=(6.4, 3.8))
    else:
        fig = ax.figure
    for i, method in enumerate(methods):
        colour = _colour(method)
        rows = summary[summary["method"] == method].sort_values(x)
        # a small horizontal offset keeps overlapping error bars readable
        offset = 2 ** ((i - (len(methods) - 1) / 2) * 0.04) if log_x else 1.0
        ax.errorbar(
            rows[x] * offset, rows["mean"], yerr=rows["std"], marker="o", capsize=3, color=colour, label=_label(method)
        )
    values = sorted(summary[x].unique())
    if log_x:
        ax.set_xscale("log", base=2)
    ax.set_xticks(values)
    ax.set_xticklabels([str(int(v)) for v in values])
    ax.minorticks_off()
    ax.set(xlabel=xlabel or x, ylabel=f"{metric.upper().replace('_', ' ')} (mean ± std over seeds)", title=title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    fig.tight_layout()
    return fig


def layer_bars(
    results: pd.DataFrame, methods: Sequence[str], *, metric: str = "auroc", title: str | None = None
) -> plt.Figure:
    """Bars of the AUROC (mean ± std over seeds) of each method, in the given order, with the values printed."""
    summary = summarize(results[results["method"].isin(methods)], by=["method"], metric=metric).reindex(list(methods))
    fig, ax = plt.subplots(figsize=(1.0 * len(methods) + 2, 3.6))
    colours = [_colour(m) for m in methods]
    positions = np.arange(len(methods))
    ax.bar(positions, summary["mean"], yerr=summary["std"], capsize=4, color=colours)
    for p, (mean, std) in zip(positions, summary[["mean", "std"]].to_numpy()):
        ax.text(p, mean + std + 0.01, f"{mean:.3f}", ha="center", va="bottom", fontsize=8)
    low = float((summary["mean"] - summary["std"]).min())
    ax.set_ylim(max(0.0, low - 0.08), min(1.0, float((summary["mean"] + summary["std"]).max()) + 0.06))
    ax.set_xticks(positions)
    ax.set_xticklabels([_label(m) for m in methods], rotation=20, ha="right")
    ax.set(ylabel=f"{metric.upper().replace('_', ' ')} (mean ± std over seeds)", title=title)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    return fig


def per_class_bars(
    table: pd.DataFrame, *, highlight: Sequence[str] = (), title: str | None = None, ylabel: str = "AUROC (%)"
) -> plt.Figure:
    """Grouped bars of a per-class table, with the paper's values as markers.

    ``table`` is :func:`~nero_lite.semisup.digits.per_class_table`'s: one row per normal
    class (and ``"mean"``), columns ``(method, "mean" | "std" | "paper")``. Each method's
    bar is its mean over seeds with the std as error bar; a black diamond marks the
    paper's value where it has one. The classes in ``highlight`` are shaded.
    """
    methods = list(dict.fromkeys(table.columns.get_level_values(0)))
    rows = list(table.index)
    positions = np.arange(len(rows), dtype=float)
    width = 0.8 / len(methods)
    fig, ax = plt.subplots(figsize=(0.85 * len(rows) + 1.5, 4.2))
    for name in highlight:
        p = rows.index(name)
        ax.axvspan(p - 0.45, p + 0.45, color="0.9", zorder=0)
    paper_label = "paper (MNIST)"
    for i, method in enumerate(methods):
        x = positions + (i - (len(methods) - 1) / 2) * width
        ax.bar(x, table[method, "mean"], width, yerr=table[method, "std"], capsize=2, color=_colour(method), label=_label(method))
        known = table[method, "paper"].notna().to_numpy()
        if known.any():
            ax.scatter(x[known], table[method, "paper"][known], marker="D", s=22, color="black", zorder=3, label=paper_label)
            paper_label = None  # one legend entry for all the paper's markers
    values = table.xs("mean", axis=1, level=1) - table.xs("std", axis=1, level=1)
    low = float(np.nanmin(np.concatenate([values.to_numpy().ravel(), table.xs("paper", axis=1, level=1).to_numpy().ravel()])))
    ax.set_ylim(max(0.0, low - 5), 101)
    ax.set_xticks(positions)
    ax.set_xticklabels(rows)
    ax.set(xlabel="normal class", ylabel=ylabel, title=title)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8, ncol=len(methods) + 1, loc="upper center", bbox_to_anchor=(0.5, -0.15))
    fig.tight_layout()
    return fig
