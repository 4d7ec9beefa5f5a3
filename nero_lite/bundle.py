"""A fitted bundle: the classifier, its preprocessing, the fitted detectors and their thresholds, in one folder.

``python -m nero_lite fit`` writes one (:func:`save_bundle`) and ``python -m nero_lite flag``
reads it back (:func:`load_bundle`) to flag new images; from Python::

    bundle = load_bundle("bundle/")
    result = bundle.score(images)  # an ImageSet or uint8 N×3×SIZE×SIZE images
    result.scores["nero"], result.flagged["nero"], result.nearest

Scores of a loaded bundle are bit for bit those of the objects that were saved (same
device, same batches). Nothing is unpickled: tensors are safetensors files, the rest JSON.

**Layout of the folder**

``model.safetensors``
    The classifier's state dict, rebuilt with
    :func:`~nero_lite.models.create_model` ``(arch, len(classes), size)``.
``detectors/NAME.safetensors``
    Each fitted detector, written by :meth:`~nero_lite.detectors.base.Detector.save`.
``bundle.json``
    Written last: a folder without it is an incomplete bundle (an interrupted write) and
    is refused. ``{"format_version": 1, "arch", "classes", "preprocessing": {"size",
    "mask_corner", "mask_text", "corner_fraction", "text_margin_fraction", "mean", "std"},
    "model": {"file", "sha256"}, "detectors": {NAME: {"file", "sha256", "threshold"}},
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
from tqdm import tqdm

from . import __version__
from . import detectors as _detectors
from .cache import atomic_write, sha256
from .data import CORNER_FRACTION, MEAN, STD, TEXT_MARGIN_FRACTION, ImageSet, image_tensor, mask_shortcut, to_input
from .detectors import Detector, NeroDetector, OdinDetector
from .explain import score_maps, top_channels
from .models import create_model, extract, resolve_device

__all__ = [
    "BUNDLE_FILE",
    "FORMAT_VERSION",
    "TOP_NEURONS",
    "Bundle",
    "BundleScores",
    "current_versions",
    "load_bundle",
    "preprocess",
    "save_bundle",
]

#: Version of the bundle layout that :func:`save_bundle` writes and :func:`load_bundle` reads.
FORMAT_VERSION = 1
#: The file that completes a bundle folder, written last.
BUNDLE_FILE = "bundle.json"
#: Neurons per image that :meth:`Bundle.score` lists as NERO's top contributors.
TOP_NEURONS = 5
_MODEL_FILE = "model.safetensors"
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
        for start in tqdm(starts, desc="score", unit="batch", disable=not progress or len(starts) < 2):
            x = to_input(pixels[start : start + batch_size], device)
            outputs = extract(model, x, device, batch_size=len(x), progress=False)
            for name, detector in self.detectors.items():
                if isinstance(detector, OdinDetector):  # ODIN perturbs the input: it needs the model
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

    def explain(self, images: ImageSet | torch.Tensor, device: str | torch.device = "auto") -> torch.Tensor:
        """Why each image got its NERO distance, per pixel, ``(N, SIZE, SIZE)`` (:func:`~nero_lite.explain.score_maps`)."""
        nero = self.detectors.get("nero")
        if not isinstance(nero, NeroDetector):
            raise ValueError("the bundle has no NERO detector: maps of why an image is flagged need one")
        return score_maps(self.model, self.preprocess(images), nero, device=device)


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
) -> Bundle:
    """Write a bundle to ``folder`` (created if needed; layout: the module docstring); returns it.

    Written as a set: every file goes into a staging folder inside ``folder`` first; a
    failure there leaves an earlier bundle in ``folder`` whole. Then the old ``bundle.json``
    is removed, the files are renamed into place and the new ``bundle.json`` comes last, so
    a write killed among the renames leaves a folder :func:`load_bundle` calls incomplete,
    never a mix. Detectors must be fitted; names are letters, digits, ``_`` and ``-``.
    """
    bad = [name for name in detectors if not _NAME.fullmatch(name)]
    if bad:
        raise ValueError(f"detector names must be letters, digits, _ and -: {bad}")
    unknown = sorted(set(thresholds) - set(detectors))
    if unknown:
        raise ValueError(f"thresholds for detectors that are not in the bundle: {unknown}")
    bundle = Bundle(model.eval(), arch, size, mask_corner, mask_text, list(classes), dict(detectors),
                    dict(thresholds), train_fingerprint, current_versions(), dict(info or {}))
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
        document = {
            "format_version": FORMAT_VERSION,
            "arch": arch,
            "classes": bundle.classes,
            "preprocessing": {"size": size, "mask_corner": mask_corner, "mask_text": mask_text,
                              "corner_fraction": CORNER_FRACTION, "text_margin_fraction": TEXT_MARGIN_FRACTION,
                              "mean": list(MEAN), "std": list(STD)},
            "model": {"file": _MODEL_FILE, "sha256": sha256(staging / _MODEL_FILE)},
            "detectors": entries,
            "train_fingerprint": train_fingerprint,
            "versions": bundle.versions,
            "info": bundle.info,
        }
        text = json.dumps(document, indent=1)
        (folder / BUNDLE_FILE).unlink(missing_ok=True)
        os.replace(staging / _MODEL_FILE, folder / _MODEL_FILE)
        shutil.rmtree(folder / _DETECTOR_FOLDER, ignore_errors=True)
        os.replace(staging / _DETECTOR_FOLDER, folder / _DETECTOR_FOLDER)
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


def load_bundle(folder: str | os.PathLike) -> Bundle:
    """The bundle saved in ``folder`` by :func:`save_bundle`, its model in eval mode on the CPU.

    Raises :class:`FileNotFoundError` when there is no such folder, and :class:`ValueError`
    (one line, naming the folder) when ``bundle.json`` is missing (an incomplete bundle),
    unreadable or of another format version, when a file it names is missing or fails its
    SHA-256, when the preprocessing differs from this nero_lite's, or when the model or a
    detector cannot be rebuilt.
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
    return Bundle(model.eval(), arch, size, bool(prep["mask_corner"]), bool(prep["mask_text"]), classes, fitted,
                  thresholds, fingerprint, dict(versions), dict(info))
