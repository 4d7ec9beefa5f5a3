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
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats

from ..data import ImageSet, Splits
from ..metrics import auroc, mean_std_text
from ..progress import bar as progress_bar
from .detectors import PROPOSED_LAYERS, BceDetector, GeomDetector, IntermediateLayerDetector, SemisupConfig
from .outliers import one_class_splits, texture_outliers

__all__ = ["METHODS", "PairedDifference", "mean_std", "paired_difference", "run_protocol", "summarize"]

#: Method name → what it is. The last five are ablations of ``proposed``: g reads one feature.
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
        Keys of :data:`METHODS`.
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
    unknown = set(methods) - set(METHODS)
    if unknown or not methods:
        raise ValueError(f"unknown method(s) {sorted(unknown)}; choose from {list(METHODS)}")
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
                    layers = PROPOSED_LAYERS if method == "proposed" else (method,)
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


@dataclass(frozen=True)
class PairedDifference:
    """Methods ``a`` and ``b`` compared pair by pair (see :func:`paired_difference`).

    Two views of the same difference ``a − b``:

    * **per seed** (``differences``): with :math:`d_s` the difference of the class-averaged
      metric in seed :math:`s`, ``mean`` and ``std`` (ddof 1) are taken over the seeds. The
      difference is *larger than the spread* when :math:`|\\bar d| > \\operatorname{sd}(d)`,
      and *consistent* when, in addition, every :math:`d_s` has the same sign. With no true
      difference, three seeds share a sign a quarter of the time, so this is weak evidence.
    * **per class × seed** (``pairs``, when known): one difference :math:`d_{c,s}` per normal
      class and seed, on the same test images and outliers. The paired tests use them:
      :attr:`wilcoxon_p` (Wilcoxon signed-rank), :attr:`sign_test_p` (exact binomial test
      of the signs) and :meth:`interval` (percentile bootstrap of their mean), and
      :meth:`significant` / :meth:`verdict` read them. The pairs are treated as
      independent; they are not quite (the seeds of one class share its test images, and a
      method trained without outliers, such as GEOM, is the same in every seed), so read
      the p-values as approximate.
    """

    a: str
    b: str
    differences: pd.Series
    pairs: pd.Series | None = None

    @property
    def mean(self) -> float:
        return float(self.differences.mean())

    @property
    def std(self) -> float:
        return float(self.differences.std())

    @property
    def ahead(self) -> int:
        """In how many seeds ``a`` is ahead of ``b``."""
        return int((self.differences > 0).sum())

    @property
    def larger_than_spread(self) -> bool:
        return abs(self.mean) > self.std

    @property
    def consistent(self) -> bool:
        """Larger than the spread, with the same sign in every seed; weak evidence, see the class docstring."""
        same_sign = bool((self.differences > 0).all() or (self.differences < 0).all())
        return self.larger_than_spread and same_sign

    @property
    def consistent_lead(self) -> bool:
        """``a`` ahead of ``b`` in every seed, by more than the spread."""
        return self.consistent and self.mean > 0

    # -- the paired tests over class × seed ------------------------------------------

    def _pairs(self) -> np.ndarray:
        if self.pairs is None:
            raise ValueError(f"{self.a} − {self.b}: no class × seed pairs to test (only per-seed differences)")
        return np.asarray(self.pairs, dtype=float)

    def _nonzero_pairs(self) -> np.ndarray:
        """The pairs the two tests read: ties (a difference of exactly 0) carry no sign and are dropped."""
        d = self._pairs()
        return d[d != 0]

    @property
    def n_pairs(self) -> int:
        """Number of class × seed pairs."""
        return len(self._pairs())

    @property
    def pairs_ahead(self) -> int:
        """In how many class × seed pairs ``a`` is ahead of ``b``."""
        return int((self._pairs() > 0).sum())

    @property
    def pair_mean(self) -> float:
        """Mean of the class × seed differences (equal to ``mean`` when every class has every seed)."""
        return float(self._pairs().mean())

    @property
    def sign_test_p(self) -> float:
        """Two-sided exact sign test, ``scipy.stats.binomtest(k, n, 0.5)`` with ``k`` pairs ahead
        among the ``n`` non-zero pairs (zeros dropped); NaN without a non-zero pair."""
        nonzero = self._nonzero_pairs()
        if len(nonzero) == 0:
            return float("nan")
        return float(stats.binomtest(int((nonzero > 0).sum()), len(nonzero), 0.5).pvalue)

    @property
    def wilcoxon_p(self) -> float:
        """Two-sided Wilcoxon signed-rank test of the pairs, ``scipy.stats.wilcoxon`` with its default
        method (exact for few pairs without ties), zeros dropped; NaN without a non-zero pair."""
        nonzero = self._nonzero_pairs()
        if len(nonzero) == 0:
            return float("nan")
        return float(stats.wilcoxon(nonzero, alternative="two-sided").pvalue)

    def interval(self, level: float = 0.95, n_resamples: int = 10_000, seed: int = 0) -> tuple[float, float]:
        """Percentile bootstrap interval of the mean difference: the pairs resampled with replacement."""
        if not 0 < level < 1:
            raise ValueError(f"level must be between 0 and 1, got {level!r}")
        d = self._pairs()
        rng = np.random.default_rng(seed)
        means = d[rng.integers(0, len(d), size=(n_resamples, len(d)))].mean(axis=1)
        low, high = np.quantile(means, [(1 - level) / 2, (1 + level) / 2])
        return float(low), float(high)

    def significant(self, alpha: float = 0.05) -> bool:
        """The Wilcoxon signed-rank test over the class × seed pairs rejects "no difference" at ``alpha``."""
        return bool(self.wilcoxon_p < alpha)

    def leads(self, alpha: float = 0.05) -> bool:
        """``a`` ahead of ``b``: :meth:`significant`, with a positive mean difference."""
        return self.significant(alpha) and self.pair_mean > 0

    def verdict(self, alpha: float = 0.05) -> str:
        """One line: the mean difference, its bootstrap interval, the two tests and what they say."""
        low, high = self.interval(1 - alpha)
        if self.significant(alpha):
            reading = f"{self.a if self.pair_mean > 0 else self.b} ahead (Wilcoxon p < {alpha:g})"
        else:
            reading = f"no difference shown at α = {alpha:g}"
        return (f"{self.pair_mean:+.3f}, {100 * (1 - alpha):g} % CI [{low:+.3f}, {high:+.3f}], ahead in {self.pairs_ahead} of "
                f"{self.n_pairs} class × seed pairs; Wilcoxon p = {self.wilcoxon_p:.3f}, sign test p = "
                f"{self.sign_test_p:.3f}: {reading}")

    def __str__(self) -> str:
        if self.consistent:
            verdict = "consistent: same sign in every seed and larger than the spread"
        elif self.larger_than_spread:
            verdict = "larger than the spread, but not in every seed"
        else:
            verdict = "within the spread over seeds"
        return f"{self.mean:+.3f} ± {self.std:.3f} (ahead in {self.ahead} of {len(self.differences)} seeds; {verdict})"


def paired_difference(
    results: pd.DataFrame, a: str, b: str, metric: str = "auroc", *, unit: str = "normal_class", **where
) -> PairedDifference:
    """Methods ``a`` and ``b`` compared seed by seed and class by class, on the rows of ``results`` matching ``where``.

    In each seed the metric is averaged over the normal classes (as :func:`summarize` does);
    the difference ``a − b`` is paired by seed, so the spread of the seeds common to both
    methods cancels. When ``results`` has a ``unit`` column (the normal class), the
    difference is also paired by (``unit``, seed), the pairs the tests of
    :class:`PairedDifference` read. ``where`` selects rows by column value, e.g.
    ``n_outliers=8``; a list, tuple or set selects any of its values, e.g.
    ``normal_class=["0", "8"]``.
    """
    for column, value in where.items():
        if isinstance(value, (list, tuple, set, frozenset)):
            results = results[results[column].isin(list(value))]
        else:
            results = results[results[column] == value]
    per_seed = results.groupby(["method", "seed"])[metric].mean().unstack("method")
    missing = [m for m in (a, b) if m not in per_seed]
    if missing:
        raise ValueError(f"no results for method(s) {missing} where {where or 'anywhere'}")
    pairs = None
    if unit in results:
        per_pair = results.groupby(["method", unit, "seed"])[metric].mean().unstack("method")
        pairs = (per_pair[a] - per_pair[b]).dropna()
    return PairedDifference(a, b, per_seed[a] - per_seed[b], pairs)


def mean_std(
    results: pd.DataFrame, by: Sequence[str] = ("method",), metric: str = "auroc", digits: int = 3
) -> pd.Series:
    """:func:`summarize` as ``"mean ± std"`` strings (the metric's own unit), one per group of ``by``.

    The semi-supervised counterpart of :func:`nero_lite.study.mean_std`, which formats a
    study's (setting, class) summary columns instead of a :func:`run_protocol` table; both write
    their cells with :func:`nero_lite.metrics.mean_std_text` (``"(1 seed)"`` for a single seed).
    """
    summary = summarize(results, by=by, metric=metric)
    return summary.apply(
        lambda r: mean_std_text(r["mean"], r["std"] if r["seeds"] > 1 else np.nan, digits), axis=1
    )
