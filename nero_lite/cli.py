"""Command line: evaluate every detector on a user's own image folders, or fit a bundle and flag new images.

Three commands. ``evaluate`` (alias ``score``, its former name) measures: every detector on
labelled ID and OOD folders, with metrics. ``fit`` and ``flag`` are for use: ``fit`` saves a
classifier, its detectors and their thresholds as a bundle (:mod:`nero_lite.bundle`);
``flag`` scores unlabelled images with it. ``evaluate`` and ``flag`` write the same kind of
``report.html`` (:mod:`nero_lite.report`).

``python -m nero_lite evaluate --train ID_TRAIN_DIR --id ID_TEST_DIR --ood OOD_DIR [--explain N]`` trains
(or reuses from the cache) a classifier on the ImageFolder at ``--train``, extracts its
outputs once, fits the detectors on the training outputs and scores the ID test and OOD
images. The classifier is trained from scratch, or fine-tuned from timm's ImageNet
weights (``--pretrained``, online) or from a local file (``--weights``); a ``--weights``
file that is a whole classifier of the ``--train`` classes is used as it is, untrained.
``--recipe paper`` trains with the NERO paper's recipe. It writes into ``--out``:

``scores.csv``
    One row per image and detector: ``file, set`` (``id``/``ood``) ``, ood_class,
    detector, score, predicted`` — score higher = more in-distribution, ``predicted`` the
    classifier's class.
``metrics.json``
    A list of ``{detector, ood_class, auroc, fpr95, aupr_in, aupr_out}`` (fractions in
    [0, 1]); ``ood_class`` is ``"all"`` for the row pooling every OOD image.
``metrics.md``
    The same table in markdown.
``report.html``
    One self-contained page (:func:`~nero_lite.report.evaluate_report`): the metrics table
    (AUROC and FPR95 per detector and OOD group), the histogram of ID test and OOD scores of
    NERO (or, without it, of the first detector) with its threshold at 95 % ID TPR on the ID
    test images, then the images below it by score, the ``--explain`` lowest (default 8)
    explained as ``flag`` explains them, with the training images as the reference pool.
``run.json``
    The options, image counts, ID test accuracy, how many images report.html explains
    (``explained``), the seconds of each phase (``report``: the page and its explanations), the image files
    found but not loaded (``skipped_files``: unreadable, or beside the class folders), and under
    ``detectors`` the hyperparameters adapted to a small training set (``adapted``) and
    the detectors left out because they could not be fitted on it (``skipped``), each with
    its reason; both are also printed.

``python -m nero_lite fit --train ID_DIR [--val ID_VAL_DIR | --val-fraction F] --out BUNDLE``
gets its classifier as ``evaluate`` does (the same ``--arch``, ``--weights``, ``--pretrained``,
``--recipe``, ``--size``, ``--epochs``, ``--seed``, ``--mask-corner``, ``--mask-text``,
``--preset``, ``--device``, ``--no-cache``), extracts the training outputs once, fits the
``--detectors`` (default :data:`FIT_DETECTORS`) on them and sets each threshold at 95 % ID
TPR (:func:`~nero_lite.metrics.threshold_at_tpr`) on the validation images: ``--val``, or
without it a seeded share ``--val-fraction`` (default 0.2) of each ``--train`` class, never
test images. It writes the bundle folder ``--out`` (layout: :mod:`nero_lite.bundle`), with a
reference pool of at most :data:`~nero_lite.bundle.REFERENCES_PER_CLASS` training images per
class for the concepts' reference patches.

``python -m nero_lite flag BUNDLE IMAGES_DIR --out REPORT [--detector nero] [--explain N]
[--batch-size B]`` scores every image under ``IMAGES_DIR`` (any depth; unreadable files are
skipped with one warning), reading and scoring ``--batch-size`` images at a time, so memory
holds one batch. An image is flagged when its ``--detector`` score is below the bundle's
threshold. It writes into ``--out``, as a set:

``flags.csv``
    One row per image: ``file, score, threshold, flagged, predicted, nearest, top_neurons``
    (:data:`FLAG_COLUMNS`): ``predicted`` the classifier's class, ``nearest`` NERO's nearest
    class centroid and ``top_neurons`` the five head-input neurons of largest contribution to
    NERO's distance, ``neuron:contribution`` separated by ``;``
    (:meth:`~nero_lite.detectors.nero.NeroDetector.decompose`); both empty without NERO in
    the bundle.
``report.html``
    One self-contained page (:func:`~nero_lite.report.flag_report`): the score histogram
    with the threshold and the counts, then the flagged images by score, the ``--explain``
    lowest (default 8) explained (:meth:`~nero_lite.bundle.Bundle.reports`): the map of why
    NERO flags them, and for each of their :data:`~nero_lite.bundle.CONCEPTS` neurons of
    largest contribution the CRP concept map and patches of the reference-pool images that
    excite it most. A bundle without a reference pool (written before ``fit`` kept one) gets
    the why-flagged maps only, and the page says so.
``run.json``
    The options, the threshold, image counts, the files skipped and the seconds of each phase.

Explanations are computed for the ``--explain`` images shown only, so their cost and memory
do not grow with the folder.

Bad input ends with a one-line error and exit status 2, before any image is read where it
can be seen from the options: a missing folder or a file in its place, ``--id`` or ``--ood``
the same folder as ``--train``, a vit size that is not a multiple of 8 (deit_small: 16), an
unknown architecture or device, an unknown detector, a ``--weights`` file that is missing or
not a state dict; then a class folder without images, a single ID class, an ID test class
missing from ``--train``, weights that do not fit the architecture. ``fit`` refuses alike
``--val`` with ``--val-fraction``, a ``--val`` class missing from ``--train``; ``flag`` a
missing, incomplete or damaged bundle, a ``--detector`` the bundle lacks, an ``IMAGES_DIR``
that is missing or holds no image file.
"""

from __future__ import annotations

import argparse
import heapq
import json
import os
import shutil
import sys
import tempfile
import time
import warnings
from dataclasses import replace
from pathlib import Path

import pandas as pd
import timm
import torch
from PIL import Image, UnidentifiedImageError
from torch import nn
from tqdm import tqdm

from . import detectors as _detectors
from .bundle import REFERENCES_PER_CLASS, Bundle, load_bundle, preprocess, reference_pool, save_bundle
from .cache import cache_dir, fingerprint, remove_stale_temp_files
from .compare import compare_detectors, extract_splits
from .detectors.presets import arch_family
from .data import (CORNER_FRACTION, IMAGE_EXTENSIONS, TEXT_MARGIN_FRACTION, ImageSet, Splits, load_folders,
                   class_folders, image_files, read_image, read_imagefolder, stratified_split)
from .metrics import threshold_at_tpr
from .models import (ARCHITECTURES, Recipe, accuracy, create_model, extract, read_weights, resolve_device,
                     train_classifier)
from .report import Flagged, evaluate_report, flag_report

__all__ = ["FIT_DETECTORS", "FLAG_COLUMNS", "build_parser", "classifier", "evaluate", "fit", "flag", "main",
           "read", "read_fit", "small_data_params"]

METRICS = ("auroc", "fpr95", "aupr_in", "aupr_out")
#: The columns of ``flags.csv``, written by ``flag``.
FLAG_COLUMNS = ("file", "score", "threshold", "flagged", "predicted", "nearest", "top_neurons")
#: The detectors ``fit`` puts into a bundle unless ``--detectors`` says otherwise: NERO and cheap baselines.
FIT_DETECTORS = ("msp", "energy", "mahalanobis", "knn", "nero")
#: The share of each training class ``fit`` holds out for the thresholds when no ``--val`` is given.
VAL_FRACTION = 0.2
#: The share of the validation images each threshold set by ``fit`` accepts (95 % ID TPR).
ID_TPR = 0.95
#: The most flagged images ``flag`` and ``evaluate`` keep (lowest scores) to show in report.html.
GALLERY = 48
#: What report.html says when the bundle has no reference pool to find reference patches in.
NO_POOL_NOTE = ("This bundle holds no reference pool (it was written before `fit` kept training images), so the "
                "explained images show the why-flagged map only; fit it again for concept maps with reference patches.")


def _detector_list(text: str) -> list[str]:
    names = [name.strip() for name in text.split(",") if name.strip()]
    unknown = [name for name in names if name not in _detectors.available()]
    if unknown or not names:
        raise argparse.ArgumentTypeError(
            f"unknown detector(s) {', '.join(unknown) or '(none given)'}; choose from {','.join(_detectors.available())}"
        )
    return list(dict.fromkeys(names))


def _architecture(text: str) -> str:
    if text not in ARCHITECTURES and not timm.is_model(text):
        raise argparse.ArgumentTypeError(f"unknown architecture {text!r}: choose {', '.join(ARCHITECTURES)} or a timm model name")
    return text


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def _non_negative(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or a positive integer, got {text}")
    return value


def _fraction(text: str) -> float:
    value = float(text)
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError(f"must lie strictly between 0 and 1, got {text}")
    return value


def _add_model_options(parser: argparse.ArgumentParser) -> None:
    """The options of ``evaluate`` and ``fit`` that choose, train and mask the classifier."""
    parser.add_argument("--arch", type=_architecture, default="resnet18d", metavar="ARCH",
                        help="the classifier: resnet18d (timm ResNet-18-D, whose relevance maps have no fixed grid), resnet18 "
                             "(the paper's CNN), vit (DeiT-Tiny on an 8×8 grid of patches), deit_small (the paper's "
                             "transformer, 16-pixel patches) or any timm model name with a linear head (default: resnet18d)")
    start = parser.add_mutually_exclusive_group()
    start.add_argument("--pretrained", action="store_true",
                       help="fine-tune from timm's ImageNet weights (downloaded: needs internet; resnet18 gets torchvision's, as the paper)")
    start.add_argument("--weights", type=Path, metavar="FILE",
                       help="start from a local safetensors or weights-only torch state dict of ARCH: a whole classifier "
                            "whose head has one output per training class is used as it is (no training); any other "
                            "(e.g. ImageNet weights) is fine-tuned with a new head")
    parser.add_argument("--recipe", choices=("book", "paper"), default="book",
                        help="training recipe: book (AdamW, one-cycle, flips and transposes) or paper (the NERO paper's: "
                             "Adam lr 1e-4, batch 32, flips, colour jitter, invert, equalize) (default: book)")
    parser.add_argument("--size", type=_positive, default=128, help="images are center-cropped and resized to SIZE×SIZE pixels (default: 128)")
    parser.add_argument("--epochs", type=_positive, default=20, help="training epochs (default: 20)")
    parser.add_argument("--seed", type=int, default=0, help="seeds initialisation, batch order and augmentation (default: 0)")
    parser.add_argument("--mask-corner", action="store_true",
                        help=f"black out the lower-left {round(100 * CORNER_FRACTION)}%% square of every image (HyperKvasir's box)")
    parser.add_argument("--mask-text", action="store_true",
                        help=f"black out the left {round(100 * TEXT_MARGIN_FRACTION)}%% strip of every image (on-screen text)")


class _Parser(argparse.ArgumentParser):
    """Reports bad usage as one line (``prog: error: ... (see --help)``) and exit status 2."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    """The ``python -m nero_lite`` argument parser (sub-commands ``evaluate`` (alias ``score``), ``fit`` and ``flag``)."""
    parser = _Parser(
        prog="python -m nero_lite",
        description="Explainable out-of-distribution detection on your own image folders.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    evaluation = commands.add_parser(
        "evaluate",
        aliases=["score"],
        help="train a classifier on ID folders, then score ID test and OOD images with every detector and measure "
             "(alias: score)",
        description=(
            "Train (or reuse from the cache) a classifier on --train, extract its features and logits once, "
            "fit the detectors on the training images and score --id and --ood. Folders are in ImageFolder "
            "layout: one sub-folder per class, images inside. Writes scores.csv, metrics.json, metrics.md, "
            "report.html (the metrics, the ID test and OOD score histogram with the threshold at 95 % ID TPR, "
            "the lowest-scoring images explained) and run.json into --out. `score` is the same command."
        ),
    )
    evaluation.add_argument("--train", required=True, type=Path, metavar="ID_TRAIN_DIR",
                       help="in-distribution training images, one sub-folder per class")
    evaluation.add_argument("--id", required=True, type=Path, metavar="ID_TEST_DIR",
                       help="in-distribution test images; each sub-folder must be a class of --train")
    evaluation.add_argument("--ood", required=True, type=Path, metavar="OOD_DIR",
                       help="out-of-distribution images, one sub-folder per kind (metrics are reported per sub-folder)")
    _add_model_options(evaluation)
    _add_detector_options(evaluation, _detectors.available(), "all")
    evaluation.add_argument("--out", type=Path, default=Path("results"), help="output folder, created if needed; its five files are overwritten (default: results)")
    _add_explain_option(evaluation, "show the N images of lowest NERO score that fall below its threshold explained: the map of "
                               "why NERO flags them, and for their top neurons the concept map and reference patches "
                               "from --train; 0: none (needs nero among --detectors) (default: 8)")
    _add_run_options(evaluation)

    fit = commands.add_parser(
        "fit",
        help="train a classifier on ID folders and save it with fitted detectors and thresholds as a bundle",
        description=(
            "Train (or reuse from the cache, or take as it is from --weights) a classifier on --train, extract its "
            "features and logits once, fit the detectors on the training images and set each threshold at 95 % ID "
            "TPR on the validation images (--val, or a seeded per-class share of --train). Writes the bundle "
            "folder --out (model.safetensors, detectors/NAME.safetensors, references.safetensors: a pool of up to "
            f"{REFERENCES_PER_CLASS} training images per class for the reference patches, bundle.json last) for `flag`."
        ),
    )
    fit.add_argument("--train", required=True, type=Path, metavar="ID_DIR",
                     help="in-distribution training images, one sub-folder per class")
    held_out = fit.add_mutually_exclusive_group()
    held_out.add_argument("--val", type=Path, metavar="ID_VAL_DIR",
                          help="in-distribution validation images that set the thresholds; each sub-folder a class of --train")
    held_out.add_argument("--val-fraction", type=_fraction, metavar="F",
                          help=f"without --val: hold out this share of each --train class, seeded by --seed (default: {VAL_FRACTION})")
    _add_model_options(fit)
    _add_detector_options(fit, list(FIT_DETECTORS), ",".join(FIT_DETECTORS))
    fit.add_argument("--out", required=True, type=Path, metavar="BUNDLE",
                     help="the bundle folder, created if needed; a bundle in it is replaced as a whole")
    _add_run_options(fit)

    flag = commands.add_parser(
        "flag",
        help="score every image under a folder with a fitted bundle and flag the out-of-distribution ones",
        description=(
            "Score every image under IMAGES_DIR (recursively, unlabelled; unreadable files are skipped with a "
            "warning) with the bundle written by `fit`, in batches, and flag those scoring below the detector's "
            "threshold. Writes flags.csv, report.html (one self-contained page) and run.json into --out."
        ),
    )
    flag.add_argument("bundle", type=Path, metavar="BUNDLE", help="a bundle folder written by `fit`")
    flag.add_argument("images", type=Path, metavar="IMAGES_DIR", help="the images to score, in any sub-folders")
    flag.add_argument("--out", required=True, type=Path, metavar="REPORT",
                      help="output folder, created if needed; its three files are overwritten")
    flag.add_argument("--detector", default="nero", metavar="NAME",
                      help="the bundle's detector that flags (default: nero)")
    _add_explain_option(flag, "show the N flagged images of lowest score explained: the map of why NERO flags them, and "
                              "for their top neurons the concept map and reference patches from the bundle's training "
                              "images; 0: none (needs nero in the bundle) (default: 8)")
    flag.add_argument("--batch-size", type=_positive, default=256, metavar="B",
                      help="images read and scored at a time: memory holds one batch, not the folder (default: 256)")
    flag.add_argument("--device", default="auto", help="auto (CUDA when available), cpu, cuda, cuda:1, ...")
    return parser


def _add_explain_option(parser: argparse.ArgumentParser, text: str) -> None:
    """``--explain N`` (``evaluate``, ``flag``): how many of report.html's images are explained."""
    parser.add_argument("--explain", type=_non_negative, default=8, metavar="N", help=text)


def _add_detector_options(parser: argparse.ArgumentParser, default: list[str], shown: str) -> None:
    """``--preset`` and ``--detectors`` (``evaluate``, ``fit``)."""
    parser.add_argument("--preset", choices=_detectors.PRESETS, default="ours",
                        help="detector hyperparameters: ours (each method's paper) or reference (NERO's reference code, "
                             "for a resnet or vit/deit ARCH: NERO k=175, ReAct clip 0.9/0.99, ODIN T=100, eps=5e-4, NECO's "
                             "transformer form) (default: ours)")
    parser.add_argument("--detectors", type=_detector_list, default=default, metavar="NAMES",
                        help=f"comma-separated detectors, e.g. nero,msp,knn (default: {shown})")


def _add_run_options(parser: argparse.ArgumentParser) -> None:
    """``--device`` and ``--no-cache`` (``evaluate``, ``fit``)."""
    parser.add_argument("--device", default="auto", help="auto (CUDA when available), cpu, cuda, cuda:1, ...")
    parser.add_argument("--no-cache", action="store_true", help="neither reuse nor store images and trained weights")


def _cell(text: str) -> str:
    """A markdown table cell: ``|`` escaped, so a class name cannot split the row."""
    return str(text).replace("|", "\\|")


def _markdown(metrics: pd.DataFrame) -> str:
    lines = ["| detector | ood_class | " + " | ".join(METRICS) + " |", "|---|---|" + "---|" * len(METRICS)]
    for row in metrics.itertuples(index=False):
        values = " | ".join(f"{getattr(row, m):.4f}" for m in METRICS)
        lines.append(f"| {row.detector} | {_cell(row.ood_class)} | {values} |")
    return "\n".join(lines) + "\n"


def small_data_params(names: list[str], n_train: int, n_features: int) -> tuple[dict[str, dict], dict[str, str]]:
    """Hyperparameters that fit a small training set, and a note for each one changed.

    KNN's ``k`` (default 50) is at most the number of training images; NECO's ``dim``
    (default 100) at most ``min(N, D)``. Everything else keeps its paper's default.
    """
    params, notes = {}, {}
    k = _detectors.create("knn").k
    if "knn" in names and k > n_train:
        params["knn"] = {"k": n_train}
        notes["knn"] = f"k={n_train} instead of {k}: there are {n_train} training images"
    dim, limit = _detectors.create("neco").dim, min(n_train, n_features)
    if "neco" in names and dim > limit:
        params["neco"] = {"dim": limit}
        notes["neco"] = f"dim={limit} instead of {dim}: at most min(training images, features) = {limit}"
    return params, notes


def _write_set(out: Path, writers: dict, run: dict, start: float) -> None:
    """Write the result files as a set: all into a staging folder inside ``out``, then renamed
    into place together, ``run.json`` last (its ``seconds.write`` counted from ``start``). A
    failure before the renames leaves every earlier file in ``out`` as it was."""
    out.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=out, prefix=".nero_lite-"))
    try:
        for name, write in writers.items():
            write(staging / name)
        run["seconds"]["write"] = time.perf_counter() - start
        (staging / "run.json").write_text(json.dumps(run, indent=1))
        for name in [*writers, "run.json"]:
            os.replace(staging / name, out / name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _unwritable(folder: Path) -> str | None:
    """Why ``folder`` cannot be created or written to (``None``: it can); creates nothing."""
    if folder.exists() and not folder.is_dir():
        return f"{folder} is a file, not a folder"
    existing = folder
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        return f"{folder} cannot be created: {existing} is a file"
    try:
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as error:
        return f"{existing} is not writable ({error.strerror or error})"
    return None


def read(args: argparse.Namespace) -> Splits:
    """The three folders of the ``evaluate`` command as :class:`~nero_lite.data.Splits` (masked if asked)."""
    return load_folders(
        args.train, args.ood, test_dir=args.id, size=args.size, seed=args.seed,
        mask_corner=args.mask_corner, mask_text=args.mask_text, cache=not args.no_cache,
    )


def classifier(args: argparse.Namespace, train: ImageSet, device) -> nn.Module:
    """The model of the options: the ``--weights`` classifier as it is when its head fits the
    classes of ``train`` (the ``--train`` images), else trained on ``train`` (or reused from
    the cache) with ``--recipe``."""
    if args.weights is not None:
        model = create_model(args.arch, len(train.classes), args.size, weights=args.weights)
        if model.head_loaded:
            print(f"using the classifier in {args.weights} as it is (its head has one output per --train class)", file=sys.stderr)
            model.from_cache = False
            return model.to(device).eval()
        print(f"fine-tuning from {args.weights} with a new head of {len(train.classes)} classes", file=sys.stderr)
    recipe = replace(Recipe.paper() if args.recipe == "paper" else Recipe(), epochs=args.epochs)
    return train_classifier(train, args.arch, recipe, seed=args.seed, pretrained=args.pretrained,
                            weights=args.weights, device=device, cache=not args.no_cache)


def evaluate(args: argparse.Namespace, splits: Splits, read_seconds: float = 0.0) -> dict:
    """Run the ``evaluate`` (alias ``score``) command on images already read; returns what it wrote to ``run.json``."""
    seconds = {"read": read_seconds}
    device = resolve_device(args.device)
    print(f"read {len(splits.train)} training, {len(splits.test)} ID test and {len(splits.ood)} OOD images "
          f"({len(splits.id_classes)} ID classes, {len(splits.ood_classes)} OOD classes) on {device}", file=sys.stderr)

    start = time.perf_counter()
    model = classifier(args, splits.train, device)
    seconds["train"] = time.perf_counter() - start

    start = time.perf_counter()
    outputs = extract_splits(model, splits, device=device)
    seconds["extract"] = time.perf_counter() - start
    id_accuracy = accuracy(outputs.test)
    print(f"ID test accuracy {id_accuracy:.1%}", file=sys.stderr)

    start = time.perf_counter()
    params, adapted = small_data_params(args.detectors, len(splits.train), outputs.train.features.shape[1])
    for name, note in adapted.items():
        print(f"{name}: {note}", file=sys.stderr)
    # created here, not by name inside compare_detectors, to keep the fitted NERO for report.html's explanations
    created = {name: _detectors.create(name, args.preset, args.arch, **params.get(name, {})) for name in args.detectors}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # each skipped detector is reported once, below
        table, scores = compare_detectors(outputs, splits, created, model=model, skip_failing=True)
    skipped = table.attrs["skipped"]
    for name, reason in skipped.items():
        print(f"warning: skipped detector {name}: {reason}", file=sys.stderr)
    seconds["detectors"] = time.perf_counter() - start

    start = time.perf_counter()
    keep = table.ood_class.isin([*splits.ood_classes, "all"])
    metrics = table.loc[keep, ["detector", "ood_class", *METRICS]].reset_index(drop=True)
    id_files = [str(f) for f in splits.test.files]
    ood_files = [str(f) for f in splits.ood.files]
    id_predicted = [splits.id_classes[k] for k in outputs.test.predictions().cpu().tolist()]
    ood_predicted = [splits.id_classes[k] for k in outputs.ood.predictions().cpu().tolist()]
    ood_class = [splits.ood_classes[k] for k in splits.ood.labels.tolist()]
    truths = [f"ID test: {splits.id_classes[k]}" for k in splits.test.labels.tolist()] + [f"OOD: {c}" for c in ood_class]
    nero = created["nero"] if "nero" in scores else None  # fitted, not skipped
    page, explained = _evaluate_page(args, model, splits, scores, nero, metrics, id_files + ood_files, truths,
                                     id_predicted + ood_predicted, device)
    seconds["report"] = time.perf_counter() - start

    start = time.perf_counter()
    frames = []
    for name, (id_scores, ood_scores) in scores.items():
        frames.append(pd.DataFrame({"file": id_files, "set": "id", "ood_class": "", "detector": name,
                                    "score": id_scores.numpy(), "predicted": id_predicted}))
        frames.append(pd.DataFrame({"file": ood_files, "set": "ood", "ood_class": ood_class, "detector": name,
                                    "score": ood_scores.numpy(), "predicted": ood_predicted}))
    table_of_scores = pd.concat(frames, ignore_index=True)
    run = {
        "options": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items() if k != "func"},
        "device": str(device),
        "images": {"train": len(splits.train), "id": len(splits.test), "ood": len(splits.ood)},
        "classes": {"id": splits.id_classes, "ood": splits.ood_classes},
        "id_accuracy": id_accuracy,
        "model_from_cache": bool(getattr(model, "from_cache", False)),
        "model_used_as_is": bool(getattr(model, "head_loaded", False)),
        "detectors": {"adapted": adapted, "skipped": skipped},
        "explained": explained,
        "skipped_files": [{"file": file, "reason": reason} for file, reason in splits.skipped.items()],
        "seconds": seconds,
    }
    writers = {
        "scores.csv": lambda path: table_of_scores.to_csv(path, index=False),
        "metrics.json": lambda path: metrics.to_json(path, orient="records", indent=1),
        "metrics.md": lambda path: path.write_text(_markdown(metrics)),
        "report.html": lambda path: path.write_text(page, encoding="utf-8"),
    }
    _write_set(args.out, writers, run, start)
    print(_markdown(metrics[metrics.ood_class == "all"]), end="")
    timing = ", ".join(f"{phase} {s:.1f} s" for phase, s in seconds.items())
    print(f"wrote {args.out}/scores.csv, metrics.json, metrics.md, report.html, run.json ({timing})", file=sys.stderr)
    return run


def _evaluate_page(args: argparse.Namespace, model: nn.Module, splits: Splits, scores: dict, nero, metrics: pd.DataFrame,
                   files: list[str], truths: list[str], predicted: list[str], device) -> tuple[str, int]:
    """``evaluate``'s report.html and how many images it explains.

    ``files``, ``truths`` and ``predicted`` (classes) list the ID test then the OOD images.
    The histogram is NERO's (or the first detector's) with its threshold at 95 % ID TPR on
    the ID test images; the gallery holds the images below it, lowest first.
    ``nero`` (the fitted NERO, or ``None``) is put with the model and a reference pool
    drawn from the training images into an unsaved :class:`~nero_lite.bundle.Bundle`, which
    gives the nearest class of the shown images and explains them as ``flag`` does.
    """
    name = "nero" if nero is not None else next(iter(scores))
    id_scores, ood_scores = scores[name]
    threshold = threshold_at_tpr(id_scores, ID_TPR)
    values = torch.cat([id_scores, ood_scores])
    images = torch.cat([splits.test.images, splits.ood.images])
    order = [i for i in values.argsort(stable=True).tolist() if values[i] < threshold][:GALLERY]
    gallery = [Flagged(files[i], float(values[i]), predicted[i], "", images[i], truth=truths[i]) for i in order]
    note, explained = "", 0
    if nero is not None and gallery:
        bundle = Bundle(model, args.arch, args.size, args.mask_corner, args.mask_text, splits.id_classes, {"nero": nero},
                        {"nero": threshold}, fingerprint(splits.train.images, splits.train.labels),
                        references=reference_pool(splits.train, seed=args.seed))
        nearest = bundle.score(torch.stack([item.image for item in gallery]), device=device, progress=False).nearest
        gallery = [replace(item, nearest=splits.id_classes[k]) for item, k in zip(gallery, nearest.tolist())]
        gallery, note, explained = _explain_gallery(bundle, gallery, args.explain, device)
    elif args.explain and gallery:
        note = "The images are not explained: explanations need nero among --detectors."
    page = evaluate_report(title=f"nero_lite evaluate: {args.id} against {args.ood}", detector=name, threshold=threshold,
                           id_scores=id_scores.numpy(), ood_scores=ood_scores.numpy(), metrics=metrics, gallery=gallery,
                           skipped=len(splits.skipped), note=note)
    return page, explained


def _explain_gallery(bundle: Bundle, gallery: list[Flagged], n: int, device) -> tuple[list[Flagged], str, int]:
    """The gallery with its first ``n`` images explained by the bundle's NERO, the note report.html
    adds, and how many were explained.

    With a reference pool each explained image gets its full report
    (:meth:`~nero_lite.bundle.Bundle.reports`: the why-flagged map, concept maps, reference
    patches); without one the why-flagged map only (:meth:`~nero_lite.bundle.Bundle.explain`)
    and :data:`NO_POOL_NOTE`. Only those ``n`` are explained, so the cost does not grow with
    the folder.
    """
    n = min(n, len(gallery))
    if not n:
        return gallery, "", 0
    pixels = torch.stack([item.image for item in gallery[:n]])
    if bundle.references is None:
        maps = bundle.explain(pixels, device=device)
        explained = [replace(item, heatmap=heatmap.numpy()) for item, heatmap in zip(gallery, maps)]
        return explained + gallery[n:], NO_POOL_NOTE, n
    reports = bundle.reports(pixels, device=device)
    explained = [replace(item, heatmap=report.score_map, report=report) for item, report in zip(gallery, reports)]
    return explained + gallery[n:], "", n


def _check(args: argparse.Namespace) -> str | None:
    """What is wrong with the ``evaluate`` options before any image is read (``None``: nothing)."""
    for option in ("train", "id", "ood"):
        problem = _folder_problem(f"--{option}", getattr(args, option), "a folder with one sub-folder per class")
        if problem:
            return problem
    for option in ("id", "ood"):
        if getattr(args, option).resolve() == args.train.resolve():
            return f"--{option} is the --train folder ({args.train}); give images the classifier does not train on"
    return _check_model(args)


def _check_model(args: argparse.Namespace) -> str | None:
    """What is wrong with the options ``evaluate`` and ``fit`` share (``None``: nothing)."""
    if args.arch == "vit" and (args.size % 8 or args.size < 16):
        return f"--size: the vit cuts images into an 8×8 grid of patches, so SIZE must be a multiple of 8 (at least 16), got {args.size}"
    if args.arch == "deit_small" and args.size % 16:
        return f"--size: deit_small cuts images into 16-pixel patches, so SIZE must be a multiple of 16, got {args.size}"
    if args.preset == "reference":
        try:
            arch_family(args.arch)
        except ValueError as error:
            return f"--preset reference: {error}"
    if args.weights is not None:
        try:
            read_weights(args.weights)
        except (FileNotFoundError, ValueError) as error:
            return f"--weights: {error}"
    problem = _device_or_out_problem(args)
    if problem:
        return problem
    if not args.no_cache:
        problem = _unwritable(cache_dir(create=False))
        if problem:
            return f"the cache (NERO_LITE_CACHE): {problem}; set NERO_LITE_CACHE or use --no-cache"
    return None


def _device_or_out_problem(args: argparse.Namespace) -> str | None:
    """What is wrong with ``--device`` and ``--out``, as one line (``None``: nothing); every command has both."""
    try:
        resolve_device(args.device)
    except ValueError as error:
        return f"--device: {error}"
    problem = _unwritable(args.out)
    return f"--out: {problem}" if problem else None


def _folder_problem(option: str, folder: Path, wanted: str = "a folder") -> str | None:
    """Why ``folder`` (the value of ``option``) is not an existing folder (``None``: it is);
    for a file in its place the message asks for ``wanted`` instead."""
    if folder.is_file():
        return f"{option}: {folder} is a file; give {wanted}"
    if not folder.is_dir():
        return f"{option}: folder not found: {folder}"
    return None


def _check_fit(args: argparse.Namespace) -> str | None:
    """What is wrong with the ``fit`` options before any image is read (``None``: nothing)."""
    problem = _folder_problem("--train", args.train)
    if problem:
        return problem
    classes = class_folders(args.train)
    if len(classes) < 2:
        return f"--train: {args.train} holds {len(classes)} class sub-folder(s); a classifier needs at least two"
    if args.val is not None:
        problem = _folder_problem("--val", args.val)
        if problem:
            return problem
        if args.val.resolve() == args.train.resolve():
            return f"--val is the --train folder ({args.train}); give images the classifier does not train on"
        missing = sorted(set(class_folders(args.val)) - set(classes))
        if missing:
            return f"--val: class folder(s) {missing} in {args.val} are not among the --train classes"
    return _check_model(args)


def _split_validation(images: ImageSet, fraction: float, seed: int) -> tuple[ImageSet, ImageSet]:
    """A seeded per-class split of ``images`` into training and validation images (each class
    keeps at least one of each; a class needs two images)."""
    train, val = stratified_split(images.labels, 1 - fraction, seed)
    return images.subset(train), images.subset(val)


def read_fit(args: argparse.Namespace) -> tuple[ImageSet, ImageSet]:
    """The training and validation images of the ``fit`` options, masked as asked."""
    images = read_imagefolder(args.train, size=args.size)
    if args.val is not None:
        train, val = images, read_imagefolder(args.val, size=args.size)
        mapping = torch.tensor([train.classes.index(name) for name in val.classes])
        val = ImageSet(val.images, mapping[val.labels], train.classes, val.files)
    else:
        train, val = _split_validation(images, args.val_fraction or VAL_FRACTION, args.seed)
    masked = [replace(part, images=preprocess(part, args.size, args.mask_corner, args.mask_text)) for part in (train, val)]
    return masked[0], masked[1]


def fit(args: argparse.Namespace, train: ImageSet, val: ImageSet, read_seconds: float = 0.0) -> Bundle:
    """Run the ``fit`` command on images already read; returns the bundle it wrote."""
    seconds = {"read": read_seconds}
    device = resolve_device(args.device)
    print(f"read {len(train)} training and {len(val)} validation images ({len(train.classes)} classes) on {device}",
          file=sys.stderr)
    start = time.perf_counter()
    model = classifier(args, train, device)
    seconds["train"] = time.perf_counter() - start

    start = time.perf_counter()
    outputs = extract(model, train, device)
    params, adapted = small_data_params(args.detectors, len(train), outputs.features.shape[1])
    for name, note in adapted.items():
        print(f"{name}: {note}", file=sys.stderr)
    fitted, skipped = {}, {}
    for name in tqdm(args.detectors, desc="fit detectors"):
        try:
            fitted[name] = _detectors.create(name, args.preset, args.arch, **params.get(name, {})).fit(outputs)
        except ValueError as error:
            skipped[name] = str(error).splitlines()[0]
            print(f"warning: skipped detector {name}: {skipped[name]}", file=sys.stderr)
    if not fitted:
        raise ValueError(f"no detector could be fitted on the {len(train)} training images: {skipped}")
    seconds["detectors"] = time.perf_counter() - start

    start = time.perf_counter()
    unsaved = Bundle(model, args.arch, args.size, args.mask_corner, args.mask_text, train.classes, fitted, {},
                     fingerprint(train.images, train.labels))
    on_val = unsaved.score(val, device=device)
    thresholds = {name: threshold_at_tpr(values, ID_TPR) for name, values in on_val.scores.items()}
    val_accuracy = float((on_val.predicted == val.labels).float().mean())
    seconds["thresholds"] = time.perf_counter() - start
    info = {
        "options": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "images": {"train": len(train), "val": len(val)},
        "val_accuracy": val_accuracy,
        "id_tpr": ID_TPR,
        "model_from_cache": bool(getattr(model, "from_cache", False)),
        "model_used_as_is": bool(getattr(model, "head_loaded", False)),
        "detectors": {"adapted": adapted, "skipped": skipped},
        "seconds": seconds,
    }
    bundle = save_bundle(args.out, model, args.arch, args.size, args.mask_corner, args.mask_text, train.classes,
                         fitted, thresholds, unsaved.train_fingerprint, info,
                         references=reference_pool(train, seed=args.seed))
    print(f"validation accuracy {val_accuracy:.1%}; thresholds at {ID_TPR:.0%} ID TPR: "
          + ", ".join(f"{name} {value:.4g}" for name, value in thresholds.items()), file=sys.stderr)
    print(f"wrote the bundle {args.out}", file=sys.stderr)
    return bundle


def _check_flag(args: argparse.Namespace) -> str | None:
    """What is wrong with the ``flag`` options before any image is read (``None``: nothing)."""
    if not args.bundle.is_dir():
        return f"BUNDLE: no bundle folder at {args.bundle}" if not args.bundle.is_file() else f"BUNDLE: {args.bundle} is a file; give the folder `fit` wrote"
    problem = _folder_problem("IMAGES_DIR", args.images)
    if problem:
        return problem
    problem = _device_or_out_problem(args)
    if problem:
        return problem
    return None


def flag(args: argparse.Namespace, bundle: Bundle, files: list[Path]) -> dict:
    """Run the ``flag`` command: score ``files`` in batches of ``--batch-size``; returns what it wrote to ``run.json``."""
    device = resolve_device(args.device)
    threshold = bundle.thresholds[args.detector]
    nero = "nero" in bundle.detectors
    start = time.perf_counter()
    rows, skipped, kept = [], {}, []  # kept: a max-heap by score of the GALLERY flagged images of lowest score
    bar = tqdm(total=len(files), desc="flag", unit="img")
    for first in range(0, len(files), args.batch_size):
        images, read = [], []
        for path in files[first : first + args.batch_size]:
            try:
                images.append(read_image(path, bundle.size))
                read.append(path)
            except (OSError, UnidentifiedImageError, ValueError, Image.DecompressionBombError):
                skipped[str(path)] = "unreadable"
        bar.update(min(args.batch_size, len(files) - first))
        if not images:
            continue
        pixels = torch.stack(images)
        result = bundle.score(pixels, batch_size=len(pixels), device=device, progress=False)
        scores = result.scores[args.detector]
        for i, path in enumerate(read):
            score = float(scores[i])
            row = {"file": str(path), "score": score, "threshold": threshold, "flagged": score < threshold,
                   "predicted": bundle.classes[int(result.predicted[i])], "nearest": "", "top_neurons": ""}
            if nero:
                row["nearest"] = bundle.classes[int(result.nearest[i])]
                row["top_neurons"] = ";".join(f"{int(j)}:{float(c):.4g}" for j, c in
                                              zip(result.top_neurons[i], result.top_contributions[i]))
            rows.append(row)
            if row["flagged"]:
                heapq.heappush(kept, (-score, len(rows), row, pixels[i].clone()))
                if len(kept) > GALLERY:
                    heapq.heappop(kept)
    bar.close()
    if skipped:
        names = ", ".join(Path(file).name for file in list(skipped)[:3])
        print(f"warning: skipped {len(skipped)} unreadable image file(s) under {args.images}: {names}"
              + (f" and {len(skipped) - 3} more" if len(skipped) > 3 else ""), file=sys.stderr)
    if not rows:
        raise ValueError(f"no readable image under {args.images} ({len(skipped)} unreadable file(s))")
    seconds = {"score": time.perf_counter() - start}

    start = time.perf_counter()
    shown = sorted(kept, key=lambda item: (-item[0], item[1]))  # lowest score first
    gallery = [Flagged(row["file"], row["score"], row["predicted"], row["nearest"], image) for _, _, row, image in shown]
    note, explained = "", 0
    if nero:
        gallery, note, explained = _explain_gallery(bundle, gallery, args.explain, device)
    elif args.explain and gallery:
        note = "The images are not explained: explanations need nero in the bundle."
    seconds["explain"] = time.perf_counter() - start

    start = time.perf_counter()
    table = pd.DataFrame(rows, columns=list(FLAG_COLUMNS))
    page = flag_report(title=f"nero_lite flag: {args.images}", detector=args.detector, threshold=threshold,
                       scores=table.score.to_numpy(), gallery=gallery, skipped=len(skipped), note=note)
    flagged = int(table.flagged.sum())
    run = {
        "options": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "device": str(device),
        "detector": args.detector,
        "threshold": threshold,
        "images": {"found": len(files), "scored": len(table), "flagged": flagged},
        "explained": explained,
        "reference_pool": bundle.references is not None,
        "bundle": {"train_fingerprint": bundle.train_fingerprint, "versions": bundle.versions},
        "skipped_files": [{"file": file, "reason": reason} for file, reason in skipped.items()],
        "seconds": seconds,
    }
    writers = {
        "flags.csv": lambda path: table.to_csv(path, index=False),
        "report.html": lambda path: path.write_text(page, encoding="utf-8"),
    }
    _write_set(args.out, writers, run, start)
    print(f"flagged {flagged} of {len(table)} images ({flagged / len(table):.1%}) with {args.detector}; "
          f"wrote {args.out}/flags.csv, report.html, run.json", file=sys.stderr)
    return run


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m nero_lite``; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    command = f"{parser.prog} {args.command}"

    def fail(message: str):
        parser.exit(2, f"{command}: error: {message} (see {command} --help)\n")

    checks = {"evaluate": _check, "score": _check, "fit": _check_fit, "flag": _check_flag}
    problem = checks[args.command](args)
    if problem:
        fail(problem)
    out = args.out
    try:
        if args.command == "flag":
            try:
                bundle = load_bundle(args.bundle)
            except (FileNotFoundError, ValueError) as error:
                fail(f"BUNDLE: {str(error).splitlines()[0]}")
            if args.detector not in bundle.detectors:
                fail(f"--detector: the bundle has no detector {args.detector!r}; it has {', '.join(bundle.detectors)}")
            if args.detector not in bundle.thresholds:
                fail(f"--detector: the bundle holds no threshold for {args.detector!r}")
            files = image_files(args.images, recursive=True)
            if not files:
                fail(f"IMAGES_DIR: no image files under {args.images} (looked for {', '.join(IMAGE_EXTENSIONS)})")
            try:
                flag(args, bundle, files)
            except ValueError as error:  # no readable image at all
                fail(str(error).splitlines()[0])
            return 0
        if not args.no_cache:
            remove_stale_temp_files()  # left by a run that was killed while writing
        start = time.perf_counter()
        try:
            if args.command == "fit":
                train, val = read_fit(args)
                classes = train.classes
            else:
                splits = read(args)
                classes = splits.id_classes
            if args.weights is not None:  # weights that do not fit ARCH, found before any training
                create_model(args.arch, len(classes), args.size, weights=args.weights)
        except (FileNotFoundError, ValueError) as error:  # bad folders, classes or weights, as nero_lite reports them
            fail(str(error).splitlines()[0])
        if args.command == "fit":
            try:
                fit(args, train, val, time.perf_counter() - start)
            except ValueError as error:  # no detector could be fitted
                fail(str(error).splitlines()[0])
        else:
            evaluate(args, splits, time.perf_counter() - start)
    except KeyboardInterrupt:
        print(f"{command}: interrupted; results in {out} are as they were", file=sys.stderr)
        return 130
    return 0
