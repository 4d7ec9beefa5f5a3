"""Folder reading and splits: image files in ImageFolder layout read as every loader reads them, and the seeded split."""

from __future__ import annotations

import hashlib
import os
import warnings
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from ..progress import bar as progress_bar
from .images import ImageSet

__all__ = [
    "IMAGE_EXTENSIONS",
    "PROGRESS_ABOVE",
    "UNREADABLE",
    "class_files",
    "class_folders",
    "existing_folder",
    "image_files",
    "listing_fingerprint",
    "read_image",
    "read_imagefolder",
    "read_listed",
    "stratified_split",
    "warn_skipped",
    "write_imagefolder",
]

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")
#: Reading more files than this shows a progress bar.
PROGRESS_ABOVE = 300
#: What :func:`read_image` raises for a file that is not a readable image (skipped as "unreadable" by every reader).
UNREADABLE = (OSError, UnidentifiedImageError, ValueError, Image.DecompressionBombError)


def image_files(folder: Path, recursive: bool = False) -> list[Path]:
    """Image files inside ``folder`` (by extension; hidden files and folders left out), sorted.

    Directly inside it by default; in any sub-folder with ``recursive=True`` (``flag`` reads a
    folder of new images this way).
    """
    folder = Path(folder)
    candidates = folder.rglob("*") if recursive else folder.iterdir()
    return sorted(
        path for path in candidates
        if path.suffix.lower() in IMAGE_EXTENSIONS and path.is_file()
        and not any(part.startswith(".") for part in path.relative_to(folder).parts)
    )


def class_folders(root: Path) -> list[str]:
    """Names of the class sub-folders of an ImageFolder root, sorted."""
    return sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))


def existing_folder(root: Path) -> Path:
    """``root``, or :class:`FileNotFoundError` when it is not a folder."""
    if not root.is_dir():
        raise FileNotFoundError(f"data folder not found: {root}")
    return root


def class_files(root: Path, classes: Sequence[str]) -> dict[str, list[Path]]:
    """Image files per class, with clear errors for a missing or empty class folder."""
    existing_folder(root)
    available = class_folders(root)
    files = {}
    for name in classes:
        if name not in available:
            found = ", ".join(available) or "none"
            raise FileNotFoundError(f"class folder {name!r} not found in {root} (found: {found})")
        files[name] = image_files(root / name)
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


def warn_skipped(skipped: dict[str, str], root: Path) -> None:
    """One warning that counts the skipped files and names the first few."""
    if skipped:
        names = ", ".join(f"{Path(file).name} ({reason})" for file, reason in list(skipped.items())[:3])
        more = f" and {len(skipped) - 3} more" if len(skipped) > 3 else ""
        warnings.warn(f"skipped {len(skipped)} image file(s) under {root}: {names}{more}", stacklevel=4)


def read_listed(listing: dict[str, list[Path]], root: Path, size: int, progress: bool, skipped: dict | None = None) -> ImageSet:
    """Read the listed files into an :class:`ImageSet`, skipping unreadable files.

    The skipped files go into ``skipped`` (file → ``"unreadable"``) when it is given;
    otherwise one warning names them.
    """
    jobs = [(k, path) for k, paths in enumerate(listing.values()) for path in paths]
    images, labels, files, failed = [], [], [], []
    bar = progress_bar(jobs, desc=f"reading {root.name}", unit="img", show=progress and len(jobs) > PROGRESS_ABOVE)
    for label, path in bar:
        try:
            images.append(read_image(path, size))
        except UNREADABLE:
            failed.append(path)
            continue
        labels.append(label)
        files.append(str(path))
    unreadable = {str(path): "unreadable" for path in failed}
    if skipped is None:
        warn_skipped(unreadable, root)
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
    root = existing_folder(Path(root))
    classes = list(classes) if classes is not None else class_folders(root)
    if not classes:
        raise ValueError(f"no class sub-folders in {root} (expected ImageFolder layout: {root}/<class>/<image>)")
    return read_listed(class_files(root, classes), root, size, progress)


def write_imagefolder(images: ImageSet, root: str | os.PathLike) -> Path:
    """Write ``images`` as an ImageFolder under ``root``: one sub-folder per class, one PNG per image.

    The inverse of :func:`read_imagefolder` (which reads them back, resized to its ``size``):
    image ``i`` of class ``c`` becomes ``root/c/{i:05d}.png``, ``i`` its position in
    ``images``. Folders are created as needed; returns ``root``.
    """
    root = Path(root)
    for index, (image, label) in enumerate(zip(images.images, images.labels)):
        folder = root / images.classes[int(label)]
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image.permute(1, 2, 0).numpy()).save(folder / f"{index:05d}.png")
    return root


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


def listing_fingerprint(listing: dict[str, list[Path]]) -> str:
    """Hash of the listed files' names, sizes and modification times."""
    digest = hashlib.sha256()
    for name, paths in listing.items():
        for path in paths:
            stat = path.stat()
            digest.update(f"{name}/{path.name}:{stat.st_size}:{stat.st_mtime_ns};".encode())
    return digest.hexdigest()
