"""The ``flag`` command: its options and their checks, and the images under a folder scored in
batches with a bundle written by ``fit``, flagged below the bundle's threshold, the lowest
explained, and written as ``flags.csv``, ``report.html`` and ``run.json``."""

from __future__ import annotations

import dataclasses
import heapq
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

from .common import GALLERY
from .options import CommandOptions, add_device_option, add_explain_option, device_or_out_problem, folder_problem, positive

if TYPE_CHECKING:
    from ..bundle import Bundle

__all__ = ["FLAG_COLUMNS", "FlagOptions", "add_command", "check", "flag"]

#: The columns of ``flags.csv``, written by ``flag``.
FLAG_COLUMNS = ("file", "score", "threshold", "flagged", "predicted", "nearest", "top_neurons")


@dataclasses.dataclass(frozen=True, kw_only=True)
class FlagOptions(CommandOptions):
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


def check(args: FlagOptions) -> str | None:
    """What is wrong with the ``flag`` options before any image is read (``None``: nothing)."""
    if not args.bundle.is_dir():
        return f"BUNDLE: no bundle folder at {args.bundle}" if not args.bundle.is_file() else f"BUNDLE: {args.bundle} is a file; give the folder `fit` wrote"
    return folder_problem("IMAGES_DIR", args.images) or device_or_out_problem(args)


def flag(args: FlagOptions, bundle: Bundle, files: list[Path]) -> dict:
    """Run the ``flag`` command: score ``files`` in batches of ``--batch-size``; returns what it wrote to ``run.json``."""
    import pandas as pd
    import torch
    from PIL import Image, UnidentifiedImageError

    from ..data import read_image
    from ..devices import resolve_device
    from ..progress import bar as progress_bar
    from ..report import Flagged, flag_report
    from .common import explain_gallery, write_set

    device = resolve_device(args.device)
    threshold = bundle.thresholds[args.detector]
    nero = "nero" in bundle.detectors
    start = time.perf_counter()
    rows, skipped, kept = [], {}, []  # kept: a max-heap by score of the GALLERY flagged images of lowest score
    bar = progress_bar(total=len(files), desc="flag", unit="img")
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
        gallery, note, explained = explain_gallery(bundle, gallery, args.explain, device)
    elif args.explain and gallery:
        note = "The images are not explained: explanations need nero in the bundle."
    seconds["explain"] = time.perf_counter() - start

    start = time.perf_counter()
    table = pd.DataFrame(rows, columns=list(FLAG_COLUMNS))
    page = flag_report(title=f"nero_lite flag: {args.images}", detector=args.detector, threshold=threshold,
                       scores=table.score.to_numpy(), gallery=gallery, skipped=len(skipped), note=note)
    flagged = int(table.flagged.sum())
    run = {
        "options": args.as_json(),
        "device": str(device),
        "detector": args.detector,
        "threshold": threshold,
        "images": {"found": len(files), "scored": len(table), "flagged": flagged},
        "explained": explained,
        "reference_pool": bundle.pool is not None,
        "bundle": {"train_fingerprint": bundle.train_fingerprint, "versions": bundle.versions},
        "skipped_files": [{"file": file, "reason": reason} for file, reason in skipped.items()],
        "seconds": seconds,
    }
    writers = {
        "flags.csv": lambda path: table.to_csv(path, index=False),
        "report.html": lambda path: path.write_text(page, encoding="utf-8"),
    }
    write_set(args.out, writers, run, start)
    print(f"flagged {flagged} of {len(table)} images ({flagged / len(table):.1%}) with {args.detector}; "
          f"wrote {args.out}/flags.csv, report.html, run.json", file=sys.stderr)
    return run
