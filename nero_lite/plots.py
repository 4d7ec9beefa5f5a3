"""The figures of the book: image grids, training curves, confusion matrices, score histograms, ROC curves, explanation maps."""

from __future__ import annotations

from typing import TYPE_CHECKING, Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
import torch
from sklearn.metrics import confusion_matrix as _confusion_matrix
from sklearn.metrics import roc_curve as _roc_curve

from .data import Splits
from .outputs import Outputs

if TYPE_CHECKING:  # for the annotations only: explain imports the models, plots stays light
    from .explain import Report

__all__ = [
    "class_profiles",
    "clip_window",
    "confusion_matrix",
    "engine_benchmark",
    "image_grid",
    "maps_with_masks",
    "mean_maps",
    "plot_report",
    "projection_2d",
    "relevance_profile",
    "restoration",
    "roc_curve",
    "score_histograms",
    "show_images",
    "side_by_side",
    "study_bars",
    "training_curves",
]


def _numpy(x) -> np.ndarray:
    return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


def image_grid(splits: Splits, per_class: int = 6, seed: int = 0) -> plt.Figure:
    """One row per class (ID classes first, then OOD classes), ``per_class`` random test images each."""
    rows = [(name, "ID", splits.test, k) for k, name in enumerate(splits.id_classes)]
    rows += [(name, f"OOD ({splits.ood_kind.get(name, '?')})", splits.ood, k) for k, name in enumerate(splits.ood_classes)]
    rng = np.random.default_rng(seed)
    fig, axes = plt.subplots(len(rows), per_class, figsize=(1.3 * per_class, 1.35 * len(rows)), squeeze=False)
    for axes_row, (name, kind, imageset, k) in zip(axes, rows):
        index = np.flatnonzero(_numpy(imageset.labels) == k)
        chosen = rng.choice(index, size=min(per_class, len(index)), replace=False) if len(index) else []
        for j, ax in enumerate(axes_row):
            ax.set_xticks([])
            ax.set_yticks([])
            if j < len(chosen):
                ax.imshow(_numpy(imageset.images[chosen[j]]).transpose(1, 2, 0))
            else:
                ax.axis("off")
        axes_row[0].set_ylabel(f"{name}\n{kind}", rotation=0, ha="right", va="center", fontsize=8)
    fig.suptitle(f"{splits.name}: test images per class")
    fig.tight_layout()
    return fig


def training_curves(history: list[dict]) -> plt.Figure:
    """Training loss and accuracy per epoch, from ``model.training_history``."""
    frame = pd.DataFrame(history)
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(8, 3))
    ax_loss.plot(frame["epoch"], frame["loss"], marker="o")
    ax_loss.set(xlabel="epoch", ylabel="cross-entropy", title="training loss")
    ax_acc.plot(frame["epoch"], frame["train_accuracy"], marker="o")
    ax_acc.set(xlabel="epoch", ylabel="accuracy", title="training accuracy", ylim=(0, 1.02))
    fig.tight_layout()
    return fig


def confusion_matrix(outputs: Outputs, classes: list[str], title: str = "ID test set") -> plt.Figure:
    """Row-normalised confusion matrix of the predictions in ``outputs``."""
    matrix = _confusion_matrix(_numpy(outputs.labels), _numpy(outputs.predictions()), labels=range(len(classes)))
    frame = pd.DataFrame(matrix / matrix.sum(1, keepdims=True).clip(min=1), index=classes, columns=classes)
    fig, ax = plt.subplots(figsize=(1.2 * len(classes) + 2, 1.0 * len(classes) + 1.2))
    sns.heatmap(frame, annot=True, fmt=".2f", cmap="Blues", vmin=0, vmax=1, ax=ax, cbar=False)
    ax.set(xlabel="predicted", ylabel="true", title=title)
    fig.tight_layout()
    return fig


def score_histograms(
    id_scores,
    ood_scores,
    ood_labels,
    ood_classes: list[str],
    title: str = "scores",
    xlabel: str = "score",
    *,
    is_score: bool = True,
    clip: str | tuple[float, float] | None = None,
) -> plt.Figure:
    """Distributions of a quantity on the ID test set and on each OOD class.

    Parameters
    ----------
    is_score : bool
        The quantity is an OOD score (higher = more in-distribution): the x label says so.
        Pass ``False`` for anything else (a relevance, a similarity, a term of a score).
    clip : "auto", (low, high) or None
        Heavy tails put all of a histogram's mass into one bin. With a window, values
        outside it are drawn in its edge bins and each set's legend entry says how many
        (:func:`clip_window`; ``"auto"`` takes the window from the ID scores). ``None``
        shows the whole range.
    """
    ood_labels = _numpy(ood_labels)
    sets = {"ID test": _numpy(id_scores).astype(np.float64).ravel()}
    ood = _numpy(ood_scores).astype(np.float64).ravel()
    sets.update({f"OOD: {name}": ood[ood_labels == k] for k, name in enumerate(ood_classes)})
    window = clip_window(sets["ID test"]) if clip == "auto" else clip
    if window is not None:  # never wider than the data
        every = np.concatenate(list(sets.values()))
        window = (max(window[0], float(every.min())), min(window[1], float(every.max())))
    frames = []
    for label, values in sets.items():
        if window is not None:
            beyond = int(((values < window[0]) | (values > window[1])).sum())
            values = np.clip(values, *window)
            label = f"{label} ({beyond} beyond the axis)" if beyond else label
        frames.append(pd.DataFrame({"score": values, "set": label}))
    frame = pd.concat(frames, ignore_index=True)
    fig, ax = plt.subplots(figsize=(9, 3.2))
    sns.histplot(frame, x="score", hue="set", element="step", stat="density", common_norm=False, fill=False, ax=ax)
    sns.move_legend(ax, "upper left", bbox_to_anchor=(1.01, 1), fontsize=8, title=None, frameon=False)
    suffix = " (higher = more in-distribution)" if is_score else ""
    if window is not None:
        ax.set_xlim(*window)
        suffix += "; values beyond the axis in the edge bins"
    ax.set(title=title, xlabel=f"{xlabel}{suffix}")
    fig.tight_layout()
    return fig


def clip_window(id_values, quantile: float = 0.005, margin: float = 1.0) -> tuple[float, float] | None:
    r"""An axis window that shows the bulk of the ID values and the OOD values near them.

    From the ``quantile`` and ``1 - quantile`` quantiles :math:`q_l, q_h` of the ID values,
    the window is :math:`[q_l - m\,(q_h - q_l),\; q_h + m\,(q_h - q_l)]` with ``margin``
    :math:`m`: an OOD value more than one ID range away from the ID bulk is shown in an edge
    bin. ``None`` when the ID values do not spread (:math:`q_h = q_l`).
    """
    low, high = np.quantile(_numpy(id_values).astype(np.float64).ravel(), [quantile, 1 - quantile])
    if not high > low:
        return None
    span = high - low
    return float(low - margin * span), float(high + margin * span)


def roc_curve(id_scores, ood_scores, tpr: float = 0.95, title: str = "ROC curve", ax=None) -> plt.Figure:
    """ROC curve(s), ID as the positive class, with the operating point at ``tpr`` ID TPR marked.

    ``ood_scores`` is one set of OOD scores or ``{label: scores}`` for one curve each
    (against the same ``id_scores``; higher = more ID). Each curve is
    :func:`sklearn.metrics.roc_curve` of ID (positive) against OOD; its marked point
    (``gid="operating-point"``) is the first point of the curve whose TPR reaches ``tpr``,
    so its FPR is :func:`nero_lite.metrics.fpr_at_tpr` and its legend entry prints it.
    Draws on ``ax`` when given.
    """
    sets = dict(ood_scores) if isinstance(ood_scores, dict) else {"OOD": ood_scores}
    id_scores = _numpy(id_scores).ravel().astype(np.float64)
    if ax is None:
        fig, ax = plt.subplots(figsize=(4.6, 4.2))
    else:
        fig = ax.figure
    for label, scores in sets.items():
        scores = _numpy(scores).ravel().astype(np.float64)
        y = np.concatenate([np.ones(id_scores.size), np.zeros(scores.size)])
        fpr, tprs, _ = _roc_curve(y, np.concatenate([id_scores, scores]), drop_intermediate=False)
        (line,) = ax.plot(fpr, tprs, lw=1.5, label=label)
        point = np.searchsorted(tprs, tpr - 1e-12, side="left")
        ax.plot([fpr[point]], [tprs[point]], marker="o", ms=7, color=line.get_color(), markeredgecolor="black",
                ls="none", gid="operating-point", label=f"{label}: FPR {fpr[point]:.1%} at TPR {tprs[point]:.1%}")
    ax.axhline(tpr, color="grey", lw=0.8, ls=":")
    ax.plot([0, 1], [0, 1], color="grey", lw=0.8, ls="--", label="chance")
    ax.set(xlim=(-0.01, 1.01), ylim=(-0.01, 1.01), title=title,
           xlabel="FPR: share of OOD images accepted as ID", ylabel="TPR: share of ID images accepted")
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    return fig


def relevance_profile(id_relevance, ood_relevance, ood_labels, ood_classes: list[str]) -> plt.Figure:
    """Mean relevance per neuron, ID test vs each OOD class, neurons sorted by mean ID relevance.

    One panel per OOD class, each with the ID profile and its own y-axis: a class whose
    relevance is far larger (a far-OOD colour shift) does not flatten the others.
    """
    id_mean = _numpy(id_relevance).mean(0)
    order = np.argsort(id_mean)[::-1]
    ood_relevance, ood_labels = _numpy(ood_relevance), _numpy(ood_labels)
    columns = min(2, len(ood_classes))
    rows = -(-len(ood_classes) // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(9, 2.4 * rows), sharex=True, squeeze=False)
    for k, (ax, name) in enumerate(zip(axes.flat, ood_classes)):
        ax.plot(id_mean[order], color="black", lw=2, label="ID test")
        ax.plot(ood_relevance[ood_labels == k].mean(0)[order], color=f"C{k}", lw=1, label=f"OOD: {name}")
        ax.axhline(0, color="grey", lw=0.5)
        ax.set(title=f"ID test vs {name}", ylabel="mean relevance")
        ax.legend(fontsize=7, loc="upper right")
    for ax in axes.flat[len(ood_classes):]:
        ax.set_visible(False)
    for ax in axes[-1]:
        ax.set_xlabel("neuron (sorted by mean ID relevance)")
    fig.suptitle("relevance profile (each panel on its own scale)")
    fig.tight_layout()
    return fig


def class_profiles(relevance, labels, classes: list[str], top: int = 40) -> plt.Figure:
    """Mean relevance of the ``top`` most relevant neurons, one row per class (a heat map)."""
    relevance, labels = _numpy(relevance), _numpy(labels)
    means = np.stack([relevance[labels == k].mean(0) for k in range(len(classes))])
    neurons = np.argsort(np.abs(means).max(0))[::-1][:top]
    fig, ax = plt.subplots(figsize=(10, 0.6 * len(classes) + 1.2))
    sns.heatmap(pd.DataFrame(means[:, neurons], index=classes, columns=neurons), cmap="RdBu_r", center=0, ax=ax)
    ax.set(xlabel="neuron", ylabel="class", title=f"class-mean relevance of the {top} most relevant neurons")
    fig.tight_layout()
    return fig


def projection_2d(
    id_points, id_labels, id_classes: list[str], ood_points, ood_labels, ood_classes: list[str], centroids=None,
    title: str = "first two principal components",
) -> plt.Figure:
    """Scatter of the first two coordinates: ID points by class, OOD points by class, centroids as stars."""
    id_points, ood_points = _numpy(id_points)[:, :2], _numpy(ood_points)[:, :2]
    id_labels, ood_labels = _numpy(id_labels), _numpy(ood_labels)
    fig, ax = plt.subplots(figsize=(7, 5))
    palette = sns.color_palette("tab10", len(id_classes) + len(ood_classes))
    for k, name in enumerate(id_classes):
        p = id_points[id_labels == k]
        ax.scatter(p[:, 0], p[:, 1], s=6, alpha=0.5, color=palette[k], label=f"ID: {name}")
    for k, name in enumerate(ood_classes):
        p = ood_points[ood_labels == k]
        ax.scatter(p[:, 0], p[:, 1], s=6, alpha=0.5, marker="x", color=palette[len(id_classes) + k], label=f"OOD: {name}")
    if centroids is not None:
        c = _numpy(centroids)[:, :2]
        ax.scatter(c[:, 0], c[:, 1], s=120, marker="*", color="black", edgecolor="white", label="class centroids")
    # a few extreme points (e.g. relevance where a logit is close to 0) would squash the
    # rest: the view spans the central 98 % of the ID points, with a margin
    low, high = np.percentile(id_points, [1, 99], axis=0)
    margin = 0.5 * (high - low)
    ax.set(xlim=(low[0] - margin[0], high[0] + margin[0]), ylim=(low[1] - margin[1], high[1] + margin[1]))
    ax.set(xlabel="PC 1", ylabel="PC 2", title=title)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1), frameon=False)
    fig.tight_layout()
    return fig


def study_bars(summary: pd.DataFrame, ood_class: str = "all", metric: str = "AUROC") -> plt.Figure:
    """Mean ± std of one metric per detector, one bar per masking setting, from :meth:`~nero_lite.study.Study.summary`."""
    settings = list(dict.fromkeys(s for s, c, _ in summary.columns if c == ood_class))
    detectors = list(summary.index)
    fig, ax = plt.subplots(figsize=(8, 0.32 * len(detectors) * len(settings) + 1.2))
    height = 0.8 / len(settings)
    for k, setting in enumerate(settings):
        y = np.arange(len(detectors)) + (k - (len(settings) - 1) / 2) * height
        ax.barh(y, summary[(setting, ood_class, "mean")], height, xerr=summary[(setting, ood_class, "std")].fillna(0),
                label=setting, capsize=2)
    ax.set_yticks(np.arange(len(detectors)), detectors)
    ax.invert_yaxis()
    ax.axvline(0.5 if metric.lower().startswith("auroc") else 1.0, color="grey", lw=0.8, ls="--")
    ax.set(xlabel=f"{metric} (mean ± std over seeds)", title=f"OOD class: {ood_class}")
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    return fig


def show_images(images, titles: list[str] | None = None, columns: int = 6, size: float = 1.4) -> plt.Figure:
    """uint8 images ``N×3×H×W`` in a grid, with optional titles."""
    images = _numpy(images)
    rows = int(np.ceil(len(images) / columns))
    fig, axes = plt.subplots(rows, columns, figsize=(size * columns, size * rows + 0.2), squeeze=False)
    for i, ax in enumerate(axes.flat):
        ax.axis("off")
        if i < len(images):
            ax.imshow(images[i].transpose(1, 2, 0))
            if titles is not None:
                ax.set_title(titles[i], fontsize=7)
    fig.tight_layout()
    return fig


def mean_maps(
    maps: dict[str, np.ndarray], region=None, title: str = "mean |relevance|", *, shared_scale: bool = True
) -> plt.Figure:
    """The mean absolute heatmap of each group (``name -> N×H×W``); ``region`` outlined.

    With ``shared_scale`` every panel uses one colour scale (to compare magnitudes); without
    it each panel has its own scale and colour bar, so that a pattern in a faint panel is
    not drawn black beside a bright one.
    """
    means = {name: np.abs(_numpy(m)).mean(axis=0) for name, m in maps.items()}
    top = max(float(m.max()) for m in means.values()) or 1.0
    fig, axes = plt.subplots(1, len(means), figsize=(2.4 * len(means), 2.7 if shared_scale else 3.0), squeeze=False)
    for ax, (name, mean) in zip(axes[0], means.items()):
        shown = ax.imshow(mean, cmap="magma", vmin=0, vmax=top if shared_scale else (float(mean.max()) or 1.0))
        if region is not None:
            ax.contour(_numpy(region).astype(float), levels=[0.5], colors="cyan", linewidths=0.8)
        ax.set_title(name, fontsize=8)
        ax.axis("off")
        if not shared_scale:
            fig.colorbar(shown, ax=ax, shrink=0.7, location="bottom", pad=0.04)
    if shared_scale:
        fig.colorbar(shown, ax=axes[0].tolist(), shrink=0.8, label=title)
    else:
        fig.suptitle(f"{title} (each panel on its own scale)", fontsize=9)
    return fig


def maps_with_masks(images, masks, maps: dict, counterfactuals=None, size: float = 1.5) -> plt.Figure:
    """One row per image: the image with its finding's outline, its counterfactual (if given), then each map.

    ``maps`` is ``{kind: (N, H, W)}``; every map is drawn on its own symmetric scale (red
    positive, blue negative) with the mask outlined in black.
    """
    images, masks = _numpy(images), _numpy(masks)
    columns = 1 + (counterfactuals is not None) + len(maps)
    fig, axes = plt.subplots(len(images), columns, figsize=(size * columns, size * len(images)), squeeze=False)
    for i, row in enumerate(axes):
        row[0].imshow(images[i].transpose(1, 2, 0))
        row[0].contour(masks[i], levels=[0.5], colors="cyan", linewidths=0.8)
        panels = [("image, finding", None)]
        if counterfactuals is not None:
            row[1].imshow(_numpy(counterfactuals[i]).transpose(1, 2, 0))
            panels.append(("without it", None))
        for ax, (kind, kind_maps) in zip(row[len(panels):], maps.items()):
            heatmap = _numpy(kind_maps[i])
            limit = float(np.abs(heatmap).max()) or 1.0
            ax.imshow(heatmap, cmap="bwr", vmin=-limit, vmax=limit)
            ax.contour(masks[i], levels=[0.5], colors="k", linewidths=0.6)
            panels.append((kind, None))
        for ax, (title, _) in zip(row, panels):
            ax.axis("off")
            if i == 0:
                ax.set_title(title, fontsize=8)
    fig.tight_layout()
    return fig


def _show_map(ax, heatmap: np.ndarray, image: np.ndarray, title: str) -> None:
    """The heatmap (red positive, blue negative, symmetric scale) over the image in grey."""
    limit = float(np.abs(heatmap).max()) or 1.0
    ax.imshow(image.mean(axis=0), cmap="gray")
    ax.imshow(heatmap, cmap="bwr", vmin=-limit, vmax=limit, alpha=0.7)
    ax.set_title(title, fontsize=8)
    ax.axis("off")


def plot_report(report: Report, *, max_references: int = 3) -> plt.Figure:
    """One figure for one :class:`~nero_lite.explain.Report` (:func:`nero_lite.explain.explain`).

    Top row: the image with its score and decision; the score map (where the distance
    comes from); the input heatmap of the predicted class; and every neuron's
    contribution :math:`c_j` to the distance, the report's k neurons marked, with the
    decomposition ``score = -(distance + bias term) × norm factor`` in the title. One row
    per concept: its conditional heatmap (red = positive relevance, blue = negative),
    then the peak patches of its reference training images.
    """
    k = len(report.channels)
    columns = max(4, 1 + max_references)
    fig = plt.figure(figsize=(2.0 * columns + 2.5, 2.0 * (k + 1)), constrained_layout=True)
    grid = fig.add_gridspec(k + 1, columns)
    ax = fig.add_subplot(grid[0, 0])
    ax.imshow(report.image.transpose(1, 2, 0))
    ax.set_title(f"{report.decision}: score {report.score:.3g}\n(threshold {report.threshold:.3g})", fontsize=8)
    ax.axis("off")
    _show_map(fig.add_subplot(grid[0, 1]), report.score_map, report.image, f"score map\nnearest {report.nearest_name}")
    title = f"{report.method} map\npredicted {report.predicted_name}"
    _show_map(fig.add_subplot(grid[0, 2]), report.heatmap, report.image, title)
    ax = fig.add_subplot(grid[0, 3:])
    ax.bar(np.arange(len(report.neuron_contributions)), report.neuron_contributions, width=1.0, color="grey")
    ax.bar(report.channels, report.contributions, width=3.0, color="crimson", label=f"top {k} ({report.rank})")
    ax.axhline(0, color="k", lw=0.5)
    ax.set_title(
        f"-(d {report.distance:.3g} + bias {report.bias_term:.3g}) × f {report.norm_factor:.3g}", fontsize=8
    )
    ax.set_xlabel(f"neuron / channel of {report.layer}")
    ax.set_ylabel("contribution $c_j$ to d")
    ax.legend(fontsize=7, loc="upper right")
    for row, (channel, contribution, delta) in enumerate(
        zip(report.channels, report.contributions, report.deviations), start=1
    ):
        title = f"channel {channel}\nc = {contribution:+.3g}, Δ = {delta:+.3g}"
        _show_map(fig.add_subplot(grid[row, 0]), report.concept_heatmaps[row - 1], report.image, title)
        refs = next((r for r in report.references if r.channel == channel), None)
        if refs is None:
            continue
        for col, (patch, index) in enumerate(zip(refs.patches()[:max_references], refs.indices), start=1):
            ax = fig.add_subplot(grid[row, col])
            ax.imshow(patch)
            ax.set_title(f"train #{index}", fontsize=7)
            ax.axis("off")
    return fig


def side_by_side(reports: Sequence[Report], titles: Sequence[str],
                 title: str = "score map, input heatmap and concept heatmaps of the channels that contribute most") -> plt.Figure:
    """One row per :class:`~nero_lite.explain.Report`: the image, its score map, its input map, its k concept maps.

    ``titles`` label the rows (e.g. ``"ID test"``, ``"OOD: polyp"``); every map is drawn
    over the image in grey on its own symmetric scale (red positive, blue negative), each
    concept map titled with its channel and contribution :math:`c_j`. The reports must
    list the same number of channels.
    """
    k = len(reports[0].channels)
    fig, axes = plt.subplots(len(reports), k + 3, figsize=(1.9 * (k + 3), 2.4 * len(reports)), squeeze=False)
    for row, report, name in zip(axes, reports, titles):
        row[0].imshow(report.image.transpose(1, 2, 0))
        row[0].set_title(f"{name}\n{report.decision}, score {report.score:.3g}", fontsize=8)
        row[0].axis("off")
        maps = [report.score_map, report.heatmap, *report.concept_heatmaps]
        names = ["score map", f"input map ({report.predicted_name})"] + [
            f"channel {c}, c={v:+.2g}" for c, v in zip(report.channels, report.contributions)]
        for ax, heatmap, label in zip(row[1:], maps, names):
            _show_map(ax, heatmap, report.image, label)
        for ax in row[1 + len(maps):]:
            ax.axis("off")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def restoration(curves: pd.DataFrame, title: str = "restoration curves") -> plt.Figure:
    """Mean gain of the log score against the replaced fraction, one panel per class, one line per map kind.

    ``curves`` has the columns of ``Benchmark.curves`` (:func:`nero_lite.faithfulness.benchmark`); the
    shaded band is ± one standard deviation over seeds.
    """
    classes = list(dict.fromkeys(curves["class"]))
    fig, axes = plt.subplots(1, len(classes), figsize=(4.2 * len(classes), 3.2), squeeze=False)
    for ax, name in zip(axes[0], classes):
        part = curves[curves["class"] == name]
        for kind in dict.fromkeys(part["map"]):
            stats = part[part["map"] == kind].groupby("fraction").gain.agg(["mean", "std"]).fillna(0.0)
            style = dict(ls="--", color="grey") if kind == "random" else {}
            ax.plot(100 * stats.index, stats["mean"], marker=".", label=kind, **style)
            ax.fill_between(100 * stats.index, stats["mean"] - stats["std"], stats["mean"] + stats["std"], alpha=0.15)
        ax.axhline(0, color="k", lw=0.5)
        ax.set(xlabel="% of the image replaced (most relevant first)", ylabel="gain in −log S(x)", title=name)
    axes[0, -1].legend(fontsize=7, loc="lower right")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def engine_benchmark(rows: Sequence[dict], title: str = "flag on growing folders") -> plt.Figure:
    """The rows of :func:`nero_lite.bench.scale_benchmark` as three panels against the number of
    images: images/s of each run (the plain forward pass dashed), its ratio to the forward
    pass, and the peak memory of the driver (solid) and of a Ray worker (dotted)."""
    table = pd.DataFrame(list(rows))
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.4))
    for k, (run, part) in enumerate(table.groupby("run", sort=False)):
        colour, forward = f"C{k}", run == "forward"
        axes[0].plot(part.images, part.images_per_s, marker="o", color=colour, ls="--" if forward else "-", label=run)
        if not forward:
            axes[1].plot(part.images, part.ratio_to_forward, marker="o", color=colour, label=run)
        axes[2].plot(part.images, part.driver_peak_rss_mib, marker="o", color=colour, label=f"{run}: driver")
        if (part.worker_peak_rss_mib > 0).any():
            axes[2].plot(part.images, part.worker_peak_rss_mib, marker="s", color=colour, ls=":", label=f"{run}: a worker")
    axes[1].axhline(1, color="k", lw=0.5)
    for ax, label in zip(axes, ("images/s", "speed ÷ plain forward pass", "peak memory (MiB)")):
        ax.set(xscale="log", xlabel="images in the folder", ylabel=label)
    axes[2].set_ylim(bottom=0)
    axes[0].legend(fontsize=7)
    axes[2].legend(fontsize=6)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig
