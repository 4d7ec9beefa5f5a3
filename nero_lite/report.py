"""The ``report.html`` of ``python -m nero_lite flag``: one self-contained page, readable offline.

Everything the page shows is inside it: the score histogram and the explanation maps are
PNG images drawn with matplotlib and embedded as base64 ``data:`` URIs, the flagged images
too; the page loads no script, style sheet, font or image from anywhere else.
"""

from __future__ import annotations

import base64
import html
import io
from dataclasses import dataclass

import numpy as np
import torch
from matplotlib import colormaps
from matplotlib.figure import Figure
from PIL import Image

__all__ = ["Flagged", "flag_report", "png_data_uri"]

_SHOWN_SIDE = 128  # pixels: images and maps are enlarged (nearest neighbour) to this side on the page
_STYLE = """
body { font-family: sans-serif; margin: 2em; color: #222; }
table { border-collapse: collapse; }
td, th { padding: 0.2em 0.8em; text-align: left; border-bottom: 1px solid #ddd; }
.cards { display: flex; flex-wrap: wrap; gap: 1em; }
.card { border: 1px solid #ccc; padding: 0.5em; font-size: 0.85em; max-width: 300px; word-break: break-all; }
.card img { image-rendering: pixelated; margin-right: 4px; }
"""


@dataclass(frozen=True)
class Flagged:
    """One flagged image on the page: its file, score, classes, pixels and (optionally) its map.

    ``image`` is uint8 ``3×H×W``; ``heatmap`` is ``H×W`` (positive = pushes the image away
    from its nearest NERO centroid) or ``None`` when the image is not explained.
    """

    file: str
    score: float
    predicted: str
    nearest: str
    image: torch.Tensor
    heatmap: np.ndarray | None = None


def png_data_uri(pixels: np.ndarray) -> str:
    """A ``data:image/png;base64,...`` URI of uint8 ``H×W×3`` pixels."""
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _enlarged(pixels: np.ndarray) -> np.ndarray:
    image = Image.fromarray(pixels)
    scale = max(1, _SHOWN_SIDE // max(image.size))
    return np.asarray(image.resize((image.width * scale, image.height * scale), Image.Resampling.NEAREST))


def _map_pixels(heatmap: np.ndarray) -> np.ndarray:
    """A signed map in the ``bwr`` colours, symmetric around zero (white = no contribution)."""
    limit = float(np.abs(heatmap).max()) or 1.0
    rgba = colormaps["bwr"]((heatmap / limit + 1) / 2)
    return (rgba[..., :3] * 255).round().astype(np.uint8)


def _histogram(scores: np.ndarray, threshold: float, detector: str) -> str:
    """The score histogram with the threshold, as an embedded PNG."""
    figure = Figure(figsize=(7, 3), dpi=100)
    axes = figure.subplots()
    flagged = int((scores < threshold).sum())
    axes.hist(scores, bins=min(50, max(10, len(scores) // 5)), color="#4c72b0")
    axes.axvline(threshold, color="#c44e52", linestyle="--",
                 label=f"threshold {threshold:.4g}: {flagged} flagged, {len(scores) - flagged} kept")
    axes.set_xlabel(f"{detector} score (higher = more in-distribution)")
    axes.set_ylabel("images")
    axes.legend(loc="upper left", fontsize=8)
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _card(item: Flagged) -> str:
    image = _enlarged(item.image.permute(1, 2, 0).cpu().numpy())
    images = f'<img src="{png_data_uri(image)}" alt="image" width="{image.shape[1]}">'
    if item.heatmap is not None:
        heatmap = _enlarged(_map_pixels(item.heatmap))
        images += f'<img src="{png_data_uri(heatmap)}" alt="why flagged" width="{heatmap.shape[1]}">'
    return (
        f'<div class="card">{images}<br><b>{html.escape(item.file)}</b><br>'
        f"score {item.score:.4g} · predicted {html.escape(item.predicted)} · nearest {html.escape(item.nearest)}</div>"
    )


def flag_report(
    *, title: str, detector: str, threshold: float, scores: np.ndarray, gallery: list[Flagged], skipped: int
) -> str:
    """The page: counts, the histogram of every score with the threshold, then the flagged images.

    ``gallery`` lists flagged images, most out-of-distribution (lowest score) first; those
    with a heatmap are shown beside their why-flagged map (red pushes the image away from
    its nearest NERO centroid, blue towards it). ``skipped`` counts unreadable files.
    """
    flagged = int((scores < threshold).sum())
    share = flagged / len(scores) if len(scores) else 0.0
    explained = sum(item.heatmap is not None for item in gallery)
    rows = [("images scored", len(scores)), ("flagged", f"{flagged} ({share:.1%})"), ("detector", detector),
            ("threshold (95 % ID TPR on the validation images)", f"{threshold:.6g}"), ("unreadable files skipped", skipped)]
    table = "".join(f"<tr><th>{html.escape(str(k))}</th><td>{html.escape(str(v))}</td></tr>" for k, v in rows)
    shown = (f"<p>The {len(gallery)} flagged images of lowest score, lowest first"
             + (f"; the first {explained} beside the map of why NERO flags them (red: pixels that push the image "
                "away from its nearest class centroid, blue: towards it)." if explained else ".") + "</p>")
    cards = "".join(_card(item) for item in gallery) or "<p>No image is flagged.</p>"
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        f"<title>{html.escape(title)}</title><style>{_STYLE}</style></head><body>"
        f"<h1>{html.escape(title)}</h1><table>{table}</table>"
        f'<h2>Scores</h2><img src="{_histogram(scores, threshold, detector)}" alt="score histogram">'
        f"<h2>Flagged images</h2>{shown if gallery else ''}<div class=\"cards\">{cards}</div>"
        "</body></html>\n"
    )
