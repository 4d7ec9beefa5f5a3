"""GradNorm: the norm of the head's weight gradient, in closed form."""

from __future__ import annotations

import torch

from ..outputs import Outputs
from .base import Detector, Paper, check_positive

__all__ = ["GradNormDetector"]


class GradNormDetector(Detector):
    r"""L1 norm of the gradient of KL(uniform ‖ softmax) with respect to the head weight.

    With :math:`p = \operatorname{softmax}(z / T)`, :math:`z = W a + b` and :math:`u` the
    uniform distribution over the :math:`C` classes,

    .. math::

        L = D_{\mathrm{KL}}(u \,\|\, p) = -\log C - \frac1C \sum_c \log p_c, \qquad
        \frac{\partial L}{\partial z_k} = \frac{p_k - 1/C}{T}, \qquad
        \frac{\partial L}{\partial W_{kj}} = \frac{p_k - 1/C}{T}\, a_j

    so the per-sample score needs no backward pass:

    .. math::

        S(x) = \Big\lVert \frac{\partial L}{\partial W} \Big\rVert_1
             = \frac1T \Big(\sum_k \big|p_k - \tfrac1C\big|\Big) \lVert a \rVert_1

    Only the weight, not the bias, as in the paper (its official code, and NERO's reference
    code, ``cv_uncertainty.py``, ``GradNorm``, sum the cross-entropy over the classes
    instead of averaging, which scales every score by :math:`C`; the ranking, and so every
    metric, is the same).

    Huang, Geng & Li, "On the Importance of Gradients for Detecting Distributional
    Shifts in the Wild", NeurIPS 2021 (``temperature=1``).
    """

    name = "gradnorm"
    paper = Paper(
        "Huang, Geng & Li",
        "On the Importance of Gradients for Detecting Distributional Shifts in the Wild",
        "NeurIPS",
        2021,
    )

    def __init__(self, temperature: float = 1.0):
        self.temperature = temperature

    def _score(self, outputs: Outputs) -> torch.Tensor:
        check_positive("temperature", self.temperature)
        p = torch.softmax(outputs.logits / self.temperature, dim=1)
        spread = (p - 1 / outputs.num_classes).abs().sum(dim=1)
        return spread * outputs.features.abs().sum(dim=1) / self.temperature
