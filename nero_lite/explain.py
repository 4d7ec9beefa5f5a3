r"""Why is an image flagged? NERO reports with concept relevance maps.

NERO (Chhetri et al., MICCAI 2025) scores a sample by how far its neuron relevance
:math:`R(x) \in \mathbb R^D` at the head input lies from the class centroids of the
training relevance. :func:`explain` turns one score into a report a reader can check:

1. the score, the decision at a threshold (:func:`fit_threshold`: 95 % of held-out ID
   samples accepted) and the nearest class centroid;
2. the k neurons whose relevance deviates most from that class's mean relevance,
   :math:`\Delta_j = R_j(x) - \bar R_{c,j}` (signed);
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
(:func:`explain_cost` measures it).

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
from .data import ImageSet, to_input
from .detectors.base import class_means
from .detectors.nero import NeroDetector
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
    "plot_report",
    "randomize_head",
    "reference_images",
    "region_share",
]

LRP = "lrp"
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
    class_names : tuple of str
    relevance, centroid_relevance : (D,)
        NERO's neuron relevance :math:`R(x)` and the mean relevance of the nearest
        class over the training set.
    channels, deviations : (k,)
        The k neurons/channels of largest :math:`|\Delta_j|`,
        :math:`\Delta_j = R_j(x) - \bar R_{c,j}` (signed), in decreasing order.
    heatmap : (H, W)
        Input relevance for the predicted class (output relevance one-hot, 1).
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
    """

    image: np.ndarray
    score: float
    threshold: float
    is_ood: bool
    predicted_class: int
    nearest_class: int
    distance: float
    class_names: tuple[str, ...]
    relevance: np.ndarray
    centroid_relevance: np.ndarray
    channels: np.ndarray
    deviations: np.ndarray
    heatmap: np.ndarray
    concept_heatmaps: np.ndarray
    references: list[ConceptReference]
    layer: str
    method: str
    conservation: float

    @property
    def decision(self) -> str:
        return "OOD" if self.is_ood else "ID"

    @property
    def predicted_name(self) -> str:
        return self.class_names[self.predicted_class]

    @property
    def nearest_name(self) -> str:
        return self.class_names[self.nearest_class]


def fit_threshold(detector: NeroDetector, id_outputs: Outputs, tpr: float = 0.95) -> float:
    """The score threshold that accepts a fraction ``tpr`` of held-out ID samples (95 % ID TPR)."""
    return threshold_at_tpr(detector.score(id_outputs), tpr)


def _as_uint8(images: ImageSet | torch.Tensor) -> torch.Tensor:
    images = images.images if isinstance(images, ImageSet) else images
    if images.dtype != torch.uint8 or images.ndim != 4:
        raise TypeError(f"images must be an ImageSet or a uint8 N×3×H×W tensor, got {images.dtype} {tuple(images.shape)}")
    return images


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
    images = _as_uint8(train_images)
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


def _centroid_relevance(detector: NeroDetector, train_outputs: Outputs | None) -> torch.Tensor:
    """Per-class mean neuron relevance (C, D): from ``train_outputs``, else back-projected from the PCA centroids."""
    if train_outputs is not None:
        relevance = detector.relevance(train_outputs)[0]
        labelled = train_outputs.labels >= 0
        return class_means(relevance[labelled], train_outputs.labels[labelled], train_outputs.num_classes)
    centroids = detector.centroids_
    if detector.pca_ is not None:
        centroids = torch.as_tensor(detector.pca_.inverse_transform(centroids.double().cpu().numpy()))
    labels = detector.centroid_labels_.cpu()
    return class_means(centroids.float().cpu(), labels, int(labels.max()) + 1)


def explain(
    model: nn.Module,
    images: ImageSet | torch.Tensor,
    detector: NeroDetector,
    *,
    threshold: float,
    train_outputs: Outputs | None = None,
    train_images: ImageSet | torch.Tensor | None = None,
    k: int = 5,
    n_references: int = 3,
    composite: Composite | None = None,
    class_names: Sequence[str] | None = None,
    method: Method = LRP,
    device: str | torch.device = "auto",
    batch_size: int = 32,
) -> list[Report]:
    r"""One :class:`Report` per image: NERO score and decision, deviating neurons, CRP maps, references.

    Parameters
    ----------
    model : timm ResNet or ViT, the classifier ``detector`` was fitted on.
    images : ImageSet or uint8 tensor (N, 3, H, W)
    detector : a fitted :class:`~nero_lite.detectors.nero.NeroDetector`.
    threshold : float
        Decision threshold on the score (:func:`fit_threshold`); ``score < threshold`` → OOD.
    train_outputs : Outputs, optional
        The detector's training outputs, for the exact class-mean relevance
        :math:`\bar R_c`; without them :math:`\bar R_c` is the nearest centroid mapped
        back through the PCA (the mean of the training relevance projected on the kept
        components).
    train_images : ImageSet or uint8 tensor, optional
        The images of ``train_outputs``, in the same order: reference images per concept
        (none without them).
    k : int
        Number of deviating neurons/channels to explain.
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
    pixels = _as_uint8(images)
    n = len(pixels)
    x = to_input(pixels, device)
    outputs = extract(model, x, device, progress=False)
    score = detector.score(outputs)
    relevance = detector.relevance(outputs)[0]
    distances = torch.cdist(detector.project(outputs), detector.centroids_.to(relevance), p=1)
    distance, nearest_centroid = distances.min(dim=1)
    nearest = detector.centroid_labels_.to(device)[nearest_centroid]
    means = _centroid_relevance(detector, train_outputs).to(relevance)
    deviation = relevance - means[nearest]
    k = min(k, relevance.shape[1])
    channels = deviation.abs().topk(k, dim=1).indices
    predicted = outputs.predictions()
    head_input = head_relevance(outputs.features, outputs.weight, outputs.bias, target="predicted")[0].sum(dim=1)

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
    if method == LRP and not torch.isfinite(maps).all():
        warnings.warn("LRP gave non-finite relevance; falling back to gradient x input", RuntimeWarning, stacklevel=2)
        method = GRADIENT_X_INPUT
        maps = _attribute(model, repeated, conditions, torch.stack(rows), method=method, **arguments)
    maps = maps.view(n, k + 1, *maps.shape[1:]).cpu()

    references: dict[int, ConceptReference] = {}
    if train_images is not None and n_references > 0:
        if train_outputs is None:
            train_outputs = extract(model, to_input(_as_uint8(train_images), device), device, progress=False)
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

    return [
        Report(
            image=pixels[i].cpu().numpy(),
            score=float(score[i]),
            threshold=float(threshold),
            is_ood=bool(score[i] < threshold),
            predicted_class=int(predicted[i]),
            nearest_class=int(nearest[i]),
            distance=float(distance[i]),
            class_names=names,
            relevance=relevance[i].cpu().numpy(),
            centroid_relevance=means[nearest[i]].cpu().numpy(),
            channels=channels[i].cpu().numpy(),
            deviations=deviation[i, channels[i]].cpu().numpy(),
            heatmap=maps[i, 0].numpy(),
            concept_heatmaps=maps[i, 1:].numpy(),
            references=[references[c] for c in channels[i].tolist() if c in references],
            layer=layer,
            method=method,
            conservation=float(maps[i, 0].sum() / head_input[i].cpu()),
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
    device: str | torch.device = "auto",
    **kwargs,
) -> dict[str, float]:
    """Seconds per image of one forward pass and of one :func:`explain` report, measured in the same run.

    Returns ``forward_s``, ``report_s`` (per image, batched as given) and their ratio
    ``relative``; ``kwargs`` go to :func:`explain` (e.g. ``train_images`` to include the
    reference images). One warm-up forward pass is not timed.
    """
    device = resolve_device(device)
    model = model.to(device).eval()
    pixels = _as_uint8(images)
    x = to_input(pixels, device)
    with torch.no_grad():
        model(x[:1])
        _synchronize(device)
        start = time.perf_counter()
        model(x)
        _synchronize(device)
        forward = (time.perf_counter() - start) / len(pixels)
    start = time.perf_counter()
    explain(model, pixels, detector, threshold=-math.inf, k=k, device=device, **kwargs)
    _synchronize(device)
    report = (time.perf_counter() - start) / len(pixels)
    return {"forward_s": forward, "report_s": report, "relative": report / forward}


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

    Top row: the image with its score and decision, the input heatmap of the predicted
    class, and the relevance profile :math:`R(x)` against the nearest class's mean
    relevance with the top-k channels marked. One row per concept: its conditional
    heatmap (red = positive relevance, blue = negative), then the peak patches of its
    reference training images.
    """
    import matplotlib.pyplot as plt

    k = len(report.channels)
    columns = max(3, 1 + max_references)
    fig = plt.figure(figsize=(2.0 * columns + 2.5, 2.0 * (k + 1)), constrained_layout=True)
    grid = fig.add_gridspec(k + 1, columns)
    ax = fig.add_subplot(grid[0, 0])
    ax.imshow(report.image.transpose(1, 2, 0))
    ax.set_title(f"{report.decision}: score {report.score:.3g}\n(threshold {report.threshold:.3g})", fontsize=8)
    ax.axis("off")
    title = f"{report.method} map\npredicted {report.predicted_name}"
    _show_map(fig.add_subplot(grid[0, 1]), report.heatmap, report.image, title)
    ax = fig.add_subplot(grid[0, 2:])
    ax.plot(report.relevance, lw=0.8, label="this image $R(x)$")
    ax.plot(report.centroid_relevance, lw=0.8, label=f"mean of {report.nearest_name}")
    ax.scatter(report.channels, report.relevance[report.channels], color="k", s=12, zorder=3, label=f"top {k}")
    ax.set_xlabel(f"neuron / channel of {report.layer}")
    ax.set_ylabel("relevance")
    ax.legend(fontsize=7)
    for row, (channel, delta) in enumerate(zip(report.channels, report.deviations), start=1):
        title = f"channel {channel}\nΔ = {delta:+.3g}"
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
