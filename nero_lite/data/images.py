"""Images in memory: :class:`ImageSet`, :class:`Splits`, and the input normalisation :func:`to_input`."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass

import pandas as pd
import torch

__all__ = ["MEAN", "STD", "ImageSet", "Splits", "image_tensor", "to_input"]

#: Per-channel mean subtracted by :func:`to_input` (ImageNet's RGB statistics, used by every model here).
MEAN = (0.485, 0.456, 0.406)
#: Per-channel standard deviation divided out by :func:`to_input` (ImageNet's).
STD = (0.229, 0.224, 0.225)


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

    def first_per_class(self, cap: int | None = None, classes: Sequence[int] | None = None) -> torch.Tensor:
        """Indices of the first ``cap`` images (all with ``None``) of each class in ``classes`` (default: every class), class by class."""
        classes = range(len(self.classes)) if classes is None else classes
        parts = [torch.nonzero(self.labels == c).flatten()[:cap] for c in classes]
        return torch.cat(parts) if parts else torch.zeros(0, dtype=torch.long)

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
