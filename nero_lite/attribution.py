r"""Relevance maps of a classifier and of NERO's score: LRP, CRP and gradient × input.

The machinery the reports of :mod:`nero_lite.explain` and the measurements of
:mod:`nero_lite.faithfulness` are made of.

**LRP** (Bach et al., "On Pixel-Wise Explanations for Non-Linear Classifier Decisions by
Layer-Wise Relevance Propagation", PLOS ONE 2015) places a relevance :math:`o` on the C
outputs (:func:`~nero_lite.relevance.output_relevance`) and redistributes it layer by
layer, from the outputs :math:`k` of a layer to its inputs :math:`j`, in proportion to
each input's contribution :math:`z_{jk}` (for a linear layer :math:`z_{jk} = a_j w_{jk}`):

.. math::

    R_j = \sum_k \frac{z_{jk}}{\sum_{j'} z_{j'k}}\, R_k ,
    \qquad \sum_j R_j = \sum_k R_k \quad \text{(conservation)} .

The rules per layer come from a zennit composite (:func:`default_composite`:
:func:`~nero_lite.canonizers.resnet_composite` for a timm ResNet,
:func:`~nero_lite.canonizers.vit_composite` for a timm ViT, which holds the attention
probabilities and the LayerNorm scale constant in the backward pass: CP-LRP, Ali et al.,
ICML 2022). :func:`lrp_maps` gives the input map of a class.

**CRP** (Achtibat et al., "From attribution maps to human-understandable explanations
through Concept Relevance Propagation", Nature Machine Intelligence 2023) runs the same
backward pass with the relevance masked at one layer to a set :math:`\theta` of channels
(the *concepts*):

.. math::

    R_j^{(\theta)} = \sum_k \frac{z_{jk}}{\sum_{j'} z_{j'k}}\, \delta_{k \in \theta}\, R_k

at that layer, the plain rules below it. :func:`concept_heatmaps` does this with
zennit-crp's ``CondAttribution`` at :func:`concept_layer` (``layer4`` of a ResNet,
``fc_norm`` of a ViT): there channel :math:`j` is NERO's head-input neuron :math:`j`, and
with NERO's softmax output relevance the map of channel :math:`j` sums to
:math:`R_j(x)`, up to what biases absorb. :func:`conditional_heatmaps` batches any mix
of conditions (the report's full map and its k concepts) into one pass.

**NERO's score** (Chhetri, Korhonen, Gyawali & Bhattarai, "NERO: Explainable
Out-of-Distribution Detection with Neuron-level Relevance", MICCAI 2025) is a distance
:math:`d(x) = \sum_j c_j` of the neuron relevance :math:`R(x)` to the nearest class
centroid, taken apart neuron by neuron by
:meth:`~nero_lite.detectors.nero.NeroDetector.decompose`. :func:`score_maps` places the
contributions :math:`c_j` on the head inputs and propagates them to the pixels with the
LRP rules, a map that sums to :math:`d(x)` for a ResNet;
:func:`score_gradient_maps` is the plain alternative,
:math:`\sum_{\text{colour}} x \odot \partial S/\partial x` of the outlier score
:math:`S(x)` (gradient × input, Shrikumar et al., ICML 2017).
:func:`token_relevance` measures where a ViT's relevance goes: to the token embeddings,
the learned class token included. :func:`channel_relevance` gives CRP's relevance of
every channel of inner layers, :math:`R_j^{(\ell)} = \sum_{\text{positions}} R`, the
inputs of NERO's distance taken at an earlier layer.

``method=GRADIENT_X_INPUT`` replaces the LRP rules by gradient × input in the
conditional maps (the reports' fallback when LRP gives non-finite relevance).
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator, Literal, Sequence

import torch
from crp.attribution import CondAttribution
from timm.models.resnet import BasicBlock, ResNet
from timm.models.vision_transformer import VisionTransformer
from torch import nn
from zennit.core import Composite

from .canonizers import resnet_composite, vit_composite
from .data import ImageSet, image_tensor, to_input
from .detectors.nero import NeroDetector
from .models import capture_head, find_head, resolve_device
from .outputs import Outputs
from .relevance import Target, layer_relevance, output_relevance

__all__ = [
    "GRADIENT_X_INPUT",
    "LRP",
    "channel_relevance",
    "concept_heatmaps",
    "concept_layer",
    "conditional_heatmaps",
    "default_composite",
    "lrp_maps",
    "score_gradient_maps",
    "score_maps",
    "token_relevance",
]

#: ``Report.method`` and the ``method`` argument of the maps, LRP with the composite's rules.
LRP = "lrp"
#: ``Report.method`` when LRP gave non-finite maps and gradient × input was used instead.
GRADIENT_X_INPUT = "gradient_x_input (fallback)"
Method = Literal["lrp", "gradient_x_input (fallback)"]


# -- rules and layers per architecture ---------------------------------------------


def default_composite(model: nn.Module) -> Composite:
    """The LRP composite for a timm ResNet (:func:`~nero_lite.canonizers.resnet_composite`) or a timm ViT."""
    if isinstance(model, ResNet) and any(isinstance(m, BasicBlock) for m in model.modules()):
        return resnet_composite()
    if isinstance(model, VisionTransformer):
        return vit_composite()
    raise ValueError(
        f"no default LRP composite for {type(model).__name__}: pass composite= "
        "(supported: timm ResNet with BasicBlocks, timm VisionTransformer)"
    )


def concept_layer(model: nn.Module) -> str:
    """Name of the module whose output channels are the concepts: ``layer4`` (ResNet) or ``fc_norm`` (ViT).

    Both carry the head-input neurons of NERO: ``layer4`` before global average pooling,
    ``fc_norm`` the class token after the final norm.
    """
    if isinstance(model, ResNet):
        return "layer4"
    if isinstance(model, VisionTransformer):
        return "fc_norm"
    raise ValueError(f"no concept layer known for {type(model).__name__}")


class _GradientTimesInput(CondAttribution):
    """``CondAttribution`` whose heatmap is gradient × input, summed over colour channels."""

    def heatmap_modifier(self, data: torch.Tensor, on_device: str | None = None) -> torch.Tensor:
        heatmap = (data.grad * data).detach()
        return torch.sum(heatmap.to(on_device) if on_device else heatmap, dim=1)


@contextmanager
def _frozen(model: nn.Module) -> Iterator[None]:
    """Parameters need no gradient while attributing; restore the caller's flags after."""
    flags = [p.requires_grad for p in model.parameters()]
    model.requires_grad_(False)
    try:
        yield
    finally:
        for p, flag in zip(model.parameters(), flags):
            p.requires_grad_(flag)


def conditional_heatmaps(
    model: nn.Module,
    inputs: torch.Tensor,
    conditions: Sequence[Sequence[int]],
    output_relevance_rows: torch.Tensor,
    *,
    layer: str,
    composite: Composite | None,
    method: Method = LRP,
    batch_size: int = 32,
) -> torch.Tensor:
    r"""CRP heatmaps ``(M, H, W)`` of M rows: input row m, relevance masked to channels ``conditions[m]`` of ``layer``.

    ``inputs`` (M, 3, H, W) are network inputs (:func:`~nero_lite.data.to_input`), one
    row per map; ``output_relevance_rows`` (M, C) is the relevance placed on the outputs of
    each row. Row m is :math:`\sum_{\text{colour}} R^{(\theta_m)}` at the pixels with
    :math:`\theta_m` = ``conditions[m]`` (all channels of ``layer`` give the plain LRP
    map). The rows run through zennit-crp's ``CondAttribution`` in batches of
    ``batch_size``; ``method=GRADIENT_X_INPUT`` ignores ``composite`` and masks the
    gradient instead.
    """
    attribution_type = CondAttribution if method == LRP else _GradientTimesInput
    attribution = attribution_type(model, no_param_grad=False)
    composite = composite if method == LRP else None
    heatmaps = []
    with _frozen(model):
        for start in range(0, len(inputs), batch_size):
            stop = min(start + batch_size, len(inputs))
            x = inputs[start:stop].detach().clone().requires_grad_(True)
            init = output_relevance_rows[start:stop]
            result = attribution(
                x,
                [{layer: list(c)} for c in conditions[start:stop]],
                composite,
                init_rel=lambda prediction, init=init: init.to(prediction),
            )
            heatmaps.append(result.heatmap.detach())
    return torch.cat(heatmaps)


def concept_heatmaps(
    model: nn.Module,
    inputs: torch.Tensor,
    channels: torch.Tensor,
    *,
    target: Target = "softmax",
    composite: Composite | None = None,
    method: Method = LRP,
    batch_size: int = 32,
) -> torch.Tensor:
    r"""Concept-conditional heatmaps (CRP), shape ``(N, k, H, W)``, for channels ``(N, k)`` of :func:`concept_layer`.

    Map :math:`(n, i)` is the LRP relevance of the input pixels for the relevance that
    passes through channel ``channels[n, i]`` only (Achtibat et al., Nat. Mach. Intell.
    2023), with the output relevance :func:`~nero_lite.relevance.output_relevance` of
    ``target`` (``"softmax"``: NERO's). By conservation, map :math:`(n, i)` sums to that
    channel's relevance at the layer (for the ResNet: NERO's :math:`R_j`), up to what
    biases absorb. The N·k conditions run as one batched computation.
    """
    composite = composite or default_composite(model)
    n, k = channels.shape
    with torch.no_grad():
        logits = model(inputs)
    rows = output_relevance(logits, target).repeat_interleave(k, dim=0)
    maps = conditional_heatmaps(
        model,
        inputs.repeat_interleave(k, dim=0),
        [[c] for c in channels.flatten().tolist()],
        rows,
        layer=concept_layer(model),
        composite=composite,
        method=method,
        batch_size=batch_size,
    )
    return maps.view(n, k, *maps.shape[1:])


def _outputs(model: nn.Module, features: torch.Tensor, logits: torch.Tensor) -> Outputs:
    head = find_head(model)
    return Outputs(features.flatten(1), logits, None, head.weight.detach(), head.bias.detach())


def _batched_maps(model, images, device, batch_size, one_batch) -> torch.Tensor:
    """``one_batch(x)`` (N, H, W) over the images in batches, on the CPU."""
    device = resolve_device(device)
    model = model.to(device).eval()
    pixels = image_tensor(images)
    maps = []
    with _frozen(model):
        for start in range(0, len(pixels), batch_size):
            x = to_input(pixels[start : start + batch_size], device).requires_grad_(True)
            maps.append(one_batch(x).detach().cpu())
    return torch.cat(maps) if maps else torch.empty(0, *pixels.shape[-2:])


def score_maps(
    model: nn.Module,
    images: ImageSet | torch.Tensor,
    detector: NeroDetector,
    *,
    composite: Composite | None = None,
    device: str | torch.device = "auto",
    batch_size: int = 32,
) -> torch.Tensor:
    r"""Why each image got its NERO distance, per pixel: shape ``(N, H, W)``, on the CPU.

    The per-neuron contributions :math:`c_j` of
    :meth:`~nero_lite.detectors.nero.NeroDetector.decompose` (which sum to the centroid
    distance :math:`d(x)`) are placed on the head inputs and propagated to the pixels
    with the report's LRP rules (:func:`default_composite`): for a ResNet each channel's
    contribution is spread over the positions of ``layer4`` in proportion to its
    activation (the proportional rule of the global average pool), then down through the
    network; for a ViT it enters at the class token and reaches the patches through the
    constant attention. Positive pixels push the image away from its nearest centroid.

    Conservation: for a ResNet each map sums to :math:`d(x)` (up to the contribution of
    channels whose activation is zero everywhere, which has no position to go to); for
    a ViT the class token and the position embedding keep a share, as for
    ``Report.conservation``. One forward and one backward pass per image, batched.
    """
    composite = composite or default_composite(model)

    def one_batch(x: torch.Tensor) -> torch.Tensor:
        with capture_head(model, detach=False) as captured, composite.context(model) as modified, torch.enable_grad():
            logits = modified(x)
            features = captured["features"]
            contributions = detector.decompose(_outputs(model, features, logits).detach()).neurons
            (relevance,) = torch.autograd.grad(features, x, grad_outputs=contributions.view_as(features).to(features))
        return relevance.sum(dim=1)

    return _batched_maps(model, images, device, batch_size, one_batch)


def score_gradient_maps(
    model: nn.Module,
    images: ImageSet | torch.Tensor,
    detector: NeroDetector,
    *,
    device: str | torch.device = "auto",
    batch_size: int = 32,
) -> torch.Tensor:
    r"""Gradient × input of NERO's outlier score :math:`S(x)`, summed over colour channels: ``(N, H, W)``.

    :math:`\sum_{\text{colour}} x \odot \partial S / \partial x` on the normalised input
    (Simonyan et al., ICLR 2014 workshop; Shrikumar et al., ICML 2017): the plain-gradient
    alternative to :func:`score_maps`, with the same sign (positive = more OOD).
    """

    def one_batch(x: torch.Tensor) -> torch.Tensor:
        with capture_head(model, detach=False) as captured, torch.enable_grad():
            logits = model(x)
            outlier_score = detector.decompose(_outputs(model, captured["features"], logits)).outlier_score
            (gradient,) = torch.autograd.grad(outlier_score.sum(), x)
        return (gradient * x).sum(dim=1)

    return _batched_maps(model, images, device, batch_size, one_batch)


def lrp_maps(
    model: nn.Module,
    images: ImageSet | torch.Tensor,
    *,
    target: Target = "predicted",
    composite: Composite | None = None,
    device: str | torch.device = "auto",
    batch_size: int = 32,
) -> torch.Tensor:
    """Input LRP maps of the classifier's output relevance ``target`` (``Report.heatmap``), shape ``(N, H, W)``."""
    composite = composite or default_composite(model)

    def one_batch(x: torch.Tensor) -> torch.Tensor:
        with composite.context(model) as modified, torch.enable_grad():
            logits = modified(x)
            (relevance,) = torch.autograd.grad(logits, x, grad_outputs=output_relevance(logits.detach(), target))
        return relevance.sum(dim=1)

    return _batched_maps(model, images, device, batch_size, one_batch)


def token_relevance(
    model: VisionTransformer,
    inputs: torch.Tensor,
    *,
    composite: Composite | None = None,
    target: Target = "predicted",
) -> tuple[torch.Tensor, torch.Tensor]:
    r"""Where a ViT's relevance goes: its sum at the head input, ``(N,)``, and per token embedding, ``(N, T)``.

    One LRP pass (:func:`~nero_lite.relevance.layer_relevance` at ``fc_norm`` and at
    ``pos_drop``, the token embeddings after the position embedding) with ``composite``
    (:func:`~nero_lite.canonizers.vit_composite` when omitted) and the output relevance
    of ``target``. Token 0 is the learned class token. With the constant attention and
    LayerNorm scale of ``vit_composite`` the tokens together hold the head relevance, up
    to what the biases absorb; how it splits between the class token and the patches is
    a property of the trained model. ``inputs`` are network inputs
    (:func:`~nero_lite.data.to_input`); put ``model`` in eval mode.
    """
    if not isinstance(model, VisionTransformer):
        raise ValueError(f"token_relevance needs a timm VisionTransformer, got {type(model).__name__}")
    head, tokens = layer_relevance(model, inputs, [model.fc_norm, model.pos_drop], composite or vit_composite(), target)
    return head.flatten(1).sum(1), tokens.sum(2)


def channel_relevance(
    model: nn.Module,
    images: ImageSet | torch.Tensor,
    layers: Sequence[nn.Module],
    *,
    target: Target = "softmax",
    composite: Composite | None = None,
    device: str | torch.device = "auto",
    batch_size: int = 64,
) -> tuple[torch.Tensor, ...]:
    r"""Relevance of every channel of each of ``layers``, summed over positions: one ``(N, C_l)`` tensor per layer, on the CPU.

    :math:`R^{(\ell)}_j(x) = \sum_{p} R^{(\ell)}_{j,p}(x)`, the relevance of channel
    :math:`j` of layer :math:`\ell`'s output (CRP's relevance of concept :math:`j`,
    Achtibat et al. 2023), all layers from one LRP pass per batch
    (:func:`~nero_lite.relevance.layer_relevance`) with the output relevance of ``target``
    (``"softmax"``: NERO's) and ``composite`` (:func:`default_composite` when omitted).
    For a ResNet's ``layer4`` this is NERO's neuron relevance :math:`R(x)` (up to the
    head's ε); for ``layer3`` it is the same quantity one block earlier, where NERO's
    centroid distance can be measured too. ``layers`` are submodules with outputs of
    shape (N, C, ...).
    """
    device = resolve_device(device)
    model = model.to(device).eval()
    composite = composite or default_composite(model)
    pixels = image_tensor(images)
    parts: list[list[torch.Tensor]] = [[] for _ in layers]
    with _frozen(model):
        for start in range(0, len(pixels), batch_size):
            x = to_input(pixels[start : start + batch_size], device)
            relevance = layer_relevance(model, x, list(layers), composite, target)
            for part, r in zip(parts, relevance):
                part.append(r.detach().flatten(2).sum(2).cpu() if r.ndim > 2 else r.detach().cpu())
    return tuple(torch.cat(part) for part in parts)
