"""Training outliers and the one-class tasks of the 2021 paper's protocol.

**Where the training outliers come from.** In the paper the outliers come from a
*different data set* than anything tested (EMNIST letters for MNIST, 80 Million Tiny
Images for CIFAR-10, CIFAR-100 for the diversity study): the detector never sees a
test-time OOD class during training. We keep that property with a generated pool of
**textures** (:func:`texture_outliers`): eight families of generic images — stripes,
checkerboards, rings, dots, colour blobs, clouds, grain, gradients — none of which is
an endoscopy class. They play the role of Tiny Images: plenty of varied,
non-medical images, cheap to draw in any number and from 1 to 8 classes, which the
number and diversity experiments need. Like Tiny Images next to CIFAR, they share the
ID images' framing: outside the endoscope's circular field of view (dark in the ID
training images) the textures take the pixels of an ID image, so a head cannot
separate them from ID images by the frame alone.

The alternative, **held-out OOD classes** (``outlier_pool=["dyed"]`` in
:func:`one_class_splits`), trains on images of a real OOD class and removes that
class from the test set, so train and test outliers still share no class; it gives
near-distribution outliers but at most as many outlier classes as are held out.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import NamedTuple

import torch
import torch.nn.functional as F

from ..data import ImageSet, Splits

__all__ = ["TEXTURES", "OneClassTask", "one_class_splits", "texture_outliers"]

TEXTURES = ("stripes", "checker", "rings", "dots", "blobs", "clouds", "grain", "gradient")


def _texture(kind: str, n: int, size: int, gen: torch.Generator) -> torch.Tensor:
    """``n`` images of one texture family, float in [0, 1], n×3×size×size."""

    def rand(*shape):
        return torch.rand(n, *shape, 1, 1, generator=gen)

    t = (torch.arange(size, dtype=torch.float32) + 0.5) / size * 2 - 1
    y, x = torch.meshgrid(t, t, indexing="ij")
    angle = rand(1) * math.pi
    along = x * torch.cos(angle) + y * torch.sin(angle)  # n×1×S×S, a random direction
    across = -x * torch.sin(angle) + y * torch.cos(angle)
    freq, phase = 2 + 6 * rand(1), 2 * math.pi * rand(1)
    if kind == "stripes":
        v = 0.5 + 0.5 * torch.sin(math.pi * freq * along + phase)
    elif kind == "checker":
        v = ((torch.floor(freq * along + phase) + torch.floor(freq * across + phase)) % 2).float()
    elif kind == "rings":
        centre = rand(2) - 0.5
        v = 0.5 + 0.5 * torch.sin(2 * math.pi * freq * ((x - centre[:, :1]) ** 2 + (y - centre[:, 1:]) ** 2).sqrt() + phase)
    elif kind == "dots":
        v = ((torch.sin(math.pi * freq * along + phase) * torch.sin(math.pi * freq * across)) > 0.5).float()
    elif kind == "blobs":
        centres, widths = 2 * torch.rand(n, 6, 2, 1, 1, generator=gen) - 1, 0.1 + 0.3 * torch.rand(n, 6, 1, 1, generator=gen)
        bumps = torch.exp(-((x - centres[:, :, 0]) ** 2 + (y - centres[:, :, 1]) ** 2) / (2 * widths**2))  # n×6×S×S
        colours = torch.rand(n, 6, 3, generator=gen)
        image = rand(3) * 0.3 + torch.einsum("nbhw,nbc->nchw", bumps, colours)
        return image.clamp(0, 1)
    elif kind == "clouds":
        cells = int(torch.randint(3, 9, (1,), generator=gen))
        lattice = torch.rand(n, 3, cells, cells, generator=gen)
        return F.interpolate(lattice, size=(size, size), mode="bicubic", align_corners=False).clamp(0, 1)
    elif kind == "grain":
        return (rand(3) + 0.25 * (torch.rand(n, 3, size, size, generator=gen) - 0.5)).clamp(0, 1)
    elif kind == "gradient":
        v = (along + 1.5) / 3
    else:
        raise ValueError(f"unknown texture {kind!r}; choose from {TEXTURES}")
    first, second = rand(3), rand(3)
    return first * v + second * (1 - v)


def texture_outliers(
    n_per_class: int,
    size: int = 64,
    seed: int = 0,
    kinds: Sequence[str] = TEXTURES,
    frame: ImageSet | None = None,
) -> ImageSet:
    """A pool of generic texture images, ``n_per_class`` of each of ``kinds`` (one class each).

    Every image draws its own colours, orientation, frequency and phase from ``seed``.
    With ``frame``, the pixels outside the field of view of ``frame`` (those whose
    brightest channel has a median ≤ 16 / 255 over its images) are copied from a
    random image of ``frame``, so the textures carry the same dark, noisy border.
    """
    if n_per_class < 1:
        raise ValueError(f"n_per_class must be positive, got {n_per_class}")
    gen = torch.Generator().manual_seed(seed)
    images = torch.cat([_texture(kind, n_per_class, size, gen) for kind in kinds])
    images = (images * 255).round().to(torch.uint8)
    if frame is not None:
        if frame.images.shape[-2:] != images.shape[-2:]:
            raise ValueError(f"frame images are {tuple(frame.images.shape[-2:])}, textures {size}×{size}")
        outside = frame.images.amax(1).median(0).values <= 16
        donors = frame.images[torch.randint(len(frame), (len(images),), generator=gen)]
        images[:, :, outside] = donors[:, :, outside]
    labels = torch.arange(len(kinds)).repeat_interleave(n_per_class)
    return ImageSet(images=images, labels=labels, classes=list(kinds))


class OneClassTask(NamedTuple):
    """One run of the one-class protocol: ``train`` (normal images only), ``outliers``
    (training outliers), ``test_id`` (test images of the normal class) and ``test_ood``
    (the other ID classes' test images, then the OOD classes; ``test_ood.classes``
    names them)."""

    train: ImageSet
    outliers: ImageSet
    test_id: ImageSet
    test_ood: ImageSet


def one_class_splits(
    splits: Splits,
    normal_class: str,
    outlier_pool: ImageSet | Sequence[str],
    n_outliers: int,
    n_outlier_classes: int | None = None,
    seed: int = 0,
    *,
    n_train: int | None = None,
    n_test: int | None = None,
) -> OneClassTask:
    """The data of one one-class run: one ID class is normal, everything else is OOD.

    Parameters
    ----------
    splits : Splits
        The data set (``splits.train``, ``splits.test``: ID classes; ``splits.ood``).
    normal_class : str
        The ID class used as the normal class.
    outlier_pool : ImageSet or sequence of str
        Where training outliers are drawn: an ImageSet whose classes share no name
        with the test classes (e.g. :func:`texture_outliers`), or names of OOD classes
        of ``splits`` to hold out (their images become the pool and leave the test set).
    n_outliers : int
        Training outliers to draw, split as evenly as possible between the classes.
    n_outlier_classes : int, optional
        How many pool classes they come from (drawn at random; all when None).
    seed : int
        Seeds which classes and images are drawn.
    n_train, n_test : int, optional
        Use only the first ``n_train`` normal training images, and the first
        ``n_test`` test images of each class (all when None); they do not depend on ``seed``.
    """
    id_classes, ood_classes = list(splits.id_classes), list(splits.ood_classes)
    if normal_class not in id_classes:
        raise ValueError(f"normal_class {normal_class!r} is not an ID class of {splits.name}: {id_classes}")
    if isinstance(outlier_pool, ImageSet):
        pool = outlier_pool
        shared = set(pool.classes) & set(id_classes + ood_classes)
        if shared:
            raise ValueError(f"the outlier pool shares classes with the test set: {sorted(shared)}")
    else:
        held_out = list(outlier_pool)
        if not held_out or set(held_out) - set(ood_classes):
            raise ValueError(f"held-out outlier classes must be OOD classes of {splits.name}: {ood_classes}")
        pool = splits.ood.subset(splits.ood.first_per_class(None, [splits.ood.classes.index(c) for c in held_out]))
        ood_classes = [c for c in ood_classes if c not in held_out]
    if n_outliers < 1:
        raise ValueError(f"n_outliers must be positive, got {n_outliers}")
    present = [c for c in range(len(pool.classes)) if (pool.labels == c).any()]
    n_classes = len(present) if n_outlier_classes is None else n_outlier_classes
    if not 1 <= n_classes <= len(present):
        raise ValueError(f"n_outlier_classes must be in [1, {len(present)}], got {n_outlier_classes}")

    gen = torch.Generator().manual_seed(seed)
    chosen = [present[i] for i in torch.randperm(len(present), generator=gen)[:n_classes].tolist()]
    picked = []
    for rank, c in enumerate(chosen):
        members = torch.nonzero(pool.labels == c).flatten()
        share = n_outliers // n_classes + (rank < n_outliers % n_classes)
        if share > len(members):
            raise ValueError(f"outlier class {pool.classes[c]!r} has {len(members)} images, {share} requested")
        picked.append(members[torch.randperm(len(members), generator=gen)[:share]])
    outliers = pool.subset(torch.cat(picked))

    normal = id_classes.index(normal_class)
    others = [c for c in range(len(id_classes)) if c != normal]
    train = splits.train.subset(splits.train.first_per_class(n_train, [normal]))
    test_id = splits.test.subset(splits.test.first_per_class(n_test, [normal]))
    other_id = splits.test.subset(splits.test.first_per_class(n_test, others))
    ood = splits.ood.subset(splits.ood.first_per_class(n_test, [splits.ood.classes.index(c) for c in ood_classes]))
    relabel = {c: i for i, c in enumerate(others)}
    ood_names = [id_classes[c] for c in others] + ood_classes
    test_ood = ImageSet(
        images=torch.cat([other_id.images, ood.images]),
        labels=torch.cat(
            [
                torch.tensor([relabel[int(c)] for c in other_id.labels], dtype=torch.long),
                torch.tensor([len(others) + ood_classes.index(ood.classes[int(c)]) for c in ood.labels], dtype=torch.long),
            ]
        ),
        classes=ood_names,
    )
    return OneClassTask(train, outliers, test_id, test_ood)
