"""Arrange one ImageFolder into the three folders ``python -m nero_lite score`` reads.

``SOURCE`` holds one sub-folder per class (e.g. ``hyperkvasir-lowergi``). The ID classes
are split per class, seeded, into ``DEST/train/<class>`` (``--train-fraction``, default
2/3) and ``DEST/id/<class>``; every OOD class goes to ``DEST/ood/<class>``. Files are
symbolic links to the originals (``--copy`` copies them instead), so nothing is
duplicated and the source stays untouched::

    python data_scripts/split_for_cli.py ../shared/data/hyperkvasir-lowergi /tmp/hk \\
        --id cecum bbps-2-3 bbps-0-1 --ood polyps impacted-stool
    python -m nero_lite score --train /tmp/hk/train --id /tmp/hk/id --ood /tmp/hk/ood --out results/

``DEST`` must not exist yet (or be empty): nothing already there is overwritten.
"""

from __future__ import annotations

import argparse
import random
import shutil
import sys
from pathlib import Path

from nero_lite.data import IMAGE_EXTENSIONS  # the files the CLI will read


def images_of(folder: Path) -> list[Path]:
    """Image files directly inside ``folder``, sorted."""
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)


def split(
    source: Path,
    dest: Path,
    id_classes: list[str],
    ood_classes: list[str],
    train_fraction: float = 2 / 3,
    seed: int = 0,
    copy: bool = False,
) -> dict[str, dict[str, int]]:
    """Create ``dest/train``, ``dest/id`` and ``dest/ood``; returns the image count per folder and class."""
    if not 0 < train_fraction < 1:
        raise ValueError(f"--train-fraction must lie in (0, 1), got {train_fraction}")
    overlap = sorted(set(id_classes) & set(ood_classes))
    if overlap:
        raise ValueError(f"classes given both as ID and OOD: {overlap}")
    if dest.exists() and any(dest.iterdir()):
        raise FileExistsError(f"{dest} exists and is not empty")
    plan: dict[str, dict[str, list[Path]]] = {"train": {}, "id": {}, "ood": {}}
    rng = random.Random(seed)
    for name in [*id_classes, *ood_classes]:
        folder = source / name
        if not folder.is_dir():
            raise FileNotFoundError(f"class folder not found: {folder}")
        files = images_of(folder)
        if not files:
            raise ValueError(f"no images in {folder}")
        if name in ood_classes:
            plan["ood"][name] = files
            continue
        if len(files) < 2:
            raise ValueError(f"{folder} has {len(files)} image; a train/test split needs at least 2")
        rng.shuffle(files)
        cut = min(max(round(train_fraction * len(files)), 1), len(files) - 1)
        plan["train"][name], plan["id"][name] = sorted(files[:cut]), sorted(files[cut:])
    for part, classes in plan.items():
        for name, files in classes.items():
            target = dest / part / name
            target.mkdir(parents=True)
            for path in files:
                if copy:
                    shutil.copy2(path, target / path.name)
                else:
                    (target / path.name).symlink_to(path.resolve())
    return {part: {name: len(files) for name, files in classes.items()} for part, classes in plan.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("source", type=Path, help="ImageFolder with one sub-folder per class")
    parser.add_argument("dest", type=Path, help="new folder for train/, id/ and ood/")
    parser.add_argument("--id", nargs="+", required=True, metavar="CLASS", help="in-distribution classes")
    parser.add_argument("--ood", nargs="+", required=True, metavar="CLASS", help="out-of-distribution classes")
    parser.add_argument("--train-fraction", type=float, default=2 / 3, help="share of each ID class for training")
    parser.add_argument("--seed", type=int, default=0, help="seed of the split (default 0)")
    parser.add_argument("--copy", action="store_true", help="copy the images instead of linking them")
    args = parser.parse_args(argv)
    try:
        counts = split(args.source, args.dest, args.id, args.ood, args.train_fraction, args.seed, args.copy)
    except (OSError, ValueError) as error:
        print(f"split_for_cli: error: {error}", file=sys.stderr)
        return 2
    for part, classes in counts.items():
        print(f"{args.dest / part}: " + ", ".join(f"{name} {count}" for name, count in classes.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
