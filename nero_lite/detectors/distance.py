"""Detectors that place the features relative to the training features: Mahalanobis, KNN, SHE."""

from __future__ import annotations

import numbers

import torch
import torch.nn.functional as F
from sklearn.covariance import EmpiricalCovariance

from ..outputs import Outputs
from .base import Detector, Paper, class_means, labelled

__all__ = ["KNNDetector", "MahalanobisDetector", "SHEDetector"]

# test rows per torch.cdist call in KNN: bounds memory at _CHUNK x N_train distances
_CHUNK = 1024


class MahalanobisDetector(Detector):
    r"""Negative Mahalanobis distance of the features to the closest class mean.

    .. math::

        S(x) = -\min_c\, (a - \mu_c)^\top \Sigma^{+} (a - \mu_c)

    with :math:`\mu_c` the class means of the training features :math:`a` (penultimate
    layer) and :math:`\Sigma` the covariance shared by all classes (maximum likelihood,
    of the class-centred features; :math:`\Sigma^{+}` its pseudo-inverse, from
    :class:`sklearn.covariance.EmpiricalCovariance`).

    Lee, Lee, Lee & Shin, "A Simple Unified Framework for Detecting Out-of-Distribution
    Samples and Adversarial Attacks", NeurIPS 2018 (penultimate layer, no input
    preprocessing, as in NERO's comparison).
    """

    name = "mahalanobis"
    paper = Paper(
        "Lee, Lee, Lee & Shin",
        "A Simple Unified Framework for Detecting Out-of-Distribution Samples and Adversarial Attacks",
        "NeurIPS",
        2018,
    )
    requires_fit = True

    def _fit(self, train: Outputs) -> None:
        train = labelled(train)
        a = train.features.double()
        self.means_ = class_means(a, train.labels, train.num_classes)
        centred = (a - self.means_[train.labels]).cpu().numpy()
        covariance = EmpiricalCovariance(assume_centered=True).fit(centred)
        self.precision_ = torch.from_numpy(covariance.precision_).to(a.device)

    def _score(self, outputs: Outputs) -> torch.Tensor:
        a = outputs.features
        means, precision = self.means_.to(a), self.precision_.to(a)
        distances = torch.stack([(((a - mu) @ precision) * (a - mu)).sum(dim=1) for mu in means], dim=1)
        return -distances.amin(dim=1)


class KNNDetector(Detector):
    r"""Negative distance to the :math:`k`-th nearest training sample, on unit-length features.

    .. math::

        S(x) = -\big\lVert \hat a - \hat a_{(k)} \big\rVert_2, \qquad \hat a = a / \lVert a \rVert_2

    with :math:`\hat a_{(k)}` the :math:`k`-th nearest of the normalised training
    features. Exact search with :func:`torch.cdist`, in chunks of test samples.

    Sun, Ming, Zhu & Li, "Out-of-Distribution Detection with Deep Nearest Neighbors",
    ICML 2022 (``k=50``, their CIFAR-10 setting).
    """

    name = "knn"
    paper = Paper("Sun, Ming, Zhu & Li", "Out-of-Distribution Detection with Deep Nearest Neighbors", "ICML", 2022)
    requires_fit = True

    def __init__(self, k: int = 50):
        self.k = k

    def _fit(self, train: Outputs) -> None:
        if isinstance(self.k, bool) or not isinstance(self.k, numbers.Integral) or not 1 <= self.k <= len(train):
            raise ValueError(
                f"k must be a whole number between 1 and the number of training samples ({len(train)}), got {self.k!r}"
            )
        self.bank_ = F.normalize(train.features, dim=1)

    def _score(self, outputs: Outputs) -> torch.Tensor:
        a = F.normalize(outputs.features, dim=1)
        bank = self.bank_.to(a)
        kth = [
            torch.cdist(chunk, bank).topk(self.k, dim=1, largest=False).values[:, -1] for chunk in a.split(_CHUNK)
        ]
        return -torch.cat(kth)


class SHEDetector(Detector):
    r"""Simplified Hopfield energy: inner product with the stored pattern of the predicted class.

    .. math::

        S(x) = a^\top s_{\hat y}, \qquad
        s_c = \operatorname{mean}\{a_i : y_i = c,\ \hat y_i = c\}

    with :math:`\hat y` the predicted class and :math:`s_c` the mean feature of the
    *correctly classified* training samples of class :math:`c`.

    Zhang, Fu, Chen, Du, Li, Wang, Liu, Han & Zhang, "Out-of-Distribution Detection based
    on In-Distribution Data Patterns Memorization with Modern Hopfield Energy", ICLR 2023.
    """

    name = "she"
    paper = Paper(
        "Zhang et al.",
        "Out-of-Distribution Detection based on In-Distribution Data Patterns Memorization with Modern Hopfield Energy",
        "ICLR",
        2023,
    )
    requires_fit = True

    def _fit(self, train: Outputs) -> None:
        train = labelled(train)
        correct = train.subset(train.predictions() == train.labels)
        missing = sorted(set(range(train.num_classes)) - set(correct.labels.tolist()))
        if missing:
            raise ValueError(f"train: class(es) {missing} have no correctly classified training sample")
        self.patterns_ = class_means(correct.features, correct.labels, train.num_classes)

    def _score(self, outputs: Outputs) -> torch.Tensor:
        patterns = self.patterns_.to(outputs.features)
        return (outputs.features * patterns[outputs.predictions()]).sum(dim=1)
