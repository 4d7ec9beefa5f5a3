"""Detectors built on a principal subspace of the training features: ViM, NECO."""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch
from sklearn.covariance import EmpiricalCovariance
from sklearn.decomposition import PCA
from sklearn.preprocessing import StandardScaler

from ..outputs import Outputs
from .base import Detector, Paper

__all__ = ["NecoDetector", "ViMDetector", "vim_dimension"]


def vim_dimension(num_features: int) -> int:
    """ViM's principal-subspace dimension for D features: 1000 if D ≥ 1500, 512 if D ≥ 768, else D // 2."""
    if num_features >= 1500:
        return 1000
    if num_features >= 768:
        return 512
    return num_features // 2


class ViMDetector(Detector):
    r"""Virtual-logit matching: energy minus the scaled norm of the feature residual.

    .. math::

        S(x) = \log \sum_c e^{z_c} - \alpha \big\lVert (a - u)^{P^\perp} \big\rVert_2,
        \qquad u = -W^{+} b,
        \qquad \alpha = \frac{\operatorname{mean}_{\text{train}} \max_c z_c}
                             {\operatorname{mean}_{\text{train}} \lVert (a - u)^{P^\perp} \rVert_2}

    :math:`P` is spanned by the ``dim`` leading eigenvectors of the covariance of the
    training features about the origin :math:`u` (``assume_centered``
    :class:`~sklearn.covariance.EmpiricalCovariance`); :math:`(\cdot)^{P^\perp}` is the
    residual in its orthogonal complement. ``dim=None`` applies the ViM rule
    :func:`vim_dimension` (NERO's official code uses 2048 instead of 1500 as the first
    threshold: the same value for every D < 1500 and every D ≥ 2048, e.g. 256 for ResNet-18's
    D = 512 and 192 for DeiT-Small's D = 384, so the official preset of
    :mod:`~nero_lite.detectors.presets` keeps ``dim=None``).

    Wang, Li, Feng & Zhang, "ViM: Out-Of-Distribution with Virtual-logit Matching",
    CVPR 2022.
    """

    name = "vim"
    paper = Paper("Wang, Li, Feng & Zhang", "ViM: Out-Of-Distribution with Virtual-logit Matching", "CVPR", 2022)
    requires_fit = True

    def __init__(self, dim: int | None = None):
        self.dim = dim

    def _fit(self, train: Outputs) -> None:
        d = train.features.shape[1]
        self.dim_ = vim_dimension(d) if self.dim is None else self.dim
        if not 1 <= self.dim_ < d:
            raise ValueError(f"dim must be between 1 and D - 1 = {d - 1}, got {self.dim_!r}")
        weight, bias = train.weight.double(), train.bias.double()
        self.origin_ = -torch.linalg.pinv(weight) @ bias
        centred = train.features.double() - self.origin_
        covariance = EmpiricalCovariance(assume_centered=True).fit(centred.cpu().numpy()).covariance_
        _, eigenvectors = np.linalg.eigh(covariance)  # ascending eigenvalues
        self.residual_basis_ = torch.from_numpy(np.ascontiguousarray(eigenvectors[:, : d - self.dim_])).to(centred)
        residual = (centred @ self.residual_basis_).norm(dim=1)
        self.alpha_ = (train.logits.double().amax(dim=1).mean() / residual.mean()).item()

    def _score(self, outputs: Outputs) -> torch.Tensor:
        a = outputs.features
        residual = ((a - self.origin_.to(a)) @ self.residual_basis_.to(a)).norm(dim=1)
        return torch.logsumexp(outputs.logits, dim=1) - self.alpha_ * residual


class NecoDetector(Detector):
    r"""Neural-collapse score: the share of the (standardised) feature norm in a principal subspace.

    .. math::

        S(x) = \frac{\lVert P_d\, h \rVert_2}{\lVert g \rVert_2}\;\big(\times \max_c z_c\big),
        \qquad h = \frac{a - m}{\sigma},
        \qquad g \in \{h, a\}

    (:math:`g = h` with ``denominator="standardised"``, :math:`g = a` with ``"raw"``), with
    :math:`m, \sigma` the per-feature mean and standard deviation of the training features
    (:class:`~sklearn.preprocessing.StandardScaler`) and :math:`P_d` the projection on their
    ``dim`` leading principal components (:class:`~sklearn.decomposition.PCA`);
    ``use_maxlogit=True`` multiplies by the maximum logit. ``dim=100`` as in NERO's
    official code.

    Ours (the defaults, ``denominator="standardised", use_maxlogit=False``) is one form for
    every architecture: numerator and denominator in the same standardised space, so
    :math:`S \le 1`. NERO's official code (``cv_uncertainty.py``, ``Neco``) has two: for
    ResNet-18 exactly ours; for transformers (DeiT, ViT, Swin) it divides by
    the norm of the *unstandardised* features and multiplies by the maximum logit,
    ``denominator="raw", use_maxlogit=True``
    (``create("neco", preset="official", arch=...)``, see :mod:`~nero_lite.detectors.presets`).

    Ben Ammar, Belkhir, Popescu, Manzanera & Franchi, "NECO: NEural Collapse Based
    Out-of-distribution detection", ICLR 2024.
    """

    name = "neco"
    paper = Paper(
        "Ben Ammar, Belkhir, Popescu, Manzanera & Franchi",
        "NECO: NEural Collapse Based Out-of-distribution detection",
        "ICLR",
        2024,
    )
    requires_fit = True
    estimators = (StandardScaler, PCA)

    def __init__(
        self, dim: int = 100, use_maxlogit: bool = False, denominator: Literal["standardised", "raw"] = "standardised"
    ):
        self.dim = dim
        self.use_maxlogit = use_maxlogit
        self.denominator = denominator

    def _fit(self, train: Outputs) -> None:
        if self.denominator not in ("standardised", "raw"):
            raise ValueError(f"denominator must be 'standardised' or 'raw', got {self.denominator!r}")
        n, d = train.features.shape
        if not 1 <= self.dim <= min(n, d):
            raise ValueError(f"dim must be between 1 and min(N, D) = {min(n, d)}, got {self.dim!r}")
        a = train.features.double().cpu().numpy()
        self.scaler_ = StandardScaler().fit(a)
        self.pca_ = PCA(n_components=self.dim, svd_solver="full").fit(self.scaler_.transform(a))

    def _score(self, outputs: Outputs) -> torch.Tensor:
        a = outputs.features
        mean, scale = (torch.as_tensor(v).to(a) for v in (self.scaler_.mean_, self.scaler_.scale_))
        pca_mean, components = (torch.as_tensor(v).to(a) for v in (self.pca_.mean_, self.pca_.components_))
        h = (a - mean) / scale
        norm = (h if self.denominator == "standardised" else a).norm(dim=1)
        ratio = ((h - pca_mean) @ components.T).norm(dim=1) / norm.clamp_min(torch.finfo(a.dtype).tiny)
        return ratio * outputs.logits.amax(dim=1) if self.use_maxlogit else ratio
