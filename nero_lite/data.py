"""Data: the embedded synthetic endoscopy set, real-image loaders and shortcut masking.

One entry point, :func:`load`, returns a :class:`Splits` — ID train, ID test and OOD
test images (uint8 tensors in memory) with their class names:

* ``load()`` or ``load("synthetic")`` — the embedded default (:mod:`nero_lite.synthetic`),
  generated from a seed, no files needed.
* ``load("hyperkvasir")``, ``load("kvasir")``, ``load("gastrovision")`` — the published
  folder layouts (see :data:`DATASETS` for the ID/OOD class split of each). The folder
  is ``root=`` or, when that is not given, ``$NERO_LITE_DATA/<subfolder>`` (e.g.
  ``NERO_LITE_DATA=../shared/data`` finds ``../shared/data/hyperkvasir-lowergi``).
* ``load("path/to/folder", id_classes=[...])`` — any folder in ImageFolder layout (one
  sub-folder per class), or one with ``id/`` and ``ood/`` sub-folders;
  :func:`load_folders` takes an ID folder and an OOD folder directly.
* :func:`load_segmented` — polyp images with pixel masks of the polyp (Kvasir-SEG, in
  the ``kvasir-seg-polyps`` layout): ground truth for where an explanation should
  point, and, through ``load(..., ood_sets=...)``, a larger polyp OOD class.

Real images are read with PIL, converted to RGB, center-cropped to a square and
resized (bicubic) to ``size``; the ID classes are split into train and test,
stratified and seeded. Loaded sets are cached under :func:`~nero_lite.cache.cache_dir`.

Environment variables:

``NERO_LITE_DATA``
    Folder holding the real data sets under their conventional sub-folder names.
``NERO_LITE_CACHE``
    Cache folder (default ``~/.cache/nero_lite``).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
import torch
from PIL import Image, ImageOps, UnidentifiedImageError
from tqdm import tqdm

from . import synthetic
from .cache import cache_dir, read_entry, write_entry

__all__ = [
    "CORNER_FRACTION",
    "DATASETS",
    "DATA_VERSION",
    "MEAN",
    "STD",
    "TEXT_MARGIN_FRACTION",
    "ImageSet",
    "RealDataset",
    "Splits",
    "cache_dir",
    "corner_box_present",
    "corner_region",
    "data_root",
    "image_tensor",
    "load",
    "load_folders",
    "load_segmented",
    "SegmentedImages",
    "mask_shortcut",
    "class_folders",
    "read_image",
    "read_imagefolder",
    "stratified_split",
    "to_input",
]

#: Per-channel mean subtracted by :func:`to_input` (ImageNet's RGB statistics, used by every model here).
MEAN = (0.485, 0.456, 0.406)
#: Per-channel standard deviation divided out by :func:`to_input` (ImageNet's).
STD = (0.229, 0.224, 0.225)

DATA_VERSION = "3"  # bump when generation or loading changes, to invalidate caches

#: Side of the lower-left square blacked out by :func:`mask_shortcut`, as a fraction of
#: the image side. Measured on the 585 HyperKvasir images of ``hyperkvasir-lowergi``:
#: the black box spans columns 0 to 0.31 and rows 0.68 to 1.0 of the side (49×51 px
#: of 160) in 97 % of the images that have it; 0.35 covers it with a margin.
CORNER_FRACTION = 0.35
#: Width of the left strip holding HyperKvasir's burned-in on-screen text (patient
#: data, timings, a row of dots), as a fraction of the side: bright text pixels end at
#: 0.14 of the side.
TEXT_MARGIN_FRACTION = 0.15

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")
_PROGRESS_ABOVE = 300  # show a progress bar when reading more files than this


# --------------------------------------------------------------------------- settings
def data_root() -> Path | None:
    """The folder named by ``NERO_LITE_DATA`` (real data sets live below it), or ``None``."""
    value = os.environ.get("NERO_LITE_DATA", "").strip()
    return Path(value).expanduser() if value else None


# --------------------------------------------------------------------------- containers
def to_input(images: torch.Tensor, device: str | torch.device | None = None) -> torch.Tensor:
    """Turn uint8 images (``N×3×H×W`` or ``3×H×W``) into normalised float input on ``device``.

    Scales to [0, 1], then subtracts :data:`MEAN` and divides by :data:`STD` per channel
    (the ImageNet statistics, used by every model in the package).
    """
    if images.dtype != torch.uint8:
        raise TypeError(f"expected uint8 images, got {images.dtype}")
    x = images.to(device=device).float().div_(255)
    mean = torch.tensor(MEAN, device=x.device).view(3, 1, 1)
    std = torch.tensor(STD, device=x.device).view(3, 1, 1)
    return (x - mean) / std


def image_tensor(images: ImageSet | torch.Tensor) -> torch.Tensor:
    """The uint8 ``N×3×H×W`` tensor of an :class:`ImageSet` or of such a tensor; anything else is refused."""
    images = images.images if isinstance(images, ImageSet) else images
    if not isinstance(images, torch.Tensor) or images.dtype != torch.uint8 or images.ndim != 4 or images.shape[1] != 3:
        found = f"{images.dtype} {tuple(images.shape)}" if isinstance(images, torch.Tensor) else type(images).__name__
        raise TypeError(f"images must be an ImageSet or a uint8 N×3×H×W tensor, got {found}")
    return images


@dataclass
class ImageSet:
    """Images of one split in memory, all the same size.

    Attributes
    ----------
    images : Tensor
        uint8, ``N×3×H×W``.
    labels : Tensor
        int64, ``N``; indices into ``classes``.
    classes : list of str
        Class names.
    files : list of str or None
        Source file per image (``None`` for generated images).
    """

    images: torch.Tensor
    labels: torch.Tensor
    classes: list[str]
    files: list[str] | None = None

    def __post_init__(self):
        if self.images.dtype != torch.uint8 or self.images.ndim != 4 or self.images.shape[1] != 3:
            raise ValueError(f"images must be uint8 N×3×H×W, got {self.images.dtype} {tuple(self.images.shape)}")
        self.labels = torch.as_tensor(self.labels, dtype=torch.long)
        if len(self.labels) != len(self.images):
            raise ValueError(f"{len(self.images)} images but {len(self.labels)} labels")
        if self.files is not None and len(self.files) != len(self.images):
            raise ValueError(f"{len(self.images)} images but {len(self.files)} file names")
        self.classes = list(self.classes)

    def __len__(self) -> int:
        return len(self.images)

    def subset(self, index) -> ImageSet:
        """The images at ``index`` (a slice, a boolean mask or integer indices)."""
        if isinstance(index, slice):
            index = torch.arange(len(self))[index]
        index = torch.as_tensor(index)
        if index.dtype == torch.bool:
            index = torch.nonzero(index).flatten()
        index = index.long()
        files = [self.files[i] for i in index.tolist()] if self.files is not None else None
        return ImageSet(self.images[index], self.labels[index], self.classes, files)

    def counts(self) -> dict[str, int]:
        """Number of images per class."""
        found = torch.bincount(self.labels, minlength=len(self.classes)).tolist()
        return dict(zip(self.classes, found))


@dataclass
class Splits:
    """The three sets an OOD experiment needs.

    Attributes
    ----------
    name : str
        Data set name (``"synthetic"``, ``"hyperkvasir"``, or the folder name).
    train, test : ImageSet
        ID training and test images (same classes).
    ood : ImageSet
        OOD test images; its labels index ``ood.classes``.
    ood_kind : dict
        ``"near"`` or ``"far"`` per OOD class.
    skipped : dict
        Image files found but not loaded, file → reason (``"unreadable"``, or ``"not in a
        class folder"`` for an image lying beside the class folders); empty for generated data.
    """

    name: str
    train: ImageSet
    test: ImageSet
    ood: ImageSet
    ood_kind: dict[str, str]
    skipped: dict[str, str] = dataclasses.field(default_factory=dict)

    @property
    def id_classes(self) -> list[str]:
        """Names of the in-distribution classes."""
        return self.train.classes

    @property
    def ood_classes(self) -> list[str]:
        """Names of the OOD classes."""
        return self.ood.classes

    def summary(self) -> pd.DataFrame:
        """Image counts per split and class, with the kind (``ID``, ``near``, ``far``)."""
        rows = []
        for split, imageset in (("train", self.train), ("test", self.test), ("ood", self.ood)):
            for name, count in imageset.counts().items():
                kind = "ID" if split != "ood" else self.ood_kind.get(name, "near")
                rows.append({"split": split, "class": name, "kind": kind, "images": count})
        return pd.DataFrame(rows)


# --------------------------------------------------------------------------- shortcut masking
def mask_shortcut(
    images: torch.Tensor, corner: float = CORNER_FRACTION, text_margin: float = 0.0
) -> torch.Tensor:
    """Black out the lower-left corner (and optionally the left text margin) of images.

    HyperKvasir's images carry a black box in the lower-left corner whose presence
    depends on the class; blacking the same region out in every image makes it
    constant, so no model can use it.

    Parameters
    ----------
    images : Tensor
        ``…×3×H×W`` images (any dtype); not modified.
    corner : float
        Side of the blacked-out lower-left rectangle as a fraction of the height and
        width (:data:`CORNER_FRACTION` covers HyperKvasir's box).
    text_margin : float
        Width of a full-height left strip to black out as well, as a fraction of the
        width (:data:`TEXT_MARGIN_FRACTION` covers HyperKvasir's on-screen text); 0 = none.

    Returns
    -------
    Tensor
        A masked copy.
    """
    height, width = images.shape[-2:]
    masked = images.clone()
    if corner > 0:
        masked[..., height - math.ceil(corner * height) :, : math.ceil(corner * width)] = 0
    if text_margin > 0:
        masked[..., :, : math.ceil(text_margin * width)] = 0
    return masked


def corner_region(size: int, corner: float = CORNER_FRACTION) -> torch.Tensor:
    """The ``size×size`` boolean mask of the lower-left square :func:`mask_shortcut` blacks out."""
    region = torch.zeros(size, size, dtype=torch.bool)
    side = math.ceil(corner * size)
    region[size - side :, :side] = True
    return region


def corner_box_present(images: torch.Tensor, darkness: int = 20) -> torch.Tensor:
    """Whether each uint8 image carries HyperKvasir's black lower-left box.

    The box spans columns 0–0.31 and rows 0.68–1.0 of the side; an image has it when the
    brightest channel, averaged over the box's interior (rows 0.74–0.96, columns
    0.03–0.27), stays below ``darkness`` (of 255). On ``hyperkvasir-lowergi`` this finds
    the box in 54 % of the polyp images and in 90–100 % of every other class, at 64 and
    160 px: used as an OOD score on its own, the box already separates polyps from the
    routine classes.

    Returns
    -------
    Tensor
        bool, one value per image (``N``).
    """
    if images.dtype != torch.uint8 or images.ndim != 4:
        raise ValueError(f"expected uint8 N×3×H×W images, got {images.dtype} {tuple(images.shape)}")
    height, width = images.shape[-2:]
    interior = images[..., int(0.74 * height) : int(0.96 * height), int(0.03 * width) : int(0.27 * width)]
    return interior.amax(dim=-3).float().mean(dim=(-2, -1)) < darkness


def _with_ood_sets(splits: Splits, ood_sets: dict[str, torch.Tensor] | None) -> Splits:
    """``splits`` with the OOD classes of ``ood_sets`` added, or replaced where the name exists."""
    if not ood_sets:
        return splits
    ood = splits.ood
    size = tuple(ood.images.shape[-2:])
    for name, images in ood_sets.items():
        if not isinstance(images, torch.Tensor) or images.dtype != torch.uint8 or images.ndim != 4 or tuple(images.shape[1:]) != (3, *size):
            found = f"{images.dtype} {tuple(images.shape)}" if isinstance(images, torch.Tensor) else type(images).__name__
            raise ValueError(f"ood_sets[{name!r}] must be uint8 images N×3×{size[0]}×{size[1]}, got {found}")
        if len(images) == 0:
            raise ValueError(f"ood_sets[{name!r}] holds no images")
    classes = ood.classes + [name for name in ood_sets if name not in ood.classes]
    kept = ood.subset(torch.tensor([ood.classes[label] not in ood_sets for label in ood.labels.tolist()], dtype=torch.bool))
    images = [kept.images, *ood_sets.values()]
    labels = [kept.labels, *(torch.full((len(v),), classes.index(n), dtype=torch.long) for n, v in ood_sets.items())]
    files = None
    if kept.files is not None:
        files = kept.files + [f"{name}[{i}]" for name, v in ood_sets.items() for i in range(len(v))]
    new = ImageSet(torch.cat(images), torch.cat(labels), classes, files)
    kinds = {c: splits.ood_kind.get(c, "near") for c in classes}
    return dataclasses.replace(splits, ood=new, ood_kind=kinds)


def _masked(splits: Splits, mask_corner: bool, mask_text: bool) -> Splits:
    """Apply :func:`mask_shortcut` identically to the three sets (unchanged when both are off)."""
    if not (mask_corner or mask_text):
        return splits
    options = {
        "corner": CORNER_FRACTION if mask_corner else 0.0,
        "text_margin": TEXT_MARGIN_FRACTION if mask_text else 0.0,
    }
    sets = {
        key: dataclasses.replace(getattr(splits, key), images=mask_shortcut(getattr(splits, key).images, **options))
        for key in ("train", "test", "ood")
    }
    return dataclasses.replace(splits, **sets)


# --------------------------------------------------------------------------- real data sets
@dataclass(frozen=True)
class RealDataset:
    """A published data set: its conventional folder name and its ID/OOD class split."""

    folder: str
    id_classes: tuple[str, ...]
    ood_kind: dict[str, str]
    description: str

    @property
    def ood_classes(self) -> tuple[str, ...]:
        """The OOD classes, in a fixed order."""
        return tuple(self.ood_kind)


#: The real data sets :func:`load` knows by name.
#:
#: * ``hyperkvasir`` — the five lower-GI classes of HyperKvasir's labelled images
#:   (Borgli et al., Sci. Data 2020), as in ``hyperkvasir-lowergi`` (prepared with
#:   ``data_scripts/prepare_hyperkvasir.py``): the three routine classes are ID; polyps
#:   (an unseen finding) and impacted stool (shares colour and texture with bbps-0-1)
#:   are near-OOD.
#: * ``kvasir`` — Kvasir-v2 (Pogorelov et al., MMSys 2017): the three normal landmarks
#:   are ID; the findings are OOD. The two dyed classes are marked far-OOD (indigo-carmine
#:   blue never appears in the ID classes), the other findings near-OOD.
#: * ``gastrovision`` — GastroVision (Jha et al., 2023), 27 classes. ID: the 10 normal
#:   or anatomical-landmark classes plus "Accessory tools" (instruments seen during
#:   routine examinations, not a finding) — the 11 most frequent non-pathological classes,
#:   5,996 of the 8,000 images. OOD: the 16 pathological-finding and polyp-removal
#:   classes; the two dyed ones far-OOD, the rest near-OOD. The NERO paper uses 11 ID
#:   classes but does not publish which; this is our choice.
DATASETS: dict[str, RealDataset] = {
    "hyperkvasir": RealDataset(
        folder="hyperkvasir-lowergi",
        id_classes=("cecum", "bbps-2-3", "bbps-0-1"),
        ood_kind={"polyps": "near", "impacted-stool": "near"},
        description="HyperKvasir lower-GI labelled images (five classes)",
    ),
    "kvasir": RealDataset(
        folder="kvasir-dataset-v2",
        id_classes=("normal-cecum", "normal-pylorus", "normal-z-line"),
        ood_kind={
            "dyed-lifted-polyps": "far",
            "dyed-resection-margins": "far",
            "esophagitis": "near",
            "polyps": "near",
            "ulcerative-colitis": "near",
        },
        description="Kvasir v2 (eight classes, 1,000 images each)",
    ),
    "gastrovision": RealDataset(
        folder="gastrovision",
        id_classes=(
            "Normal mucosa and vascular pattern in the large bowel",
            "Accessory tools",
            "Normal stomach",
            "Small bowel_terminal ileum",
            "Pylorus",
            "Gastroesophageal_junction_normal z-line",
            "Duodenal bulb",
            "Ileocecal valve",
            "Normal esophagus",
            "Cecum",
            "Retroflex rectum",
        ),
        ood_kind={
            "Colon polyps": "near",
            "Dyed-resection-margins": "far",
            "Blood in lumen": "near",
            "Dyed-lifted-polyps": "far",
            "Colorectal cancer": "near",
            "Esophagitis": "near",
            "Barrett's esophagus": "near",
            "Resected polyps": "near",
            "Gastric polyps": "near",
            "Mucosal inflammation large bowel": "near",
            "Colon diverticula": "near",
            "Resection margins": "near",
            "Angiectasia": "near",
            "Erythema": "near",
            "Esophageal varices": "near",
            "Ulcer": "near",
        },
        description="GastroVision (27 classes, 8,000 images)",
    ),
}


def _image_files(folder: Path) -> list[Path]:
    """Image files directly inside ``folder`` (by extension, hidden files skipped), sorted."""
    return sorted(
        p
        for p in folder.iterdir()
        if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in IMAGE_EXTENSIONS
    )


def class_folders(root: Path) -> list[str]:
    """Names of the class sub-folders of an ImageFolder root, sorted."""
    return sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))


def _check_folder(root: Path) -> Path:
    if not root.is_dir():
        raise FileNotFoundError(f"data folder not found: {root}")
    return root


def _listing(root: Path, classes: Sequence[str]) -> dict[str, list[Path]]:
    """Image files per class, with clear errors for a missing or empty class folder."""
    _check_folder(root)
    available = class_folders(root)
    files = {}
    for name in classes:
        if name not in available:
            found = ", ".join(available) or "none"
            raise FileNotFoundError(f"class folder {name!r} not found in {root} (found: {found})")
        files[name] = _image_files(root / name)
        if not files[name]:
            raise ValueError(f"class {name!r} has no image files in {root / name}")
    return files


def _rgb8(image: Image.Image) -> Image.Image:
    """8-bit RGB. 16-bit and 32-bit integer or float images (``I;16``, ``I``, ``F``: common in
    medical imaging) are rescaled from their own minimum and maximum to 0–255 (a constant image
    becomes black), where a plain conversion would saturate them to white or black."""
    if image.mode.startswith("I") or image.mode == "F":
        values = np.asarray(image, dtype=np.float64)
        low, high = values.min(), values.max()
        scaled = (values - low) / (high - low) * 255 if high > low else np.zeros_like(values)
        image = Image.fromarray(np.round(scaled).astype(np.uint8), "L")
    return image.convert("RGB")


def read_image(path: str | os.PathLike, size: int) -> torch.Tensor:
    """One image file as uint8 ``3×size×size``, read as every loader here reads it: turned
    upright by its EXIF orientation, made 8-bit RGB (16-bit and float images rescaled from
    their own range), center-cropped to a square, resized (bicubic)."""
    with Image.open(path) as image:
        image = ImageOps.fit(_rgb8(ImageOps.exif_transpose(image)), (size, size), method=Image.Resampling.BICUBIC)
    return torch.from_numpy(np.array(image)).permute(2, 0, 1).contiguous()


def _warn_skipped(skipped: dict[str, str], root: Path) -> None:
    """One warning that counts the skipped files and names the first few."""
    if skipped:
        names = ", ".join(f"{Path(file).name} ({reason})" for file, reason in list(skipped.items())[:3])
        more = f" and {len(skipped) - 3} more" if len(skipped) > 3 else ""
        warnings.warn(f"skipped {len(skipped)} image file(s) under {root}: {names}{more}", stacklevel=4)


def _read(listing: dict[str, list[Path]], root: Path, size: int, progress: bool, skipped: dict | None = None) -> ImageSet:
    """Read the listed files into an :class:`ImageSet`, skipping unreadable files.

    The skipped files go into ``skipped`` (file → ``"unreadable"``) when it is given;
    otherwise one warning names them.
    """
    jobs = [(k, path) for k, paths in enumerate(listing.values()) for path in paths]
    images, labels, files, failed = [], [], [], []
    bar = tqdm(jobs, desc=f"reading {root.name}", unit="img", disable=not progress or len(jobs) <= _PROGRESS_ABOVE)
    for label, path in bar:
        try:
            images.append(read_image(path, size))
        except (OSError, UnidentifiedImageError, ValueError, Image.DecompressionBombError):
            failed.append(path)
            continue
        labels.append(label)
        files.append(str(path))
    unreadable = {str(path): "unreadable" for path in failed}
    if skipped is None:
        _warn_skipped(unreadable, root)
    else:
        skipped.update(unreadable)
    classes = list(listing)
    found = torch.bincount(torch.tensor(labels, dtype=torch.long), minlength=len(classes))
    empty = [name for name, count in zip(classes, found.tolist()) if count == 0]
    if empty:
        raise ValueError(f"no readable images in class folder(s) {empty} under {root}")
    return ImageSet(torch.stack(images), torch.tensor(labels), classes, files)


def read_imagefolder(
    root: str | os.PathLike, classes: Sequence[str] | None = None, *, size: int = 128, progress: bool = True
) -> ImageSet:
    """Read a folder in ImageFolder layout (one sub-folder per class) into memory.

    Parameters
    ----------
    root : path
        The folder.
    classes : list of str, optional
        Class sub-folders to read, in this label order; default all, sorted.
    size : int
        Images are center-cropped to a square and resized to ``size×size``.
    progress : bool
        Show a progress bar when reading more than a few hundred files.

    Raises
    ------
    FileNotFoundError
        The folder or a requested class folder does not exist.
    ValueError
        A class folder holds no (readable) image.
    """
    root = _check_folder(Path(root))
    classes = list(classes) if classes is not None else class_folders(root)
    if not classes:
        raise ValueError(f"no class sub-folders in {root} (expected ImageFolder layout: {root}/<class>/<image>)")
    return _read(_listing(root, classes), root, size, progress)


def stratified_split(labels: torch.Tensor, train_fraction: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Seeded per-class split of the indices of ``labels`` into a first part (``train_fraction``
    of each class, rounded) and the rest, both sorted; each class keeps at least one index
    on each side, so it needs two."""
    if not 0 < train_fraction < 1:
        raise ValueError(f"train_fraction must lie in (0, 1), got {train_fraction}")
    rng = np.random.default_rng(seed)
    train, test = [], []
    for label in torch.unique(labels).tolist():
        index = rng.permutation(torch.nonzero(labels == label).flatten().numpy())
        if len(index) < 2:
            raise ValueError(f"class {label} has {len(index)} image(s); a train/test split needs at least 2")
        cut = min(max(round(train_fraction * len(index)), 1), len(index) - 1)
        train.append(index[:cut])
        test.append(index[cut:])
    return torch.from_numpy(np.sort(np.concatenate(train))), torch.from_numpy(np.sort(np.concatenate(test)))


@dataclass
class SegmentedImages:
    """Images with a pixel mask of their finding each (e.g. Kvasir-SEG's polyps).

    Attributes
    ----------
    images : Tensor
        uint8, ``N×3×H×W``.
    masks : Tensor
        bool, ``N×H×W``: the finding's pixels.
    ids : list of str
        Image identifiers (file stems).
    shared : Tensor
        bool, ``N``: the same picture is also in ``hyperkvasir-lowergi/polyps`` (from the
        folder's manifest; all ``False`` without one).
    """

    images: torch.Tensor
    masks: torch.Tensor
    ids: list[str]
    shared: torch.Tensor

    def __len__(self) -> int:
        return len(self.images)


#: Folder name of the Kvasir-SEG polyps below ``NERO_LITE_DATA`` (prepared with
#: ``data_scripts/prepare_kvasir_seg.py``): ``images/<id>.jpg``, ``masks/<id>.png``, ``manifest.csv``.
SEGMENTED_FOLDER = "kvasir-seg-polyps"


def _read_mask(path: Path, size: int) -> torch.Tensor:
    """A binary mask as bool ``size×size``: thresholded at half intensity after the images' crop, resized nearest."""
    with Image.open(path) as mask:
        mask = ImageOps.fit(mask.convert("L"), (size, size), method=Image.Resampling.NEAREST)
    return torch.from_numpy(np.array(mask) >= 128)


def load_segmented(root: str | os.PathLike | None = None, *, size: int = 64, progress: bool = True) -> SegmentedImages:
    """Read polyp images and their masks (Kvasir-SEG; Jha et al., MMM 2020) at ``size×size``.

    ``root`` is the ``kvasir-seg-polyps`` folder, by default ``$NERO_LITE_DATA/kvasir-seg-polyps``.
    Images are read as :func:`load` reads real images (RGB, center-cropped, resized
    bicubic); masks get the same crop, resized nearest-neighbour, and are ``True`` where
    the mask is at least half intensity. Results on these images must cite Jha et al.,
    "Kvasir-SEG: A Segmented Polyp Dataset", MultiMedia Modeling 2020.

    Raises
    ------
    FileNotFoundError
        No such folder, or it lacks ``images/`` or ``masks/``, or an image has no mask.
    """
    if root is None:
        base = data_root()
        if base is None:
            raise FileNotFoundError(
                f"no folder for the segmented polyps: pass root=... or set NERO_LITE_DATA to the folder holding "
                f"'{SEGMENTED_FOLDER}/' (prepare it with data_scripts/prepare_kvasir_seg.py)"
            )
        root = base / SEGMENTED_FOLDER
    root = _check_folder(Path(root).expanduser())
    for sub in ("images", "masks"):
        _check_folder(root / sub)
    images = _image_files(root / "images")
    if not images:
        raise FileNotFoundError(f"no images in {root / 'images'}")
    masks = {p.stem: p for p in _image_files(root / "masks")}
    missing = [p.name for p in images if p.stem not in masks]
    if missing:
        raise FileNotFoundError(f"{len(missing)} image(s) in {root / 'images'} have no mask in {root / 'masks'} (first: {missing[0]})")
    shared_ids: set[str] = set()
    if (root / "manifest.csv").is_file():
        manifest = pd.read_csv(root / "manifest.csv", dtype=str).fillna("")
        if {"id", "hyperkvasir_polyp"} <= set(manifest.columns):
            shared_ids = set(manifest.id[manifest.hyperkvasir_polyp == "shared"])
    bar = tqdm(images, desc=f"reading {root.name}", unit="img", disable=not progress or len(images) <= _PROGRESS_ABOVE)
    pixels = torch.stack([read_image(path, size) for path in bar])
    ids = [p.stem for p in images]
    return SegmentedImages(
        pixels,
        torch.stack([_read_mask(masks[i], size) for i in ids]),
        ids,
        torch.tensor([i in shared_ids for i in ids], dtype=torch.bool),
    )


# --------------------------------------------------------------------------- caching
def _listing_fingerprint(listing: dict[str, list[Path]]) -> str:
    """Hash of the listed files' names, sizes and modification times."""
    digest = hashlib.sha256()
    for name, paths in listing.items():
        for path in paths:
            stat = path.stat()
            digest.update(f"{name}/{path.name}:{stat.st_size}:{stat.st_mtime_ns};".encode())
    return digest.hexdigest()


def _cache_path(kind: str, key: dict) -> Path:
    text = json.dumps({"data_version": DATA_VERSION, **key}, sort_keys=True, default=str)
    slug = "".join(c if c.isalnum() or c in "-_" else "-" for c in kind)[:40]
    return cache_dir() / f"data-{slug}-{hashlib.sha256(text.encode()).hexdigest()[:16]}.pt"


def _save(splits: Splits, path: Path) -> None:
    """Write tensors and names (no pickled objects) as a checksummed cache entry."""
    payload = {"name": splits.name, "ood_kind": dict(splits.ood_kind), "skipped": dict(splits.skipped)}
    for key in ("train", "test", "ood"):
        imageset = getattr(splits, key)
        payload[key] = {"images": imageset.images, "labels": imageset.labels, "classes": imageset.classes}
        if imageset.files is not None:
            payload[key]["files"] = imageset.files
    write_entry(path, lambda temp: torch.save(payload, temp))


def _restore(path: Path) -> Splits:
    payload = torch.load(path, weights_only=True)
    sets = {key: ImageSet(**payload[key]) for key in ("train", "test", "ood")}
    return Splits(payload["name"], ood_kind=payload["ood_kind"], skipped=payload["skipped"], **sets)


def _cached(kind: str, key: dict, build, cache: bool) -> Splits:
    """``build()`` once, then reuse its result from the cache (unless ``cache`` is off).

    A damaged entry is discarded with a warning and rebuilt (:func:`nero_lite.cache.read_entry`).
    """
    if not cache:
        return build()
    path = _cache_path(kind, key)
    entry = read_entry(path, _restore)
    if entry is not None:
        return entry[0]
    splits = build()
    _save(splits, path)
    return splits


# --------------------------------------------------------------------------- loaders
def _synthetic(size: int, seed: int, config: synthetic.SyntheticConfig, progress: bool) -> Splits:
    sets = {
        key: ImageSet(images, labels, list(synthetic.ID_CLASSES if key != "ood" else synthetic.OOD_CLASSES))
        for key, (images, labels) in synthetic.generate(config, size=size, seed=seed, progress=progress).items()
    }
    return Splits("synthetic", ood_kind=dict(synthetic.OOD_KIND), **sets)


def _relabel(imageset: ImageSet, classes: list[str]) -> ImageSet:
    """The same images with labels indexing ``classes`` (a superset of ``imageset.classes``)."""
    mapping = torch.tensor([classes.index(name) for name in imageset.classes])
    return ImageSet(imageset.images, mapping[imageset.labels], classes, imageset.files)


def _split_folder(
    name: str,
    root: Path,
    id_classes: Sequence[str],
    ood_classes: Sequence[str],
    ood_kind: dict[str, str],
    *,
    size: int,
    seed: int,
    train_fraction: float,
    cache: bool,
    progress: bool,
    ood_root: Path | None = None,
    test_root: Path | None = None,
) -> Splits:
    """Read ID classes (split into train/test, or a separate test folder) and OOD classes."""
    if not id_classes:
        raise ValueError(f"no ID classes given for {root}")
    if not ood_classes:
        raise ValueError(f"no OOD classes given for {ood_root or root}")
    overlap = set(id_classes) & set(ood_classes) if ood_root is None else set()
    if overlap:
        raise ValueError(f"classes both ID and OOD: {sorted(overlap)}")
    listings = {"id": _listing(root, id_classes), "ood": _listing(ood_root or root, ood_classes)}
    if test_root is not None:
        test_classes = class_folders(_check_folder(test_root))
        missing = sorted(set(test_classes) - set(id_classes))
        if missing:
            raise ValueError(f"test class folder(s) {missing} in {test_root} are not among the training classes")
        if not test_classes:
            raise ValueError(f"no class sub-folders in {test_root} (expected layout: {test_root}/<class>/<image>)")
        listings["test"] = _listing(test_root, [c for c in id_classes if c in test_classes])
    key = {
        "name": name,
        "roots": [str(p.resolve()) for p in (root, ood_root, test_root) if p is not None],
        "files": {part: _listing_fingerprint(listing) for part, listing in listings.items()},
        "id": list(id_classes),
        "ood": list(ood_classes),
        "size": size,
        "seed": seed,
        "train_fraction": train_fraction,
    }

    loose = {
        str(path): "not in a class folder"
        for folder in dict.fromkeys(p for p in (root, ood_root, test_root) if p is not None)
        for path in _image_files(folder)
    }
    key["loose"] = sorted(loose)

    def build() -> Splits:
        skipped = dict(loose)
        ood = _read(listings["ood"], ood_root or root, size, progress, skipped)
        ids = _read(listings["id"], root, size, progress, skipped)
        if test_root is None:
            train_index, test_index = stratified_split(ids.labels, train_fraction, seed)
            train, test = ids.subset(train_index), ids.subset(test_index)
        else:
            train = ids
            test = _relabel(_read(listings["test"], test_root, size, progress, skipped), list(id_classes))
        kinds = {c: ood_kind.get(c, "near") for c in ood_classes}
        return Splits(name, train, test, ood, kinds, skipped)

    splits = _cached(name, key, build, cache)
    _warn_skipped(splits.skipped, root)  # on every run, from the cache too
    return splits


def _dataset_folder(name: str, root: str | os.PathLike | None) -> Path:
    """The folder of a named data set: ``root``, else below ``NERO_LITE_DATA``."""
    spec = DATASETS[name]
    if root is not None:
        return _check_folder(Path(root).expanduser())
    base = data_root()
    if base is None:
        raise FileNotFoundError(
            f"no folder for {name!r}: pass root=... or set NERO_LITE_DATA to the folder holding '{spec.folder}/' "
            f"(prepare it with the scripts in data_scripts/)"
        )
    for candidate in (base / spec.folder, base):
        if (candidate / spec.id_classes[0]).is_dir():
            return candidate
    raise FileNotFoundError(f"{spec.description} not found: expected {base / spec.folder} (NERO_LITE_DATA={base})")


def load(
    name_or_path: str | os.PathLike | None = None,
    *,
    size: int | None = None,
    seed: int = 0,
    root: str | os.PathLike | None = None,
    id_classes: Sequence[str] | None = None,
    ood_classes: Sequence[str] | None = None,
    train_fraction: float = 2 / 3,
    mask_corner: bool = False,
    mask_text: bool = False,
    ood_sets: dict[str, torch.Tensor] | None = None,
    cache: bool = True,
    config: synthetic.SyntheticConfig | None = None,
    progress: bool = True,
) -> Splits:
    """Load ID train, ID test and OOD test images.

    Parameters
    ----------
    name_or_path : str or path, optional
        Default: the ``NERO_LITE_DATASET`` environment variable, else ``"synthetic"``.
        ``"synthetic"``, ``"hyperkvasir"``, ``"kvasir"``, ``"gastrovision"``,
        or a folder: ImageFolder layout with ``id_classes`` given, or with ``id/`` and
        ``ood/`` sub-folders in ImageFolder layout.
    size : int, optional
        Image side in pixels (default 64 for synthetic, 128 for real images).
    seed : int
        Seed of the synthetic generator and of the train/test split.
    root : path, optional
        Folder of a named real data set (default ``$NERO_LITE_DATA/<subfolder>``).
    id_classes, ood_classes : list of str, optional
        Override the class split of a named data set, or choose it for a folder
        (``ood_classes`` defaults to every other class folder). A folder's OOD
        classes are marked ``"near"`` in ``Splits.ood_kind``.
    train_fraction : float
        Fraction of each ID class used for training (real images).
    mask_corner, mask_text : bool
        Black out the lower-left corner / the left text margin in all three sets
        (:func:`mask_shortcut`), to remove HyperKvasir's class-correlated black box
        and on-screen text.
    ood_sets : dict, optional
        OOD classes to add, or to replace where the name exists, as uint8
        ``N×3×size×size`` images in the order they are given, e.g.
        ``{"polyps": load_segmented(size=64).images}`` for the 795 Kvasir-SEG polyps in
        place of HyperKvasir's 120 (119 of which are among them). They are masked with
        the rest.
    cache : bool
        Reuse (and store) the loaded tensors under :func:`~nero_lite.cache.cache_dir`.
    config : SyntheticConfig, optional
        Counts and difficulty of the synthetic set (default
        :data:`nero_lite.synthetic.DEFAULT_CONFIG`).
    progress : bool
        Show progress bars.

    Returns
    -------
    Splits
    """
    if name_or_path is None:
        name_or_path = os.environ.get("NERO_LITE_DATASET", "synthetic")
    name = str(name_or_path)
    if name == "synthetic":
        if id_classes is not None or ood_classes is not None or root is not None:
            raise ValueError("the synthetic set has fixed classes and no folder: drop id_classes, ood_classes and root")
        config = config or synthetic.DEFAULT_CONFIG
        size = size or 64
        key = {"config": dataclasses.asdict(config), "size": size, "seed": seed}
        splits = _cached("synthetic", key, lambda: _synthetic(size, seed, config, progress), cache)
        return _masked(_with_ood_sets(splits, ood_sets), mask_corner, mask_text)
    if config is not None:
        raise ValueError("config= applies to the synthetic set only")
    options = dict(size=size or 128, seed=seed, train_fraction=train_fraction, cache=cache, progress=progress)
    if name in DATASETS:
        spec = DATASETS[name]
        folder = _dataset_folder(name, root)
        id_classes = list(id_classes or spec.id_classes)
        ood_classes = list(ood_classes or [c for c in spec.ood_classes if c not in id_classes])
        splits = _split_folder(name, folder, id_classes, ood_classes, spec.ood_kind, **options)
        return _masked(_with_ood_sets(splits, ood_sets), mask_corner, mask_text)
    folder = Path(name_or_path).expanduser()
    if not folder.is_dir():
        raise FileNotFoundError(
            f"{name!r} is neither a known data set ({', '.join(['synthetic', *DATASETS])}) nor an existing folder"
        )
    if id_classes is None:
        if (folder / "id").is_dir() and (folder / "ood").is_dir():
            splits = load_folders(folder / "id", folder / "ood", **options)
            return _masked(_with_ood_sets(splits, ood_sets), mask_corner, mask_text)
        raise ValueError(
            f"{folder}: give id_classes=[...] or arrange the folder as {folder}/id/<class> and {folder}/ood/<class>"
        )
    ood_classes = list(ood_classes or [c for c in class_folders(folder) if c not in id_classes])
    splits = _split_folder(folder.name, folder, list(id_classes), ood_classes, {}, **options)
    return _masked(_with_ood_sets(splits, ood_sets), mask_corner, mask_text)


def load_folders(
    id_dir: str | os.PathLike,
    ood_dir: str | os.PathLike,
    *,
    test_dir: str | os.PathLike | None = None,
    size: int = 128,
    seed: int = 0,
    train_fraction: float = 2 / 3,
    mask_corner: bool = False,
    mask_text: bool = False,
    cache: bool = True,
    progress: bool = True,
) -> Splits:
    """Load a user's ID folder and OOD folder (each in ImageFolder layout).

    Parameters
    ----------
    id_dir : path
        In-distribution images, one sub-folder per class.
    ood_dir : path
        OOD images, one sub-folder per class (or per kind of finding); all marked
        ``"near"`` in ``Splits.ood_kind``.
    test_dir : path, optional
        ID test images in the same layout; when given, all of ``id_dir`` is used for
        training, otherwise each ID class is split (``train_fraction``, seeded, stratified).
        Its classes must be among ``id_dir``'s.
    size, seed, train_fraction, mask_corner, mask_text, cache, progress
        As in :func:`load`.
    """
    id_dir, ood_dir = _check_folder(Path(id_dir).expanduser()), _check_folder(Path(ood_dir).expanduser())
    id_classes, ood_classes = class_folders(id_dir), class_folders(ood_dir)
    for folder, classes in ((id_dir, id_classes), (ood_dir, ood_classes)):
        if not classes:
            raise ValueError(f"no class sub-folders in {folder} (expected layout: {folder}/<class>/<image>)")
    if len(id_classes) < 2:
        raise ValueError(f"{id_dir} holds one class ({id_classes[0]!r}): a classifier needs at least two ID classes")
    splits = _split_folder(
        id_dir.parent.name if id_dir.name == "id" else id_dir.name,
        id_dir,
        id_classes,
        ood_classes,
        {},
        size=size,
        seed=seed,
        train_fraction=train_fraction,
        cache=cache,
        progress=progress,
        ood_root=ood_dir,
        test_root=Path(test_dir).expanduser() if test_dir is not None else None,
    )
    return _masked(splits, mask_corner, mask_text)
