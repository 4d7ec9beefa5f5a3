r"""Why is an image flagged? NERO reports with concept relevance maps.

NERO (Chhetri et al., MICCAI 2025) scores a sample by how far its neuron relevance
:math:`R(x) \in \mathbb R^D` at the head input lies from the class centroids of the
training relevance. :func:`explain` turns one score into a report a reader can check:

1. the score, the decision at a threshold (:func:`fit_threshold`: 95 % of held-out ID
   samples accepted) and the nearest class centroid;
2. the score taken apart exactly (:meth:`~nero_lite.detectors.nero.NeroDetector.decompose`):
   the contribution :math:`c_j` of every neuron to the centroid distance, the bias term
   and the norm factor; the report lists the k neurons of largest contribution (or of
   largest deviation :math:`|\Delta_j|` from the nearest centroid, ``rank="deviation"``);
   and the *score map* (:func:`score_maps`): those contributions propagated to the
   pixels, a map of why the image was flagged that sums to the distance;
3. for each of them a *concept-conditional heatmap* (Concept Relevance Propagation,
   Achtibat et al., "From attribution maps to human-understandable explanations through
   Concept Relevance Propagation", Nature Machine Intelligence 2023), computed with
   zennit-crp's ``CondAttribution``: LRP (Bach et al., PLOS ONE 2015) from the output,
   masked at the last feature block to channel :math:`j` only. For ResNet-18 the head
   inputs are the channels of ``layer4`` after global average pooling, so channel
   :math:`j` of ``layer4`` *is* NERO's neuron :math:`j`; the output relevance is NERO's
   (softmax-weighted), so the map of channel :math:`j` sums to :math:`R_j(x)` up to what
   biases absorb;
4. reference images per channel: the training images of highest relevance for it
   (relevance maximization, Achtibat et al. 2023), with their conditional heatmaps and
   the patch around the heatmap's peak;
5. the input-level LRP heatmap of the predicted class.

All conditions of a batch (the k concepts and the full map of every image) go through
one batched ``CondAttribution`` pass, so the cost grows sub-linearly in k
(:func:`explain_cost` measures it). The other maps of an image — the score map,
gradient × input of the score (:func:`score_gradient_maps`) and the LRP map of a class
(:func:`lrp_maps`) — are one backward pass each; :mod:`nero_lite.faithfulness` measures
them all against where the finding really is.

Rules: timm ResNets use :func:`~nero_lite.canonizers.resnet_composite` (zennit's
``EpsilonPlusFlat`` with a bias-free :math:`z^+` rule and
:class:`~nero_lite.canonizers.TimmResNetCanonizer`); timm ViTs use
:func:`~nero_lite.canonizers.vit_composite` (constant LayerNorm scale and attention,
CP-LRP / AttnLRP style). If a map is not finite the report falls back to gradient ×
input and says so in ``Report.method`` — never a silent NaN.
"""

from __future__ import annotations

import copy
import math
import time
import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator, Literal, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from crp.attribution import CondAttribution
from timm.models.resnet import BasicBlock, ResNet
from timm.models.vision_transformer import VisionTransformer
from torch import nn
from zennit.core import Composite

from .canonizers import resnet_composite, vit_composite
from .data import ImageSet, image_tensor, to_input
from .detectors.nero import Decomposition, NeroDetector
from .metrics import threshold_at_tpr
from .models import extract, find_head, resolve_device
from .outputs import Outputs
from .relevance import Target, head_relevance, output_relevance

__all__ = [
    "LRP",
    "GRADIENT_X_INPUT",
    "ConceptReference",
    "Report",
    "concept_heatmaps",
    "concept_layer",
    "default_composite",
    "explain",
    "explain_cost",
    "fit_threshold",
    "lrp_maps",
    "plot_report",
    "randomize_head",
    "reference_images",
    "region_share",
    "score_gradient_maps",
    "score_maps",
    "top_channels",
]

LRP = "lrp"
GRADIENT_X_INPUT = "gradient_x_input (fallback)"
Method = Literal["lrp", "gradient_x_input (fallback)"]
Rank = Literal["contribution", "deviation"]


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


def _attribute(
    model: nn.Module,
    inputs: torch.Tensor,
    conditions: Sequence[Sequence[int]],
    output_relevance_rows: torch.Tensor,
    *,
    layer: str,
    composite: Composite | None,
    method: Method,
    batch_size: int,
) -> torch.Tensor:
    """Heatmaps ``(M, H, W)`` of M rows: input row m, relevance masked to channels ``conditions[m]`` of ``layer``.

    ``output_relevance_rows`` (M, C) is the relevance placed on the outputs of each row.
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
    maps = _attribute(
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


@contextmanager
def _head_input(model: nn.Module) -> Iterator[dict[str, torch.Tensor]]:
    """Capture the input of the classifier head (key ``"features"``) during the forward passes in the block.

    Enter it *before* a composite's context: the pre-hook then runs before the rule hooks
    and sees the tensor the model computed, the one relevance and gradients start from.
    """
    captured: dict[str, torch.Tensor] = {}
    handle = find_head(model).register_forward_pre_hook(lambda module, args: captured.update(features=args[0]))
    try:
        yield captured
    finally:
        handle.remove()


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
        with _head_input(model) as captured, composite.context(model) as modified, torch.enable_grad():
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
        with _head_input(model) as captured, torch.enable_grad():
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


# -- reports -----------------------------------------------------------------------


@dataclass
class ConceptReference:
    r"""Training images that are most relevant for one channel (relevance maximization).

    ``indices`` into the training set, ``relevance`` the channel's share of their
    absolute relevance :math:`R_j / \sum_i |R_i|`,
    ``images`` (m, 3, H, W) uint8, ``heatmaps`` (m, H, W) their conditional maps for the
    channel, ``boxes`` (m, 4) the ``(top, left, bottom, right)`` patch around each map's
    peak.
    """

    channel: int
    indices: np.ndarray
    relevance: np.ndarray
    images: np.ndarray
    heatmaps: np.ndarray
    boxes: np.ndarray

    def patches(self) -> list[np.ndarray]:
        """The reference patches, each ``h×w×3`` uint8."""
        return [img[:, t:b, l:r].transpose(1, 2, 0) for img, (t, l, b, r) in zip(self.images, self.boxes)]


@dataclass
class Report:
    r"""Why one image got its NERO score. Arrays are numpy, on the CPU.

    Attributes
    ----------
    image : (3, H, W) uint8
    score, threshold : float
        NERO score (higher = more ID) and the decision threshold; ``is_ood = score < threshold``.
    predicted_class, nearest_class : int
        Arg-max class of the classifier; class of the nearest centroid (L1 in PCA space),
        at ``distance``.
    distance, bias_term, norm_factor : float
        The score taken apart: ``score = -(distance + bias_term) * norm_factor``
        (:meth:`~nero_lite.detectors.nero.NeroDetector.decompose`).
    class_names : tuple of str
    relevance, centroid_relevance : (D,)
        NERO's neuron relevance :math:`R(x)` and the nearest centroid as a point of that
        space, :math:`r_c` (the class's mean training relevance for one centroid per class).
    neuron_contributions : (D,)
        Every neuron's contribution :math:`c_j` to ``distance`` (they sum to it).
    channels : (k,)
        The k neurons/channels of the report: of largest contribution :math:`c_j`
        (``rank="contribution"``, the default) or of largest :math:`|\Delta_j|`
        (``rank="deviation"``), in decreasing order.
    contributions, deviations : (k,)
        Their :math:`c_j` and their signed :math:`\Delta_j = R_j(x) - r_{c,j}`.
    rank : str
        How ``channels`` were chosen.
    heatmap : (H, W)
        Input relevance for the predicted class (output relevance one-hot, 1).
    score_map : (H, W)
        The contributions propagated to the pixels (:func:`score_maps`): where the
        distance comes from; it sums to ``distance`` for a ResNet.
    concept_heatmaps : (k, H, W)
        CRP maps of the k channels (NERO's softmax-weighted output relevance).
    references : list of ConceptReference
        Per channel (empty when no training images were given).
    layer : str
        The concept layer (``layer4``, ``fc_norm``).
    method : str
        ``"lrp"``, or ``"gradient_x_input (fallback)"`` when LRP gave non-finite maps.
    conservation : float
        Sum of ``heatmap`` divided by the relevance of the head inputs for the predicted
        class: the share that reaches the pixels (1 = conserved); the rest is absorbed by
        biases (and, for a ViT, kept by the learned class token).
    score_conservation : float
        Sum of ``score_map`` divided by ``distance``, the same check for the score map.
    """

    image: np.ndarray
    score: float
    threshold: float
    is_ood: bool
    predicted_class: int
    nearest_class: int
    distance: float
    bias_term: float
    norm_factor: float
    class_names: tuple[str, ...]
    relevance: np.ndarray
    centroid_relevance: np.ndarray
    neuron_contributions: np.ndarray
    channels: np.ndarray
    contributions: np.ndarray
    deviations: np.ndarray
    rank: str
    heatmap: np.ndarray
    score_map: np.ndarray
    concept_heatmaps: np.ndarray
    references: list[ConceptReference]
    layer: str
    method: str
    conservation: float
    score_conservation: float

    @property
    def decision(self) -> str:
        return "OOD" if self.is_ood else "ID"

    @property
    def predicted_name(self) -> str:
        return self.class_names[self.predicted_class]

    @property
    def nearest_name(self) -> str:
        return self.class_names[self.nearest_class]


def top_channels(decomposition: Decomposition, k: int, rank: Rank = "contribution") -> torch.Tensor:
    r"""The k neurons per sample of largest contribution :math:`c_j` (``"contribution"``) or :math:`|\Delta_j|` (``"deviation"``), (N, k).

    Ranking by contribution picks the neurons that make up the score; ranking by the
    size of the deviation can pick neurons that contribute nothing (their deviation lies
    along directions the PCA discards) or pull the sample *towards* the centroid.
    """
    if rank == "contribution":
        values = decomposition.neurons
    elif rank == "deviation":
        values = decomposition.deviation.abs()
    else:
        raise ValueError(f"rank must be 'contribution' or 'deviation', got {rank!r}")
    return values.topk(min(k, values.shape[1]), dim=1).indices


def fit_threshold(detector: NeroDetector, id_outputs: Outputs, tpr: float = 0.95) -> float:
    """The score threshold that accepts a fraction ``tpr`` of held-out ID samples (95 % ID TPR)."""
    return threshold_at_tpr(detector.score(id_outputs), tpr)


def _peak_box(heatmap: torch.Tensor, size: int) -> tuple[int, int, int, int]:
    """A ``size×size`` box (clipped to the image) centred on the peak of the smoothed positive heatmap."""
    h, w = heatmap.shape
    smooth = F.avg_pool2d(heatmap.clamp_min(0)[None, None], 5, stride=1, padding=2)[0, 0]
    row, col = divmod(int(smooth.argmax()), w)
    top = min(max(row - size // 2, 0), max(h - size, 0))
    left = min(max(col - size // 2, 0), max(w - size, 0))
    return top, left, min(top + size, h), min(left + size, w)


def reference_images(
    model: nn.Module,
    train_images: ImageSet | torch.Tensor,
    train_relevance: torch.Tensor,
    channels: Sequence[int],
    *,
    n: int = 3,
    composite: Composite | None = None,
    method: Method = LRP,
    target: Target = "softmax",
    device: str | torch.device = "auto",
) -> dict[int, ConceptReference]:
    r"""Relevance maximization: per channel, the ``n`` training images of highest relevance for it.

    ``train_relevance`` (N_train, D) is NERO's neuron relevance of the training images
    (``detector.relevance(train_outputs)[0]``), which for the concept layer's channel
    :math:`j` equals the channel's relevance, so ranking needs no extra backward pass.
    As in CRP's reference sampling (Achtibat et al. 2023), images are ranked by the
    channel's share of their absolute relevance, :math:`R_j / \sum_i |R_i|`, so that
    confidently classified images do not top every channel. Their conditional heatmaps
    are computed in one batch.
    """
    device = resolve_device(device)
    model = model.to(device).eval()
    images = image_tensor(train_images)
    channels = list(dict.fromkeys(int(c) for c in channels))
    if not channels:
        return {}
    share = train_relevance / train_relevance.abs().sum(dim=1, keepdim=True).clamp_min(torch.finfo(train_relevance.dtype).tiny)
    top = share[:, channels].topk(min(n, len(images)), dim=0)
    index = top.indices.T.cpu()  # (channels, n)
    x = to_input(images[index.flatten()], device)
    with torch.no_grad():
        logits = model(x)
    maps = _attribute(
        model,
        x,
        [[c] for c in channels for _ in range(index.shape[1])],
        output_relevance(logits, target),
        layer=concept_layer(model),
        composite=composite or default_composite(model),
        method=method,
        batch_size=32,
    ).cpu()
    maps = maps.view(len(channels), index.shape[1], *maps.shape[1:])
    size = max(images.shape[-1] // 2, 1)
    return {
        c: ConceptReference(
            channel=c,
            indices=index[i].numpy(),
            relevance=top.values[:, i].cpu().numpy(),
            images=images[index[i]].numpy(),
            heatmaps=maps[i].numpy(),
            boxes=np.array([_peak_box(m, size) for m in maps[i]]),
        )
        for i, c in enumerate(channels)
    }


def explain(
    model: nn.Module,
    images: ImageSet | torch.Tensor,
    detector: NeroDetector,
    *,
    threshold: float,
    train_outputs: Outputs | None = None,
    train_images: ImageSet | torch.Tensor | None = None,
    k: int = 5,
    rank: Rank = "contribution",
    n_references: int = 3,
    composite: Composite | None = None,
    class_names: Sequence[str] | None = None,
    method: Method = LRP,
    device: str | torch.device = "auto",
    batch_size: int = 32,
) -> list[Report]:
    r"""One :class:`Report` per image: NERO score taken apart, score map, top neurons, CRP maps, references.

    Parameters
    ----------
    model : timm ResNet or ViT, the classifier ``detector`` was fitted on.
    images : ImageSet or uint8 tensor (N, 3, H, W)
    detector : a fitted :class:`~nero_lite.detectors.nero.NeroDetector`.
    threshold : float
        Decision threshold on the score (:func:`fit_threshold`); ``score < threshold`` → OOD.
    train_outputs : Outputs, optional
        The detector's training outputs in the order of ``train_images`` (extracted from
        them when omitted), for the reference images.
    train_images : ImageSet or uint8 tensor, optional
        The training images: reference images per concept (none without them).
    k : int
        Number of neurons/channels to explain.
    rank : ``"contribution"`` or ``"deviation"``
        Choose them by contribution to the score (:func:`top_channels`) or by :math:`|\Delta_j|`.
    composite : zennit composite, optional
        :func:`default_composite` when omitted.
    method : ``"lrp"`` or ``"gradient_x_input (fallback)"``
        LRP falls back to gradient × input, with a warning, if any map is not finite.
    device : ``"auto"`` picks CUDA when available; the model is moved there.
    """
    if k < 1:
        raise ValueError(f"k must be a positive number of channels, got {k!r}")
    device = resolve_device(device)
    model = model.to(device).eval()
    pixels = image_tensor(images)
    n = len(pixels)
    x = to_input(pixels, device)
    outputs = extract(model, x, device, progress=False)
    parts = detector.decompose(outputs)
    relevance = detector.relevance(outputs)[0]
    channels = top_channels(parts, k, rank)
    k = channels.shape[1]
    predicted = outputs.predictions()
    head_input = head_relevance(outputs.features, outputs.weight, outputs.bias, target="predicted")[0].sum(dim=1)
    references_relevance = detector.references_.to(relevance)[parts.centroid]

    # one batched CondAttribution pass: per image the full map (all channels) and k concepts
    layer = concept_layer(model)
    composite = composite or default_composite(model)
    all_channels = list(range(relevance.shape[1]))
    conditions, rows = [], []
    nero_relevance = output_relevance(outputs.logits, detector.target)
    predicted_relevance = output_relevance(outputs.logits, "predicted")
    for i in range(n):
        conditions += [all_channels] + [[c] for c in channels[i].tolist()]
        rows += [predicted_relevance[i]] + [nero_relevance[i]] * k
    repeated = x.repeat_interleave(k + 1, dim=0)
    arguments = dict(layer=layer, composite=composite, batch_size=batch_size)
    maps = _attribute(model, repeated, conditions, torch.stack(rows), method=method, **arguments)
    score_map = score_maps(model, pixels, detector, composite=composite, device=device, batch_size=batch_size)
    if method == LRP and not (torch.isfinite(maps).all() and torch.isfinite(score_map).all()):
        warnings.warn("LRP gave non-finite relevance; falling back to gradient x input", RuntimeWarning, stacklevel=2)
        method = GRADIENT_X_INPUT
        maps = _attribute(model, repeated, conditions, torch.stack(rows), method=method, **arguments)
        score_map = score_gradient_maps(model, pixels, detector, device=device, batch_size=batch_size)
    maps = maps.view(n, k + 1, *maps.shape[1:]).cpu()

    references: dict[int, ConceptReference] = {}
    if train_images is not None and n_references > 0:
        if train_outputs is None:
            train_outputs = extract(model, to_input(image_tensor(train_images), device), device, progress=False)
        references = reference_images(
            model,
            train_images,
            detector.relevance(train_outputs.to(device))[0],
            channels.flatten().tolist(),
            n=n_references,
            composite=composite,
            method=method,
            target=detector.target,
            device=device,
        )
    if class_names is None:
        class_names = train_images.classes if isinstance(train_images, ImageSet) else None
    names = tuple(class_names) if class_names is not None else tuple(f"class {c}" for c in range(outputs.num_classes))
    numpy = {
        name: value.detach().cpu().numpy()
        for name, value in dict(
            score=parts.score, distance=parts.distance, bias=parts.bias, factor=parts.factor,
            neurons=parts.neurons, deviation=parts.deviation, nearest=parts.nearest, relevance=relevance,
            references=references_relevance, channels=channels, predicted=predicted, head_input=head_input,
        ).items()
    }
    return [
        Report(
            image=pixels[i].cpu().numpy(),
            score=float(numpy["score"][i]),
            threshold=float(threshold),
            is_ood=bool(numpy["score"][i] < threshold),
            predicted_class=int(numpy["predicted"][i]),
            nearest_class=int(numpy["nearest"][i]),
            distance=float(numpy["distance"][i]),
            bias_term=float(numpy["bias"][i]),
            norm_factor=float(numpy["factor"][i]),
            class_names=names,
            relevance=numpy["relevance"][i],
            centroid_relevance=numpy["references"][i],
            neuron_contributions=numpy["neurons"][i],
            channels=numpy["channels"][i],
            contributions=numpy["neurons"][i, numpy["channels"][i]],
            deviations=numpy["deviation"][i, numpy["channels"][i]],
            rank=rank,
            heatmap=maps[i, 0].numpy(),
            score_map=score_map[i].numpy(),
            concept_heatmaps=maps[i, 1:].numpy(),
            references=[references[c] for c in numpy["channels"][i].tolist() if c in references],
            layer=layer,
            method=method,
            conservation=float(maps[i, 0].sum() / numpy["head_input"][i]),
            score_conservation=float(score_map[i].sum() / numpy["distance"][i]),
        )
        for i in range(n)
    ]


# -- sanity check and cost ---------------------------------------------------------


def randomize_head(model: nn.Module, seed: int = 0) -> nn.Module:
    """A copy of ``model`` with its linear head re-initialised (PyTorch's default ``nn.Linear`` init).

    The cascading model-randomization test of Adebayo et al., "Sanity Checks for Saliency
    Maps", NeurIPS 2018, starting at the last layer: explanations that do not change when
    the head is randomized do not explain the model.
    """
    randomized = copy.deepcopy(model)
    head = find_head(randomized)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        fresh = nn.Linear(head.in_features, head.out_features, bias=head.bias is not None)
    with torch.no_grad():
        head.weight.copy_(fresh.weight)
        if head.bias is not None:
            head.bias.copy_(fresh.bias)
    return randomized


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def explain_cost(
    model: nn.Module,
    images: ImageSet | torch.Tensor,
    detector: NeroDetector,
    *,
    k: int = 5,
    repeats: int = 3,
    device: str | torch.device = "auto",
    **kwargs,
) -> dict[str, float]:
    """Seconds per image of a forward pass, a score map, gradient × input of the score and a full report, in one run.

    The four are interleaved and repeated ``repeats`` times (after one untimed warm-up
    of each); the figures are medians. Returns ``forward_s``, ``score_map_s``,
    ``gradient_map_s`` (a plain forward and backward pass: the reference for the cost of
    the LRP rules), ``report_s`` (per image, batched as given) and the cost in forward
    passes, ``score_map_relative``, ``gradient_map_relative`` and ``relative`` (the
    medians of the per-round ratios).
    ``kwargs`` go to :func:`explain` (e.g. ``train_images`` to include the reference images).
    """
    device = resolve_device(device)
    model = model.to(device).eval()
    pixels = image_tensor(images)
    x = to_input(pixels, device)

    def timed(run) -> float:
        _synchronize(device)
        start = time.perf_counter()
        run()
        _synchronize(device)
        return (time.perf_counter() - start) / len(pixels)

    def forward() -> None:
        with torch.no_grad():
            model(x)

    runs = {
        "forward_s": forward,
        "score_map_s": lambda: score_maps(model, pixels, detector, device=device),
        "gradient_map_s": lambda: score_gradient_maps(model, pixels, detector, device=device),
        "report_s": lambda: explain(model, pixels, detector, threshold=-math.inf, k=k, device=device, **kwargs),
    }
    for run in runs.values():
        run()
    rounds = [{name: timed(run) for name, run in runs.items()} for _ in range(repeats)]
    result = {name: float(np.median([r[name] for r in rounds])) for name in runs}
    for name in ("score_map", "gradient_map"):
        result[f"{name}_relative"] = float(np.median([r[f"{name}_s"] / r["forward_s"] for r in rounds]))
    result["relative"] = float(np.median([r["report_s"] / r["forward_s"] for r in rounds]))
    return result


def region_share(heatmaps, region) -> np.ndarray:
    r"""Share of each heatmap's absolute relevance that falls inside ``region``.

    :math:`\sum_{p \in \text{region}} |h_p| \,/\, \sum_p |h_p|` for every map ``h``
    of ``heatmaps`` (``…×H×W``); ``region`` is an ``H×W`` boolean mask (e.g.
    :func:`nero_lite.data.corner_region`). A map that spreads its relevance evenly
    scores the region's area fraction; a map drawn to the region scores more.
    """
    maps = np.abs(np.asarray(heatmaps, dtype=np.float64))
    mask = np.asarray(region, dtype=bool)
    if maps.shape[-2:] != mask.shape:
        raise ValueError(f"heatmaps are {maps.shape[-2:]} but the region is {mask.shape}")
    total = maps.sum(axis=(-2, -1))
    return np.where(total > 0, (maps * mask).sum(axis=(-2, -1)) / np.where(total > 0, total, 1), 0.0)


# -- figure ------------------------------------------------------------------------


def _show_map(ax, heatmap: np.ndarray, image: np.ndarray, title: str) -> None:
    """The heatmap (red positive, blue negative, symmetric scale) over the image in grey."""
    limit = float(np.abs(heatmap).max()) or 1.0
    ax.imshow(image.mean(axis=0), cmap="gray")
    ax.imshow(heatmap, cmap="bwr", vmin=-limit, vmax=limit, alpha=0.7)
    ax.set_title(title, fontsize=8)
    ax.axis("off")


def plot_report(report: Report, *, max_references: int = 3):
    """One figure for one :class:`Report`.

    Top row: the image with its score and decision; the score map (where the distance
    comes from); the input heatmap of the predicted class; and every neuron's
    contribution :math:`c_j` to the distance, the report's k neurons marked, with the
    decomposition ``score = -(distance + bias term) × norm factor`` in the title. One row
    per concept: its conditional heatmap (red = positive relevance, blue = negative),
    then the peak patches of its reference training images.
    """
    import matplotlib.pyplot as plt

    k = len(report.channels)
    columns = max(4, 1 + max_references)
    fig = plt.figure(figsize=(2.0 * columns + 2.5, 2.0 * (k + 1)), constrained_layout=True)
    grid = fig.add_gridspec(k + 1, columns)
    ax = fig.add_subplot(grid[0, 0])
    ax.imshow(report.image.transpose(1, 2, 0))
    ax.set_title(f"{report.decision}: score {report.score:.3g}\n(threshold {report.threshold:.3g})", fontsize=8)
    ax.axis("off")
    _show_map(fig.add_subplot(grid[0, 1]), report.score_map, report.image, f"score map\nnearest {report.nearest_name}")
    title = f"{report.method} map\npredicted {report.predicted_name}"
    _show_map(fig.add_subplot(grid[0, 2]), report.heatmap, report.image, title)
    ax = fig.add_subplot(grid[0, 3:])
    ax.bar(np.arange(len(report.neuron_contributions)), report.neuron_contributions, width=1.0, color="grey")
    ax.bar(report.channels, report.contributions, width=3.0, color="crimson", label=f"top {k} ({report.rank})")
    ax.axhline(0, color="k", lw=0.5)
    ax.set_title(
        f"-(d {report.distance:.3g} + bias {report.bias_term:.3g}) × f {report.norm_factor:.3g}", fontsize=8
    )
    ax.set_xlabel(f"neuron / channel of {report.layer}")
    ax.set_ylabel("contribution $c_j$ to d")
    ax.legend(fontsize=7)
    for row, (channel, contribution, delta) in enumerate(
        zip(report.channels, report.contributions, report.deviations), start=1
    ):
        title = f"channel {channel}\nc = {contribution:+.3g}, Δ = {delta:+.3g}"
        _show_map(fig.add_subplot(grid[row, 0]), report.concept_heatmaps[row - 1], report.image, title)
        refs = next((r for r in report.references if r.channel == channel), None)
        if refs is None:
            continue
        for col, (patch, index) in enumerate(zip(refs.patches()[:max_references], refs.indices), start=1):
            ax = fig.add_subplot(grid[row, col])
            ax.imshow(patch)
            ax.set_title(f"train #{index}", fontsize=7)
            ax.axis("off")
    return fig
