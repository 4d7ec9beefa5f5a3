"""ODIN: temperature scaling and a gradient-sign input perturbation (needs the model)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..outputs import Outputs
from .base import Detector, Paper, check_positive

__all__ = ["OdinDetector"]


class OdinDetector(Detector):
    r"""ODIN: maximum softmax probability at temperature :math:`T` of a perturbed input.

    .. math::

        \tilde x = x - \varepsilon \, \operatorname{sign}\!\big(-\nabla_x \log S_{\hat y}(x; T)\big),
        \qquad S(x) = \max_c S_c(\tilde x; T),
        \qquad S_c(x; T) = \operatorname{softmax}(f(x) / T)_c

    with :math:`\hat y` the predicted class. The perturbation needs the model and the
    images: :meth:`score_images`. :meth:`~nero_lite.detectors.base.Detector.score` works on :class:`~nero_lite.outputs.Outputs` alone and is
    the temperature-scaled MSP *without* perturbation (ε = 0).

    As in the original code, a zero gradient counts as positive, and with ``norm_std``
    (the per-channel standard deviations of the input normalisation) the step of
    channel :math:`k` is divided by ``norm_std[k]``, so that ε is in pixel units.

    Liang, Li & Srikant, "Enhancing The Reliability of Out-of-distribution Image
    Detection in Neural Networks", ICLR 2018: defaults ``temperature=1000``,
    ``epsilon=0.0014``, the paper's CIFAR setting, kept as ours. NERO's official code uses
    ``temperature=100, epsilon=0.0005`` with no ``norm_std`` (ε in normalised-input units;
    ``cv_uncertainty.py``, ``odin_score``): ``create("odin", preset="official", arch=...)``,
    see :mod:`~nero_lite.detectors.presets`.
    """

    name = "odin"
    needs_images = True
    paper = Paper(
        "Liang, Li & Srikant",
        "Enhancing The Reliability of Out-of-distribution Image Detection in Neural Networks",
        "ICLR",
        2018,
    )

    def __init__(self, temperature: float = 1000.0, epsilon: float = 0.0014, norm_std: Sequence[float] | None = None):
        self.temperature = temperature
        self.epsilon = epsilon
        self.norm_std = norm_std

    def _score(self, outputs: Outputs) -> torch.Tensor:
        check_positive("temperature", self.temperature)
        return torch.softmax(outputs.logits / self.temperature, dim=1).amax(dim=1)

    def score_images(self, model: nn.Module, images: torch.Tensor) -> torch.Tensor:
        """ODIN scores of a batch of (normalised) images, shape ``(N,)``.

        Two forward passes and one backward pass through ``model`` (put it in eval
        mode first); not usable under ``torch.inference_mode``.
        """
        check_positive("temperature", self.temperature)
        if not torch.is_floating_point(images) or images.ndim < 2:
            raise ValueError(f"images must be a floating tensor (N, ...), got {images.dtype} {tuple(images.shape)}")
        if not torch.isfinite(images).all():
            raise ValueError("images contains NaN or inf")
        images = images.detach().requires_grad_(True)
        with torch.enable_grad():
            logits = model(images) / self.temperature
            # summed, not averaged: each sample's gradient is independent of the batch size
            loss = F.cross_entropy(logits, logits.argmax(dim=1), reduction="sum")
            (gradient,) = torch.autograd.grad(loss, images)
        step = torch.where(gradient >= 0, 1.0, -1.0).to(images.dtype)
        if self.norm_std is not None:
            std = torch.as_tensor(self.norm_std, dtype=images.dtype, device=images.device)
            step = step / std.view(1, -1, *([1] * (images.ndim - 2)))
        with torch.no_grad():
            perturbed = images - self.epsilon * step
            return torch.softmax(model(perturbed) / self.temperature, dim=1).amax(dim=1)
