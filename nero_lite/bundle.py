"""A fitted bundle: the classifier, its preprocessing, the fitted detectors and their thresholds, in one folder.

``python -m nero_lite fit`` writes one (:func:`save_bundle`) and ``python -m nero_lite flag``
reads it back (:func:`load_bundle`) to flag new images; from Python::

    bundle = load_bundle("bundle/")
    result = bundle.score(images)  # an ImageSet or uint8 N×3×SIZE×SIZE images
    result.scores["nero"], result.flagged["nero"], result.nearest
    reports = bundle.reports(a_few)  # why NERO scores a few images so: score maps, concept maps, reference patches

Scores of a loaded bundle are bit for bit those of the objects that were saved (same
device, same batches). Nothing is unpickled: tensors are safetensors files, the rest JSON.

**Layout of the folder**

``model.safetensors``
    The classifier's state dict, rebuilt with
    :func:`~nero_lite.models.create_model` ``(arch, len(classes), size)``.
``detectors/NAME.safetensors``
    Each fitted detector, written by :meth:`~nero_lite.detectors.base.Detector.save`.
``references.safetensors``
    The reference pool (optional; bundles written before it existed have none): a few
    training images per class (:func:`reference_pool`), tensors ``images`` (uint8
    ``N×3×SIZE×SIZE``, preprocessed as for scoring) and ``labels`` (int64 ``N``, indices
    into ``classes``). :meth:`Bundle.reports` finds in it the reference patches of each
    concept (relevance maximization, :func:`~nero_lite.explain.reference_images`): a
    trained classifier cannot show what its neurons respond to without training images.
``bundle.json``
    Written last: a folder without it is an incomplete bundle (an interrupted write) and
    is refused. ``{"format_version": 1, "arch", "classes", "preprocessing": {"size",
    "mask_corner", "mask_text", "corner_fraction", "text_margin_fraction", "mean", "std"},
    "model": {"file", "sha256"}, "detectors": {NAME: {"file", "sha256", "threshold"}},
    "references": {"file", "sha256", "count"} (absent without a pool),
    "train_fingerprint", "versions": {"nero_lite", "torch", "timm"}, "info": {...}}``.
    ``threshold`` is the score below which an image is flagged (``null``: none fitted);
    ``train_fingerprint`` is :func:`~nero_lite.cache.fingerprint` of the training images and
    labels; ``info`` holds what the writer adds (``fit`` puts its options and counts there).
    The SHA-256 of every file is checked on loading: a damaged or swapped file is refused.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import timm
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from .version import __version__
from . import detectors as _detectors
from .cache import atomic_write, sha256
from .attribution import score_maps
from .data import CORNER_FRACTION, MEAN, STD, TEXT_MARGIN_FRACTION, ImageSet, image_tensor, mask_shortcut, to_input
from .detectors import Detector, NeroDetector
from .explain import Report, explain, top_channels
from .models import create_model, extract, resolve_device
from .progress import bar as progress_bar

__all__ = [
    "BUNDLE_FILE",
    "CONCEPTS",
    "FORMAT_VERSION",
    "REFERENCES_PER_CLASS",
    "REFERENCE_PATCHES",
    "TOP_NEURONS",
    "Bundle",
    "BundleScores",
    "current_versions",
    "load_bundle",
    "preprocess",
    "reference_pool",
    "save_bundle",
]

#: Version of the bundle layout that :func:`save_bundle` writes and :func:`load_bundle` reads.
FORMAT_VERSION = 1
#: The file that completes a bundle folder, written last.
BUNDLE_FILE = "bundle.json"
#: Neurons per image that :meth:`Bundle.score` lists as NERO's top contributors.
TOP_NEURONS = 5
#: Training images per class that ``fit`` keeps in the bundle's reference pool (:func:`reference_pool`).
REFERENCES_PER_CLASS = 32
#: Concepts (NERO neurons, channels of the concept layer) :meth:`Bundle.reports` explains per image.
CONCEPTS = 3
#: Reference patches per concept that :meth:`Bundle.reports` finds in the pool.
REFERENCE_PATCHES = 3
_MODEL_FILE = "model.safetensors"
_REFERENCE_FILE = "references.safetensors"
_DETECTOR_FOLDER = "detectors"
_NAME = re.compile(r"[A-Za-z0-9_-]+")


def current_versions() -> dict[str, str]:
    """The versions of nero_lite, torch and timm running now (recorded in every bundle)."""
    return {"nero_lite": __version__, "torch": torch.__version__, "timm": timm.__version__}


def preprocess(images: ImageSet | torch.Tensor, size: int, mask_corner: bool, mask_text: bool) -> torch.Tensor:
    """uint8 ``N×3×size×size`` images with the lower-left corner and the left text strip
    blacked out as asked (:func:`~nero_lite.data.mask_shortcut`, the fractions of
    :mod:`nero_lite.data`); masking twice changes nothing. Other sizes are refused."""
    pixels = image_tensor(images)
    if tuple(pixels.shape[-2:]) != (size, size):
        raise ValueError(f"the bundle takes {size}×{size} images, got {tuple(pixels.shape[-2:])}")
    if not (mask_corner or mask_text):
        return pixels
    return mask_shortcut(pixels, corner=CORNER_FRACTION if mask_corner else 0.0,
                         text_margin=TEXT_MARGIN_FRACTION if mask_text else 0.0)


def reference_pool(images: ImageSet, per_class: int = REFERENCES_PER_CLASS, seed: int = 0) -> ImageSet:
    """A seeded choice of at most ``per_class`` images of each class of ``images``, in their order.

    The training images a bundle keeps so that its concepts can be shown on the images that
    excite them (:meth:`Bundle.reports`); a fixed number per class keeps the bundle small and
    the cost of the explanations bounded whatever the size of the training set. File names
    are not kept (the pool is stored as pixels only).
    """
    generator = torch.Generator().manual_seed(seed)
    chosen = []
    for label in range(len(images.classes)):
        members = torch.nonzero(images.labels == label).flatten()
        chosen.append(members[torch.randperm(len(members), generator=generator)[:per_class]])
    index = torch.cat(chosen).sort().values
    return ImageSet(images.images[index], images.labels[index], images.classes)


@dataclass(frozen=True)
class BundleScores:
    """What :meth:`Bundle.score` finds for N images; every tensor is on the CPU with N rows.

    Attributes
    ----------
    scores : dict
        Detector name → scores ``(N,)``, higher = more in-distribution.
    flagged : dict
        Detector name → ``score < threshold`` ``(N,)``, for each detector with a threshold.
    predicted : Tensor
        The classifier's class index ``(N,)`` (into ``Bundle.classes``).
    nearest : Tensor or None
        NERO's nearest class centroid ``(N,)``; ``None`` without a ``"nero"`` detector.
    top_neurons, top_contributions : Tensor or None
        The :data:`TOP_NEURONS` head-input neurons of largest contribution to NERO's
        distance (:meth:`~nero_lite.detectors.nero.NeroDetector.decompose`) and those
        contributions, ``(N, TOP_NEURONS)``; ``None`` without ``"nero"``.
    """

    scores: dict[str, torch.Tensor]
    flagged: dict[str, torch.Tensor]
    predicted: torch.Tensor
    nearest: torch.Tensor | None
    top_neurons: torch.Tensor | None
    top_contributions: torch.Tensor | None


@dataclass
class Bundle:
    """A classifier with its preprocessing, fitted detectors and thresholds (:func:`load_bundle`).

    ``model`` is in eval mode; images are masked as in training (``mask_corner``,
    ``mask_text``: :func:`~nero_lite.data.mask_shortcut`) and normalised with
    :data:`~nero_lite.data.MEAN` and :data:`~nero_lite.data.STD`
    (:func:`~nero_lite.data.to_input`). ``thresholds`` maps a detector name to the score
    below which an image is flagged (``fit`` sets it at 95 % ID TPR on validation images).
    ``references`` is the reference pool (:func:`reference_pool`, preprocessed), or ``None``
    for a bundle saved without one: :meth:`reports` then finds no reference patches.
    """

    model: nn.Module
    arch: str
    size: int
    mask_corner: bool
    mask_text: bool
    classes: list[str]
    detectors: dict[str, Detector]
    thresholds: dict[str, float]
    train_fingerprint: str
    versions: dict[str, str] = field(default_factory=current_versions)
    info: dict = field(default_factory=dict)
    references: ImageSet | None = None

    def preprocess(self, images: ImageSet | torch.Tensor) -> torch.Tensor:
        """The uint8 images masked as the training images were (:func:`preprocess`); they must be SIZE×SIZE."""
        return preprocess(images, self.size, self.mask_corner, self.mask_text)

    def score(self, images: ImageSet | torch.Tensor, batch_size: int = 256, device: str | torch.device = "auto",
              progress: bool = True) -> BundleScores:
        """Every detector's scores, the predictions and NERO's nearest class for ``images``, in batches."""
        pixels = self.preprocess(images)
        device = resolve_device(device)
        model = self.model.to(device).eval()
        parts: dict[str, list[torch.Tensor]] = {name: [] for name in self.detectors}
        predicted, nearest, neurons, contributions = [], [], [], []
        nero = self.detectors.get("nero")
        starts = range(0, len(pixels), batch_size)
        for start in progress_bar(starts, desc="score", unit="batch", show=progress and len(starts) >= 2):
            x = to_input(pixels[start : start + batch_size], device)
            outputs = extract(model, x, device, batch_size=len(x), progress=False)
            for name, detector in self.detectors.items():
                if detector.needs_images:  # ODIN perturbs the input: it needs the model
                    parts[name].append(detector.score_images(model, x).cpu())
                else:
                    parts[name].append(detector.score(outputs).cpu())
            predicted.append(outputs.predictions().cpu())
            if isinstance(nero, NeroDetector):
                decomposition = nero.decompose(outputs)
                top = top_channels(decomposition, TOP_NEURONS)
                nearest.append(decomposition.nearest.cpu())
                neurons.append(top.cpu())
                contributions.append(decomposition.neurons.gather(1, top).cpu())
        scores = {name: torch.cat(values) for name, values in parts.items()}
        return BundleScores(
            scores=scores,
            flagged={name: scores[name] < threshold for name, threshold in self.thresholds.items() if threshold is not None},
            predicted=torch.cat(predicted),
            nearest=torch.cat(nearest) if nearest else None,
            top_neurons=torch.cat(neurons) if neurons else None,
            top_contributions=torch.cat(contributions) if contributions else None,
        )

    def _nero(self) -> NeroDetector:
        """The bundle's NERO detector, which every explanation takes apart; a clear error without one."""
        nero = self.detectors.get("nero")
        if not isinstance(nero, NeroDetector):
            raise ValueError("the bundle has no NERO detector: maps of why an image is flagged need one")
        return nero

    def explain(self, images: ImageSet | torch.Tensor, device: str | torch.device = "auto") -> torch.Tensor:
        """Why each image got its NERO distance, per pixel, ``(N, SIZE, SIZE)`` (:func:`~nero_lite.attribution.score_maps`)."""
        return score_maps(self.model, self.preprocess(images), self._nero(), device=device)

    def reports(self, images: ImageSet | torch.Tensor, *, k: int = CONCEPTS, n_references: int = REFERENCE_PATCHES,
                device: str | torch.device = "auto", batch_size: int = 4, progress: bool = True) -> list[Report]:
        """NERO's full explanation of each image (:func:`~nero_lite.explain.explain`), one
        :class:`~nero_lite.explain.Report` each.

        Each report holds the score taken apart, the why-flagged score map, the ``k``
        neurons of largest contribution with their CRP concept maps and, from the
        reference pool, ``n_references`` training images per neuron with the patch that
        excites it (``Report.references``; empty for a bundle without a pool). The
        decision uses the bundle's NERO threshold. The pool's outputs are extracted once;
        the images are explained ``batch_size`` at a time, so memory holds the maps of
        one batch and the bar moves per batch. Raises :class:`ValueError` without NERO or
        its threshold.
        """
        nero = self._nero()
        if "nero" not in self.thresholds:
            raise ValueError("the bundle holds no threshold for nero: a report's decision needs one")
        pixels = self.preprocess(images)
        device = resolve_device(device)
        model = self.model.to(device).eval()
        pool = self.references
        pool_outputs = extract(model, pool, device, progress=False) if pool is not None and len(pool) else None
        reports: list[Report] = []
        bar = progress_bar(total=len(pixels), desc="explain", unit="img", show=progress and len(pixels) > batch_size)
        for start in range(0, len(pixels), batch_size):
            batch = pixels[start : start + batch_size]
            reports += explain(model, batch, nero, threshold=self.thresholds["nero"], train_outputs=pool_outputs,
                               train_images=pool if pool_outputs is not None else None, k=k,
                               n_references=n_references, class_names=self.classes, device=device)
            bar.update(len(batch))
        bar.close()
        return reports


def save_bundle(
    folder: str | os.PathLike,
    model: nn.Module,
    arch: str,
    size: int,
    mask_corner: bool,
    mask_text: bool,
    classes: list[str],
    detectors: dict[str, Detector],
    thresholds: dict[str, float],
    train_fingerprint: str,
    info: dict | None = None,
    references: ImageSet | None = None,
) -> Bundle:
    """Write a bundle to ``folder`` (created if needed; layout: the module docstring); returns it.

    Written as a set: every file goes into a staging folder inside ``folder`` first; a
    failure there leaves an earlier bundle in ``folder`` whole. Then the old ``bundle.json``
    is removed, the files are renamed into place and the new ``bundle.json`` comes last, so
    a write killed among the renames leaves a folder :func:`load_bundle` calls incomplete,
    never a mix. Detectors must be fitted; names are letters, digits, ``_`` and ``-``.
    ``references``, the reference pool (:func:`reference_pool`), must be of ``classes``
    at ``size``; it is preprocessed (masked) as scoring does before it is written.
    """
    bad = [name for name in detectors if not _NAME.fullmatch(name)]
    if bad:
        raise ValueError(f"detector names must be letters, digits, _ and -: {bad}")
    unknown = sorted(set(thresholds) - set(detectors))
    if unknown:
        raise ValueError(f"thresholds for detectors that are not in the bundle: {unknown}")
    if references is not None:
        if references.classes != list(classes):
            raise ValueError(f"the reference pool has classes {references.classes}, the bundle {list(classes)}")
        references = ImageSet(preprocess(references, size, mask_corner, mask_text), references.labels, references.classes)
    bundle = Bundle(model.eval(), arch, size, mask_corner, mask_text, list(classes), dict(detectors),
                    dict(thresholds), train_fingerprint, current_versions(), dict(info or {}), references)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=folder, prefix=".nero_lite-"))
    try:
        state = {key: value.detach().cpu().contiguous() for key, value in model.state_dict().items()}
        save_file(state, staging / _MODEL_FILE)
        entries = {}
        for name, detector in detectors.items():
            relative = f"{_DETECTOR_FOLDER}/{name}.safetensors"
            detector.save(staging / relative)
            entries[name] = {"file": relative, "sha256": sha256(staging / relative), "threshold": thresholds.get(name)}
        (staging / _DETECTOR_FOLDER).mkdir(exist_ok=True)
        if references is not None:
            save_file({"images": references.images.contiguous(), "labels": references.labels.contiguous()},
                      staging / _REFERENCE_FILE)
        document = {
            "format_version": FORMAT_VERSION,
            "arch": arch,
            "classes": bundle.classes,
            "preprocessing": {"size": size, "mask_corner": mask_corner, "mask_text": mask_text,
                              "corner_fraction": CORNER_FRACTION, "text_margin_fraction": TEXT_MARGIN_FRACTION,
                              "mean": list(MEAN), "std": list(STD)},
            "model": {"file": _MODEL_FILE, "sha256": sha256(staging / _MODEL_FILE)},
            "detectors": entries,
            **({"references": {"file": _REFERENCE_FILE, "sha256": sha256(staging / _REFERENCE_FILE),
                               "count": len(references)}} if references is not None else {}),
            "train_fingerprint": train_fingerprint,
            "versions": bundle.versions,
            "info": bundle.info,
        }
        text = json.dumps(document, indent=1)
        (folder / BUNDLE_FILE).unlink(missing_ok=True)
        os.replace(staging / _MODEL_FILE, folder / _MODEL_FILE)
        shutil.rmtree(folder / _DETECTOR_FOLDER, ignore_errors=True)
        os.replace(staging / _DETECTOR_FOLDER, folder / _DETECTOR_FOLDER)
        if references is not None:
            os.replace(staging / _REFERENCE_FILE, folder / _REFERENCE_FILE)
        else:  # an earlier bundle's pool must not pass for this one's
            (folder / _REFERENCE_FILE).unlink(missing_ok=True)
        atomic_write(folder / BUNDLE_FILE, lambda temp: Path(temp).write_text(text))
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return bundle


def _checked_file(folder: Path, entry: dict, what: str) -> Path:
    """The file an entry of ``bundle.json`` names, after checking it exists and has its SHA-256."""
    path = folder / entry["file"]
    if not path.is_file():
        raise ValueError(f"{folder} is damaged: {what} file {entry['file']} is missing")
    if sha256(path) != entry["sha256"]:
        raise ValueError(f"{folder} is damaged: {entry['file']} is not the file the bundle was saved with (SHA-256 differs)")
    return path


def _read_references(folder: Path, path: Path, classes: list[str], size: int) -> ImageSet:
    """The reference pool in ``path``, after checking its tensors are the images and labels a pool holds."""
    try:
        tensors = load_file(path)
        images, labels = tensors["images"], tensors["labels"]
    except Exception as error:  # safetensors' own errors and a missing tensor: the reason only
        raise ValueError(f"{folder} is damaged: {_REFERENCE_FILE} cannot be read ({type(error).__name__})") from None
    if (images.dtype != torch.uint8 or images.ndim != 4 or tuple(images.shape[1:]) != (3, size, size)
            or labels.dtype != torch.int64 or labels.shape != (len(images),)
            or (len(labels) and not 0 <= int(labels.min()) <= int(labels.max()) < len(classes))):
        raise ValueError(f"{folder} is damaged: {_REFERENCE_FILE} does not hold uint8 3×{size}×{size} images "
                         f"with labels of the {len(classes)} classes")
    return ImageSet(images, labels, classes)


def load_bundle(folder: str | os.PathLike) -> Bundle:
    """The bundle saved in ``folder`` by :func:`save_bundle`, its model in eval mode on the CPU.

    Raises :class:`FileNotFoundError` when there is no such folder, and :class:`ValueError`
    (one line, naming the folder) when ``bundle.json`` is missing (an incomplete bundle),
    unreadable or of another format version, when a file it names is missing or fails its
    SHA-256, when the preprocessing differs from this nero_lite's, or when the model, a
    detector or the reference pool cannot be rebuilt. A bundle without a reference pool
    (written before ``fit`` kept one) loads with ``references=None``.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"no bundle folder at {folder}")
    if not (folder / BUNDLE_FILE).is_file():
        raise ValueError(f"{folder} is not a complete bundle: it has no {BUNDLE_FILE} (write it with `python -m nero_lite fit`)")
    try:
        document = json.loads((folder / BUNDLE_FILE).read_text())
        version = document["format_version"]
    except (ValueError, TypeError, KeyError, UnicodeDecodeError):
        raise ValueError(f"{folder} is damaged: {BUNDLE_FILE} is not valid JSON with a format_version") from None
    if version != FORMAT_VERSION:
        raise ValueError(f"{folder} is a bundle of format version {version!r}; this nero_lite reads {FORMAT_VERSION}")
    try:
        prep, classes, arch = document["preprocessing"], list(document["classes"]), document["arch"]
        size = int(prep["size"])
        model_entry, detector_entries = document["model"], document["detectors"]
        fingerprint, versions, info = document["train_fingerprint"], document["versions"], document["info"]
        if (tuple(prep["mean"]), tuple(prep["std"])) != (MEAN, STD) or (
            prep["corner_fraction"], prep["text_margin_fraction"]) != (CORNER_FRACTION, TEXT_MARGIN_FRACTION):
            raise ValueError(f"{folder} was saved with a normalisation or masking that this nero_lite does not apply")
        model_path = _checked_file(folder, model_entry, "model")
        paths = {name: _checked_file(folder, entry, f"detector {name}") for name, entry in detector_entries.items()}
        pool_path = _checked_file(folder, document["references"], "reference pool") if "references" in document else None
        thresholds = {name: entry["threshold"] for name, entry in detector_entries.items() if entry["threshold"] is not None}
    except (KeyError, TypeError, AttributeError) as error:
        raise ValueError(f"{folder} is damaged: {BUNDLE_FILE} lacks an entry ({error})") from None
    model = create_model(arch, len(classes), size)
    try:
        model.load_state_dict(load_file(model_path))
    except Exception as error:  # safetensors' and torch's own errors: the reason only
        raise ValueError(f"{folder}: the model cannot be rebuilt as {arch} of {len(classes)} classes ({type(error).__name__})") from None
    try:
        fitted = {name: _detectors.load(path) for name, path in paths.items()}
    except (FileNotFoundError, ValueError) as error:
        raise ValueError(f"{folder} is damaged: {str(error).splitlines()[0]}") from None
    references = _read_references(folder, pool_path, classes, size) if pool_path is not None else None
    return Bundle(model.eval(), arch, size, bool(prep["mask_corner"]), bool(prep["mask_text"]), classes, fitted,
                  thresholds, fingerprint, dict(versions), dict(info), references)
