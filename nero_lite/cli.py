"""Command line: score a user's own image folders with every detector.

``python -m nero_lite score --train ID_TRAIN_DIR --id ID_TEST_DIR --ood OOD_DIR`` trains
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
``run.json``
    The options, image counts, ID test accuracy, the seconds of each phase, the image files
    found but not loaded (``skipped_files``: unreadable, or beside the class folders), and under
    ``detectors`` the hyperparameters adapted to a small training set (``adapted``) and
    the detectors left out because they could not be fitted on it (``skipped``), each with
    its reason; both are also printed.

Bad input ends with a one-line error and exit status 2, before any image is read where it
can be seen from the options: a missing folder or a file in its place, ``--id`` or ``--ood``
the same folder as ``--train``, a vit size that is not a multiple of 8 (deit_small: 16), an
unknown architecture or device, an unknown detector, a ``--weights`` file that is missing or
not a state dict; then a class folder without images, a single ID class, an ID test class
missing from ``--train``, weights that do not fit the architecture.
"""

from __future__ import annotations

import argparse
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
from torch import nn

from . import detectors as _detectors
from .cache import cache_dir, remove_stale_temp_files
from .compare import compare_detectors, extract_splits
from .detectors.presets import arch_family
from .data import CORNER_FRACTION, TEXT_MARGIN_FRACTION, Splits, load_folders
from .models import ARCHITECTURES, Recipe, accuracy, create_model, read_weights, resolve_device, train_classifier

__all__ = ["build_parser", "classifier", "main", "read", "score", "small_data_params"]

METRICS = ("auroc", "fpr95", "aupr_in", "aupr_out")


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


class _Parser(argparse.ArgumentParser):
    """Reports bad usage as one line (``prog: error: ... (see --help)``) and exit status 2."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    """The ``python -m nero_lite`` argument parser (sub-command ``score``)."""
    parser = _Parser(
        prog="python -m nero_lite",
        description="Explainable out-of-distribution detection on your own image folders.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    score = commands.add_parser(
        "score",
        help="train a classifier on ID folders, then score ID test and OOD images with every detector",
        description=(
            "Train (or reuse from the cache) a classifier on --train, extract its features and logits once, "
            "fit the detectors on the training images and score --id and --ood. Folders are in ImageFolder "
            "layout: one sub-folder per class, images inside. Writes scores.csv, metrics.json, metrics.md "
            "and run.json into --out."
        ),
    )
    score.add_argument("--train", required=True, type=Path, metavar="ID_TRAIN_DIR",
                       help="in-distribution training images, one sub-folder per class")
    score.add_argument("--id", required=True, type=Path, metavar="ID_TEST_DIR",
                       help="in-distribution test images; each sub-folder must be a class of --train")
    score.add_argument("--ood", required=True, type=Path, metavar="OOD_DIR",
                       help="out-of-distribution images, one sub-folder per kind (metrics are reported per sub-folder)")
    score.add_argument("--arch", type=_architecture, default="resnet18d", metavar="ARCH",
                       help="the classifier: resnet18d (timm ResNet-18-D, whose relevance maps have no fixed grid), resnet18 "
                            "(the paper's CNN), vit (DeiT-Tiny on an 8×8 grid of patches), deit_small (the paper's "
                            "transformer, 16-pixel patches) or any timm model name with a linear head (default: resnet18d)")
    start = score.add_mutually_exclusive_group()
    start.add_argument("--pretrained", action="store_true",
                       help="fine-tune from timm's ImageNet weights (downloaded: needs internet; resnet18 gets torchvision's, as the paper)")
    start.add_argument("--weights", type=Path, metavar="FILE",
                       help="start from a local safetensors or weights-only torch state dict of ARCH: a whole classifier "
                            "whose head has one output per --train class is used as it is (no training); any other "
                            "(e.g. ImageNet weights) is fine-tuned with a new head")
    score.add_argument("--recipe", choices=("book", "paper"), default="book",
                       help="training recipe: book (AdamW, one-cycle, flips and transposes) or paper (the NERO paper's: "
                            "Adam lr 1e-4, batch 32, flips, colour jitter, invert, equalize) (default: book)")
    score.add_argument("--size", type=_positive, default=128, help="images are center-cropped and resized to SIZE×SIZE pixels (default: 128)")
    score.add_argument("--epochs", type=_positive, default=20, help="training epochs (default: 20)")
    score.add_argument("--seed", type=int, default=0, help="seeds initialisation, batch order and augmentation (default: 0)")
    score.add_argument("--mask-corner", action="store_true",
                       help=f"black out the lower-left {round(100 * CORNER_FRACTION)}%% square of every image (HyperKvasir's box)")
    score.add_argument("--mask-text", action="store_true",
                       help=f"black out the left {round(100 * TEXT_MARGIN_FRACTION)}%% strip of every image (on-screen text)")
    score.add_argument("--preset", choices=_detectors.PRESETS, default="ours",
                       help="detector hyperparameters: ours (each method's paper) or reference (NERO's reference code, "
                            "for a resnet or vit/deit ARCH: NERO k=175, ReAct clip 0.9/0.99, ODIN T=100, eps=5e-4, NECO's "
                            "transformer form) (default: ours)")
    score.add_argument("--detectors", type=_detector_list, default=_detectors.available(), metavar="NAMES",
                       help="comma-separated detectors, e.g. nero,msp,knn (default: all)")
    score.add_argument("--out", type=Path, default=Path("results"), help="output folder, created if needed; its four files are overwritten (default: results)")
    score.add_argument("--device", default="auto", help="auto (CUDA when available), cpu, cuda, cuda:1, ...")
    score.add_argument("--no-cache", action="store_true", help="neither reuse nor store images and trained weights")
    return parser


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
    """The three folders of the ``score`` command as :class:`~nero_lite.data.Splits` (masked if asked)."""
    return load_folders(
        args.train, args.ood, test_dir=args.id, size=args.size, seed=args.seed,
        mask_corner=args.mask_corner, mask_text=args.mask_text, cache=not args.no_cache,
    )


def classifier(args: argparse.Namespace, splits: Splits, device) -> nn.Module:
    """The model of the options: the ``--weights`` classifier as it is when its head fits the
    ``--train`` classes, else trained (or reused from the cache) with ``--recipe``."""
    if args.weights is not None:
        model = create_model(args.arch, len(splits.id_classes), args.size, weights=args.weights)
        if model.head_loaded:
            print(f"using the classifier in {args.weights} as it is (its head has one output per --train class)", file=sys.stderr)
            model.from_cache = False
            return model.to(device).eval()
        print(f"fine-tuning from {args.weights} with a new head of {len(splits.id_classes)} classes", file=sys.stderr)
    recipe = replace(Recipe.paper() if args.recipe == "paper" else Recipe(), epochs=args.epochs)
    return train_classifier(splits.train, args.arch, recipe, seed=args.seed, pretrained=args.pretrained,
                            weights=args.weights, device=device, cache=not args.no_cache)


def score(args: argparse.Namespace, splits: Splits, read_seconds: float = 0.0) -> dict:
    """Run the ``score`` command on images already read; returns what it wrote to ``run.json``."""
    seconds = {"read": read_seconds}
    device = resolve_device(args.device)
    print(f"read {len(splits.train)} training, {len(splits.test)} ID test and {len(splits.ood)} OOD images "
          f"({len(splits.id_classes)} ID classes, {len(splits.ood_classes)} OOD classes) on {device}", file=sys.stderr)

    start = time.perf_counter()
    model = classifier(args, splits, device)
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
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # each skipped detector is reported once, below
        table, scores = compare_detectors(outputs, splits, args.detectors, params, model=model, skip_failing=True,
                                          preset=args.preset, arch=args.arch)
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
        "skipped_files": [{"file": file, "reason": reason} for file, reason in splits.skipped.items()],
        "seconds": seconds,
    }
    writers = {
        "scores.csv": lambda path: table_of_scores.to_csv(path, index=False),
        "metrics.json": lambda path: metrics.to_json(path, orient="records", indent=1),
        "metrics.md": lambda path: path.write_text(_markdown(metrics)),
    }
    _write_set(args.out, writers, run, start)
    print(_markdown(metrics[metrics.ood_class == "all"]), end="")
    timing = ", ".join(f"{phase} {s:.1f} s" for phase, s in seconds.items())
    print(f"wrote {args.out}/scores.csv, metrics.json, metrics.md, run.json ({timing})", file=sys.stderr)
    return run


def _check(args: argparse.Namespace) -> str | None:
    """What is wrong with the ``score`` options before any image is read (``None``: nothing)."""
    for option in ("train", "id", "ood"):
        folder = getattr(args, option)
        if folder.is_file():
            return f"--{option}: {folder} is a file; give a folder with one sub-folder per class"
        if not folder.is_dir():
            return f"--{option}: folder not found: {folder}"
    for option in ("id", "ood"):
        if getattr(args, option).resolve() == args.train.resolve():
            return f"--{option} is the --train folder ({args.train}); give images the classifier does not train on"
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
    try:
        resolve_device(args.device)
    except ValueError as error:
        return f"--device: {error}"
    problem = _unwritable(args.out)
    if problem:
        return f"--out: {problem}"
    if not args.no_cache:
        problem = _unwritable(cache_dir(create=False))
        if problem:
            return f"the cache (NERO_LITE_CACHE): {problem}; set NERO_LITE_CACHE or use --no-cache"
    return None


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m nero_lite``; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    command = f"{parser.prog} {args.command}"

    def fail(message: str):
        parser.exit(2, f"{command}: error: {message} (see {command} --help)\n")

    problem = _check(args)
    if problem:
        fail(problem)
    try:
        if not args.no_cache:
            remove_stale_temp_files()  # left by a run that was killed while writing
        start = time.perf_counter()
        try:
            splits = read(args)
            if args.weights is not None:  # weights that do not fit ARCH, found before any training
                create_model(args.arch, len(splits.id_classes), args.size, weights=args.weights)
        except (FileNotFoundError, ValueError) as error:  # bad folders, classes or weights, as nero_lite reports them
            fail(str(error).splitlines()[0])
        score(args, splits, time.perf_counter() - start)
    except KeyboardInterrupt:
        print(f"{command}: interrupted; results in {args.out} are as they were", file=sys.stderr)
        return 130
    return 0
