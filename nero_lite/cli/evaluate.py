"""The ``evaluate`` command (alias ``score``): its options and their checks, the three folders read
as :class:`~nero_lite.data.Splits`, every detector fitted and measured on them, and the files it
writes (``scores.csv``, ``metrics.json``, ``metrics.md``, ``report.html``, ``run.json``)."""

from __future__ import annotations

import dataclasses
import sys
import time
import warnings
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from ..constants import DETECTORS
from .common import GALLERY, ID_TPR
from .options import (ModelOptions, add_detector_options, add_explain_option, add_model_options, add_run_options,
                      check_model, folder_problem)

if TYPE_CHECKING:
    import pandas as pd
    from torch import nn

    from ..data import Splits

__all__ = ["METRICS", "EvaluateOptions", "add_command", "check", "evaluate", "read"]

#: The metrics of ``metrics.json`` and ``metrics.md``, in their order.
METRICS = ("auroc", "fpr95", "aupr_in", "aupr_out")


@dataclasses.dataclass(frozen=True, kw_only=True)
class EvaluateOptions(ModelOptions):
    """The options of ``evaluate`` (and of ``score``, its former name)."""

    train: Path
    id: Path
    ood: Path
    explain: int


def add_command(commands) -> None:
    """Add ``evaluate`` (alias ``score``) and its options to ``commands`` (the parser's sub-parsers)."""
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
    add_model_options(evaluation)
    add_detector_options(evaluation, list(DETECTORS), "all")
    evaluation.add_argument("--out", type=Path, default=Path("results"), help="output folder, created if needed; its five files are overwritten (default: results)")
    add_explain_option(evaluation, "show the N images of lowest NERO score that fall below its threshold explained: the map of "
                                   "why NERO flags them, and for their top neurons the concept map and reference patches "
                                   "from --train; 0: none (needs nero among --detectors) (default: 8)")
    add_run_options(evaluation)


def check(args: EvaluateOptions) -> str | None:
    """What is wrong with the ``evaluate`` options before any image is read (``None``: nothing)."""
    for option in ("train", "id", "ood"):
        problem = folder_problem(f"--{option}", getattr(args, option), "a folder with one sub-folder per class")
        if problem:
            return problem
    for option in ("id", "ood"):
        if getattr(args, option).resolve() == args.train.resolve():
            return f"--{option} is the --train folder ({args.train}); give images the classifier does not train on"
    return check_model(args)


def read(args: EvaluateOptions) -> Splits:
    """The three folders of the ``evaluate`` command as :class:`~nero_lite.data.Splits` (masked if asked)."""
    from ..data import load_folders

    return load_folders(
        args.train, args.ood, test_dir=args.id, size=args.size, seed=args.seed,
        mask_corner=args.mask_corner, mask_text=args.mask_text, cache=not args.no_cache,
    )


def _cell(text: str) -> str:
    """A markdown table cell: ``|`` escaped, so a class name cannot split the row."""
    return str(text).replace("|", "\\|")


def _markdown(metrics: pd.DataFrame) -> str:
    lines = ["| detector | ood_class | " + " | ".join(METRICS) + " |", "|---|---|" + "---|" * len(METRICS)]
    for row in metrics.itertuples(index=False):
        values = " | ".join(f"{getattr(row, m):.4f}" for m in METRICS)
        lines.append(f"| {row.detector} | {_cell(row.ood_class)} | {values} |")
    return "\n".join(lines) + "\n"


def evaluate(args: EvaluateOptions, splits: Splits, read_seconds: float = 0.0, given: nn.Module | None = None) -> dict:
    """Run the ``evaluate`` (alias ``score``) command on images already read; returns what it wrote to ``run.json``.

    ``given``: the classifier built from ``--weights`` while checking them (:func:`~nero_lite.cli.classifier`).
    """
    import pandas as pd

    from .. import detectors
    from ..compare import ExtractedSplits, compare_detectors
    from ..devices import resolve_device
    from ..extraction import accuracy
    from .common import classifier, extract_sets, small_data_params, write_set

    seconds = {"read": read_seconds}
    device = resolve_device(args.device)
    print(f"read {len(splits.train)} training, {len(splits.test)} ID test and {len(splits.ood)} OOD images "
          f"({len(splits.id_classes)} ID classes, {len(splits.ood_classes)} OOD classes) on {device}", file=sys.stderr)

    start = time.perf_counter()
    model = classifier(args, splits.train, device, given)
    seconds["train"] = time.perf_counter() - start

    start = time.perf_counter()
    outputs = ExtractedSplits(*extract_sets(args, model, [splits.train, splits.test, splits.ood], device))
    seconds["extract"] = time.perf_counter() - start
    id_accuracy = accuracy(outputs.test)
    print(f"ID test accuracy {id_accuracy:.1%}", file=sys.stderr)

    start = time.perf_counter()
    params, adapted = small_data_params(args.detectors, len(splits.train), outputs.train.features.shape[1])
    for name, note in adapted.items():
        print(f"{name}: {note}", file=sys.stderr)
    # created here, not by name inside compare_detectors, to keep the fitted NERO for report.html's explanations
    created = {name: detectors.create(name, args.preset, args.arch, **params.get(name, {})) for name in args.detectors}
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
    page, explained = _evaluate_page(args, model, splits, outputs, scores, nero, metrics, id_files + ood_files, truths,
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
        "options": args.as_json(),
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
    write_set(args.out, writers, run, start)
    print(_markdown(metrics[metrics.ood_class == "all"]), end="")
    timing = ", ".join(f"{phase} {s:.1f} s" for phase, s in seconds.items())
    print(f"wrote {args.out}/scores.csv, metrics.json, metrics.md, report.html, run.json ({timing})", file=sys.stderr)
    return run


def _evaluate_page(args: EvaluateOptions, model: nn.Module, splits: Splits, outputs, scores: dict, nero,
                   metrics: pd.DataFrame, files: list[str], truths: list[str], predicted: list[str], device) -> tuple[str, int]:
    """``evaluate``'s report.html and how many images it explains.

    ``files``, ``truths`` and ``predicted`` (classes) list the ID test then the OOD images.
    The histogram is NERO's (or the first detector's) with its threshold at 95 % ID TPR on
    the ID test images; the gallery holds the images below it, lowest first.
    The nearest class of the shown images comes from ``nero.decompose`` of the ``outputs``
    already extracted (no second forward pass). ``nero`` (the fitted NERO, or ``None``) is put
    with the model and a reference pool drawn from the training images into an unsaved
    :class:`~nero_lite.bundle.Bundle`, which explains them as ``flag`` does.
    """
    import torch

    from ..bundle import Bundle, reference_pool
    from ..cache import fingerprint
    from ..data import Preprocessing
    from ..metrics import threshold_at_tpr
    from ..report import Flagged, evaluate_report
    from .common import explain_gallery

    name = "nero" if nero is not None else next(iter(scores))
    id_scores, ood_scores = scores[name]
    threshold = threshold_at_tpr(id_scores, ID_TPR)
    values = torch.cat([id_scores, ood_scores])
    images = torch.cat([splits.test.images, splits.ood.images])
    order = [i for i in values.argsort(stable=True).tolist() if values[i] < threshold][:GALLERY]
    gallery = [Flagged(files[i], float(values[i]), predicted[i], "", images[i], truth=truths[i]) for i in order]
    note, explained = "", 0
    if nero is not None and gallery:
        bundle = Bundle(model=model, arch=args.arch, preprocessing=Preprocessing(args.size, args.mask_corner, args.mask_text),
                        classes=splits.id_classes, detectors={"nero": nero}, thresholds={"nero": threshold},
                        train_fingerprint=fingerprint(splits.train.images, splits.train.labels),
                        pool=reference_pool(splits.train, seed=args.seed))
        nearest = torch.cat([nero.decompose(outputs.test).nearest, nero.decompose(outputs.ood).nearest]).cpu()
        gallery = [replace(item, nearest=splits.id_classes[int(nearest[i])]) for item, i in zip(gallery, order)]
        gallery, note, explained = explain_gallery(bundle, gallery, args.explain, device)
    elif args.explain and gallery:
        note = "The images are not explained: explanations need nero among --detectors."
    page = evaluate_report(title=f"nero_lite evaluate: {args.id} against {args.ood}", detector=name, threshold=threshold,
                           id_scores=id_scores.numpy(), ood_scores=ood_scores.numpy(), metrics=metrics, gallery=gallery,
                           skipped=len(splits.skipped), note=note)
    return page, explained
