"""The ``report.html`` of ``python -m nero_lite flag`` and ``evaluate``: one self-contained page, readable offline.

Both commands write the same page (:func:`flag_report`, :func:`evaluate_report`): a summary,
the score histogram with the threshold, then the flagged images by score, the first of them
explained. ``evaluate`` adds its metrics table at the top and draws ID test and OOD scores
apart. An explained image shows the map of why NERO flags it and, when its
:class:`~nero_lite.explain.Report` is given, the CRP concept map of each of the report's
neurons beside the reference patches of the training images that excite that neuron most.

Everything the page shows is inside it: the histogram and the maps are PNG images drawn
with matplotlib and embedded as base64 ``data:`` URIs, the images and patches too; the page
loads no script, style sheet, font or image from anywhere else.
"""

from __future__ import annotations

import base64
import html
import io
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from matplotlib import colormaps
from matplotlib.figure import Figure
from PIL import Image

from .explain import Report

__all__ = ["Flagged", "evaluate_report", "flag_report", "png_data_uri"]

_SHOWN_SIDE = 128  # pixels: images and maps are enlarged (nearest neighbour) to this side on the page
_STYLE = """
body { font-family: sans-serif; margin: 2em; color: #222; }
table { border-collapse: collapse; margin-bottom: 1em; }
td, th { padding: 0.2em 0.8em; text-align: left; border-bottom: 1px solid #ddd; }
.cards { display: flex; flex-wrap: wrap; gap: 1em; }
.card { border: 1px solid #ccc; padding: 0.5em; font-size: 0.85em; max-width: 300px; word-break: break-all; }
.card img { image-rendering: pixelated; margin-right: 4px; }
.card.explained { max-width: none; flex-basis: 100%; }
.concepts td, .concepts th { border: none; padding: 0.2em 0.4em; vertical-align: middle; font-weight: normal; }
.metrics td { text-align: right; font-variant-numeric: tabular-nums; }
"""


@dataclass(frozen=True)
class Flagged:
    """One flagged image on the page: its file, score, classes, pixels and (optionally) its explanation.

    ``image`` is uint8 ``3×H×W``; ``heatmap`` is ``H×W`` (positive = pushes the image away
    from its nearest NERO centroid) or ``None`` when the image is not explained. ``truth``
    says where a labelled image comes from (``evaluate``: ``"ID test: cecum"``, ``"OOD:
    polyps"``; empty for ``flag``). ``report`` (:meth:`~nero_lite.bundle.Bundle.reports`)
    adds the concept maps and reference patches of its neurons.
    """

    file: str
    score: float
    predicted: str
    nearest: str
    image: torch.Tensor
    heatmap: np.ndarray | None = None
    truth: str = ""
    report: Report | None = None


def png_data_uri(pixels: np.ndarray) -> str:
    """A ``data:image/png;base64,...`` URI of uint8 ``H×W×3`` pixels."""
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _enlarged(pixels: np.ndarray, side: int = _SHOWN_SIDE) -> np.ndarray:
    """``H×W×3`` pixels enlarged by the whole factor (nearest neighbour) that brings their long side nearest ``side``."""
    image = Image.fromarray(pixels)
    scale = max(1, side // max(image.size))
    return np.asarray(image.resize((image.width * scale, image.height * scale), Image.Resampling.NEAREST))


def _map_pixels(heatmap: np.ndarray) -> np.ndarray:
    """A signed map in the ``bwr`` colours, symmetric around zero (white = no contribution)."""
    limit = float(np.abs(heatmap).max()) or 1.0
    rgba = colormaps["bwr"]((heatmap / limit + 1) / 2)
    return (rgba[..., :3] * 255).round().astype(np.uint8)


def _histogram(groups: dict[str, np.ndarray], threshold: float, detector: str, label: str) -> str:
    """The histogram of each group of scores on shared bins, with the threshold (legend ``label``), as an embedded PNG.

    The bins span the lowest percent of the scores to the highest (and the threshold): the
    few far outliers an OOD folder holds would squeeze everything else into one bin, so
    the scores below are counted in the first bin and the legend says how many.
    """
    figure = Figure(figsize=(7, 3), dpi=100)
    axes = figure.subplots()
    values = np.concatenate(list(groups.values()))
    low = min(float(np.quantile(values, 0.01)), threshold)
    bins = np.histogram_bin_edges(values.clip(low), bins=min(50, max(10, len(values) // 5)))
    below = int((values < low).sum())
    if below:
        label += f"; {below} below {low:.3g} counted in the first bin"
    colours = ("#4c72b0", "#dd8452")
    for (name, scores), colour in zip(groups.items(), colours):
        axes.hist(scores.clip(low), bins=bins, color=colour, alpha=0.6 if len(groups) > 1 else 1.0, label=name or None)
    axes.axvline(threshold, color="#c44e52", linestyle="--", label=label)
    axes.set_xlabel(f"{detector} score (higher = more in-distribution)")
    axes.set_ylabel("images")
    axes.legend(loc="upper left", fontsize=8)
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _img(pixels: np.ndarray, alt: str, side: int = _SHOWN_SIDE, **data: object) -> str:
    """An ``<img>`` of ``H×W×3`` pixels enlarged to about ``side``, with ``data-*`` attributes naming what it shows."""
    shown = _enlarged(pixels, side)
    attributes = "".join(f' data-{key}="{html.escape(str(value))}"' for key, value in data.items())
    return f'<img src="{png_data_uri(shown)}" alt="{html.escape(alt)}" width="{shown.shape[1]}"{attributes}>'


def _concepts(report: Report) -> str:
    """One row per neuron of ``report``: its contribution, its CRP concept map and its reference patches."""
    references = {reference.channel: reference for reference in report.references}
    rows = []
    for channel, contribution, heatmap in zip(report.channels.tolist(), report.contributions, report.concept_heatmaps):
        cells = _img(_map_pixels(heatmap), "concept map", channel=channel)
        reference = references.get(channel)
        if reference is not None:
            cells += "".join(_img(patch, "reference patch", _SHOWN_SIDE // 2, channel=channel, index=int(index))
                             for patch, index in zip(reference.patches(), reference.indices))
        rows.append(f"<tr><th>neuron {channel}<br>c = {contribution:+.3g}</th><td>{cells}</td></tr>")
    return f'<table class="concepts">{"".join(rows)}</table>'


def _card(item: Flagged) -> str:
    images = _img(item.image.permute(1, 2, 0).cpu().numpy(), "image")
    if item.heatmap is not None:
        images += _img(_map_pixels(item.heatmap), "why flagged")
    truth = f" · {html.escape(item.truth)}" if item.truth else ""
    concepts = _concepts(item.report) if item.report is not None else ""
    return (
        f'<div class="card{" explained" if concepts else ""}">{images}<br><b>{html.escape(item.file)}</b><br>'
        f"score {item.score:.4g} · predicted {html.escape(item.predicted)} · nearest {html.escape(item.nearest)}"
        f"{truth}{concepts}</div>"
    )


def _gallery(gallery: list[Flagged], note: str) -> str:
    """The flagged images, the explained ones first, with a paragraph saying what is shown."""
    if not gallery:
        return "<p>No image is flagged.</p>"
    explained = sum(item.heatmap is not None for item in gallery)
    concepts = sum(item.report is not None for item in gallery)
    text = f"The {len(gallery)} flagged images of lowest score, lowest first"
    if explained:
        text += (f"; the first {explained} beside the map of why NERO flags them (red: pixels that push the image "
                 "away from its nearest class centroid, blue: towards it)")
    if concepts:
        text += (": below it, for each of the neurons that contribute most to its NERO distance (c: the "
                 "contribution), the concept map (CRP: where the image activates that neuron) and patches of the "
                 "training images that excite the neuron most")
    text += "." + (f" {note}" if note else "")
    return f"<p>{html.escape(text)}</p><div class=\"cards\">{''.join(_card(item) for item in gallery)}</div>"


def _page(title: str, summary: list[tuple[str, object]], histogram: str, gallery: list[Flagged], note: str,
          metrics: str = "") -> str:
    """The page both commands write: title, metrics (``evaluate``), summary table, histogram, gallery."""
    table = "".join(f"<tr><th>{html.escape(str(k))}</th><td>{html.escape(str(v))}</td></tr>" for k, v in summary)
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        f"<title>{html.escape(title)}</title><style>{_STYLE}</style></head><body>"
        f"<h1>{html.escape(title)}</h1>{metrics}<table>{table}</table>"
        f'<h2>Scores</h2><img src="{histogram}" alt="score histogram">'
        f"<h2>Flagged images</h2>{_gallery(gallery, note)}"
        "</body></html>\n"
    )


def flag_report(
    *, title: str, detector: str, threshold: float, scores: np.ndarray, gallery: list[Flagged], skipped: int,
    note: str = "",
) -> str:
    """The page of ``flag``: counts, the histogram of every score with the threshold, then the flagged images.

    ``gallery`` lists flagged images, most out-of-distribution (lowest score) first; those
    with a heatmap are shown beside their why-flagged map (red pushes the image away from
    its nearest NERO centroid, blue towards it), those with a report with their concepts
    too. ``skipped`` counts unreadable files; ``note`` is added to the gallery's paragraph.
    """
    flagged = int((scores < threshold).sum())
    share = flagged / len(scores) if len(scores) else 0.0
    summary = [("images scored", len(scores)), ("flagged", f"{flagged} ({share:.1%})"), ("detector", detector),
               ("threshold (95 % ID TPR on the validation images)", f"{threshold:.6g}"),
               ("unreadable files skipped", skipped)]
    label = f"threshold {threshold:.4g}: {flagged} flagged, {len(scores) - flagged} kept"
    return _page(title, summary, _histogram({"": scores}, threshold, detector, label), gallery, note)


def _metrics_table(metrics: pd.DataFrame) -> str:
    """AUROC and FPR95 per detector (rows) and OOD group (columns, the pooled ``all`` first), as in metrics.json."""
    groups = sorted(metrics.ood_class.unique(), key=lambda group: (group != "all", list(metrics.ood_class).index(group)))
    header = "".join(f'<th colspan="2">{html.escape(str(group))}</th>' for group in groups)
    names = "<th></th>" + "<th>AUROC</th><th>FPR95</th>" * len(groups)
    rows = []
    for detector in dict.fromkeys(metrics.detector):
        cells = []
        for group in groups:
            row = metrics[(metrics.detector == detector) & (metrics.ood_class == group)]
            for metric in ("auroc", "fpr95"):
                value = f"{row[metric].iloc[0]:.4f}" if len(row) else ""
                cells.append(f'<td data-detector="{html.escape(detector)}" data-ood="{html.escape(str(group))}" '
                             f'data-metric="{metric}">{value}</td>')
        rows.append(f"<tr><th>{html.escape(detector)}</th>{''.join(cells)}</tr>")
    return (
        "<h2>Metrics</h2><p>Per detector and OOD group (all: every OOD image pooled): AUROC, and FPR95, the share of "
        "OOD images kept at 95 % ID TPR (metrics.json also holds AUPR-In and AUPR-Out).</p>"
        f'<table class="metrics"><tr><th>OOD group</th>{header}</tr><tr>{names}</tr>{"".join(rows)}</table>'
    )


def evaluate_report(
    *, title: str, detector: str, threshold: float, id_scores: np.ndarray, ood_scores: np.ndarray,
    metrics: pd.DataFrame, gallery: list[Flagged], skipped: int, note: str = "",
) -> str:
    """The page of ``evaluate``: the metrics table, counts, the ID test and OOD score histograms, the flagged images.

    ``metrics`` has the rows of metrics.json (``detector, ood_class, auroc, fpr95, ...``);
    ``threshold`` is ``detector``'s at 95 % ID TPR on the ID test images, so about 5 % of
    them are flagged. ``gallery``, ``skipped`` and ``note`` are as for :func:`flag_report`.
    """
    id_flagged, ood_flagged = int((id_scores < threshold).sum()), int((ood_scores < threshold).sum())
    summary = [("ID test images", len(id_scores)), ("OOD images", len(ood_scores)), ("detector", detector),
               ("threshold (95 % ID TPR on the ID test images)", f"{threshold:.6g}"),
               ("ID test images flagged", f"{id_flagged} ({id_flagged / max(len(id_scores), 1):.1%})"),
               ("OOD images flagged", f"{ood_flagged} ({ood_flagged / max(len(ood_scores), 1):.1%})"),
               ("unreadable files skipped", skipped)]
    label = f"threshold {threshold:.4g}: {id_flagged} ID test and {ood_flagged} OOD images flagged"
    histogram = _histogram({"ID test": id_scores, "OOD": ood_scores}, threshold, detector, label)
    return _page(title, summary, histogram, gallery, note, _metrics_table(metrics))
