r"""Layer-wise relevance propagation (LRP): at the classifier head in closed form, deeper with zennit.

LRP (Bach et al., "On Pixel-Wise Explanations for Non-Linear Classifier Decisions by
Layer-Wise Relevance Propagation", PLOS ONE 2015; Montavon et al., "Layer-Wise Relevance
Propagation: An Overview", in *Explainable AI*, Springer LNCS 11700, 2019) redistributes
a relevance placed on the outputs of a network back to its units, layer by layer, in
proportion to each unit's contribution. NERO (Chhetri, Korhonen, Gyawali & Bhattarai,
MICCAI 2025) takes it at the input of the linear head, where the ε rule has a closed
form (:func:`head_relevance`); :func:`layer_relevance` reaches earlier layers through a
zennit composite, for explanations.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn
from zennit.core import Composite

__all__ = ["Target", "centroid_scores", "head_relevance", "layer_relevance", "output_relevance"]

Target = Literal["softmax", "predicted"] | int


def output_relevance(logits: torch.Tensor, target: Target) -> torch.Tensor:
    """The relevance ``o`` placed on the C outputs, shape ``(N, C)``.

    ``"softmax"``: the class probabilities (NERO's choice); ``"predicted"``: one-hot of
    the arg-max class; an ``int`` k: one-hot of class k for every sample.
    """
    num_classes = logits.shape[1]
    if isinstance(target, str) and target == "softmax":
        return torch.softmax(logits, dim=1)
    if isinstance(target, str) and target == "predicted":
        return F.one_hot(logits.argmax(dim=1), num_classes).to(logits.dtype)
    if isinstance(target, int) and not isinstance(target, bool):
        if not 0 <= target < num_classes:
            raise ValueError(f"target class index must be in [0, {num_classes}), got {target}")
        return F.one_hot(torch.full_like(logits[:, 0], target, dtype=torch.long), num_classes).to(logits.dtype)
    raise ValueError(f"target must be 'softmax', 'predicted' or a class index, got {target!r}")


def head_relevance(
    features: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor,
    *,
    target: Target = "softmax",
    epsilon: float = 0.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    r"""LRP-ε relevance of the head inputs and of the bias, batched and in closed form.

    The head is :math:`z = W a + b`; the bias is treated as one more input neuron of
    activation 1 and weights :math:`b`. With :math:`o` the output relevance
    (:func:`output_relevance` of ``target``) and
    :math:`\tilde z_c = z_c + \varepsilon \operatorname{sign}(z_c)` (:math:`+\varepsilon`
    where :math:`z_c = 0`, as zennit's ``stabilize``):

    .. math::

        R_j = \sum_c o_c \frac{a_j W_{cj}}{\tilde z_c} \quad (j = 1..D), \qquad
        R_b = \sum_c o_c \frac{b_c}{\tilde z_c}

    Conservation: :math:`\sum_j R_j + R_b = \sum_c o_c\, z_c / \tilde z_c`, i.e.
    :math:`\sum_c o_c` (= 1 for ``"softmax"``) when ε = 0. With ε = 0 nothing is
    stabilised; only an exactly zero denominator is guarded, its class contributing no
    relevance. ``target="softmax"``, ``epsilon=0`` is NERO's setting (Chhetri et al.,
    MICCAI 2025).

    Returns ``(R, R_b)`` of shapes ``(N, D)`` and ``(N,)``.
    """
    if features.ndim != 2:
        raise ValueError(f"features must be 2-D (N, D), got shape {tuple(features.shape)}")
    if weight.ndim != 2 or weight.shape[1] != features.shape[1]:
        raise ValueError(f"weight must have shape (C, {features.shape[1]}), got {tuple(weight.shape)}")
    if tuple(bias.shape) != (weight.shape[0],):
        raise ValueError(f"bias must have shape ({weight.shape[0]},), got {tuple(bias.shape)}")
    if epsilon < 0:
        raise ValueError(f"epsilon must be >= 0, got {epsilon!r}")
    logits = features @ weight.T + bias
    o = output_relevance(logits, target)
    denominator = logits + epsilon * (logits.sign() + (logits == 0).to(logits.dtype))
    zero = denominator == 0
    share = (o / denominator.masked_fill(zero, 1)).masked_fill(zero, 0)
    return features * (share @ weight), share @ bias


def layer_relevance(
    model: nn.Module,
    inputs: torch.Tensor,
    layer: nn.Module | str | Sequence[nn.Module | str],
    composite: Composite,
    target: Target = "predicted",
) -> torch.Tensor | tuple[torch.Tensor, ...]:
    """LRP relevance of the output of ``layer`` (a submodule of ``model``), same shape as that output.

    ``composite`` (a zennit composite, with its canonizers, e.g.
    ``EpsilonPlusFlat(canonizers=[ResNetCanonizer()])``) assigns the rules; the output
    relevance is :func:`output_relevance` of ``target``. zennit's rules make the backward
    pass carry relevance instead of gradient, so the relevance of the layer's output is
    the modified gradient that reaches it. Put ``model`` in eval mode.

    ``layer`` may also be ``"input"`` (the relevance of ``inputs``), or a sequence of
    submodules and ``"input"``: then all of them come from the same forward and backward
    pass, as a tuple in that order (e.g. to check conservation between two layers). A
    submodule called several times gives the relevance of its last call.
    """
    single = isinstance(layer, (nn.Module, str))
    layers = [layer] if single else list(layer)
    unknown = [item for item in layers if isinstance(item, str) and item != "input"]
    if unknown:
        raise ValueError(f"layers are submodules of the model or 'input', got {unknown}")
    captured: dict[int, torch.Tensor] = {}
    x = inputs.detach().requires_grad_(True)
    with composite.context(model) as modified, torch.enable_grad():
        handles = [
            item.register_forward_hook(lambda module, args, out, i=i: captured.__setitem__(i, out))
            for i, item in enumerate(layers)
            if isinstance(item, nn.Module)
        ]
        try:
            output = modified(x)
        finally:
            for handle in handles:
                handle.remove()
        if len(captured) < len(handles):
            raise ValueError("layer is not called in the forward pass of model")
        tensors = [x if isinstance(item, str) else captured[i] for i, item in enumerate(layers)]
        relevance = torch.autograd.grad(output, tensors, grad_outputs=output_relevance(output.detach(), target))
    return relevance[0] if single else relevance


def centroid_scores(train: torch.Tensor, labels: torch.Tensor, *samples: torch.Tensor, p: float = 1.0) -> tuple[torch.Tensor, ...]:
    r"""NERO's centroid distance on any relevance (e.g. the channel relevance of an inner layer), as a score.

    :math:`S(r) = -\min_c \lVert r - \bar r_c \rVert_p`, with :math:`\bar r_c` the mean of the
    rows of ``train`` (N, D) whose ``labels`` are :math:`c`; one score per row of each of
    ``samples`` (higher = more in-distribution). NERO's distance without its PCA, bias term
    and norm factor (Chhetri et al., MICCAI 2025): chapter 6b measures it on CRP's channel
    relevance of ``layer3`` (:func:`~nero_lite.attribution.channel_relevance`).
    """
    centroids = torch.stack([train[labels == c].mean(0) for c in range(int(labels.max()) + 1)])
    return tuple(-torch.cdist(sample, centroids, p=p).amin(1) for sample in samples)
