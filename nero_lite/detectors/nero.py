"""NERO: distance of a sample's neuron relevance to the class centroids of the training relevance."""

from __future__ import annotations

import math
import numbers
import warnings
from dataclasses import dataclass

import numpy as np
import torch
from sklearn.cluster import KMeans
from sklearn.decomposition import PCA

from ..outputs import Outputs
from ..relevance import Target, head_relevance
from .base import Detector, NotFittedError, Paper, class_means, labelled

__all__ = ["Decomposition", "FeatureCentroidDetector", "NeroDetector"]


def _fit_pca(x: torch.Tensor, fraction: float) -> PCA:
    """Exact PCA of the rows of ``x`` (N, D) keeping ``floor(fraction * D)`` components, at most N."""
    n, d = x.shape
    components = min(math.floor(fraction * d), n)
    if not 1 <= components <= d:
        raise ValueError(f"pca_fraction={fraction!r} keeps {components} components; need between 1 and D = {d}")
    return PCA(n_components=components, svd_solver="full").fit(x.double().cpu().numpy())


def _pca_project(pca: PCA, x: torch.Tensor) -> torch.Tensor:
    """``x`` projected on the kept components of ``pca``, on the device and in the dtype of ``x``."""
    mean, components = (torch.as_tensor(v).to(x) for v in (pca.mean_, pca.components_))
    return (x - mean) @ components.T


@dataclass(frozen=True)
class Decomposition:
    r"""NERO's outlier score of N samples taken apart: :math:`S(x) = \big(\sum_j c_j + \lambda |R_b|\big)\, f(x)`.

    Returned by :meth:`NeroDetector.decompose`; every tensor has N rows.

    Attributes
    ----------
    neurons : (N, D)
        Contribution :math:`c_j` of each head-input neuron to the centroid distance; the
        row sums are the distance :math:`d(x)` exactly (L1, or the L\ :sub:`p` norm of
        ``NeroDetector(p=...)``). Positive: the neuron moves the
        sample away from its nearest centroid; negative: towards it.
    bias : (N,)
        The bias term :math:`\lambda |R_b(x)|` (zeros with ``use_bias_term=False``).
    factor : (N,)
        The norm factor :math:`f(x)` (ones with ``use_norm_factor=False``).
    deviation : (N, D)
        :math:`\Delta = R(x) - r_c`, the neuron relevance minus the reference relevance of
        the nearest centroid (``NeroDetector.centroid_points_``).
    nearest : (N,)
        Class of the nearest centroid.
    centroid : (N,)
        Index of the nearest centroid (a row of ``centroids_``).
    """

    neurons: torch.Tensor
    bias: torch.Tensor
    factor: torch.Tensor
    deviation: torch.Tensor
    nearest: torch.Tensor
    centroid: torch.Tensor

    @property
    def distance(self) -> torch.Tensor:
        r""":math:`d(x) = \sum_j c_j`, the L1 (or L\ :sub:`p`) distance to the nearest centroid, shape (N,)."""
        return self.neurons.sum(dim=1)

    @property
    def outlier_score(self) -> torch.Tensor:
        r""":math:`S(x) = (d(x) + \lambda |R_b|) f(x)`, shape (N,); higher = more out-of-distribution."""
        return (self.distance + self.bias) * self.factor

    @property
    def score(self) -> torch.Tensor:
        """:math:`-S(x)`, equal to :meth:`~nero_lite.detectors.base.Detector.score` (higher = more in-distribution)."""
        return -self.outlier_score


class NeroDetector(Detector):
    r"""NERO: neuron-level relevance distance, plus a bias term, times a feature-norm factor.

    With :math:`R(x) \in \mathbb R^D` and :math:`R_b(x)` the LRP relevance of the head
    inputs and of the bias (:func:`~nero_lite.relevance.head_relevance`, softmax-weighted
    output relevance, ε = 0), the outlier score of the paper is

    .. math::

        S(x) = \Big(\min_c \big\lVert \operatorname{PCA}(R(x)) - \mu_c \big\rVert_1
               + \lambda\, |R_b(x)|\Big)\, f(x),
        \qquad
        f(x) = \frac{\sum_{j \in K(x)} |a_j|}{\sum_j |a_j|}

    and ``score`` returns :math:`-S(x)` (higher = more in-distribution). Fitted on the
    training outputs, as NERO's official code does:

    * PCA (:class:`sklearn.decomposition.PCA`, exact SVD) of the training neuron
      relevance, keeping :math:`\lfloor` ``pca_fraction`` :math:`\cdot D \rfloor` components,
      at most :math:`N` (the number of training samples: small real data sets such as
      240 HyperKvasir images with :math:`D = 512` have no more directions to keep). The
      official code's ``PCA(n_components)`` lets scikit-learn pick the solver, which is
      randomized, an approximation, at D = 512 for 427 or more training samples (fewer than
      5120 from scikit-learn 1.5 on);
    * :math:`\mu_c`: the mean projected relevance of the training samples labelled
      :math:`c` (``centroids_per_class > 1``: that many :class:`~sklearn.cluster.KMeans`
      centres per class);
    * :math:`\lambda` = mean over training samples of the same minimum L1 distance taken
      in the raw :math:`(D+1)`-dimensional relevance :math:`(R, R_b)` (centroids computed
      there), divided by the mean of :math:`|R_b|`;
    * :math:`K(x)`: the :math:`k` neurons of lowest signed relevance, :math:`k =
      \operatorname{round}(` ``k_fraction`` :math:`\cdot D)` (ours: the paper's k = 175 of
      ResNet-18's D = 512, as the same share of every D), or ``k`` itself when given.
      NERO's official code fixes k = 175 for every D (``run_nero.py``, ``relevanacy_algo``):
      ``k=175`` reproduces it: 91 % of DeiT-Tiny's D = 192 neurons and 46 % of DeiT-Small's
      D = 384, where ours keeps 34 % (``create("nero", preset="official", arch=...)``, see
      :mod:`~nero_lite.detectors.presets`).

    ``p`` (default 1, the paper's L1) sets the norm of every centroid distance, in the
    score and in :math:`\lambda`: ``p=2`` measures the L2 distance instead, for the book's
    check of what the choice of L1 buys (not in the paper). It must be a number
    :math:`1 \le p < \infty`.

    Ablations: ``use_pca=False`` measures distances on the raw neuron relevance;
    ``use_bias_term=False`` drops :math:`\lambda |R_b|`; ``use_norm_factor=False`` drops
    :math:`f`. ``target``/``epsilon`` are passed to ``head_relevance``. The parts are
    exposed for the book: :meth:`relevance`, :meth:`project`, :meth:`distance`,
    :meth:`bias_term`, :meth:`norm_factor`, :meth:`nearest`, :meth:`centroid_relevance`, and ``pca_``, ``centroids_``,
    ``centroid_points_``, ``lambda_``; :meth:`decompose` takes the score apart exactly, neuron
    by neuron.

    Chhetri, Korhonen, Gyawali & Bhattarai, "NERO: Explainable Out-of-Distribution
    Detection with Neuron-level Relevance", MICCAI 2025.
    """

    name = "nero"
    paper = Paper(
        "Chhetri, Korhonen, Gyawali & Bhattarai",
        "NERO: Explainable Out-of-Distribution Detection with Neuron-level Relevance",
        "MICCAI",
        2025,
    )
    requires_fit = True
    estimators = (PCA,)
    # the centroids as points of the relevance space were ``references_`` (a reference meant four things)
    renamed_state = {"references_": "centroid_points_"}

    @property
    def references_(self) -> torch.Tensor:
        """Deprecated name of ``centroid_points_``, for one release."""
        warnings.warn("NeroDetector.references_ is now centroid_points_", DeprecationWarning, stacklevel=2)
        return self.centroid_points_

    def __init__(
        self,
        pca_fraction: float = 2 / 3,
        k_fraction: float = 175 / 512,
        k: int | None = None,
        centroids_per_class: int = 1,
        target: Target = "softmax",
        epsilon: float = 0.0,
        use_pca: bool = True,
        use_bias_term: bool = True,
        use_norm_factor: bool = True,
        random_state: int | None = 0,
        p: float = 1.0,
    ):
        self.pca_fraction = pca_fraction
        self.k_fraction = k_fraction
        self.k = k
        self.centroids_per_class = centroids_per_class
        self.target = target
        self.epsilon = epsilon
        self.use_pca = use_pca
        self.use_bias_term = use_bias_term
        self.use_norm_factor = use_norm_factor
        self.random_state = random_state
        self.p = p

    # -- fitting ------------------------------------------------------------------

    def _fit(self, train: Outputs) -> None:
        train = labelled(train)
        d = train.features.shape[1]
        if isinstance(self.p, bool) or not isinstance(self.p, numbers.Real) or not 1 <= self.p < math.inf:
            raise ValueError(f"p must be a number with 1 <= p < inf, got {self.p!r}")
        if self.k is None:
            self.k_ = round(self.k_fraction * d)
            if not 1 <= self.k_ <= d:
                raise ValueError(f"k_fraction={self.k_fraction!r} gives k={self.k_} neurons; need 1 <= k <= D={d}")
        else:
            if isinstance(self.k, bool) or not isinstance(self.k, numbers.Integral) or not 1 <= self.k <= d:
                raise ValueError(f"k must be a whole number between 1 and D={d}, got {self.k!r}")
            self.k_ = int(self.k)
        relevance, bias_relevance = self._relevance(train)
        self.pca_ = _fit_pca(relevance, self.pca_fraction) if self.use_pca else None
        self.centroids_, self.centroid_labels_ = self._centroids(self._project(relevance), train.labels)
        self.centroid_points_ = self._centroid_points(relevance, train.labels)
        raw = torch.cat([relevance, bias_relevance.unsqueeze(1)], dim=1)
        raw_centroids, _ = self._centroids(raw, train.labels)
        raw_distance = torch.cdist(raw, raw_centroids, p=self.p).amin(dim=1)
        mean_bias = bias_relevance.abs().mean()
        # a head without bias has R_b = 0 everywhere: the bias term vanishes whatever lambda is
        self.lambda_ = (raw_distance.mean() / mean_bias).item() if mean_bias > 0 else 0.0

    def _centroids(self, x: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Class means (or k-means centres per class) of ``x``, and the class of each centroid."""
        num_classes = int(labels.max()) + 1
        if self.centroids_per_class == 1:
            return class_means(x, labels, num_classes), torch.arange(num_classes, device=x.device)
        counts = torch.bincount(labels, minlength=num_classes)
        if not 1 <= self.centroids_per_class <= int(counts.min()):
            raise ValueError(
                f"centroids_per_class must be between 1 and the smallest class size ({int(counts.min())}), "
                f"got {self.centroids_per_class!r}"
            )
        points = x.double().cpu().numpy()
        labels_np = labels.cpu().numpy()
        centres = [
            KMeans(self.centroids_per_class, n_init=10, random_state=self.random_state)
            .fit(points[labels_np == c])
            .cluster_centers_
            for c in range(num_classes)
        ]
        centroids = torch.from_numpy(np.concatenate(centres)).to(x)
        return centroids, torch.arange(num_classes, device=x.device).repeat_interleave(self.centroids_per_class)

    def _centroid_points(self, relevance: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        r"""Each centroid as a point :math:`r_c` of the neuron-relevance space, shape (centroids, D).

        Without PCA the centroids already live there. With PCA (mean :math:`m`, kept
        components :math:`P`, orthonormal rows) :math:`r_c = m + P^\top \mu_c +
        (I - P^\top P)(\bar R_{y(c)} - m)`: the point that projects onto :math:`\mu_c`
        and otherwise equals the mean relevance :math:`\bar R_{y(c)}` of the centroid's
        class. For one centroid per class :math:`r_c = \bar R_c` exactly.
        """
        if self.pca_ is None:
            return self.centroids_.clone()
        mean, components = (torch.as_tensor(v, dtype=torch.float64) for v in (self.pca_.mean_, self.pca_.components_))
        class_mean = class_means(relevance.double().cpu(), labels.cpu(), int(labels.max()) + 1)
        centred = class_mean[self.centroid_labels_.cpu()] - mean
        outside = centred - (centred @ components.T) @ components
        points = mean + self.centroids_.double().cpu() @ components + outside
        return points.to(relevance)

    # -- the parts of the score ---------------------------------------------------

    def relevance(self, outputs: Outputs) -> tuple[torch.Tensor, torch.Tensor]:
        """Neuron relevance ``R`` (N, D) and bias relevance ``R_b`` (N,) at the head input."""
        return self._relevance(self._check(outputs))

    def project(self, outputs: Outputs) -> torch.Tensor:
        """Neuron relevance in the space of the centroids: PCA-projected (N, d), or raw if ``use_pca=False``."""
        outputs = self._check(outputs)
        return self._project(self._relevance(outputs)[0])

    def distance(self, outputs: Outputs) -> torch.Tensor:
        """L1 (``p``-norm) distance of the (projected) neuron relevance to the nearest centroid, shape (N,)."""
        return self._distance(self.project(outputs))

    def nearest(self, outputs: Outputs) -> tuple[torch.Tensor, torch.Tensor]:
        """Class of the nearest centroid and the L1 (``p``-norm) distance to it (in the space of :meth:`project`), each (N,)."""
        distances = torch.cdist(self.project(outputs), self.centroids_.to(outputs.features), p=self.p)
        distance, index = distances.min(dim=1)
        return self.centroid_labels_.to(index.device)[index], distance

    def centroid_relevance(self, centroid: torch.Tensor | None = None) -> torch.Tensor:
        r"""The centroids as points :math:`r_c` of the neuron-relevance space: all of them (centroids, D), or rows ``centroid``.

        ``centroid`` holds centroid indices, e.g. ``Decomposition.centroid``; then row
        :math:`i` is the reference that ``Decomposition.deviation`` measures sample
        :math:`i` from, :math:`\Delta = R(x) - r_c` (for one centroid per class, the
        class's mean training relevance). A copy, on the device of ``centroid``.
        """
        if not hasattr(self, "centroid_points_"):
            raise NotFittedError(f"{type(self).__name__} is not fitted yet: call fit(train) first")
        if centroid is None:
            return self.centroid_points_.clone()
        return self.centroid_points_.to(centroid.device)[centroid]

    def decompose(self, outputs: Outputs) -> Decomposition:
        r"""The score taken apart exactly: per-neuron contributions, bias term and norm factor.

        Let :math:`r_c` be the nearest centroid as a point of the neuron-relevance space
        (``centroid_points_``), :math:`\Delta = R(x) - r_c` and, with PCA, :math:`P` the kept
        components (orthonormal rows). Because :math:`P r_c - P m = \mu_c`, the distance
        is :math:`d(x) = \lVert P \Delta \rVert_1 = \sum_i |u_i|` with :math:`u = P\Delta`.
        This is piecewise linear in :math:`\Delta` and positively homogeneous of degree 1,
        so Euler's theorem decomposes it exactly:

        .. math::

            d(x) = \sum_i \operatorname{sign}(u_i)\, u_i
                 = \sum_j \Delta_j \big(P^\top \operatorname{sign}(u)\big)_j
                 = \sum_j \Delta_j \frac{\partial d}{\partial \Delta_j}
                 =: \sum_j c_j .

        Without PCA, :math:`c_j = |\Delta_j|`. With ``p`` :math:`\ne 1` the distance
        :math:`\lVert u \rVert_p` is homogeneous of degree 1 too, and the same identity
        holds with :math:`\operatorname{sign}(u)` replaced by its gradient
        :math:`g_i = \operatorname{sign}(u_i) |u_i|^{p-1} / \lVert u \rVert_p^{p-1}`
        (:math:`g = 0` at :math:`u = 0`). With the bias term :math:`\lambda|R_b|` and
        the norm factor :math:`f(x)` of the class docstring,
        ``-(neurons.sum(1) + bias) * factor`` equals ``score(outputs)`` (up to rounding) for
        every sample and every ablation switch. A :math:`c_j` can be negative: the neuron
        then brings the sample closer to the centroid. Neurons along directions the PCA
        discards contribute nothing however large :math:`|\Delta_j|` is, which is why
        ranking neurons by :math:`|\Delta_j|` does not explain the score.

        Unlike ``score``, this runs with autograd enabled when ``outputs`` requires
        gradients (for gradient-based maps of the score).
        """
        outputs = self._check(outputs)
        relevance, bias_relevance = self._relevance(outputs)
        distances = torch.cdist(self._project(relevance).detach(), self.centroids_.to(relevance), p=self.p)
        centroid = distances.argmin(dim=1)
        deviation = relevance - self.centroid_points_.to(relevance)[centroid]
        components = None if self.pca_ is None else torch.as_tensor(self.pca_.components_).to(relevance)
        if self.p == 1 and components is None:
            neurons = deviation.abs()
        elif self.p == 1:
            neurons = deviation * (torch.sign(deviation @ components.T) @ components)
        else:
            u = deviation if components is None else deviation @ components.T
            norm = torch.linalg.vector_norm(u, ord=self.p, dim=1, keepdim=True)
            gradient = torch.sign(u) * (u.abs() / norm.clamp_min(torch.finfo(u.dtype).tiny)) ** (self.p - 1)
            gradient = gradient.masked_fill(norm == 0, 0)
            neurons = deviation * (gradient if components is None else gradient @ components)
        ones = torch.ones_like(bias_relevance)
        return Decomposition(
            neurons=neurons,
            bias=self.lambda_ * bias_relevance.abs() if self.use_bias_term else 0 * ones,
            factor=self._norm_factor(outputs.features, relevance) if self.use_norm_factor else ones,
            deviation=deviation,
            nearest=self.centroid_labels_.to(centroid.device)[centroid],
            centroid=centroid,
        )

    def bias_term(self, outputs: Outputs) -> torch.Tensor:
        r""":math:`\lambda |R_b|`, shape (N,)."""
        return self.lambda_ * self.relevance(outputs)[1].abs()

    def norm_factor(self, outputs: Outputs) -> torch.Tensor:
        """Share of the feature L1 norm held by the k neurons of lowest signed relevance, shape (N,)."""
        outputs = self._check(outputs)
        return self._norm_factor(outputs.features, self._relevance(outputs)[0])

    def _score(self, outputs: Outputs) -> torch.Tensor:
        relevance, bias_relevance = self._relevance(outputs)
        score = self._distance(self._project(relevance))
        if self.use_bias_term:
            score = score + self.lambda_ * bias_relevance.abs()
        if self.use_norm_factor:
            score = score * self._norm_factor(outputs.features, relevance)
        return -score

    def _relevance(self, outputs: Outputs) -> tuple[torch.Tensor, torch.Tensor]:
        return head_relevance(
            outputs.features, outputs.weight, outputs.bias, target=self.target, epsilon=self.epsilon
        )

    def _project(self, relevance: torch.Tensor) -> torch.Tensor:
        return relevance if self.pca_ is None else _pca_project(self.pca_, relevance)

    def _distance(self, projected: torch.Tensor) -> torch.Tensor:
        return torch.cdist(projected, self.centroids_.to(projected), p=self.p).amin(dim=1)

    def _norm_factor(self, features: torch.Tensor, relevance: torch.Tensor) -> torch.Tensor:
        lowest = relevance.topk(self.k_, dim=1, largest=False).indices
        total = features.abs().sum(dim=1).clamp_min(torch.finfo(features.dtype).tiny)
        return features.gather(1, lowest).abs().sum(dim=1) / total


class FeatureCentroidDetector(Detector):
    r"""NERO's centroid distance measured on the features instead of their relevance (an ablation).

    .. math::

        S(x) = -\min_c \big\lVert \operatorname{PCA}(a) - \mu_c \big\rVert_p

    with :math:`a` the head inputs (penultimate features), the PCA fitted on the training
    features keeping :math:`\lfloor` ``pca_fraction`` :math:`\cdot D \rfloor` components (at
    most :math:`N`), and :math:`\mu_c` the mean projected feature of training class
    :math:`c`. With ``p=1`` and the same ``pca_fraction`` it is
    ``NeroDetector(use_bias_term=False, use_norm_factor=False)`` with :math:`R(x)` replaced by
    :math:`a`: the book's check of whether *relevance* adds anything over the features it
    is computed from. Not in the registry (not a published method).

    With ``normalize=True`` every feature vector is first divided by its L1 norm,
    :math:`a / \lVert a \rVert_1`. Relevance is normalised by construction (the shares
    :math:`R_j` and :math:`R_b` of one image sum to 1), features are not: the normalised
    variant is the control that separates "relevance is a better space" from "a normalised
    space is a better space" (an all-zero feature vector stays zero).
    """

    name = "feature_centroid"
    paper = NeroDetector.paper
    requires_fit = True
    estimators = (PCA,)

    def __init__(self, pca_fraction: float = 2 / 3, p: float = 1.0, normalize: bool = False):
        self.pca_fraction = pca_fraction
        self.p = p
        self.normalize = normalize

    def _features(self, outputs: Outputs) -> torch.Tensor:
        features = outputs.features
        if self.normalize:
            features = features / features.abs().sum(dim=1, keepdim=True).clamp_min(torch.finfo(features.dtype).tiny)
        return features

    def _fit(self, train: Outputs) -> None:
        train = labelled(train)
        features = self._features(train)
        self.pca_ = _fit_pca(features, self.pca_fraction)
        self.centroids_ = class_means(_pca_project(self.pca_, features), train.labels, train.num_classes)

    def _score(self, outputs: Outputs) -> torch.Tensor:
        projected = _pca_project(self.pca_, self._features(outputs))
        return -torch.cdist(projected, self.centroids_.to(projected), p=self.p).amin(dim=1)
