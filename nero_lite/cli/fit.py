"""The ``fit`` command: its options and their checks, the training and validation images read
(``--val``, or a seeded share of each ``--train`` class), the classifier and detectors fitted, the
thresholds set at 95 % ID TPR on the validation images, and the bundle written
(:mod:`nero_lite.bundle`)."""

from __future__ import annotations

import dataclasses
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from ..constants import POOL_PER_CLASS
from .common import ID_TPR
from .options import (ModelOptions, add_detector_options, add_model_options, add_run_options, check_model, folder_problem,
                      fraction)

if TYPE_CHECKING:
    from torch import nn

    from ..bundle import Bundle
    from ..data import ImageSet, Preprocessing

__all__ = ["FIT_DETECTORS", "VAL_FRACTION", "FitOptions", "add_command", "check", "fit", "read_fit"]

#: The detectors ``fit`` puts into a bundle unless ``--detectors`` says otherwise: NERO and cheap baselines.
FIT_DETECTORS = ("msp", "energy", "mahalanobis", "knn", "nero")
#: The share of each training class ``fit`` holds out for the thresholds when no ``--val`` is given.
VAL_FRACTION = 0.2


@dataclasses.dataclass(frozen=True, kw_only=True)
class FitOptions(ModelOptions):
    """The options of ``fit``."""

    train: Path
    val: Path | None
    val_fraction: float | None


def add_command(commands) -> None:
    """Add ``fit`` and its options to ``commands`` (the parser's sub-parsers)."""
    fitting = commands.add_parser(
        "fit",
        help="train a classifier on ID folders and save it with fitted detectors and thresholds as a bundle",
        description=(
            "Train (or reuse from the cache, or take as it is from --weights) a classifier on --train, extract its "
            "features and logits once, fit the detectors on the training images and set each threshold at 95 % ID "
            "TPR on the validation images (--val, or a seeded per-class share of --train). Writes the bundle "
            "folder --out (model.safetensors, detectors/NAME.safetensors, references.safetensors: a pool of up to "
            f"{POOL_PER_CLASS} training images per class for the reference patches, bundle.json last) for `flag`."
        ),
    )
    fitting.add_argument("--train", required=True, type=Path, metavar="ID_DIR",
                         help="in-distribution training images, one sub-folder per class")
    held_out = fitting.add_mutually_exclusive_group()
    held_out.add_argument("--val", type=Path, metavar="ID_VAL_DIR",
                          help="in-distribution validation images that set the thresholds; each sub-folder a class of --train")
    held_out.add_argument("--val-fraction", type=fraction, metavar="F",
                          help=f"without --val: hold out this share of each --train class, seeded by --seed (default: {VAL_FRACTION})")
    add_model_options(fitting)
    add_detector_options(fitting, list(FIT_DETECTORS), ",".join(FIT_DETECTORS))
    fitting.add_argument("--out", required=True, type=Path, metavar="BUNDLE",
                         help="the bundle folder, created if needed; a bundle in it is replaced as a whole")
    add_run_options(fitting)


def check(args: FitOptions) -> str | None:
    """What is wrong with the ``fit`` options before any image is read (``None``: nothing)."""
    from ..data import class_folders

    problem = folder_problem("--train", args.train)
    if problem:
        return problem
    classes = class_folders(args.train)
    if len(classes) < 2:
        return f"--train: {args.train} holds {len(classes)} class sub-folder(s); a classifier needs at least two"
    if args.val is not None:
        problem = folder_problem("--val", args.val)
        if problem:
            return problem
        if args.val.resolve() == args.train.resolve():
            return f"--val is the --train folder ({args.train}); give images the classifier does not train on"
        missing = sorted(set(class_folders(args.val)) - set(classes))
        if missing:
            return f"--val: class folder(s) {missing} in {args.val} are not among the --train classes"
    return check_model(args)


def _preprocessing(args: FitOptions) -> Preprocessing:
    """The ``--size``, ``--mask-corner`` and ``--mask-text`` of the options as one record."""
    from ..data import Preprocessing

    return Preprocessing(args.size, args.mask_corner, args.mask_text)


def _split_validation(images: ImageSet, fraction: float, seed: int) -> tuple[ImageSet, ImageSet]:
    """A seeded per-class split of ``images`` into training and validation images (each class
    keeps at least one of each; a class needs two images)."""
    from ..data import stratified_split

    train, val = stratified_split(images.labels, 1 - fraction, seed)
    return images.subset(train), images.subset(val)


def read_fit(args: FitOptions) -> tuple[ImageSet, ImageSet]:
    """The training and validation images of the ``fit`` options, masked as asked."""
    import torch

    from ..data import ImageSet, read_imagefolder

    images = read_imagefolder(args.train, size=args.size)
    if args.val is not None:
        train, val = images, read_imagefolder(args.val, size=args.size)
        mapping = torch.tensor([train.classes.index(name) for name in val.classes])
        val = ImageSet(val.images, mapping[val.labels], train.classes, val.files)
    else:
        train, val = _split_validation(images, args.val_fraction or VAL_FRACTION, args.seed)
    masked = [replace(part, images=_preprocessing(args).apply(part)) for part in (train, val)]
    return masked[0], masked[1]


def fit(args: FitOptions, train: ImageSet, val: ImageSet, read_seconds: float = 0.0, given: nn.Module | None = None) -> Bundle:
    """Run the ``fit`` command on images already read; returns the bundle it wrote.

    ``given``: the classifier built from ``--weights`` while checking them (:func:`~nero_lite.cli.classifier`).
    """
    from .. import detectors
    from ..bundle import Bundle, reference_pool
    from ..cache import fingerprint
    from ..devices import resolve_device
    from ..metrics import threshold_at_tpr
    from .common import classifier, extract_sets, small_data_params

    seconds = {"read": read_seconds}
    device = resolve_device(args.device)
    print(f"read {len(train)} training and {len(val)} validation images ({len(train.classes)} classes) on {device}",
          file=sys.stderr)
    start = time.perf_counter()
    model = classifier(args, train, device, given)
    seconds["train"] = time.perf_counter() - start

    start = time.perf_counter()
    (outputs,) = extract_sets(args, model, [train], device)
    params, adapted = small_data_params(args.detectors, len(train), outputs.features.shape[1])
    for name, note in adapted.items():
        print(f"{name}: {note}", file=sys.stderr)
    created = {name: detectors.create(name, args.preset, args.arch, **params.get(name, {})) for name in args.detectors}
    fitted = detectors.fit_each(created, outputs)
    fitted, skipped = fitted.detectors, fitted.skipped
    for name, reason in skipped.items():
        print(f"warning: skipped detector {name}: {reason}", file=sys.stderr)
    if not fitted:
        raise ValueError(f"no detector could be fitted on the {len(train)} training images: {skipped}")
    seconds["detectors"] = time.perf_counter() - start

    start = time.perf_counter()
    bundle = Bundle(model=model, arch=args.arch, preprocessing=_preprocessing(args), classes=train.classes, detectors=fitted,
                    train_fingerprint=fingerprint(train.images, train.labels), pool=reference_pool(train, seed=args.seed))
    on_val = bundle.score(val, device=device)
    thresholds = {name: threshold_at_tpr(values, ID_TPR) for name, values in on_val.scores.items()}
    val_accuracy = float((on_val.predicted == val.labels).float().mean())
    seconds["thresholds"] = time.perf_counter() - start
    info = {
        "options": args.as_json(),
        "images": {"train": len(train), "val": len(val)},
        "val_accuracy": val_accuracy,
        "id_tpr": ID_TPR,
        "model_from_cache": bool(getattr(model, "from_cache", False)),
        "model_used_as_is": bool(getattr(model, "head_loaded", False)),
        "detectors": {"adapted": adapted, "skipped": skipped},
        "seconds": seconds,
    }
    bundle.thresholds, bundle.info = thresholds, info
    bundle.save(args.out)
    print(f"validation accuracy {val_accuracy:.1%}; thresholds at {ID_TPR:.0%} ID TPR: "
          + ", ".join(f"{name} {value:.4g}" for name, value in thresholds.items()), file=sys.stderr)
    print(f"wrote the bundle {args.out}", file=sys.stderr)
    return bundle
