"""Two methods compared pair by pair: paired differences over seeds and units, and their tests.

A comparison of two detectors (or maps, or training methods) on the same test images is
read pair by pair: one difference per seed and per unit that both share (an OOD class, a
normal class, an image), so that what the pair has in common cancels. The book reads every
"A beats B" this way (chapters 4 to 8): a Wilcoxon signed-rank test and an exact sign test of
the pairs, and a bootstrap interval of their mean difference; "no difference shown" is one of
the answers. :mod:`nero_lite.semisup` re-exports both names, where chapter 7 introduced them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats

__all__ = ["PairedDifference", "paired_difference"]


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
    #: What a pair is besides its seed, for the printed verdict ("class", "detector", "image").
    unit: str = "class"

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
            raise ValueError(f"{self.a} − {self.b}: no {self.unit} × seed pairs to test (only per-seed differences)")
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
                f"{self.n_pairs} {self.unit} × seed pairs; Wilcoxon p = {self.wilcoxon_p:.3f}, sign test p = "
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

    In each seed the metric is averaged over the normal classes (as :func:`nero_lite.semisup.protocol.summarize` does);
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
    return PairedDifference(a, b, per_seed[a] - per_seed[b], pairs, unit.removeprefix("normal_").removeprefix("ood_"))
