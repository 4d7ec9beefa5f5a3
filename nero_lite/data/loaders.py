"""Loaders: :func:`load`, :func:`load_folders` and :func:`load_segmented`, the entry points of :mod:`nero_lite.data`.

The keyword arguments of :func:`load` travel inside as one record, :class:`LoadOptions`;
where a folder loader reads its images travels as another, :class:`_Layout`.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
import torch
from PIL import Image, ImageOps

from .. import synthetic
from ..progress import bar as progress_bar
from .caching import cached_splits
from .folders import (
    PROGRESS_ABOVE,
    class_files,
    class_folders,
    existing_folder,
    image_files,
    listing_fingerprint,
    read_image,
    read_listed,
    stratified_split,
    warn_skipped,
)
from .images import ImageSet, Splits
from .masking import Preprocessing
from .registry import DATASETS, SEGMENTED_FOLDER, data_root, dataset_folder

__all__ = ["LoadOptions", "SegmentedImages", "load", "load_folders", "load_segmented"]


@dataclass(frozen=True)
class LoadOptions:
    """The keyword arguments of :func:`load` as one record (see there for their meaning).

    :func:`load` and :func:`load_folders` build it from their keywords and pass it on;
    the folder loader reads ``size``, ``seed``, ``train_fraction``, ``cache`` and
    ``progress`` from it, and the masking and added OOD sets are applied from it last.
    """

    size: int | None = None
    seed: int = 0
    root: str | os.PathLike | None = None
    id_classes: Sequence[str] | None = None
    ood_classes: Sequence[str] | None = None
    train_fraction: float = 2 / 3
    mask_corner: bool = False
    mask_text: bool = False
    ood_sets: dict[str, torch.Tensor] | None = None
    cache: bool = True
    config: synthetic.SyntheticConfig | None = None
    progress: bool = True


@dataclass(frozen=True)
class _Layout:
    """Where a folder loader finds its images: the ID root and its class split, and the
    OOD and test roots when they are separate folders."""

    root: Path
    id_classes: Sequence[str]
    ood_classes: Sequence[str]
    ood_kind: dict[str, str]
    ood_root: Path | None = None
    test_root: Path | None = None


def _finish(splits: Splits, options: LoadOptions) -> Splits:
    """The added OOD sets, then the masking, of ``options`` applied to ``splits``."""
    return Preprocessing(mask_corner=options.mask_corner, mask_text=options.mask_text).apply_splits(_with_ood_sets(splits, options.ood_sets))


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


def _split_folder(name: str, layout: _Layout, options: LoadOptions) -> Splits:
    """Read ID classes (split into train/test, or a separate test folder) and OOD classes.

    ``options.size`` must be set; ``seed``, ``train_fraction``, ``cache`` and ``progress`` are read from ``options`` too.
    """
    root, id_classes, ood_classes, ood_kind = layout.root, layout.id_classes, layout.ood_classes, layout.ood_kind
    ood_root, test_root = layout.ood_root, layout.test_root
    size, seed, train_fraction, progress = options.size, options.seed, options.train_fraction, options.progress
    if not id_classes:
        raise ValueError(f"no ID classes given for {root}")
    if not ood_classes:
        raise ValueError(f"no OOD classes given for {ood_root or root}")
    overlap = set(id_classes) & set(ood_classes) if ood_root is None else set()
    if overlap:
        raise ValueError(f"classes both ID and OOD: {sorted(overlap)}")
    listings = {"id": class_files(root, id_classes), "ood": class_files(ood_root or root, ood_classes)}
    if test_root is not None:
        test_classes = class_folders(existing_folder(test_root))
        missing = sorted(set(test_classes) - set(id_classes))
        if missing:
            raise ValueError(f"test class folder(s) {missing} in {test_root} are not among the training classes")
        if not test_classes:
            raise ValueError(f"no class sub-folders in {test_root} (expected layout: {test_root}/<class>/<image>)")
        listings["test"] = class_files(test_root, [c for c in id_classes if c in test_classes])
    key = {
        "name": name,
        "roots": [str(p.resolve()) for p in (root, ood_root, test_root) if p is not None],
        "files": {part: listing_fingerprint(listing) for part, listing in listings.items()},
        "id": list(id_classes),
        "ood": list(ood_classes),
        "size": size,
        "seed": seed,
        "train_fraction": train_fraction,
    }

    loose = {
        str(path): "not in a class folder"
        for folder in dict.fromkeys(p for p in (root, ood_root, test_root) if p is not None)
        for path in image_files(folder)
    }
    key["loose"] = sorted(loose)

    def build() -> Splits:
        skipped = dict(loose)
        ood = read_listed(listings["ood"], ood_root or root, size, progress, skipped)
        ids = read_listed(listings["id"], root, size, progress, skipped)
        if test_root is None:
            train_index, test_index = stratified_split(ids.labels, train_fraction, seed)
            train, test = ids.subset(train_index), ids.subset(test_index)
        else:
            train = ids
            test = _relabel(read_listed(listings["test"], test_root, size, progress, skipped), list(id_classes))
        kinds = {c: ood_kind.get(c, "near") for c in ood_classes}
        return Splits(name, train, test, ood, kinds, skipped)

    splits = cached_splits(name, key, build, options.cache)
    warn_skipped(splits.skipped, root)  # on every run, from the cache too
    return splits


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
    options = LoadOptions(
        size=size, seed=seed, root=root, id_classes=id_classes, ood_classes=ood_classes, train_fraction=train_fraction,
        mask_corner=mask_corner, mask_text=mask_text, ood_sets=ood_sets, cache=cache, config=config, progress=progress,
    )  # fmt: skip
    if name_or_path is None:
        name_or_path = os.environ.get("NERO_LITE_DATASET", "synthetic")
    name = str(name_or_path)
    if name == "synthetic":
        if options.id_classes is not None or options.ood_classes is not None or options.root is not None:
            raise ValueError("the synthetic set has fixed classes and no folder: drop id_classes, ood_classes and root")
        config = options.config or synthetic.DEFAULT_CONFIG
        size = options.size or 64
        key = {"config": dataclasses.asdict(config), "size": size, "seed": options.seed}
        splits = cached_splits("synthetic", key, lambda: _synthetic(size, options.seed, config, options.progress), options.cache)
        return _finish(splits, options)
    if options.config is not None:
        raise ValueError("config= applies to the synthetic set only")
    options = dataclasses.replace(options, size=options.size or 128)
    if name in DATASETS:
        spec = DATASETS[name]
        folder = dataset_folder(name, options.root)
        id_classes = list(options.id_classes or spec.id_classes)
        ood_classes = list(options.ood_classes or [c for c in spec.ood_classes if c not in id_classes])
        splits = _split_folder(name, _Layout(folder, id_classes, ood_classes, spec.ood_kind), options)
        return _finish(splits, options)
    folder = Path(name_or_path).expanduser()
    if not folder.is_dir():
        raise FileNotFoundError(
            f"{name!r} is neither a known data set ({', '.join(['synthetic', *DATASETS])}) nor an existing folder"
        )
    if options.id_classes is None:
        if (folder / "id").is_dir() and (folder / "ood").is_dir():
            splits = load_folders(
                folder / "id", folder / "ood", size=options.size, seed=options.seed,
                train_fraction=options.train_fraction, cache=options.cache, progress=options.progress,
            )  # fmt: skip
            return _finish(splits, options)
        raise ValueError(
            f"{folder}: give id_classes=[...] or arrange the folder as {folder}/id/<class> and {folder}/ood/<class>"
        )
    id_classes = list(options.id_classes)
    ood_classes = list(options.ood_classes or [c for c in class_folders(folder) if c not in id_classes])
    splits = _split_folder(folder.name, _Layout(folder, id_classes, ood_classes, {}), options)
    return _finish(splits, options)


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
    id_dir, ood_dir = existing_folder(Path(id_dir).expanduser()), existing_folder(Path(ood_dir).expanduser())
    id_classes, ood_classes = class_folders(id_dir), class_folders(ood_dir)
    for folder, classes in ((id_dir, id_classes), (ood_dir, ood_classes)):
        if not classes:
            raise ValueError(f"no class sub-folders in {folder} (expected layout: {folder}/<class>/<image>)")
    if len(id_classes) < 2:
        raise ValueError(f"{id_dir} holds one class ({id_classes[0]!r}): a classifier needs at least two ID classes")
    options = LoadOptions(
        size=size, seed=seed, train_fraction=train_fraction, mask_corner=mask_corner, mask_text=mask_text, cache=cache,
        progress=progress,
    )  # fmt: skip
    layout = _Layout(
        id_dir, id_classes, ood_classes, {},
        ood_root=ood_dir, test_root=Path(test_dir).expanduser() if test_dir is not None else None,
    )  # fmt: skip
    splits = _split_folder(id_dir.parent.name if id_dir.name == "id" else id_dir.name, layout, options)
    return _finish(splits, options)


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
    root = existing_folder(Path(root).expanduser())
    for sub in ("images", "masks"):
        existing_folder(root / sub)
    images = image_files(root / "images")
    if not images:
        raise FileNotFoundError(f"no images in {root / 'images'}")
    masks = {p.stem: p for p in image_files(root / "masks")}
    missing = [p.name for p in images if p.stem not in masks]
    if missing:
        raise FileNotFoundError(f"{len(missing)} image(s) in {root / 'images'} have no mask in {root / 'masks'} (first: {missing[0]})")
    shared_ids: set[str] = set()
    if (root / "manifest.csv").is_file():
        manifest = pd.read_csv(root / "manifest.csv", dtype=str).fillna("")
        if {"id", "hyperkvasir_polyp"} <= set(manifest.columns):
            shared_ids = set(manifest.id[manifest.hyperkvasir_polyp == "shared"])
    bar = progress_bar(images, desc=f"reading {root.name}", unit="img", show=progress and len(images) > PROGRESS_ABOVE)
    pixels = torch.stack([read_image(path, size) for path in bar])
    ids = [p.stem for p in images]
    return SegmentedImages(
        pixels,
        torch.stack([_read_mask(masks[i], size) for i in ids]),
        ids,
        torch.tensor([i in shared_ids for i in ids], dtype=torch.bool),
    )
