r"""Why is an image flagged? NERO reports with concept relevance maps.

NERO (Chhetri, Korhonen, Gyawali & Bhattarai, "NERO: Explainable Out-of-Distribution
Detection with Neuron-level Relevance", MICCAI 2025) scores a sample by how far its
neuron relevance :math:`R(x) \in \mathbb R^D` at the head input (LRP, Bach et al., PLOS
ONE 2015, in closed form: :func:`~nero_lite.relevance.head_relevance`) lies from the
class centroids :math:`\mu_c` of the training relevance:

.. math::

    -\text{score}(x) = S(x) = \big(d(x) + \lambda |R_b(x)|\big)\, f(x), \qquad
    d(x) = \min_c \big\lVert P(R(x) - m) - \mu_c \big\rVert_1 = \sum_j c_j ,

with :math:`P` the kept PCA components (mean :math:`m`), :math:`R_b` the bias relevance,
:math:`f` the norm factor and :math:`c_j` the exact contribution of neuron :math:`j`
(:meth:`~nero_lite.detectors.nero.NeroDetector.decompose`). :func:`explain` turns one
score into a :class:`Report` a reader can check:

1. the score, the decision at a threshold (:func:`fit_threshold`: 95 % of held-out ID
   samples accepted) and the nearest class centroid
   (:meth:`~nero_lite.detectors.nero.NeroDetector.nearest`);
2. the score taken apart: every :math:`c_j`, the bias term and the norm factor; the
   report lists the k neurons of largest contribution (:func:`top_channels`; or of
   largest deviation :math:`|\Delta_j|`, :math:`\Delta = R(x) - r_c`, from the nearest
   centroid :math:`r_c`, ``rank="deviation"``), and the *score map*
   (:func:`~nero_lite.attribution.score_maps`): those contributions propagated to the
   pixels, a map of why the image was flagged that sums to the distance;
3. for each of them a *concept-conditional heatmap* (CRP, Achtibat et al., "From
   attribution maps to human-understandable explanations through Concept Relevance
   Propagation", Nature Machine Intelligence 2023;
   :meth:`~nero_lite.attribution.AttributionPass.concepts`): LRP from the output, masked at
   the last feature block to channel :math:`j` only. For ResNet-18 the head inputs are the
   channels of ``layer4`` after global average pooling, so channel :math:`j` of ``layer4``
   *is* NERO's neuron :math:`j`; the output relevance is NERO's (softmax-weighted), so the
   map of channel :math:`j` sums to :math:`R_j(x)` up to what biases absorb;
4. reference images per channel (:func:`reference_images`): the training images of
   highest relevance share :math:`R_j / \sum_i |R_i|` for it (relevance maximization,
   Achtibat et al. 2023), with their conditional heatmaps and the patch around the
   heatmap's peak;
5. the input-level LRP heatmap of the *predicted class* (one-hot output relevance, unlike
   the concept maps' softmax relevance), whose share that reaches the pixels is
   ``Report.conservation``.

Each batch of images takes one forward pass under the rules
(:func:`~nero_lite.attribution.attribution_passes`): NERO scores its outputs, and each map
(the input map, the score map, the k concept maps) is one backward pass from it; a test
checks the concept maps against zennit-crp's ``CondAttribution``
(:func:`~nero_lite.sanity.explain_cost` measures the cost). Rules: timm ResNets use
:func:`~nero_lite.canonizers.resnet_composite`, timm ViTs
:func:`~nero_lite.canonizers.vit_composite` (constant LayerNorm scale and attention
probabilities: CP-LRP, Ali et al., ICML 2022). If a map is not finite the report falls
back to gradient × input and says so in ``Report.method``, never a silent NaN.
:func:`~nero_lite.plots.plot_report` draws a report; :mod:`nero_lite.sanity` checks the
reports against a randomized model.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Literal, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from zennit.core import Composite

from .attribution import GRADIENT_X_INPUT, LRP, Method, attribution_passes, concept_layer, conditional_heatmaps, default_composite
from .data import ImageSet, image_tensor, to_input
from .detectors.nero import Decomposition, NeroDetector
from .devices import resolve_device
from .extraction import extract
from .metrics import threshold_at_tpr
from .outputs import Outputs
from .relevance import Target, head_relevance, output_relevance

__all__ = [
    "ConceptReference",
    "Report",
    "explain",
    "fit_threshold",
    "median_index",
    "reference_images",
    "top_channels",
]

Rank = Literal["contribution", "deviation"]


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
        The contributions propagated to the pixels (:func:`~nero_lite.attribution.score_maps`): where the
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


def median_index(scores: torch.Tensor, mask: torch.Tensor) -> int:
    """Index of the sample whose score is the median of those selected by ``mask`` (the upper median for an even count).

    A way to pick an example for a report that is not hand-picked: e.g. the median
    accepted ID image, or the median flagged OOD image of a class. ``scores`` and
    ``mask`` are (N,); raises ``ValueError`` when ``mask`` selects nothing.
    """
    scores, mask = torch.as_tensor(scores).flatten(), torch.as_tensor(mask).flatten().to(torch.bool)
    candidates = torch.nonzero(mask.cpu()).flatten()
    if len(candidates) == 0:
        raise ValueError("mask selects no sample")
    order = scores.cpu()[candidates].argsort()
    return int(candidates[order[len(order) // 2]])


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
    maps = conditional_heatmaps(
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


def _report_maps(model: nn.Module, x: torch.Tensor, detector: NeroDetector, k: int, rank: Rank, composite: Composite,
                 method: Method, layer: str, batch_size: int) -> dict:
    """The outputs, top channels and maps of :func:`explain`, one forward pass per batch of images.

    Per batch, the forward pass under the rules (:func:`~nero_lite.attribution.attribution_passes`)
    gives the outputs NERO scores and decomposes; then one backward pass each gives the input map
    (the predicted class), the score map (NERO's contributions; with gradient × input, the
    gradient of the outlier score) and the k concept maps (NERO's output relevance masked to
    one channel of ``layer``). Everything is returned on the CPU.
    """
    parts: dict[str, list] = {"outputs": [], "channels": [], "heatmap": [], "score_map": [], "concepts": []}
    with attribution_passes(model, composite=composite, method=method, layer=layer) as run:
        for start in range(0, len(x), batch_size):
            forward = run(x[start : start + batch_size])
            decomposition = detector.decompose(forward.outputs)
            channels = top_channels(decomposition, k, rank)
            logits = forward.outputs.logits
            parts["outputs"].append(forward.outputs)
            parts["channels"].append(channels)
            parts["heatmap"].append(forward.from_logits(output_relevance(logits, "predicted")))
            parts["score_map"].append(
                forward.from_features(decomposition.neurons) if method == LRP
                else forward.from_scalar(detector.decompose(forward.graph_outputs).outlier_score.sum())
            )
            parts["concepts"].append(forward.concepts(output_relevance(logits, detector.target), channels))
    maps = {name: torch.cat(values).cpu() for name, values in parts.items() if name != "outputs"}
    first = parts["outputs"][0]
    maps["outputs"] = Outputs(torch.cat([o.features for o in parts["outputs"]]), torch.cat([o.logits for o in parts["outputs"]]),
                              None, first.weight, first.bias)
    return maps


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
        :func:`~nero_lite.attribution.default_composite` when omitted.
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
    if n == 0:
        return []
    layer = concept_layer(model)
    composite = composite or default_composite(model)
    maps = _report_maps(model, to_input(pixels, device), detector, k, rank, composite, method, layer, batch_size)
    if method == LRP and not all(torch.isfinite(maps[name]).all() for name in ("heatmap", "score_map", "concepts")):
        warnings.warn("LRP gave non-finite relevance; falling back to gradient x input", RuntimeWarning, stacklevel=2)
        method = GRADIENT_X_INPUT
        maps = _report_maps(model, to_input(pixels, device), detector, k, rank, composite, method, layer, batch_size)
    outputs, channels = maps["outputs"], maps["channels"]
    parts = detector.decompose(outputs)
    relevance = detector.relevance(outputs)[0]
    k = channels.shape[1]
    predicted = outputs.predictions()
    head_input = head_relevance(outputs.features, outputs.weight, outputs.bias, target="predicted")[0].sum(dim=1)
    centroid_points = detector.centroid_relevance(parts.centroid).to(relevance)

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
            references=centroid_points, channels=channels, predicted=predicted, head_input=head_input,
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
            heatmap=maps["heatmap"][i].numpy(),
            score_map=maps["score_map"][i].numpy(),
            concept_heatmaps=maps["concepts"][i].numpy(),
            references=[references[c] for c in numpy["channels"][i].tolist() if c in references],
            layer=layer,
            method=method,
            conservation=float(maps["heatmap"][i].sum() / numpy["head_input"][i]),
            score_conservation=float(maps["score_map"][i].sum() / numpy["distance"][i]),
        )
        for i in range(n)
    ]
