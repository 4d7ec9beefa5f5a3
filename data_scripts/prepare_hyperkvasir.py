"""Turn HyperKvasir's labelled-images download into the ``hyperkvasir-lowergi`` layout.

The output is what ``nero_lite.data.load("hyperkvasir")`` reads (the same layout as the
shared ``hyperkvasir-lowergi`` folder): five lower-GI classes in ImageFolder layout
(``cecum``, ``bbps-2-3``, ``bbps-0-1``, ``impacted-stool``, ``polyps``), each image
resized (bicubic) so that its shorter side is 160 px, center-cropped to 160×160 and
saved as RGB JPEG, quality 90, under its original file name; plus ``manifest.csv``
with one row per image: ``path,class`` and, when the official split file is given,
``hyperkvasir_split_label,hyperkvasir_2fold_split_index``.

The source is the official zip (``hyper-kvasir-labeled-images.zip``, read without
unpacking it) or the folder it unpacks to (``labeled-images/``); get both files with
``python data_scripts/download.py hyperkvasir``. ``--per-class`` draws a seeded random
subset per class (the shared folder holds 120 per class, 105 impacted-stool).

HyperKvasir: Borgli et al., Scientific Data 7, 283 (2020), doi:10.1038/s41597-020-00622-y,
CC BY 4.0 — keep the licence notice and cite the article with any copy or result.
"""

from __future__ import annotations

import argparse
import csv
import io
import random
import sys
import zipfile
from collections.abc import Callable
from pathlib import Path

from PIL import Image

CLASSES = ("cecum", "bbps-2-3", "bbps-0-1", "impacted-stool", "polyps")
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png")


def find_images(source: Path) -> dict[str, list[tuple[str, Callable[[], bytes]]]]:
    """Per class, ``(file name, read bytes)`` pairs from the lower-GI folders of the zip or folder."""
    found: dict[str, list] = {name: [] for name in CLASSES}

    def wanted(path: Path) -> bool:
        return path.suffix.lower() in IMAGE_EXTENSIONS and path.parent.name in found and "lower-gi-tract" in path.parts

    if source.is_file():
        archive = zipfile.ZipFile(source)
        for member in sorted(archive.namelist()):
            if wanted(Path(member)):
                found[Path(member).parent.name].append((Path(member).name, lambda m=member: archive.read(m)))
    else:
        for path in sorted(source.rglob("*")):
            if wanted(path):
                found[path.parent.name].append((path.name, path.read_bytes))
    return found


def square(image: Image.Image, size: int, resample: Image.Resampling = Image.Resampling.BICUBIC) -> Image.Image:
    """Resize (bicubic by default) so that the shorter side is ``size``, then center-crop to ``size×size``."""
    image = image.convert("RGB") if resample != Image.Resampling.NEAREST else image
    scale = size / min(image.size)
    width, height = max(size, round(image.width * scale)), max(size, round(image.height * scale))
    image = image.resize((width, height), resample)
    left, top = (width - size) // 2, (height - size) // 2
    return image.crop((left, top, left + size, top + size))


def read_split(path: Path) -> dict[str, tuple[str, str]]:
    """The official split file (``file-name;class-name;split-index``) as file name → (label, index)."""
    with open(path, newline="") as handle:
        rows = csv.DictReader(handle, delimiter=";")
        return {row["file-name"]: (row["class-name"], row["split-index"]) for row in rows}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("source", type=Path, help="hyper-kvasir-labeled-images.zip or the labeled-images/ folder")
    parser.add_argument("--dest", type=Path, default=Path("hyperkvasir-lowergi"), help="output folder")
    parser.add_argument("--split-csv", type=Path, help="official 2_fold_split.csv (adds the split columns)")
    parser.add_argument("--size", type=int, default=160, help="output side in pixels (default 160)")
    parser.add_argument("--per-class", type=int, help="keep at most this many images per class (seeded sample)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the --per-class sample")
    args = parser.parse_args(argv)

    if not args.source.exists():
        parser.error(f"source not found: {args.source}")
    split = read_split(args.split_csv) if args.split_csv else None
    found = find_images(args.source)
    missing = [name for name, files in found.items() if not files]
    if missing:
        print(f"no images for {missing} in {args.source}: not HyperKvasir's labelled images?", file=sys.stderr)
        return 1
    rows = []
    for name, files in found.items():
        if args.per_class is not None and len(files) > args.per_class:
            files = sorted(random.Random(args.seed).sample(files, args.per_class))
        folder = args.dest / name
        folder.mkdir(parents=True, exist_ok=True)
        for i, (file_name, read) in enumerate(files, 1):
            target = folder / (Path(file_name).stem + ".jpg")
            square(Image.open(io.BytesIO(read())), args.size).save(target, "JPEG", quality=90)
            row = {"path": f"{name}/{target.name}", "class": name}
            if split is not None:
                label, index = split.get(file_name, ("", ""))
                row.update(hyperkvasir_split_label=label, hyperkvasir_2fold_split_index=index)
            rows.append(row)
            print(f"\r{name}: {i}/{len(files)}", end="", flush=True)
        print()
    with open(args.dest / "manifest.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(sorted(rows, key=lambda r: r["path"]))
    print(f"wrote {len(rows)} images and manifest.csv to {args.dest}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
