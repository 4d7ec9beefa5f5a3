"""Turn the official Kvasir-SEG release into the ``kvasir-seg-polyps`` layout.

The output is what ``nero_lite.data.load_segmented()`` reads (the same layout as the
shared ``kvasir-seg-polyps`` folder):

* ``images/<id>.jpg`` — each polyp image resized (bicubic) so that its shorter side is
  160 px, center-cropped to 160×160, saved as RGB JPEG, quality 90;
* ``masks/<id>.png`` — its polyp mask under the same resize (nearest neighbour) and
  crop, thresholded at half intensity (the release stores the masks as JPEG), values
  {0, 255};
* ``manifest.csv`` — per pair: ``id, orig_width, orig_height, mask_fraction`` (after the
  crop), ``polyp_retained_in_crop`` (share of the original mask inside the crop) and
  ``hyperkvasir_polyp`` (``shared`` where ``--hyperkvasir-polyps`` holds the same picture);
* with ``--hyperkvasir-polyps DIR`` (the ``polyps`` folder of ``hyperkvasir-lowergi``)
  also ``hyperkvasir_polyps_map.csv``: each HyperKvasir polyp that is the same picture
  as a Kvasir-SEG image (grey-level RMSE below 1 at 32×32), with that image's id. The
  two sets overlap: never train on one and report the other as unseen.

The source is the official zip (``kvasir-seg.zip``, with ``Kvasir-SEG/images`` and
``Kvasir-SEG/masks``; read without unpacking) or the folder it unpacks to; get it with
``python data_scripts/download.py kvasir-seg``.

Kvasir-SEG: Jha et al., "Kvasir-SEG: A Segmented Polyp Dataset", MultiMedia Modeling
(MMM 2020), doi:10.1007/978-3-030-37734-2_37 — for research and education only; cite the
paper with any result.
"""

from __future__ import annotations

import argparse
import csv
import io
import sys
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from prepare_hyperkvasir import IMAGE_EXTENSIONS, square  # noqa: E402


def find_pairs(source: Path) -> dict[str, tuple[Callable[[], bytes], Callable[[], bytes]]]:
    """Image id → (read image bytes, read mask bytes), for every image of ``images/`` with a mask in ``masks/``."""
    files: dict[str, dict[str, Callable[[], bytes]]] = {"images": {}, "masks": {}}
    if source.is_file():
        archive = zipfile.ZipFile(source)
        for member in archive.namelist():
            path = Path(member)
            if path.suffix.lower() in IMAGE_EXTENSIONS and path.parent.name in files:
                files[path.parent.name][path.stem] = lambda m=member: archive.read(m)
    else:
        for path in source.rglob("*"):
            if path.suffix.lower() in IMAGE_EXTENSIONS and path.parent.name in files:
                files[path.parent.name][path.stem] = path.read_bytes
    return {key: (read, files["masks"][key]) for key, read in sorted(files["images"].items()) if key in files["masks"]}


def grey32(image: Image.Image) -> np.ndarray:
    """The picture as 32×32 grey levels (float), to match identical pictures across data sets."""
    return np.asarray(image.convert("L").resize((32, 32), Image.Resampling.BILINEAR), dtype=np.float64)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("source", type=Path, help="kvasir-seg.zip or the Kvasir-SEG/ folder")
    parser.add_argument("--dest", type=Path, default=Path("kvasir-seg-polyps"), help="output folder")
    parser.add_argument("--size", type=int, default=160, help="output side in pixels (default 160)")
    parser.add_argument("--hyperkvasir-polyps", type=Path, help="hyperkvasir-lowergi/polyps: mark the shared pictures")
    args = parser.parse_args(argv)

    if not args.source.exists():
        parser.error(f"source not found: {args.source}")
    if args.hyperkvasir_polyps is not None and not args.hyperkvasir_polyps.is_dir():
        parser.error(f"--hyperkvasir-polyps is not a folder: {args.hyperkvasir_polyps}")
    pairs = find_pairs(args.source)
    if not pairs:
        print(f"no image/mask pairs (images/<id>, masks/<id>) in {args.source}: not Kvasir-SEG?", file=sys.stderr)
        return 1
    for sub in ("images", "masks"):
        (args.dest / sub).mkdir(parents=True, exist_ok=True)
    rows, greys = [], {}
    for i, (key, (read_image, read_mask)) in enumerate(pairs.items(), 1):
        image = Image.open(io.BytesIO(read_image()))
        original = np.asarray(Image.open(io.BytesIO(read_mask())).convert("L")) >= 128
        cropped = square(image, args.size)
        mask = np.asarray(square(Image.fromarray(original), args.size, Image.Resampling.NEAREST))
        cropped.save(args.dest / "images" / f"{key}.jpg", "JPEG", quality=90)
        Image.fromarray(mask.astype(np.uint8) * 255).save(args.dest / "masks" / f"{key}.png")
        area_scale = (args.size / min(image.size)) ** 2
        kept = float(mask.sum() / (original.sum() * area_scale)) if original.any() else 0.0
        rows.append({"id": key, "orig_width": image.width, "orig_height": image.height,
                     "mask_fraction": round(float(mask.mean()), 5), "polyp_retained_in_crop": round(min(kept, 1.0), 4),
                     "hyperkvasir_polyp": ""})
        greys[key] = grey32(cropped)
        print(f"\rkvasir-seg: {i}/{len(pairs)}", end="", flush=True)
    print()
    if args.hyperkvasir_polyps is not None:
        ids = list(greys)
        stack = np.stack([greys[key] for key in ids])
        matches = []
        for path in sorted(args.hyperkvasir_polyps.iterdir()):
            if path.suffix.lower() not in IMAGE_EXTENSIONS:
                continue
            rmse = np.sqrt(((stack - grey32(Image.open(path))) ** 2).mean(axis=(1, 2)))
            best = int(rmse.argmin())
            if rmse[best] < 1.0:
                matches.append({"hyperkvasir_file": f"polyps/{path.name}", "kvasir_seg_id": ids[best],
                                "rmse_32px_gray": round(float(rmse[best]), 2)})
        shared = {m["kvasir_seg_id"] for m in matches}
        for row in rows:
            row["hyperkvasir_polyp"] = "shared" if row["id"] in shared else ""
        with open(args.dest / "hyperkvasir_polyps_map.csv", "w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=["hyperkvasir_file", "kvasir_seg_id", "rmse_32px_gray"])
            writer.writeheader()
            writer.writerows(matches)
        print(f"{len(matches)} HyperKvasir polyps are the same pictures as Kvasir-SEG images")
    with open(args.dest / "manifest.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    print(f"wrote {len(rows)} image/mask pairs and manifest.csv to {args.dest}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
