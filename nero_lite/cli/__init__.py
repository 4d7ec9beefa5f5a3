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
reference pool of at most :data:`~nero_lite.constants.POOL_PER_CLASS` training images per
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

``--engine ray`` (every command; the ``scale`` extra, Ray Data) reads and scores ``flag``'s
images, or extracts the features of ``evaluate``'s and ``fit``'s image sets, on a Ray
cluster (:mod:`nero_lite.scale`): a local one on all cores and GPUs of this machine, or the
one at ``--address`` (``auto`` or ``HOST:PORT``), with ``--workers`` workers of
``--gpus-per-worker`` GPUs each. ``flags.csv`` is then written row by row as the batches
come, in the order of the files, as with ``--engine local`` (the default, which imports no
Ray); training stays on one device. A Ray cluster that fails or goes away during a run ends
it with one line and exit status 1, the previous results left whole.

Bad input ends with a one-line error and exit status 2, before any image is read where it
can be seen from the options: a missing folder or a file in its place, ``--id`` or ``--ood``
the same folder as ``--train``, a vit size that is not a multiple of 8 (deit_small: 16), an
unknown architecture or device, an unknown detector, a ``--weights`` file that is missing or
not a state dict; then a class folder without images, a single ID class, an ID test class
missing from ``--train``, weights that do not fit the architecture. ``fit`` refuses alike
``--val`` with ``--val-fraction``, a ``--val`` class missing from ``--train``; ``flag`` a
missing, incomplete or damaged bundle, a ``--detector`` the bundle lacks, an ``IMAGES_DIR``
that is missing or holds no image file.

The code is one module per command, each with the command's options, their checks and its run:
:mod:`~nero_lite.cli.evaluate`, :mod:`~nero_lite.cli.fit` and :mod:`~nero_lite.cli.flag`;
:mod:`~nero_lite.cli.options` holds what their command lines share (option types and groups,
checks, the typed records of the options) and :mod:`~nero_lite.cli.common` what they share when they
run. This module builds the parser from them (:func:`build_parser`), resolves the parsed options
once into the command's record (:class:`~nero_lite.cli.evaluate.EvaluateOptions`,
:class:`~nero_lite.cli.fit.FitOptions`, :class:`~nero_lite.cli.flag.FlagOptions`) and runs the
command (:func:`main`). Parsing imports no torch: ``--help`` and usage errors answer at once.
"""

from __future__ import annotations

import argparse
import sys
import time

from . import evaluate, fit, flag
from .common import GALLERY, ID_TPR, NO_POOL_NOTE, classifier, small_data_params
from .evaluate import METRICS
from .fit import FIT_DETECTORS, VAL_FRACTION
from .flag import FLAG_COLUMNS
from .options import Parser

__all__ = ["FIT_DETECTORS", "FLAG_COLUMNS", "GALLERY", "ID_TPR", "METRICS", "NO_POOL_NOTE", "VAL_FRACTION",
           "build_parser", "classifier", "main", "small_data_params"]

# Sphinx reads a constant's documentation (its ``#:`` comment) from the module it documents:
# the book's API page documents nero_lite.cli, so the public constants are described here too.
#: The metrics of ``metrics.json`` and ``metrics.md`` (``evaluate``), in their order.
METRICS = METRICS
#: The columns of ``flags.csv``, written by ``flag``.
FLAG_COLUMNS = FLAG_COLUMNS
#: The detectors ``fit`` puts into a bundle unless ``--detectors`` says otherwise: NERO and cheap baselines.
FIT_DETECTORS = FIT_DETECTORS
#: The share of each training class ``fit`` holds out for the thresholds when no ``--val`` is given.
VAL_FRACTION = VAL_FRACTION
#: The share of the validation images each threshold set by ``fit`` accepts (95 % ID TPR).
ID_TPR = ID_TPR
#: The most flagged images ``flag`` and ``evaluate`` keep (lowest scores) to show in report.html.
GALLERY = GALLERY
#: What report.html says when the bundle has no reference pool to find reference patches in.
NO_POOL_NOTE = NO_POOL_NOTE


def build_parser() -> argparse.ArgumentParser:
    """The ``python -m nero_lite`` argument parser (sub-commands ``evaluate`` (alias ``score``), ``fit`` and ``flag``)."""
    parser = Parser(
        prog="python -m nero_lite",
        description="Explainable out-of-distribution detection on your own image folders.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    evaluate.add_command(commands)
    fit.add_command(commands)
    flag.add_command(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m nero_lite``; returns the exit status."""
    parser = build_parser()
    namespace = parser.parse_args(argv)
    records = {"evaluate": evaluate.EvaluateOptions, "score": evaluate.EvaluateOptions, "fit": fit.FitOptions,
               "flag": flag.FlagOptions}
    args = records[namespace.command].from_namespace(namespace)  # every option, typed, read from here on
    command = f"{parser.prog} {args.command}"

    def fail(message: str):
        parser.exit(2, f"{command}: error: {message} (see {command} --help)\n")

    # the commands' functions are looked up in their modules at each call (tests replace them there)
    checks = {"evaluate": evaluate.check, "score": evaluate.check, "fit": fit.check, "flag": flag.check}
    problem = checks[args.command](args)
    if problem:
        fail(problem)
    out = args.out
    # the options are checked: only now torch and the package's models, data and bundles are imported
    from ..bundle import load_bundle
    from ..cache import remove_stale_temp_files
    from ..data import IMAGE_EXTENSIONS, image_files
    from ..models import create_model
    from ..scale import EngineError

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
                flag.flag(args, bundle, files)
            except ValueError as error:  # no readable image at all
                fail(str(error).splitlines()[0])
            return 0
        if not args.no_cache:
            remove_stale_temp_files()  # left by a run that was killed while writing
        start = time.perf_counter()
        try:
            if args.command == "fit":
                train, val = fit.read_fit(args)
                classes = train.classes
            else:
                splits = evaluate.read(args)
                classes = splits.id_classes
            # weights that do not fit ARCH are found before any training; the model built to check them is the one used
            given = create_model(args.arch, len(classes), args.size, weights=args.weights) if args.weights is not None else None
        except (FileNotFoundError, ValueError) as error:  # bad folders, classes or weights, as nero_lite reports them
            fail(str(error).splitlines()[0])
        if args.command == "fit":
            try:
                fit.fit(args, train, val, time.perf_counter() - start, given=given)
            except ValueError as error:  # no detector could be fitted
                fail(str(error).splitlines()[0])
        else:
            evaluate.evaluate(args, splits, time.perf_counter() - start, given=given)
    except KeyboardInterrupt:
        print(f"{command}: interrupted; results in {out} are as they were", file=sys.stderr)
        return 130
    except EngineError as error:  # the Ray cluster failed or went away during the run
        print(f"{command}: error: {error}; results in {out} are as they were", file=sys.stderr)
        return 1
    return 0
