"""Detectors that reshape the features before the head, then take the energy: ReAct, ASH."""

from __future__ import annotations

import numpy as np
import torch

from ..outputs import Outputs
from .base import Detector, Paper
from .logits import energy

__all__ = ["ASHDetector", "ReActDetector"]


def _check_percentile(percentile: float) -> None:
    if not 0 < percentile < 100:
        raise ValueError(f"percentile must be in (0, 100), got {percentile!r}")


def _head(features: torch.Tensor, outputs: Outputs) -> torch.Tensor:
    """Logits of the shaped features through the linear head of ``outputs``."""
    return features @ outputs.weight.to(features).T + outputs.bias.to(features)


class ReActDetector(Detector):
    r"""Energy of the logits after clipping the features at a high percentile of ID activations.

    .. math::

        S(x) = \log \sum_c e^{\bar z_c}, \qquad
        \bar z = W \min(a, \tau) + b, \qquad
        \tau = \text{percentile}_p\{a_{ij} : \text{training samples } i, \text{ features } j\}

    (elementwise minimum; :math:`\tau` by :func:`numpy.percentile`, linear interpolation).
    ``threshold`` fixes :math:`\tau` instead (``percentile`` is then unused; ``fit`` only
    records it and the shapes). Ours is the paper's rule, a percentile of the model's own
    training activations, whose scale depends on the model; NERO's official code clips at
    the constants 0.9 (ResNet-18) and 0.99 (DeiT), ``cv_uncertainty.py``, ``ReAct_Energy``
    (``create("react", preset="official", arch=...)``, see :mod:`~nero_lite.detectors.presets`).

    Sun, Guo & Li, "ReAct: Out-of-distribution Detection With Rectified Activations",
    NeurIPS 2021 (``percentile=90``).
    """

    name = "react"
    paper = Paper("Sun, Guo & Li", "ReAct: Out-of-distribution Detection With Rectified Activations", "NeurIPS", 2021)
    requires_fit = True

    def __init__(self, percentile: float = 90.0, threshold: float | None = None):
        self.percentile = percentile
        self.threshold = threshold

    def _fit(self, train: Outputs) -> None:
        if self.threshold is not None:
            if not np.isfinite(self.threshold):
                raise ValueError(f"threshold must be a finite number, got {self.threshold!r}")
            self.threshold_ = float(self.threshold)
            return
        _check_percentile(self.percentile)
        self.threshold_ = float(np.percentile(train.features.cpu().numpy(), self.percentile))

    def _score(self, outputs: Outputs) -> torch.Tensor:
        return energy(_head(outputs.features.clamp(max=self.threshold_), outputs))


class ASHDetector(Detector):
    r"""ASH-S: keep each sample's largest activations, scale them up, then take the energy.

    .. math::

        \tilde a = \exp\!\Big(\frac{\sum_j a_j}{\sum_{j \in K} a_j}\Big)\, a \odot \mathbb 1_K,
        \qquad S(x) = \log \sum_c e^{(W \tilde a + b)_c}

    where :math:`K` holds the :math:`D - \operatorname{round}(pD/100)` largest
    activations of the sample (the lowest ``percentile`` per cent are set to zero).
    Applied to the penultimate features (the head input); designed for non-negative
    (post-ReLU) activations, where the scale factor is at least 1 (and 1 for a sample whose
    kept activations are all zero).

    Djurisic, Bozanic, Ashok & Liu, "Extremely Simple Activation Shaping for
    Out-of-Distribution Detection", ICLR 2023 (ASH-S, ``percentile=90``).
    """

    name = "ash"
    paper = Paper(
        "Djurisic, Bozanic, Ashok & Liu",
        "Extremely Simple Activation Shaping for Out-of-Distribution Detection",
        "ICLR",
        2023,
    )

    def __init__(self, percentile: float = 90.0):
        self.percentile = percentile

    def _score(self, outputs: Outputs) -> torch.Tensor:
        _check_percentile(self.percentile)
        a = outputs.features
        d = a.shape[1]
        keep = d - int(np.round(d * self.percentile / 100))
        if keep < 1:
            raise ValueError(f"percentile={self.percentile!r} prunes all D={d} features; lower it")
        values, index = a.topk(keep, dim=1)
        pruned = torch.zeros_like(a).scatter_(1, index, values)
        kept = values.sum(dim=1, keepdim=True)
        # a sample whose kept activations are all zero has nothing to scale: factor 1, not 0/0
        ratio = torch.where(kept != 0, a.sum(dim=1, keepdim=True) / kept.where(kept != 0, torch.ones_like(kept)), 0)
        shaped = pruned * torch.exp(ratio)
        return energy(_head(shaped, outputs))
