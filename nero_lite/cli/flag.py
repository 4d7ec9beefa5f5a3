"""The ``flag`` command: its options and their checks, and the images under a folder scored in
batches with a bundle written by ``fit``, flagged below the bundle's threshold, the lowest
explained, and written as ``flags.csv``, ``report.html`` and ``run.json``."""

from __future__ import annotations

import csv
import dataclasses
import heapq
import json
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from ..constants import FLAG_COLUMNS
from .common import GALLERY
from .options import (EngineOptions, add_device_option, add_engine_options, add_explain_option, device_or_out_problem, engine_problem,
                      folder_problem, positive)

if TYPE_CHECKING:
    from ..bundle import Bundle
    from ..scale import ScoredBatch

__all__ = ["FLAG_COLUMNS", "FlagOptions", "add_command", "check", "flag"]

@dataclasses.dataclass(frozen=True, kw_only=True)
class FlagOptions(EngineOptions):
    """The options of ``flag``."""

    bundle: Path
    images: Path
    detector: str
    explain: int
    batch_size: int


def add_command(commands) -> None:
    """Add ``flag`` and its options to ``commands`` (the parser's sub-parsers)."""
    flagging = commands.add_parser(
        "flag",
        help="score every image under a folder with a fitted bundle and flag the out-of-distribution ones",
        description=(
            "Score every image under IMAGES_DIR (recursively, unlabelled; unreadable files are skipped with a "
            "warning) with the bundle written by `fit`, in batches, and flag those scoring below the detector's "
            "threshold. Writes flags.csv, report.html (one self-contained page) and run.json into --out."
        ),
    )
    flagging.add_argument("bundle", type=Path, metavar="BUNDLE", help="a bundle folder written by `fit`")
    flagging.add_argument("images", type=Path, metavar="IMAGES_DIR", help="the images to score, in any sub-folders")
    flagging.add_argument("--out", required=True, type=Path, metavar="REPORT",
                          help="output folder, created if needed; its three files are overwritten")
    flagging.add_argument("--detector", default="nero", metavar="NAME",
                          help="the bundle's detector that flags (default: nero)")
    add_explain_option(flagging, "show the N flagged images of lowest score explained: the map of why NERO flags them, and "
                                 "for their top neurons the concept map and reference patches from the bundle's training "
                                 "images; 0: none (needs nero in the bundle) (default: 8)")
    flagging.add_argument("--batch-size", type=positive, default=256, metavar="B",
                          help="images read and scored at a time: memory holds one batch, not the folder (default: 256)")
    add_device_option(flagging)
    add_engine_options(flagging, "read and score the images")


def check(args: FlagOptions) -> str | None:
    """What is wrong with the ``flag`` options before any image is read (``None``: nothing)."""
    if not args.bundle.is_dir():
        return f"BUNDLE: no bundle folder at {args.bundle}" if not args.bundle.is_file() else f"BUNDLE: {args.bundle} is a file; give the folder `fit` wrote"
    return folder_problem("IMAGES_DIR", args.images) or device_or_out_problem(args) or engine_problem(args)


def _local_batches(args: FlagOptions, bundle: Bundle, files: list[Path], device) -> Iterator[ScoredBatch]:
    """The ``local`` engine: ``--batch-size`` files at a time read here and scored on ``device``."""
    import torch
    from ..data import UNREADABLE, read_image
    from ..scale import ScoredBatch

    threshold = bundle.thresholds[args.detector]
    for first in range(0, len(files), args.batch_size):
        images, read, unreadable = [], [], []
        for path in files[first : first + args.batch_size]:
            try:
                images.append(read_image(path, bundle.size))
                read.append(str(path))
            except UNREADABLE:
                unreadable.append(str(path))
        columns = {}
        if images:
            result = bundle.score(torch.stack(images), batch_size=len(images), device=device, progress=False)
            columns = result.columns(bundle.classes, args.detector, threshold)
        yield ScoredBatch(files=read, columns=columns, unreadable=unreadable)


@contextmanager
def _batches(args: FlagOptions, bundle: Bundle, files: list[Path], device) -> Iterator[tuple[Iterator[ScoredBatch], str]]:
    """The scored batches of ``--engine`` and where they are scored (for ``run.json``)."""
    if args.engine == "local":
        yield _local_batches(args, bundle, files, device), str(device)
        return
    from ..scale import cluster, score_files

    with cluster(args.address, args.workers, args.gpus_per_worker) as workers:
        where = f"ray: {workers.count} worker(s), {workers.gpus:g} GPU(s) each"
        yield score_files(args.bundle, files, size=bundle.size, detector=args.detector, workers=workers,
                          batch_size=args.batch_size), where


def flag(args: FlagOptions, bundle: Bundle, files: list[Path]) -> dict:
    """Run the ``flag`` command: score ``files`` in batches of ``--batch-size`` with ``--engine``; returns what it wrote to ``run.json``.

    ``flags.csv`` is written row by row as the batches come (into the staging folder of
    :func:`~nero_lite.cli.common.staged_set`), and only the :data:`~nero_lite.cli.GALLERY`
    flagged files of lowest score are kept: the memory does not grow with the folder but
    for one score per image (the histogram).
    """
    from array import array

    import numpy as np

    from ..data import read_image
    from ..devices import resolve_device
    from ..progress import bar as progress_bar
    from ..report import Flagged, flag_report
    from .common import explain_gallery, staged_set

    device = resolve_device(args.device)
    threshold = bundle.thresholds[args.detector]
    nero = "nero" in bundle.detectors
    with staged_set(args.out) as staging:
        start = time.perf_counter()
        scores, skipped, kept = array("d"), [], []  # kept: a max-heap by score of the GALLERY flagged rows of lowest score
        # the bar is closed however the loop ends: a one-line error after an interruption starts on a line of its own
        with (_batches(args, bundle, files, device) as (batches, where), open(staging / "flags.csv", "w", newline="") as table,
              progress_bar(total=len(files), desc="flag", unit="img") as bar):
            writer = csv.writer(table)
            writer.writerow(FLAG_COLUMNS)
            for batch in batches:
                bar.update(len(batch.files) + len(batch.unreadable))
                skipped += batch.unreadable
                rows = zip(batch.files, *(batch.columns[name] for name in FLAG_COLUMNS[1:]))
                for file, score, *rest in rows:
                    writer.writerow((file, score, *rest))
                    scores.append(score)
                    if score < threshold:
                        heapq.heappush(kept, (-score, len(scores), file, rest[2], rest[3]))
                        if len(kept) > GALLERY:
                            heapq.heappop(kept)
        if skipped:
            names = ", ".join(Path(file).name for file in skipped[:3])
            print(f"warning: skipped {len(skipped)} unreadable image file(s) under {args.images}: {names}"
                  + (f" and {len(skipped) - 3} more" if len(skipped) > 3 else ""), file=sys.stderr)
        if not scores:
            raise ValueError(f"no readable image under {args.images} ({len(skipped)} unreadable file(s))")
        seconds = {"score": time.perf_counter() - start}

        start = time.perf_counter()
        shown = sorted(kept, key=lambda item: (-item[0], item[1]))  # lowest score first, then in the order of the files
        gallery = [Flagged(file, -negative, predicted, nearest, read_image(file, bundle.size))
                   for negative, _, file, predicted, nearest in shown]
        note, explained = "", 0
        if nero:
            gallery, note, explained = explain_gallery(bundle, gallery, args.explain, device)
        elif args.explain and gallery:
            note = "The images are not explained: explanations need nero in the bundle."
        seconds["explain"] = time.perf_counter() - start

        start = time.perf_counter()
        page = flag_report(title=f"nero_lite flag: {args.images}", detector=args.detector, threshold=threshold,
                           scores=np.frombuffer(scores), gallery=gallery, skipped=len(skipped), note=note)
        (staging / "report.html").write_text(page, encoding="utf-8")
        flagged = int((np.frombuffer(scores) < threshold).sum())
        seconds["write"] = time.perf_counter() - start
        run = {
            "options": args.as_json(),
            "device": where,
            "detector": args.detector,
            "threshold": threshold,
            "images": {"found": len(files), "scored": len(scores), "flagged": flagged},
            "explained": explained,
            "reference_pool": bundle.pool is not None,
            "bundle": {"train_fingerprint": bundle.train_fingerprint, "versions": bundle.versions},
            "skipped_files": [{"file": file, "reason": "unreadable"} for file in skipped],
            "seconds": seconds,
        }
        (staging / "run.json").write_text(json.dumps(run, indent=1))
    print(f"flagged {flagged} of {len(scores)} images ({flagged / len(scores):.1%}) with {args.detector}; "
          f"wrote {args.out}/flags.csv, report.html, run.json", file=sys.stderr)
    return run
