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
of conditions into ``CondAttribution`` calls (the reference images' maps).
:func:`attribution_passes` gives the report's maps another way: one forward pass under the
rules per batch, then one backward pass per map from the logits, the head input or the
concept layer masked to one channel (:class:`AttributionPass`); its concept maps equal
``CondAttribution``'s (tested).

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

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, nullcontext
from typing import Literal

import torch
import torch.nn.functional as F
from crp.attribution import CondAttribution
from timm.models.resnet import BasicBlock, ResNet
from timm.models.vision_transformer import VisionTransformer
from torch import nn
from zennit.core import Composite

from .canonizers import resnet_composite, vit_composite
from .data import ImageSet, image_tensor, to_input
from .detectors.nero import NeroDetector
from .devices import resolve_device
from .extraction import capture_head
from .models import find_head
from .outputs import Outputs
from .relevance import Target, layer_relevance, output_relevance

__all__ = [
    "GRADIENT_X_INPUT",
    "LRP",
    "AttributionPass",
    "attribution_passes",
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


class AttributionPass:
    r"""One forward pass kept in the autograd graph, for several backward passes to the pixels.

    Made by :func:`attribution_passes`. ``outputs`` are the pass's head inputs and logits
    (detached: what :func:`~nero_lite.extraction.extract` gives, from the same forward pass);
    ``graph_outputs`` the same still in the graph. Every map is :math:`\sum_{\text{colour}}`
    of what reaches the input: the relevance under the LRP rules (``method=LRP``) or
    gradient × input (``method=GRADIENT_X_INPUT``), from

    * the logits (:meth:`from_logits`: e.g. the predicted class's input map),
    * the head input (:meth:`from_features`: e.g. NERO's contributions, the score map),
    * the concept layer with the relevance masked to one channel per map (:meth:`concepts`,
      CRP's conditional maps).

    The maps are linear in what is placed at the start, so each backward pass reuses the
    forward pass and none repeats it.
    """

    def __init__(self, x: torch.Tensor, logits: torch.Tensor, features: torch.Tensor, layer_output: torch.Tensor | None,
                 outputs: Outputs, lrp: bool):
        self.x, self.logits, self.features, self.layer_output = x, logits, features, layer_output
        self.outputs = outputs.detach()
        self.graph_outputs = outputs
        self.lrp = lrp

    def _to_pixels(self, tensor: torch.Tensor, start: torch.Tensor) -> torch.Tensor:
        (reached,) = torch.autograd.grad(tensor, self.x, grad_outputs=start.to(tensor), retain_graph=True)
        return (reached if self.lrp else reached * self.x).sum(dim=1).detach()

    def from_logits(self, relevance: torch.Tensor) -> torch.Tensor:
        """Maps ``(N, H, W)`` of ``relevance`` (N, C) placed on the logits."""
        return self._to_pixels(self.logits, relevance)

    def from_features(self, relevance: torch.Tensor) -> torch.Tensor:
        """Maps ``(N, H, W)`` of ``relevance`` (N, D) placed on the head input (NERO's neurons)."""
        return self._to_pixels(self.features, relevance.view_as(self.features))

    def from_scalar(self, value: torch.Tensor) -> torch.Tensor:
        """Maps ``(N, H, W)`` of the gradient of ``value`` (a scalar of the graph) times the input."""
        (gradient,) = torch.autograd.grad(value, self.x, retain_graph=True)
        return (gradient * self.x).sum(dim=1).detach()

    def concepts(self, relevance: torch.Tensor, channels: torch.Tensor) -> torch.Tensor:
        """CRP maps ``(N, k, H, W)``: ``relevance`` (N, C) on the logits, masked at the concept layer to channel ``channels[n, i]``."""
        if self.layer_output is None:
            raise ValueError("this pass was made without a concept layer")
        (at_layer,) = torch.autograd.grad(self.logits, self.layer_output, grad_outputs=relevance.to(self.logits),
                                          retain_graph=True)
        shape = (len(at_layer), at_layer.shape[1]) + (1,) * (at_layer.ndim - 2)
        maps = [
            self._to_pixels(self.layer_output, at_layer * F.one_hot(channels[:, i].to(at_layer.device), at_layer.shape[1]).view(shape))
            for i in range(channels.shape[1])
        ]
        return torch.stack(maps, dim=1)


@contextmanager
def attribution_passes(
    model: nn.Module, *, composite: Composite | None = None, method: Method = LRP, layer: str | None = None
) -> Iterator[Callable[[torch.Tensor], AttributionPass]]:
    """Register the LRP rules and the hooks once; yield ``run(x)``, one :class:`AttributionPass` per batch of inputs.

    ``composite`` (:func:`default_composite` when omitted) and its canonizers are applied
    once for the block, not per batch or per map; ``method=GRADIENT_X_INPUT`` registers no
    rules. ``layer`` names the concept layer (:func:`concept_layer`) whose output
    :meth:`AttributionPass.concepts` masks. The head input is recorded by
    :func:`~nero_lite.extraction.capture_head`, entered before the rules so that it sees the
    tensor the model computed. Inside the block gradients are on and parameters need none.
    """
    lrp = method == LRP
    rules = (composite or default_composite(model)).context(model) if lrp else nullcontext(model)
    with _frozen(model), capture_head(model, detach=False) as head, rules as modified, torch.enable_grad():
        captured: dict[str, torch.Tensor] = {}
        handle = None
        if layer is not None:
            handle = model.get_submodule(layer).register_forward_hook(lambda module, args, out: captured.__setitem__("layer", out))

        def run(inputs: torch.Tensor) -> AttributionPass:
            x = inputs.detach().clone().requires_grad_(True)
            logits = modified(x)
            features = head["features"]
            return AttributionPass(x, logits, features, captured.get("layer"), _outputs(model, features, logits), lrp)

        try:
            yield run
        finally:
            if handle is not None:
                handle.remove()


def _batched_maps(model, images, device, batch_size, one_batch, **passes) -> torch.Tensor:
    """``one_batch(attribution_pass)`` (N, H, W) over the images in batches, on the CPU; the rules registered once."""
    device = resolve_device(device)
    model = model.to(device).eval()
    pixels = image_tensor(images)
    maps = []
    with attribution_passes(model, **passes) as run:
        for start in range(0, len(pixels), batch_size):
            maps.append(one_batch(run(to_input(pixels[start : start + batch_size], device))).cpu())
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
    ``Report.conservation``. One forward and one backward pass per image, batched, with
    the rules registered once (:func:`attribution_passes`).
    """

    def one_batch(run: AttributionPass) -> torch.Tensor:
        return run.from_features(detector.decompose(run.outputs).neurons)

    return _batched_maps(model, images, device, batch_size, one_batch, composite=composite)


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

    def one_batch(run: AttributionPass) -> torch.Tensor:
        return run.from_scalar(detector.decompose(run.graph_outputs).outlier_score.sum())

    return _batched_maps(model, images, device, batch_size, one_batch, method=GRADIENT_X_INPUT)


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

    def one_batch(run: AttributionPass) -> torch.Tensor:
        return run.from_logits(output_relevance(run.outputs.logits, target))

    return _batched_maps(model, images, device, batch_size, one_batch, composite=composite)


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
