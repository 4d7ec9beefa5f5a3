"""The figures of chapter 7: an image under GEOM's transforms, AUROC curves and the per-layer bars.

Every curve and bar shows the paper's statistic (:func:`~nero_lite.semisup.protocol.summarize`):
the AUROC averaged over the normal classes, then mean ± standard deviation over the seeds.
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

__all__ = ["METHOD_COLOURS", "METHOD_LABELS", "class_examples", "transform_gallery", "auroc_curves", "layer_bars"]

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


def class_examples(images: ImageSet, per_class: int = 2, title: str | None = None) -> plt.Figure:
    """A grid with one column per class of ``images`` and its first ``per_class`` images in the rows."""
    classes = list(images.classes)
    fig, axes = plt.subplots(per_class, len(classes), figsize=(1.25 * len(classes), 1.3 * per_class + 0.4), squeeze=False)
    for c, name in enumerate(classes):
        members = torch.nonzero(images.labels == c).flatten()[:per_class]
        for r, ax in enumerate(axes[:, c]):
            ax.set_xticks([])
            ax.set_yticks([])
            if r < len(members):
                ax.imshow(images.images[members[r]].permute(1, 2, 0).numpy())
            else:
                ax.axis("off")
        axes[0, c].set_title(name, fontsize=8)
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
