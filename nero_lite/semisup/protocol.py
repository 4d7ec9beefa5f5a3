"""The 2021 paper's experiments as one call: :func:`run_protocol`, then :func:`summarize`.

One-class protocol: each ID class in turn is the normal class; the test OOD set is the
other ID classes plus the OOD classes; training outliers come from a disjoint pool
(:mod:`nero_lite.semisup.outliers`). Every run is repeated over seeds, which change
the outlier draw and the initialisation of what is trained on the outliers (g, and f
for GEOM+). GEOM's f uses no outliers: it is trained once per normal class (seed
``seeds[0]``) and shared by GEOM and every g on top of it, unless ``reseed_geom=True``.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import pandas as pd

from ..data import ImageSet, Splits
from ..metrics import auroc, mean_std_table
from ..progress import bar as progress_bar
from .config import SemisupConfig
from .detectors import PROPOSED_LAYERS, BceDetector, GeomDetector, IntermediateLayerDetector
from .outliers import one_class_splits, texture_outliers

__all__ = ["METHODS", "mean_std", "run_protocol", "summarize"]

#: Method name → what it is. The last five are ablations of ``proposed``: g reads one feature.
#: :func:`run_protocol` also takes any other set of these features joined by ``+``
#: (``"z1+z3"``: g on z1 and z3 only), with its name as given.
METHODS = {
    "geom": "GEOM: transform classifier f, score Σ_k softmax(f(T_k x))_k",
    "geom+": "GEOM+: GEOM with outlier exposure",
    "bce": "BCE: g on raw images vs the outliers",
    "proposed": "g on z1, z2, z3, z4 of the frozen f vs the outliers",
    **{name: f"g on {name} only" for name in (*PROPOSED_LAYERS, "softmax")},
}


def run_protocol(
    splits: Splits,
    methods: Sequence[str] = ("geom", "geom+", "bce", "proposed"),
    n_outliers: Sequence[int] = (16,),
    n_outlier_classes: Sequence[int | None] = (None,),
    seeds: Sequence[int] = (0, 1, 2),
    config: SemisupConfig | None = None,
    *,
    outlier_pool: str | ImageSet | Sequence[str] = "textures",
    normal_classes: Sequence[str] | None = None,
    reseed_geom: bool = False,
    device: str = "auto",
    cache: bool = True,
    progress: bool = True,
) -> pd.DataFrame:
    """AUROC of every method on every (normal class, outlier count, outlier classes, seed).

    Parameters
    ----------
    splits : Splits
    methods : sequence of str
        Keys of :data:`METHODS`, or features of f joined by ``+`` (``"z1+z3"``): g on
        those features only.
    n_outliers, n_outlier_classes : sequences
        Every combination is run; ``None`` classes = the whole pool.
    seeds : sequence of int
    config : SemisupConfig, optional
    outlier_pool : "textures", ImageSet or sequence of OOD class names
        ``"textures"`` generates :func:`~nero_lite.semisup.outliers.texture_outliers`
        at the size of ``splits``, framed like the ID training images, with
        ``max(1024, *n_outliers)`` images per class (a fixed pool, so that calls with
        different counts draw the same outliers for the same count and seed, and
        cached fits are shared); otherwise see
        :func:`~nero_lite.semisup.outliers.one_class_splits`.
    normal_classes : sequence of str, optional
        The ID classes to use as normal (all when None).
    reseed_geom : bool
        Train GEOM's f once per seed instead of once per normal class.

    Returns
    -------
    pandas.DataFrame
        One row per (normal_class, method, n_outliers, n_outlier_classes, seed) with
        ``auroc`` (test ID vs all test OOD), ``auroc_other_id`` (vs the other ID
        classes only) and ``auroc_ood`` (vs the OOD classes only).
    """
    config = config or SemisupConfig()
    unknown = [m for m in methods if m not in METHODS and not _feature_set(m)]
    if unknown or not methods:
        raise ValueError(
            f"unknown method(s) {sorted(unknown)}; choose from {list(METHODS)} or join features with '+' (e.g. 'z1+z3')"
        )
    if not seeds or not n_outliers or not n_outlier_classes:
        raise ValueError("seeds, n_outliers and n_outlier_classes need at least one value each")
    if isinstance(outlier_pool, str) and outlier_pool == "textures":
        outlier_pool = texture_outliers(max(1024, *n_outliers), splits.train.images.shape[-1], seed=0, frame=splits.train)
    elif isinstance(outlier_pool, str):
        raise ValueError(f"outlier_pool must be 'textures', an ImageSet or a list of OOD classes, got {outlier_pool!r}")
    normal_classes = list(normal_classes or splits.id_classes)
    runs = list(itertools.product(normal_classes, n_outliers, n_outlier_classes, seeds))
    options = {"device": device, "cache": cache, "progress": False}
    geoms: dict[tuple[str, int], tuple[GeomDetector, tuple]] = {}  # (normal class, seed) → f and its test scores
    rows = []
    bar = progress_bar(total=len(runs) * len(methods), desc="semi-supervised protocol", show=progress)
    for normal, n, classes, seed in runs:
        task = one_class_splits(
            splits, normal, outlier_pool, n, classes, seed, n_train=config.n_train, n_test=config.n_test
        )
        n_other = len(splits.id_classes) - 1
        near = task.test_ood.labels < n_other
        geom_key = (normal, seed if reseed_geom else seeds[0])
        if geom_key not in geoms and set(methods) - {"geom+", "bce"}:
            geom = GeomDetector(config, seed=geom_key[1], **options).fit(task.train)
            geoms[geom_key] = geom, (geom.score(task.test_id), geom.score(task.test_ood))
        geom, geom_scores = geoms.get(geom_key, (None, None))
        for method in methods:
            bar.set_postfix(normal=normal, n=n, method=method, seed=seed)
            if method == "geom":
                id_scores, ood_scores = geom_scores
            else:
                if method == "geom+":
                    detector = GeomDetector(config, outlier_exposure=True, seed=seed, **options)
                elif method == "bce":
                    detector = BceDetector(config, seed=seed, **options)
                else:
                    layers = PROPOSED_LAYERS if method == "proposed" else _feature_set(method) or (method,)
                    detector = IntermediateLayerDetector(geom, layers, seed=seed, **options)
                detector.fit(task.train, task.outliers)
                id_scores, ood_scores = detector.score(task.test_id), detector.score(task.test_ood)
            rows.append(
                {
                    "normal_class": normal,
                    "method": method,
                    "n_outliers": n,
                    "n_outlier_classes": len(task.outliers.labels.unique()),
                    "seed": seed,
                    "auroc": auroc(id_scores, ood_scores),
                    "auroc_other_id": auroc(id_scores, ood_scores[near]) if near.any() else float("nan"),
                    "auroc_ood": auroc(id_scores, ood_scores[~near]) if (~near).any() else float("nan"),
                }
            )
            bar.update()
    bar.close()
    return pd.DataFrame(rows)


def _feature_set(method: str) -> tuple[str, ...]:
    """The features of a ``"z1+z3"``-style method name; empty when it is not one."""
    parts = tuple(method.split("+"))
    features = (*PROPOSED_LAYERS, "softmax")
    return parts if len(parts) > 1 and len(set(parts)) == len(parts) and set(parts) <= set(features) else ()


def summarize(results: pd.DataFrame, by: Sequence[str] = ("method",), metric: str = "auroc") -> pd.DataFrame:
    """Mean ± std over seeds of the metric averaged over normal classes, as the paper reports.

    For every group of ``by`` and seed, the metric is averaged over the normal classes;
    ``mean`` and ``std`` (ddof 1; 0 with one seed) are then taken over the seeds.
    """
    by = list(by)
    per_seed = results.groupby([*by, "seed"])[metric].mean()
    summary = per_seed.groupby(level=list(range(len(by)))).agg(["mean", "std", "count"])
    summary["std"] = summary["std"].fillna(0.0)
    return summary.rename(columns={"count": "seeds"})


def mean_std(
    results: pd.DataFrame, by: Sequence[str] = ("method",), metric: str = "auroc", digits: int = 3
) -> pd.Series:
    """:func:`summarize` as ``"mean ± std"`` strings (the metric's own unit), one per group of ``by``:
    the metric averaged over the normal classes of each seed, then
    :func:`nero_lite.metrics.mean_std_table` over the seeds (``"(1 seed)"`` for a single seed)."""
    per_seed = results.groupby([*by, "seed"])[metric].mean().reset_index()
    return mean_std_table(per_seed, list(by), [metric], digits)[metric].rename(None)