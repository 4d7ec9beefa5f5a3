r"""Can a report be trusted, and what does it cost? The randomization check, timing, region shares.

The reports of :mod:`nero_lite.explain` show NERO's score (Chhetri, Korhonen, Gyawali &
Bhattarai, "NERO: Explainable Out-of-Distribution Detection with Neuron-level
Relevance", MICCAI 2025) taken apart, with LRP maps (Bach et al., PLOS ONE 2015) and CRP
concept maps (Achtibat et al., Nature Machine Intelligence 2023). Three checks of them:

* **Model randomization** (Adebayo et al., "Sanity Checks for Saliency Maps", NeurIPS
  2018), at the last layer: :func:`randomize_head` re-initialises the linear head
  :math:`z = W a + b`. Since NERO's relevance :math:`R_j = \sum_c o_c a_j W_{cj} / z_c`
  is computed from :math:`W`, an explanation that does not change with :math:`W` does not
  explain the model; what lies below the head (the CRP map of a fixed channel) is left
  untouched by this step, so only its scale and sign can change.
* **Cost** (:func:`explain_cost`): seconds per image of a forward pass, a score map
  (:func:`~nero_lite.attribution.score_maps`), gradient × input of the score
  (:func:`~nero_lite.attribution.score_gradient_maps`) and a full report
  (:func:`~nero_lite.explain.explain`), interleaved, as medians, and as multiples of the
  forward pass.
* **Where the relevance lies** (:func:`region_share`):
  :math:`\sum_{p \in M} |h_p| / \sum_p |h_p|` of a map :math:`h` and a region :math:`M`,
  e.g. the corner where a shortcut sits; a map that spreads its relevance evenly scores
  the region's area fraction :math:`|M| / HW`.
* **Whether the maps of a report are different pictures** (:func:`map_agreement`): the
  Pearson correlation of the score map with the input map, and the mean correlation
  between every two concept maps. At 64 pixels a ResNet-18's ``layer4`` is 2×2, and every
  map is built from those four positions: correlations near 1 say that the "concepts" of
  a report are one picture, and should not be read as different concepts.
"""

from __future__ import annotations

import copy
import math
import time

import numpy as np
import pandas as pd
import torch
from torch import nn

from .attribution import score_gradient_maps, score_maps
from .data import ImageSet, image_tensor, to_input
from .detectors.nero import NeroDetector
from .devices import resolve_device, synchronize
from .explain import explain
from .models import find_head

__all__ = ["explain_cost", "map_agreement", "randomize_head", "region_share"]


def randomize_head(model: nn.Module, seed: int = 0) -> nn.Module:
    """A copy of ``model`` with its linear head re-initialised (PyTorch's default ``nn.Linear`` init).

    The cascading model-randomization test of Adebayo et al., "Sanity Checks for Saliency
    Maps", NeurIPS 2018, starting at the last layer: explanations that do not change when
    the head is randomized do not explain the model.
    """
    randomized = copy.deepcopy(model)
    head = find_head(randomized)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        fresh = nn.Linear(head.in_features, head.out_features, bias=head.bias is not None)
    with torch.no_grad():
        head.weight.copy_(fresh.weight)
        if head.bias is not None:
            head.bias.copy_(fresh.bias)
    return randomized


def explain_cost(
    model: nn.Module,
    images: ImageSet | torch.Tensor,
    detector: NeroDetector,
    *,
    k: int = 5,
    repeats: int = 3,
    device: str | torch.device = "auto",
    **kwargs,
) -> dict[str, float]:
    """Seconds per image of a forward pass, a score map, gradient × input of the score and a full report, in one run.

    The four are interleaved and repeated ``repeats`` times (after one untimed warm-up
    of each); the figures are medians. Returns ``forward_s``, ``score_map_s``,
    ``gradient_map_s`` (a plain forward and backward pass: the reference for the cost of
    the LRP rules), ``report_s`` (per image, batched as given) and the cost in forward
    passes, ``score_map_relative``, ``gradient_map_relative`` and ``relative`` (the
    medians of the per-round ratios).
    ``kwargs`` go to :func:`~nero_lite.explain.explain` (e.g. ``train_images`` to include the reference images).
    """
    device = resolve_device(device)
    model = model.to(device).eval()
    pixels = image_tensor(images)
    x = to_input(pixels, device)

    def timed(run) -> float:
        synchronize(device)
        start = time.perf_counter()
        run()
        synchronize(device)
        return (time.perf_counter() - start) / len(pixels)

    def forward() -> None:
        with torch.no_grad():
            model(x)

    runs = {
        "forward_s": forward,
        "score_map_s": lambda: score_maps(model, pixels, detector, device=device),
        "gradient_map_s": lambda: score_gradient_maps(model, pixels, detector, device=device),
        "report_s": lambda: explain(model, pixels, detector, threshold=-math.inf, k=k, device=device, **kwargs),
    }
    for run in runs.values():
        run()
    rounds = [{name: timed(run) for name, run in runs.items()} for _ in range(repeats)]
    result = {name: float(np.median([r[name] for r in rounds])) for name in runs}
    for name in ("score_map", "gradient_map"):
        result[f"{name}_relative"] = float(np.median([r[f"{name}_s"] / r["forward_s"] for r in rounds]))
    result["relative"] = float(np.median([r["report_s"] / r["forward_s"] for r in rounds]))
    return result


def region_share(heatmaps, region) -> np.ndarray:
    r"""Share of each heatmap's absolute relevance that falls inside ``region``.

    :math:`\sum_{p \in \text{region}} |h_p| \,/\, \sum_p |h_p|` for every map ``h``
    of ``heatmaps`` (``…×H×W``); ``region`` is an ``H×W`` boolean mask (e.g.
    :func:`nero_lite.data.corner_region`). A map that spreads its relevance evenly
    scores the region's area fraction; a map drawn to the region scores more.
    """
    maps = np.abs(np.asarray(heatmaps, dtype=np.float64))
    mask = np.asarray(region, dtype=bool)
    if maps.shape[-2:] != mask.shape:
        raise ValueError(f"heatmaps are {maps.shape[-2:]} but the region is {mask.shape}")
    total = maps.sum(axis=(-2, -1))
    return np.where(total > 0, (maps * mask).sum(axis=(-2, -1)) / np.where(total > 0, total, 1), 0.0)


def map_agreement(reports) -> pd.DataFrame:
    """How alike the maps of each report are, one row per report.

    ``score vs input map``: the Pearson correlation of the report's score map with its input
    map (``Report.heatmap``); ``between concept maps``: the mean
    Pearson correlation over every two of its concept maps (NaN with fewer than two, or
    where a map is constant); ``concept maps``: how many.
    """
    def correlations(maps: np.ndarray) -> np.ndarray:
        flat = maps.reshape(len(maps), -1).astype(np.float64)
        flat = flat - flat.mean(axis=1, keepdims=True)
        norms = np.linalg.norm(flat, axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            return (flat @ flat.T) / np.outer(norms, norms)

    rows = []
    for report in reports:
        concepts = np.asarray(report.concept_heatmaps)
        pairs = correlations(concepts)[np.triu_indices(len(concepts), 1)] if len(concepts) > 1 else np.array([np.nan])
        rows.append({
            "score vs input map": float(correlations(np.stack([report.score_map, report.heatmap]))[0, 1]),
            "between concept maps": float(pairs.mean()),
            "concept maps": len(concepts),
        })
    return pd.DataFrame(rows)

