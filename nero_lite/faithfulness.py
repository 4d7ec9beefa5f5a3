r"""Do explanations point at what made an image out-of-distribution? Localisation and faithfulness, measured.

Maps (``N×H×W``, positive = evidence for the explained quantity) are measured against
ground truth, always beside maps that know nothing about the model:

* **Localisation** against a mask of the finding (the synthetic generator's finding
  masks, Kvasir-SEG's polyp masks):

  - relevance mass accuracy (Arras, Osman & Samek, "CLEVR-XAI: A benchmark dataset for
    the ground truth evaluation of neural network explanations", Information Fusion
    2022): the share of the map's positive relevance inside the mask,
    :math:`\sum_{p \in M} h_p^+ / \sum_p h_p^+`; a uniform map scores the mask's area
    share :math:`|M| / HW`;
  - the pointing game (Zhang et al., "Top-down neural attention by excitation
    backprop", ECCV 2016): does the map's maximum fall inside the mask; a random point
    does so with probability :math:`|M| / HW`, a centre prior
    (:func:`centre_prior`) when the finding covers the centre.

* **Faithfulness**: the restoration curve. Replace the patches the map ranks highest
  first, a growing fraction of the image at a time, by a fill — the same image rendered without
  the finding (synthetic counterfactuals) or a blurred copy (:func:`blurred`, real
  images) — and score again. If the map points at what makes the image OOD, the
  in-distribution score comes back faster than for a random order of the patches. The
  area over the curve is the AOPC (Samek et al., "Evaluating the visualization of what
  a deep neural network has learned", IEEE TNNLS 2017) of this restoration
  (:func:`aopc`), whose region perturbation this is; the order is that of deletion
  (Petsiuk, Das & Saenko, "RISE", BMVC 2018) and pixel flipping (Bach et al., PLOS ONE
  2015).

* **A fixed pattern**: maps that are the same in every image explain nothing about the
  image. :func:`grid_share` measures the share of the mean absolute map at the
  top-left pixels of each cell of a grid (the positions that stride-2 1×1 shortcut
  convolutions keep), :func:`cross_image_correlation` how alike the maps of different
  images are.

The metrics are written here in a few vectorised lines; ``tests/test_faithfulness.py``
checks relevance mass accuracy, the pointing game and the region-perturbation curve against
Quantus (Hedström et al., "Quantus: An Explainable AI Toolkit for Responsible
Evaluation of Neural Network Explanations and Beyond", JMLR 2023).
:func:`compare_maps` runs everything on one model, one detector and one set of images.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from scipy import stats
from torch import nn
from torchvision.transforms.functional import gaussian_blur

from . import attribution, explain
from .data import image_tensor, to_input
from .detectors.nero import NeroDetector
from .devices import resolve_device
from .extraction import extract
from .metrics import mean_std_table
from .paired import paired_difference

__all__ = [
    "FRACTIONS",
    "GRID_MAPS",
    "LOCALISES_AT",
    "LOCAL_FINDINGS",
    "MAP_KINDS",
    "Benchmark",
    "MapComparison",
    "aopc",
    "area_share",
    "benchmark",
    "blurred",
    "centre_prior",
    "compare_maps",
    "cross_image_correlation",
    "grid_share",
    "mass_accuracy",
    "pointing_game",
    "log_score",
    "restoration_curves",
    "map_means",
    "verdicts",
]


def __getattr__(name: str):
    """``summarize``, the previous name of :func:`map_means` (:func:`nero_lite.semisup.summarize` is another thing), with a deprecation warning."""
    if name == "summarize":
        warnings.warn("nero_lite.faithfulness.summarize is now map_means", DeprecationWarning, stacklevel=2)
        return map_means
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


#: Fractions of the image replaced along a restoration curve (0 is the image itself).
FRACTIONS = (0.0, 0.02, 0.04, 0.06, 0.08, 0.1, 0.15, 0.2, 0.3)

#: A map *finds* a finding when its ratio (mass accuracy over area share, :func:`map_means`) is at
#: least this: twice as much of its positive relevance on the finding as a map spread evenly would
#: put there. The one criterion of the book's chapters 6 and 8 (:func:`verdicts`).
LOCALISES_AT = 2.0

#: The maps :func:`compare_maps` measures, with what each one is.
MAP_KINDS = {
    "score map": "NERO's neuron contributions propagated to the pixels (attribution.score_maps)",
    "gradient × input": "gradient × input of NERO's outlier score (attribution.score_gradient_maps)",
    "input LRP": "LRP of the predicted class, the report's input map (attribution.lrp_maps)",
    "CRP top-|Δ|": "CRP map of the neuron of largest |Δ| (attribution.concept_heatmaps)",
    "random": "uniform random values: the chance level",
    "centre prior": "a Gaussian bump at the image centre (localisation only)",
}


def _check(maps: torch.Tensor, masks: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    maps, masks = torch.as_tensor(maps).double(), torch.as_tensor(masks).bool()
    if maps.ndim != 3 or maps.shape != masks.shape:
        raise ValueError(f"maps and masks must both be N×H×W, got {tuple(maps.shape)} and {tuple(masks.shape)}")
    return maps, masks


def mass_accuracy(maps: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    r"""Relevance mass accuracy per map: :math:`\sum_{p \in M} h_p^+ / \sum_p h_p^+` (NaN without positive relevance)."""
    maps, masks = _check(maps, masks)
    positive = maps.clamp_min(0).flatten(1)
    total = positive.sum(dim=1)
    inside = (positive * masks.flatten(1)).sum(dim=1)
    return torch.where(total > 0, inside / total.clamp_min(torch.finfo(total.dtype).tiny), torch.nan)


def pointing_game(maps: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """1.0 where a maximum of the map lies inside the mask, else 0.0 (ties: any maximum counts, as in Quantus)."""
    maps, masks = _check(maps, masks)
    flat = maps.flatten(1)
    at_max = flat == flat.max(dim=1, keepdim=True).values
    return (at_max & masks.flatten(1)).any(dim=1).double()


def area_share(masks: torch.Tensor) -> torch.Tensor:
    """The share of the image each mask covers: what a uniform map scores in both games."""
    masks = torch.as_tensor(masks).bool()
    return masks.flatten(1).double().mean(dim=1)


def centre_prior(n: int, height: int, width: int, sigma: float = 0.25) -> torch.Tensor:
    """``n`` identical Gaussian maps centred on the image, standard deviation ``sigma`` × the side."""
    y = (torch.arange(height, dtype=torch.float64) + 0.5) / height - 0.5
    x = (torch.arange(width, dtype=torch.float64) + 0.5) / width - 0.5
    bump = torch.exp(-(y[:, None] ** 2 + x[None, :] ** 2) / (2 * sigma**2))
    return bump.expand(n, height, width).clone()


def grid_share(maps: torch.Tensor, cell: int = 32, size: int = 3) -> float:
    """Share of the mean absolute map in the ``size×size`` pixels at the top-left corner of every ``cell×cell`` cell.

    A map with no fixed pattern scores about :math:`(size / cell)^2` (0.9 % for 3 of
    32); the timm ResNet-18's stride-2 1×1 shortcut convolutions, which read one pixel
    of every 2×2 block, pile relevance onto those corners.
    """
    mean = torch.as_tensor(maps).double().abs().mean(dim=0)
    height, width = mean.shape
    if height % cell or width % cell or not 1 <= size <= cell:
        raise ValueError(f"the maps' side ({height}×{width}) must be a multiple of cell={cell}, and 1 <= size <= cell")
    corners = mean.view(height // cell, cell, width // cell, cell)[:, :size, :, :size]
    return float(corners.sum() / mean.sum())


def cross_image_correlation(maps: torch.Tensor) -> float:
    """Mean Pearson correlation of the absolute maps over all pairs of different images (1 = the same map everywhere)."""
    flat = torch.as_tensor(maps).double().abs().flatten(1)
    if len(flat) < 2:
        raise ValueError("need at least two maps")
    centred = flat - flat.mean(dim=1, keepdim=True)
    unit = centred / centred.norm(dim=1, keepdim=True).clamp_min(torch.finfo(flat.dtype).tiny)
    gram = unit @ unit.T
    n = len(flat)
    return float((gram.sum() - gram.diagonal().sum()) / (n * (n - 1)))


def blurred(images: torch.Tensor, sigma: float = 0.08) -> torch.Tensor:
    """A Gaussian-blurred copy of uint8 images (standard deviation ``sigma`` × the side): the fill for real images."""
    side = images.shape[-1]
    s = max(sigma * side, 0.5)
    kernel = 2 * math.ceil(3 * s) + 1
    return gaussian_blur(images.float(), [kernel, kernel], [s, s]).round().clamp(0, 255).to(torch.uint8)


def _order(values: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Column indices per row, highest value first; ties are broken in a seeded random order."""
    values = values.double()
    shuffle = torch.rand(values.shape, generator=generator).argsort(dim=1)
    ranked = values.gather(1, shuffle).argsort(dim=1, descending=True, stable=True)
    return shuffle.gather(1, ranked)


def restoration_curves(
    score: Callable[[torch.Tensor], torch.Tensor],
    images: torch.Tensor,
    fill: torch.Tensor,
    maps: torch.Tensor,
    fractions: Sequence[float] = FRACTIONS,
    *,
    patch: int | None = None,
    seed: int = 0,
) -> torch.Tensor:
    """Scores ``(N, len(fractions))`` as the most relevant patches of each image are replaced by ``fill``.

    The images are cut into non-overlapping ``patch×patch`` squares (default: a 16th of
    the side), ranked by the sum of the map inside them, highest first (ties in a seeded
    random order); at step k the first ``round(fractions[k] · number of patches)`` are
    taken from ``fill`` (same shape as ``images``) in every channel, and ``score`` (uint8
    or float images ``(N, 3, H, W)`` → one score each, higher = more in-distribution)
    is applied. Patches, as in the region perturbation of Samek et al. (2017), keep the
    replaced image free of pixel-level speckle that would itself look out of
    distribution.
    """
    images, fill, maps = torch.as_tensor(images), torch.as_tensor(fill), torch.as_tensor(maps)
    if images.shape != fill.shape or images.ndim != 4 or maps.shape != (images.shape[0], *images.shape[2:]):
        raise ValueError(f"images {tuple(images.shape)}, fill {tuple(fill.shape)} and maps {tuple(maps.shape)} do not match")
    if any(not 0 <= f <= 1 for f in fractions):
        raise ValueError(f"fractions must lie in [0, 1], got {list(fractions)}")
    n, _, height, width = images.shape
    patch = patch or max(min(height, width) // 16, 1)
    if height % patch or width % patch:
        raise ValueError(f"patch={patch} must divide the image side ({height}×{width})")
    sums = F.avg_pool2d(maps.double()[:, None], patch)[:, 0]
    rows, columns = sums.shape[1:]
    order = _order(sums.flatten(1), torch.Generator().manual_seed(seed))
    rank = torch.empty_like(order).scatter_(1, order, torch.arange(rows * columns).expand(n, -1).contiguous())
    rank = rank.view(n, 1, rows, columns).repeat_interleave(patch, dim=2).repeat_interleave(patch, dim=3)
    curves = []
    for fraction in fractions:
        replaced = rank < round(fraction * rows * columns)
        curves.append(score(torch.where(replaced, fill, images)).detach().cpu().double())
    return torch.stack(curves, dim=1)


def log_score(detector: NeroDetector, outputs) -> torch.Tensor:
    r""":math:`-\log S(x)`, NERO's score on a log scale (higher = more in-distribution).

    NERO's outlier score :math:`S(x) > 0` is heavy-tailed on OOD images: LRP-0 divides by
    the logits, and an image whose logit for a likely class is near 0 gets a huge
    relevance and a score hundreds of times the typical one. On the log scale a step of
    a restoration curve is the factor by which :math:`S` falls, the same for every image,
    so a few such images do not decide the mean.
    """
    outlier = -detector.score(outputs)
    return -torch.log(outlier.clamp_min(torch.finfo(outlier.dtype).tiny))


def aopc(curves: torch.Tensor) -> torch.Tensor:
    """Area over the restoration curve: the mean gain in score over the steps after the first, per image."""
    curves = torch.as_tensor(curves)
    return (curves[:, 1:] - curves[:, :1]).mean(dim=1)


@dataclass
class MapComparison:
    """The maps of :func:`compare_maps` and what they score.

    Attributes
    ----------
    maps : dict
        Map kind (:data:`MAP_KINDS`) → ``(N, H, W)`` tensor.
    table : DataFrame
        One row per (image, map kind): ``mass_accuracy``, ``area`` (the mask's area
        share), ``pointing``, ``aopc`` (of :func:`log_score`: the mean log-factor by
        which the outlier score falls along the curve; NaN for the centre prior).
    curves : dict
        Map kind → restoration curves ``(N, len(fractions))`` of :func:`log_score`.
    fractions : tuple of float
    """

    maps: dict[str, torch.Tensor]
    table: pd.DataFrame
    curves: dict[str, torch.Tensor]
    fractions: tuple[float, ...]

    def summary(self) -> pd.DataFrame:
        """Per map kind: mean mass accuracy, area share, their ratio, pointing game, AOPC."""
        return map_means(self.table)


def map_means(table: pd.DataFrame) -> pd.DataFrame:
    """Per map kind (rows in :data:`MAP_KINDS` order): ``mass_accuracy``, ``area``, ``ratio`` (of the means), ``pointing``, ``aopc``."""
    means = table.groupby("map", sort=False)[["mass_accuracy", "area", "pointing", "aopc"]].mean()
    means.insert(2, "ratio", means.mass_accuracy / means.area)
    return means.loc[[kind for kind in MAP_KINDS if kind in means.index]]


def compare_maps(
    model: nn.Module,
    detector: NeroDetector,
    images: torch.Tensor,
    masks: torch.Tensor,
    fill: torch.Tensor,
    *,
    fractions: Sequence[float] = FRACTIONS,
    seed: int = 0,
    device: str | torch.device = "auto",
    batch_size: int = 32,
) -> MapComparison:
    """Every map of :data:`MAP_KINDS` for the same model, detector and images, measured against ``masks`` and ``fill``.

    Parameters
    ----------
    model, detector
        The classifier and the :class:`~nero_lite.detectors.nero.NeroDetector` fitted on it.
    images : uint8 (N, 3, H, W)
        Typically the flagged OOD images of a class with local findings.
    masks : bool (N, H, W)
        Where each finding is.
    fill : uint8 (N, 3, H, W)
        What replaces the pixels on the restoration curve (counterfactuals or :func:`blurred`).
    """
    device = resolve_device(device)
    model = model.to(device).eval()
    images, masks = image_tensor(images), torch.as_tensor(masks).bool()
    n, _, height, width = images.shape
    generator = torch.Generator().manual_seed(seed)
    outputs = extract(model, to_input(images, device), device, progress=False)
    strongest = explain.top_channels(detector.decompose(outputs), 1, rank="deviation")
    options = dict(device=device, batch_size=batch_size)
    maps = {
        "score map": attribution.score_maps(model, images, detector, **options),
        "gradient × input": attribution.score_gradient_maps(model, images, detector, **options),
        "input LRP": attribution.lrp_maps(model, images, **options),
        "CRP top-|Δ|": attribution.concept_heatmaps(model, to_input(images, device), strongest, batch_size=batch_size)[:, 0].cpu(),
        "random": torch.rand(n, height, width, generator=generator, dtype=torch.float64),
        "centre prior": centre_prior(n, height, width),
    }

    def score(batch: torch.Tensor) -> torch.Tensor:
        return torch.cat([
            log_score(detector, extract(model, to_input(batch[i : i + batch_size * 4], device), device, progress=False))
            for i in range(0, len(batch), batch_size * 4)
        ])

    rows, curves = [], {}
    area = area_share(masks)
    for kind, kind_maps in maps.items():
        gain = torch.full((n,), math.nan, dtype=torch.float64)
        if kind != "centre prior":
            curves[kind] = restoration_curves(score, images, fill, kind_maps, fractions, seed=seed)
            gain = aopc(curves[kind])
        rows.append(pd.DataFrame({
            "image": np.arange(n), "map": kind, "mass_accuracy": mass_accuracy(kind_maps, masks).numpy(),
            "area": area.numpy(), "pointing": pointing_game(kind_maps, masks).numpy(), "aopc": gain.numpy(),
        }))
    return MapComparison(maps, pd.concat(rows, ignore_index=True), curves, tuple(fractions))


#: What :func:`benchmark` explains, per data set (the OOD classes with a local finding).
LOCAL_FINDINGS = {"synthetic": ("polyp", "ulcer"), "hyperkvasir": ("polyps",)}
#: Maps whose fixed pattern :func:`benchmark` measures (the model's own maps; random and centre have none).
GRID_MAPS = ("score map", "gradient × input", "input LRP")


@dataclass
class Benchmark:
    """What :func:`benchmark` measured.

    Attributes
    ----------
    table : DataFrame
        Per (seed, class, image, map kind): the columns of ``MapComparison.table``.
    grid : DataFrame
        Per (seed, class, map kind in :data:`GRID_MAPS`): ``grid_share`` and ``correlation``.
    runs : DataFrame
        Per (seed, class): ``accuracy`` (ID test), ``auroc`` of NERO, ``flagged`` share at
        95 % ID TPR, ``explained`` (images measured), ``score_conservation`` (mean sum of
        the score map over the distance).
    curves : DataFrame
        Per (seed, class, map kind, fraction): ``gain``, the mean rise of
        :func:`log_score` over the images once that fraction of the image is replaced.
    """

    table: pd.DataFrame
    grid: pd.DataFrame
    runs: pd.DataFrame
    curves: pd.DataFrame

    def summary(self) -> pd.DataFrame:
        """Mean ± std over seeds (of the per-seed means) per class and map kind: mass accuracy, area, ratio, pointing, AOPC."""
        per_seed = self.table.groupby(["seed", "class"], sort=False).apply(map_means, include_groups=False)
        return mean_std_table(per_seed.reset_index(), ["class", "map"], ["mass_accuracy", "area", "ratio", "pointing", "aopc"],
                              3, "g", std_digits=2)

    def grid_summary(self) -> pd.DataFrame:
        """Mean ± std over seeds of the grid share and the cross-image correlation, per class and map kind."""
        return mean_std_table(self.grid, ["class", "map"], ["grid_share", "correlation"], 3, "g", std_digits=2)


def _reading(difference, alpha: float) -> str:
    if not difference.significant(alpha):
        return "no difference shown"
    return "ahead" if difference.pair_mean > 0 else "behind"


def verdicts(benchmark: Benchmark, *, localises_at: float = LOCALISES_AT, alpha: float = 0.05) -> pd.DataFrame:
    """What the score map does, per class of finding, each claim against its baseline and paired image by image.

    Columns:

    * ``ratio``: the score map's mass accuracy over the area share (:func:`map_means`, per
      seed, then the mean over seeds); ``localises``: ``ratio >= localises_at``
      (:data:`LOCALISES_AT`).
    * ``best other map`` (by ratio, the centre prior included) and ``mass accuracy vs it``:
      the paired verdict of the score map's mass accuracy against that map's.
    * ``AOPC vs random`` and ``AOPC vs best other`` (the other map of largest mean AOPC;
      maps without an AOPC, the centre prior, are left out).
    * ``pointing``: the share of images whose map maximum falls on the finding, and
      ``pointing vs chance``: an exact two-sided binomial test of the hits against the mean
      area share, the chance that a point drawn uniformly lands on the finding.

    The other verdicts are :meth:`nero_lite.paired.PairedDifference.significant` over the
    (image, seed) pairs of that class (Wilcoxon signed-rank at ``alpha``). Each reads
    ``"ahead"``, ``"behind"`` or ``"no difference shown"``.
    """
    rows = []
    for name, part in benchmark.table.groupby("class", sort=False):
        mean = part.groupby("seed").apply(map_means, include_groups=False).groupby(level=1).mean()
        others = mean.drop(index="score map")
        best_ratio = others.ratio.idxmax()
        best_aopc = others.aopc.dropna().drop(index="random", errors="ignore").idxmax()
        by_method = part.rename(columns={"map": "method"})  # the column paired_difference reads
        pairs = lambda other, metric: paired_difference(by_method, "score map", other, metric, unit="image")  # noqa: E731
        score_rows = part[part["map"] == "score map"]
        hits, chance = int(score_rows.pointing.sum()), float(score_rows.area.mean())
        pointing_p = stats.binomtest(hits, len(score_rows), chance).pvalue
        rows.append({
            "class": name,
            "ratio": mean.loc["score map", "ratio"],
            "localises": bool(mean.loc["score map", "ratio"] >= localises_at),
            "best other map": best_ratio,
            "mass accuracy vs it": _reading(pairs(best_ratio, "mass_accuracy"), alpha),
            "AOPC vs random": _reading(pairs("random", "aopc"), alpha),
            "best other AOPC": best_aopc,
            "AOPC vs best other": _reading(pairs(best_aopc, "aopc"), alpha),
            "pointing": mean.loc["score map", "pointing"],
            "pointing vs chance": ("no difference shown" if pointing_p >= alpha
                                   else "ahead" if hits > chance * len(score_rows) else "behind"),
        })
    return pd.DataFrame(rows).set_index("class")


def benchmark(
    dataset: str = "synthetic",
    *,
    arch: str = "resnet18d",
    size: int = 64,
    seeds: Sequence[int] = (0,),
    mask_corner: bool = False,
    recipe=None,
    n_images: int = 40,
    fractions: Sequence[float] = FRACTIONS,
    device: str | torch.device = "auto",
    progress: bool = True,
) -> Benchmark:
    """Train (or load from the cache), fit NERO, and measure every map on flagged OOD images with local findings.

    ``"synthetic"``: the polyps and ulcers of the embedded set, their finding masks and
    counterfactuals (:func:`nero_lite.synthetic.ood_ground_truth`). ``"hyperkvasir"``: the
    three routine HyperKvasir classes as ID, the Kvasir-SEG polyps (with their masks,
    :func:`nero_lite.data.load_segmented`) as the polyp OOD class, a blurred copy as the
    fill; ``recipe`` then defaults to chapter 8's 20 epochs. Per seed and class, the
    first ``n_images`` OOD images that NERO flags at 95 % ID TPR (threshold on the ID
    test set) are explained.
    """
    from . import data, synthetic  # data loading only when a benchmark runs
    from .detectors import create
    from .extraction import accuracy
    from .metrics import auroc, threshold_at_tpr
    from .training import Recipe, train_classifier

    if dataset not in LOCAL_FINDINGS:
        raise ValueError(f"dataset must be one of {sorted(LOCAL_FINDINGS)}, got {dataset!r}")
    tables, grids, runs, curves = [], [], [], []
    if dataset == "synthetic":  # one data set for every seed (the seed is the classifier's)
        truth = synthetic.ood_ground_truth(size=size, seed=0)
    for seed in seeds:
        if dataset == "synthetic":
            splits = data.load(size=size, seed=0, mask_corner=mask_corner, progress=progress)
            masks, fill = truth.masks, data.mask_shortcut(truth.counterfactuals) if mask_corner else truth.counterfactuals
            run_recipe = recipe
        else:
            polyps = data.load_segmented(size=size, progress=progress)
            splits = data.load("hyperkvasir", size=size, seed=seed, mask_corner=mask_corner,
                               ood_sets={"polyps": polyps.images}, progress=progress)
            in_polyps = splits.ood.labels == splits.ood_classes.index("polyps")
            masks = torch.zeros(len(splits.ood), size, size, dtype=torch.bool)
            masks[in_polyps] = polyps.masks
            fill = blurred(splits.ood.images)
            run_recipe = recipe or Recipe(epochs=20)
        model = train_classifier(splits.train, arch, run_recipe, seed=seed, device=device, progress=progress)
        train, test, ood = (extract(model, getattr(splits, part), device, progress=False) for part in ("train", "test", "ood"))
        nero = create("nero").fit(train)
        id_scores, ood_scores = nero.score(test).cpu(), nero.score(ood).cpu()
        threshold = threshold_at_tpr(id_scores, 0.95)
        for name in LOCAL_FINDINGS[dataset]:
            members = splits.ood.labels == splits.ood_classes.index(name)
            chosen = torch.nonzero(members & (ood_scores < threshold)).flatten()[:n_images]
            runs.append({"seed": seed, "class": name, "accuracy": accuracy(test),
                         "auroc": auroc(id_scores.numpy(), ood_scores[members].numpy()),
                         "flagged": float((ood_scores[members] < threshold).float().mean()), "explained": len(chosen)})
            if len(chosen) == 0:
                continue
            images = splits.ood.images[chosen]
            comparison = compare_maps(model, nero, images, masks[chosen], fill[chosen], fractions=fractions,
                                      seed=seed, device=device)
            distance = nero.decompose(ood.subset(chosen.to(ood.device))).distance.cpu()
            runs[-1]["score_conservation"] = float((comparison.maps["score map"].sum(dim=(1, 2)) / distance).mean())
            tables.append(comparison.table.assign(seed=seed, **{"class": name}))
            curves += [{"seed": seed, "class": name, "map": kind, "fraction": f, "gain": float(g)}
                       for kind, c in comparison.curves.items() for f, g in zip(fractions, (c - c[:, :1]).mean(dim=0))]
            grids += [{"seed": seed, "class": name, "map": kind, "grid_share": grid_share(comparison.maps[kind]),
                       "correlation": cross_image_correlation(comparison.maps[kind]) if len(chosen) > 1 else math.nan}
                      for kind in GRID_MAPS]
    return Benchmark(pd.concat(tables, ignore_index=True), pd.DataFrame(grids), pd.DataFrame(runs), pd.DataFrame(curves))


def main(argv: list[str] | None = None) -> Benchmark:
    """``python -m nero_lite.faithfulness``: the localisation and restoration tables of one setting, printed."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m nero_lite.faithfulness", description=main.__doc__)
    parser.add_argument("dataset", choices=sorted(LOCAL_FINDINGS))
    parser.add_argument("--arch", default="resnet18d")
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--mask-corner", action="store_true")
    parser.add_argument("--epochs", type=int, help="training epochs (default: the recipe's)")
    parser.add_argument("--images", type=int, default=40, help="flagged images explained per seed and class")
    args = parser.parse_args(argv)
    from .training import Recipe

    recipe = Recipe(epochs=args.epochs) if args.epochs else None
    result = benchmark(args.dataset, arch=args.arch, size=args.size, seeds=args.seeds, mask_corner=args.mask_corner,
                       recipe=recipe, n_images=args.images)
    with pd.option_context("display.width", 200, "display.max_columns", 20):
        print(f"{args.dataset}, {args.arch}, {args.size} px, seeds {args.seeds}, corner masked: {args.mask_corner}")
        print(result.runs.round(3).to_string(index=False))
        print(result.summary().to_string())
        print(result.grid_summary().to_string())
    return result


if __name__ == "__main__":
    main()
