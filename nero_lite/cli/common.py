"""What the commands of ``python -m nero_lite`` share when they run: the classifier of the options
(``evaluate``, ``fit``), the detector hyperparameters adapted to a small training set
(``evaluate``, ``fit``), the gallery of report.html and its explanations (``evaluate``, ``flag``)
and the result files written as a set (``evaluate``, ``flag``).

Like every module of :mod:`nero_lite.cli`, it imports torch and the package's heavy modules
inside the functions that run a command, not at import: building the parser loads no torch."""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from torch import nn

    from ..bundle import Bundle
    from ..data import ImageSet
    from ..outputs import Outputs
    from ..report import Flagged
    from .options import ModelOptions

__all__ = ["GALLERY", "ID_TPR", "NO_POOL_NOTE", "classifier", "explain_gallery", "extract_sets", "small_data_params", "staged_set", "write_set"]

#: The share of the validation images each threshold set by ``fit`` accepts (95 % ID TPR).
ID_TPR = 0.95
#: The most flagged images ``flag`` and ``evaluate`` keep (lowest scores) to show in report.html.
GALLERY = 48
#: What report.html says when the bundle has no reference pool to find reference patches in.
NO_POOL_NOTE = ("This bundle holds no reference pool (it was written before `fit` kept training images), so the "
                "explained images show the why-flagged map only; fit it again for concept maps with reference patches.")


def classifier(args: ModelOptions, train: ImageSet, device, given: nn.Module | None = None) -> nn.Module:
    """The model of the options: the ``--weights`` classifier as it is when its head fits the
    classes of ``train`` (the ``--train`` images), else trained on ``train`` (or reused from
    the cache) with ``--recipe``. ``given`` is the model :func:`~nero_lite.cli.main` built from
    ``--weights`` while checking them (built here when omitted)."""
    from ..models import create_model
    from ..training import Recipe, train_classifier

    if args.weights is not None:
        model = given if given is not None else create_model(args.arch, len(train.classes), args.size, weights=args.weights)
        if model.head_loaded:
            print(f"using the classifier in {args.weights} as it is (its head has one output per --train class)", file=sys.stderr)
            model.from_cache = False
            return model.to(device).eval()
        print(f"fine-tuning from {args.weights} with a new head of {len(train.classes)} classes", file=sys.stderr)
    recipe = replace(Recipe.paper() if args.recipe == "paper" else Recipe(), epochs=args.epochs)
    return train_classifier(train, args.arch, recipe, seed=args.seed, pretrained=args.pretrained,
                            weights=args.weights, device=device, cache=not args.no_cache)


def extract_sets(args: ModelOptions, model: nn.Module, sets: list[ImageSet], device) -> list[Outputs]:
    """The head's inputs and outputs of each of ``sets`` (:func:`~nero_lite.extraction.extract`) on
    ``device``, or with ``--engine ray`` read again from their files and extracted on the Ray
    cluster in one pass (:func:`~nero_lite.scale.extract_files`)."""
    from ..extraction import extract

    if args.engine == "local":
        return [extract(model, images, device) for images in sets]
    from ..data import Preprocessing
    from ..scale import cluster, extract_files

    preprocessing = Preprocessing(args.size, args.mask_corner, args.mask_text)
    with cluster(args.address, args.workers, args.gpus_per_worker) as workers:
        return [outputs.to(device) for outputs in extract_files(model, args.arch, preprocessing, sets, workers=workers)]


def small_data_params(names: list[str], n_train: int, n_features: int) -> tuple[dict[str, dict], dict[str, str]]:
    """Hyperparameters that fit a small training set, and a note for each one changed.

    KNN's ``k`` (default 50) is at most the number of training images; NECO's ``dim``
    (default 100) at most ``min(N, D)``. Everything else keeps its paper's default.
    """
    from .. import detectors

    params, notes = {}, {}
    k = detectors.create("knn").k
    if "knn" in names and k > n_train:
        params["knn"] = {"k": n_train}
        notes["knn"] = f"k={n_train} instead of {k}: there are {n_train} training images"
    dim, limit = detectors.create("neco").dim, min(n_train, n_features)
    if "neco" in names and dim > limit:
        params["neco"] = {"dim": limit}
        notes["neco"] = f"dim={limit} instead of {dim}: at most min(training images, features) = {limit}"
    return params, notes


def explain_gallery(bundle: Bundle, gallery: list[Flagged], n: int, device) -> tuple[list[Flagged], str, int]:
    """The gallery with its first ``n`` images explained by the bundle's NERO, the note report.html
    adds, and how many were explained.

    With a reference pool each explained image gets its full report
    (:meth:`~nero_lite.bundle.Bundle.reports`: the why-flagged map, concept maps, reference
    patches); without one the why-flagged map only (:meth:`~nero_lite.bundle.Bundle.explain`)
    and :data:`~nero_lite.cli.NO_POOL_NOTE`. Only those ``n`` are explained, so the cost does
    not grow with the folder.
    """
    import torch

    n = min(n, len(gallery))
    if not n:
        return gallery, "", 0
    pixels = torch.stack([item.image for item in gallery[:n]])
    if bundle.pool is None:
        maps = bundle.explain(pixels, device=device)
        explained = [replace(item, heatmap=heatmap.numpy()) for item, heatmap in zip(gallery, maps)]
        return explained + gallery[n:], NO_POOL_NOTE, n
    reports = bundle.reports(pixels, device=device)
    explained = [replace(item, heatmap=report.score_map, report=report) for item, report in zip(gallery, reports)]
    return explained + gallery[n:], "", n


@contextmanager
def staged_set(out: Path) -> Iterator[Path]:
    """A staging folder inside ``out`` for a set of result files: when the block ends normally
    its files are renamed into ``out`` together, ``run.json`` last; when it raises (or is
    interrupted) nothing is renamed, and every earlier file in ``out`` stays as it was.
    The staging folder is removed either way."""
    out.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=out, prefix=".nero_lite-"))
    try:
        yield staging
        names = sorted(path.name for path in staging.iterdir() if path.name != "run.json")
        for name in [*names, "run.json"]:
            os.replace(staging / name, out / name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def write_set(out: Path, writers: dict, run: dict, start: float) -> None:
    """Write the result files as a set (:func:`staged_set`): each of ``writers`` (name → a
    function of the path) then ``run.json`` (its ``seconds.write`` counted from ``start``)."""
    with staged_set(out) as staging:
        for name, write in writers.items():
            write(staging / name)
        run["seconds"]["write"] = time.perf_counter() - start
        (staging / "run.json").write_text(json.dumps(run, indent=1))
