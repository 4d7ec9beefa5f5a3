"""Detectors that read only the logits ``z`` of a sample: MSP, MaxLogit, Energy, Entropy."""

from __future__ import annotations

import torch

from ..outputs import Outputs
from .base import Detector, Paper, check_positive

__all__ = ["EnergyDetector", "EntropyDetector", "MSPDetector", "MaxLogitDetector", "energy"]


def energy(logits: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    r"""Negative free energy :math:`T \log \sum_c e^{z_c / T}` per row (stable logsumexp)."""
    check_positive("temperature", temperature)
    return temperature * torch.logsumexp(logits / temperature, dim=1)


class MSPDetector(Detector):
    r"""Maximum softmax probability.

    .. math:: S(x) = \max_c \operatorname{softmax}(z / T)_c

    Hendrycks & Gimpel, "A Baseline for Detecting Misclassified and Out-of-Distribution
    Examples in Neural Networks", ICLR 2017 (``temperature=1``).
    """

    name = "msp"
    paper = Paper(
        "Hendrycks & Gimpel",
        "A Baseline for Detecting Misclassified and Out-of-Distribution Examples in Neural Networks",
        "ICLR",
        2017,
    )

    def __init__(self, temperature: float = 1.0):
        self.temperature = temperature

    def _score(self, outputs: Outputs) -> torch.Tensor:
        check_positive("temperature", self.temperature)
        return torch.softmax(outputs.logits / self.temperature, dim=1).amax(dim=1)


class MaxLogitDetector(Detector):
    r"""Maximum logit.

    .. math:: S(x) = \max_c z_c

    Hendrycks, Basart, Mazeika, Zou, Kwon, Mostajabi, Steinhardt & Song, "Scaling
    Out-of-Distribution Detection for Real-World Settings", ICML 2022.
    """

    name = "maxlogit"
    paper = Paper(
        "Hendrycks et al.", "Scaling Out-of-Distribution Detection for Real-World Settings", "ICML", 2022
    )

    def _score(self, outputs: Outputs) -> torch.Tensor:
        return outputs.logits.amax(dim=1)


class EnergyDetector(Detector):
    r"""Negative free energy of the logits.

    .. math:: S(x) = -E(x; T) = T \log \sum_c e^{z_c / T}

    Liu, Wang, Owens & Li, "Energy-based Out-of-distribution Detection", NeurIPS 2020
    (``temperature=1``).
    """

    name = "energy"
    paper = Paper("Liu, Wang, Owens & Li", "Energy-based Out-of-distribution Detection", "NeurIPS", 2020)

    def __init__(self, temperature: float = 1.0):
        self.temperature = temperature

    def _score(self, outputs: Outputs) -> torch.Tensor:
        return energy(outputs.logits, self.temperature)


class EntropyDetector(Detector):
    r"""Negative Shannon entropy of the softmax distribution (a peaked prediction is ID-like).

    .. math:: S(x) = -H(p) = \sum_c p_c \log p_c, \qquad p = \operatorname{softmax}(z)

    Computed exactly with ``log_softmax`` (no clipping of small probabilities), in every
    preset. NERO's official code (``cv_uncertainty.py``, ``EntropyQuant``) first clips
    :math:`p_c` at :math:`10^{-6}`, so that every saturated softmax scores the same; ours
    keeps ranking them (the ranks differ only where some :math:`p_c < 10^{-6}`). The
    entropy of the prediction is a classical uncertainty measure; as an OOD score it is
    cited from Chan, Rottmann & Gottschalk, "Entropy Maximization and Meta
    Classification for Out-of-Distribution Detection in Semantic Segmentation", ICCV 2021.
    """

    name = "entropy"
    paper = Paper(
        "Chan, Rottmann & Gottschalk",
        "Entropy Maximization and Meta Classification for Out-of-Distribution Detection in Semantic Segmentation",
        "ICCV",
        2021,
    )

    def _score(self, outputs: Outputs) -> torch.Tensor:
        log_p = torch.log_softmax(outputs.logits, dim=1)
        return (log_p.exp() * log_p).sum(dim=1)
