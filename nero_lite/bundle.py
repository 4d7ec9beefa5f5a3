"""A fitted bundle: the classifier, its preprocessing, the fitted detectors and their thresholds, in one folder.

``python -m nero_lite fit`` writes one (:meth:`Bundle.save`) and ``python -m nero_lite flag``
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
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import timm
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from . import detectors as _detectors
from .attribution import score_maps
from .cache import atomic_write, sha256
from .constants import FLAG_COLUMNS, POOL_PER_CLASS
from .data import CORNER_FRACTION, MEAN, STD, TEXT_MARGIN_FRACTION, ImageSet, Preprocessing, to_input
from .detectors import Detector, NeroDetector
from .devices import resolve_device
from .explain import Report, explain, top_channels
from .extraction import extract
from .models import create_model
from .progress import bar as progress_bar
from .version import __version__

__all__ = [
    "BUNDLE_FILE",
    "CONCEPTS",
    "FLAG_COLUMNS",
    "FORMAT_VERSION",
    "POOL_PER_CLASS",
    "REFERENCE_PATCHES",
    "TOP_NEURONS",
    "Bundle",
    "BundleScores",
    "current_versions",
    "load_bundle",
    "reference_pool",
    "save_bundle",
]

#: Version of the bundle layout that :meth:`Bundle.save` writes and :meth:`Bundle.load` reads.
FORMAT_VERSION = 1
#: The file that completes a bundle folder, written last.
BUNDLE_FILE = "bundle.json"
#: The columns of ``flags.csv``, written by ``python -m nero_lite flag`` (:meth:`BundleScores.columns` but ``file``).
FLAG_COLUMNS = FLAG_COLUMNS
#: Neurons per image that :meth:`Bundle.score` lists as NERO's top contributors.
TOP_NEURONS = 5
#: Training images per class that ``fit`` keeps in the bundle's pool of reference images (:func:`reference_pool`).
POOL_PER_CLASS = POOL_PER_CLASS
#: Concepts (NERO neurons, channels of the concept layer) :meth:`Bundle.reports` explains per image.
CONCEPTS = 3
#: Reference patches per concept that :meth:`Bundle.reports` finds in the pool.
REFERENCE_PATCHES = 3
_MODEL_FILE = "model.safetensors"
_REFERENCE_FILE = "references.safetensors"
_DETECTOR_FOLDER = "detectors"
_NAME = re.compile(r"[A-Za-z0-9_-]+")


def __getattr__(name: str):
    """The names of the previous release, with a deprecation warning: ``REFERENCES_PER_CLASS``, ``preprocess``."""
    if name == "REFERENCES_PER_CLASS":
        warnings.warn("nero_lite.bundle.REFERENCES_PER_CLASS is now POOL_PER_CLASS", DeprecationWarning, stacklevel=2)
        return POOL_PER_CLASS
    if name == "preprocess":
        warnings.warn("nero_lite.bundle.preprocess(images, size, mask_corner, mask_text) is now "
                      "nero_lite.data.Preprocessing(size, mask_corner, mask_text).apply(images)", DeprecationWarning, stacklevel=2)
        return lambda images, size, mask_corner, mask_text: Preprocessing(size, mask_corner, mask_text).apply(images)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def current_versions() -> dict[str, str]:
    """The versions of nero_lite, torch and timm running now (recorded in every bundle)."""
    return {"nero_lite": __version__, "torch": torch.__version__, "timm": timm.__version__}


def reference_pool(images: ImageSet, per_class: int = POOL_PER_CLASS, seed: int = 0) -> ImageSet:
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

    def columns(self, classes: list[str], detector: str, threshold: float) -> dict[str, list]:
        """One list per column of ``flag``'s ``flags.csv`` but ``file`` (:data:`FLAG_COLUMNS`), a value per image:
        the ``detector`` score, ``threshold``, whether the score lies below it, the predicted and
        the nearest class (by name) and the top neurons as ``neuron:contribution`` joined by
        ``;`` (both empty strings without NERO)."""
        scores = self.scores[detector].tolist()
        n = len(scores)
        nearest, top = [""] * n, [""] * n
        if self.nearest is not None:
            nearest = [classes[k] for k in self.nearest.tolist()]
            top = [";".join(f"{j}:{c:.4g}" for j, c in zip(neurons, contributions))
                   for neurons, contributions in zip(self.top_neurons.tolist(), self.top_contributions.tolist())]
        return {"score": scores, "threshold": [threshold] * n, "flagged": [score < threshold for score in scores],
                "predicted": [classes[k] for k in self.predicted.tolist()], "nearest": nearest, "top_neurons": top}


@dataclass(kw_only=True)
class Bundle:
    """A classifier with its preprocessing, fitted detectors and thresholds, built by keyword.

    ``model`` is in eval mode; images are resized and masked as in training
    (``preprocessing``: :class:`~nero_lite.data.Preprocessing`) and normalised with
    :data:`~nero_lite.data.MEAN` and :data:`~nero_lite.data.STD`
    (:func:`~nero_lite.data.to_input`). ``thresholds`` maps a detector name to the score
    below which an image is flagged (``fit`` sets it at 95 % ID TPR on validation images).
    ``pool`` is the pool of reference images (:func:`reference_pool`, preprocessed here), or
    ``None``: :meth:`reports` then finds no reference patches. :meth:`save` writes the
    bundle into a folder and :meth:`load` (or :func:`load_bundle`) reads it back, as
    detectors do. Detector names are letters, digits, ``_`` and ``-``; thresholds name
    detectors of the bundle; the pool holds images of ``classes``.
    """

    model: nn.Module
    arch: str
    preprocessing: Preprocessing
    classes: list[str]
    detectors: dict[str, Detector]
    thresholds: dict[str, float] = field(default_factory=dict)
    train_fingerprint: str
    versions: dict[str, str] = field(default_factory=current_versions)
    info: dict = field(default_factory=dict)
    pool: ImageSet | None = None

    def __post_init__(self):
        bad = [name for name in self.detectors if not _NAME.fullmatch(name)]
        if bad:
            raise ValueError(f"detector names must be letters, digits, _ and -: {bad}")
        unknown = sorted(set(self.thresholds) - set(self.detectors))
        if unknown:
            raise ValueError(f"thresholds for detectors that are not in the bundle: {unknown}")
        self.classes, self.detectors, self.thresholds = list(self.classes), dict(self.detectors), dict(self.thresholds)
        if self.pool is not None:
            if self.pool.classes != self.classes:
                raise ValueError(f"the reference pool has classes {self.pool.classes}, the bundle {self.classes}")
            self.pool = ImageSet(self.preprocessing.apply(self.pool), self.pool.labels, self.pool.classes)
        self.model.eval()

    @property
    def size(self) -> int:
        """The side of the images the bundle takes (``preprocessing.size``)."""
        return self.preprocessing.size

    @property
    def references(self) -> ImageSet | None:
        """Deprecated name of ``pool`` (a reference meant four things; the pool of images is ``pool``)."""
        warnings.warn("Bundle.references is now Bundle.pool", DeprecationWarning, stacklevel=2)
        return self.pool

    def preprocess(self, images: ImageSet | torch.Tensor) -> torch.Tensor:
        """The uint8 images masked as the training images were (:meth:`~nero_lite.data.Preprocessing.apply`); they must be SIZE×SIZE."""
        try:
            return self.preprocessing.apply(images)
        except ValueError as error:
            raise ValueError(f"the bundle takes {self.size}×{self.size} images: {error}") from None

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

    def save(self, folder: str | os.PathLike) -> None:
        """Write the bundle to ``folder`` (created if needed; layout: the module docstring).

        Written as a set: every file goes into a staging folder inside ``folder`` first; a
        failure there leaves an earlier bundle in ``folder`` whole. Then the old ``bundle.json``
        is removed, the files are renamed into place and the new ``bundle.json`` comes last, so
        a write killed among the renames leaves a folder :meth:`load` calls incomplete,
        never a mix. Detectors must be fitted.
        """
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(dir=folder, prefix=".nero_lite-"))
        prep = self.preprocessing
        try:
            state = {key: value.detach().cpu().contiguous() for key, value in self.model.state_dict().items()}
            save_file(state, staging / _MODEL_FILE)
            entries = {}
            for name, detector in self.detectors.items():
                relative = f"{_DETECTOR_FOLDER}/{name}.safetensors"
                detector.save(staging / relative)
                entries[name] = {"file": relative, "sha256": sha256(staging / relative), "threshold": self.thresholds.get(name)}
            (staging / _DETECTOR_FOLDER).mkdir(exist_ok=True)
            if self.pool is not None:
                save_file({"images": self.pool.images.contiguous(), "labels": self.pool.labels.contiguous()},
                          staging / _REFERENCE_FILE)
            document = {
                "format_version": FORMAT_VERSION,
                "arch": self.arch,
                "classes": self.classes,
                "preprocessing": {"size": prep.size, "mask_corner": prep.mask_corner, "mask_text": prep.mask_text,
                                  "corner_fraction": CORNER_FRACTION, "text_margin_fraction": TEXT_MARGIN_FRACTION,
                                  "mean": list(MEAN), "std": list(STD)},
                "model": {"file": _MODEL_FILE, "sha256": sha256(staging / _MODEL_FILE)},
                "detectors": entries,
                **({"references": {"file": _REFERENCE_FILE, "sha256": sha256(staging / _REFERENCE_FILE),
                                   "count": len(self.pool)}} if self.pool is not None else {}),
                "train_fingerprint": self.train_fingerprint,
                "versions": self.versions,
                "info": self.info,
            }
            text = json.dumps(document, indent=1)
            (folder / BUNDLE_FILE).unlink(missing_ok=True)
            os.replace(staging / _MODEL_FILE, folder / _MODEL_FILE)
            shutil.rmtree(folder / _DETECTOR_FOLDER, ignore_errors=True)
            os.replace(staging / _DETECTOR_FOLDER, folder / _DETECTOR_FOLDER)
            if self.pool is not None:
                os.replace(staging / _REFERENCE_FILE, folder / _REFERENCE_FILE)
            else:  # an earlier bundle's pool must not pass for this one's
                (folder / _REFERENCE_FILE).unlink(missing_ok=True)
            atomic_write(folder / BUNDLE_FILE, lambda temp: Path(temp).write_text(text))
        finally:
            shutil.rmtree(staging, ignore_errors=True)

    @classmethod
    def load(cls, folder: str | os.PathLike) -> Bundle:
        """The bundle saved in ``folder`` by :meth:`save`, its model in eval mode on the CPU.

        Raises :class:`FileNotFoundError` when there is no such folder, and :class:`ValueError`
        (one line, naming the folder) when ``bundle.json`` is missing (an incomplete bundle),
        unreadable or of another format version, when a file it names is missing or fails its
        SHA-256, when the preprocessing differs from this nero_lite's, or when the model, a
        detector or the reference pool cannot be rebuilt. A bundle without a reference pool
        (written before ``fit`` kept one) loads with ``pool=None``.
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
        pool = _read_references(folder, pool_path, classes, size) if pool_path is not None else None
        preprocessing = Preprocessing(size, bool(prep["mask_corner"]), bool(prep["mask_text"]))
        return cls(model=model, arch=arch, preprocessing=preprocessing, classes=classes, detectors=fitted,
                   thresholds=thresholds, train_fingerprint=fingerprint, versions=dict(versions), info=dict(info), pool=pool)

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
        pool = self.pool
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
    """The bundle saved in ``folder`` (:meth:`Bundle.load`): ``nero_lite.load_bundle("bundle/")``."""
    return Bundle.load(folder)


def save_bundle(folder: str | os.PathLike, model: nn.Module, arch: str, size: int, mask_corner: bool, mask_text: bool,
                classes: list[str], detectors: dict[str, Detector], thresholds: dict[str, float], train_fingerprint: str,
                info: dict | None = None, references: ImageSet | None = None) -> Bundle:
    """Deprecated: build a :class:`Bundle` by keyword and call :meth:`Bundle.save`."""
    warnings.warn("save_bundle(folder, ...) is deprecated: use Bundle(...).save(folder)", DeprecationWarning, stacklevel=2)
    bundle = Bundle(model=model, arch=arch, preprocessing=Preprocessing(size, mask_corner, mask_text), classes=classes,
                    detectors=detectors, thresholds=thresholds, train_fingerprint=train_fingerprint, info=dict(info or {}),
                    pool=references)
    bundle.save(folder)
    return bundle
