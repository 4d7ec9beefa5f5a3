"""Data: the embedded synthetic endoscopy set, real-image loaders and shortcut masking.

One entry point, :func:`~nero_lite.data.load`, returns a :class:`~nero_lite.data.Splits` — ID train, ID test and OOD
test images (uint8 tensors in memory) with their class names:

* ``load()`` or ``load("synthetic")`` — the embedded default (:mod:`nero_lite.synthetic`),
  generated from a seed, no files needed.
* ``load("hyperkvasir")``, ``load("kvasir")``, ``load("gastrovision")`` — the published
  folder layouts (see :data:`DATASETS` for the ID/OOD class split of each). The folder
  is ``root=`` or, when that is not given, ``$NERO_LITE_DATA/<subfolder>`` (e.g.
  ``NERO_LITE_DATA=../shared/data`` finds ``../shared/data/hyperkvasir-lowergi``).
* ``load("path/to/folder", id_classes=[...])`` — any folder in ImageFolder layout (one
  sub-folder per class), or one with ``id/`` and ``ood/`` sub-folders;
  :func:`~nero_lite.data.load_folders` takes an ID folder and an OOD folder directly.
* :func:`~nero_lite.data.load_segmented` — polyp images with pixel masks of the polyp (Kvasir-SEG, in
  the ``kvasir-seg-polyps`` layout): ground truth for where an explanation should
  point, and, through ``load(..., ood_sets=...)``, a larger polyp OOD class.

Real images are read with PIL, converted to RGB, center-cropped to a square and
resized (bicubic) to ``size``; the ID classes are split into train and test,
stratified and seeded. Loaded sets are cached under :func:`~nero_lite.cache.cache_dir`.

Its modules, one section each (use the names from ``nero_lite.data``, where everything
public is imported):

* ``images`` — :class:`~nero_lite.data.ImageSet`, :class:`~nero_lite.data.Splits` and :func:`~nero_lite.data.to_input`;
* ``masking`` — shortcut masking (:func:`~nero_lite.data.mask_shortcut`, :func:`~nero_lite.data.corner_box_present`) and :class:`~nero_lite.data.Preprocessing`, the size and masks applied to every image;
* ``registry`` — the data sets known by name (:data:`DATASETS`) and :func:`~nero_lite.data.data_root`;
* ``folders`` — image files and ImageFolder layouts read as every loader reads them (and written: :func:`~nero_lite.data.write_imagefolder`), and the seeded split;
* ``caching`` — loaded sets cached as checksummed tensors;
* ``loaders`` — :func:`~nero_lite.data.load`, :func:`~nero_lite.data.load_folders`, :func:`~nero_lite.data.load_segmented`.

Environment variables:

``NERO_LITE_DATA``
    Folder holding the real data sets under their conventional sub-folder names.
``NERO_LITE_CACHE``
    Cache folder (default ``~/.cache/nero_lite``).
"""

from __future__ import annotations

from ..cache import cache_dir
from .caching import DATA_VERSION
from .folders import IMAGE_EXTENSIONS, UNREADABLE, class_folders, image_files, read_image, read_imagefolder, stratified_split, write_imagefolder
from .images import MEAN, STD, ImageSet, Splits, image_tensor, to_input
from .loaders import SegmentedImages, load, load_folders, load_segmented
from .masking import (
    CORNER_FRACTION,
    TEXT_MARGIN_FRACTION,
    Preprocessing,
    corner_box_present,
    corner_region,
    mask_region,
    mask_shortcut,
    shortcut_regions,
)
from .registry import DATASETS, RealDataset, data_root

# Sphinx reads a constant's documentation (its ``#:`` comment) from the module it documents:
# the book's API page documents nero_lite.data, so the public constants are described here.
#: Per-channel mean subtracted by :func:`~nero_lite.data.to_input` (ImageNet's RGB statistics, used by every model here).
MEAN = MEAN
#: Per-channel standard deviation divided out by :func:`~nero_lite.data.to_input` (ImageNet's).
STD = STD
#: Side of the lower-left square blacked out by :func:`~nero_lite.data.mask_shortcut`, as a fraction of
#: the image side. Measured on the 585 HyperKvasir images of ``hyperkvasir-lowergi``:
#: the black box spans columns 0 to 0.31 and rows 0.68 to 1.0 of the side (49×51 px
#: of 160) in 97 % of the images that have it; 0.35 covers it with a margin.
CORNER_FRACTION = CORNER_FRACTION
#: Width of the left strip holding HyperKvasir's burned-in on-screen text (patient
#: data, timings, a row of dots), as a fraction of the side: bright text pixels end at
#: 0.14 of the side.
TEXT_MARGIN_FRACTION = TEXT_MARGIN_FRACTION
#: The real data sets :func:`~nero_lite.data.load` knows by name, with their ID/OOD class split
#: (``hyperkvasir``, ``kvasir``, ``gastrovision``; the choices are explained in ``registry.py``).
DATASETS = DATASETS
#: The file suffixes read as images (compared lower-case) by :func:`~nero_lite.data.image_files`,
#: the folder loaders and the command line.
IMAGE_EXTENSIONS = IMAGE_EXTENSIONS
#: The version of the loaded-data cache entries, bumped when generation or loading changes so
#: that older entries are not read.
DATA_VERSION = DATA_VERSION

__all__ = [
    "CORNER_FRACTION",
    "DATASETS",
    "DATA_VERSION",
    "IMAGE_EXTENSIONS",
    "MEAN",
    "STD",
    "TEXT_MARGIN_FRACTION",
    "ImageSet",
    "Preprocessing",
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
    "mask_region",
    "mask_shortcut",
    "shortcut_regions",
    "class_folders",
    "image_files",
    "read_image",
    "read_imagefolder",
    "UNREADABLE",
    "stratified_split",
    "to_input",
    "write_imagefolder",
]
