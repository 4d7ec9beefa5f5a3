"""Download a real endoscopy data set and verify its image counts per class.

Run on a machine with internet access; nothing here runs when ``nero_lite`` is
imported or tested. Each sub-command downloads the official archive (or takes one you
downloaded with ``--archive``), unpacks it under ``--dest`` in the layout
``nero_lite.data.load`` expects, and compares the number of images per class with the
published counts (exit status 1 on a mismatch)::

    python data_scripts/download.py kvasir --dest ~/data        # → ~/data/kvasir-dataset-v2/
    python data_scripts/download.py gastrovision --dest ~/data  # → ~/data/gastrovision/
    python data_scripts/download.py hyperkvasir --dest ~/data   # → ~/data/hyper-kvasir-raw/
    python data_scripts/prepare_hyperkvasir.py ~/data/hyper-kvasir-raw/hyper-kvasir-labeled-images.zip \\
        --split-csv ~/data/hyper-kvasir-raw/2_fold_split.csv --dest ~/data/hyperkvasir-lowergi
    python data_scripts/download.py kvasir-seg --dest ~/data    # → ~/data/kvasir-seg-raw/kvasir-seg.zip
    python data_scripts/prepare_kvasir_seg.py ~/data/kvasir-seg-raw/kvasir-seg.zip \\
        --hyperkvasir-polyps ~/data/hyperkvasir-lowergi/polyps --dest ~/data/kvasir-seg-polyps
    export NERO_LITE_DATA=~/data

Sources (official publications):

* Kvasir v2 — Pogorelov et al., "KVASIR: A Multi-Class Image Dataset for Computer Aided
  Gastrointestinal Disease Detection", ACM MMSys 2017. 8 classes × 1,000 images.
  https://datasets.simula.no/downloads/kvasir/kvasir-dataset-v2.zip
* HyperKvasir labelled images — Borgli et al., Scientific Data 7, 283 (2020),
  CC BY 4.0. 10,662 images in 23 classes (the five lower-GI classes used by the book
  are verified). https://datasets.simula.no/downloads/hyper-kvasir/hyper-kvasir-labeled-images.zip
  and the official splits,
  https://raw.githubusercontent.com/simula/hyper-kvasir/master/official_splits/2_fold_split.csv
* Kvasir-SEG — Jha et al., "Kvasir-SEG: A Segmented Polyp Dataset", MultiMedia Modeling
  (MMM 2020). 1,000 polyp images with pixel masks; research and education only.
  https://datasets.simula.no/downloads/kvasir-seg.zip
* GastroVision — Jha et al., "GastroVision: A Multi-class Endoscopy Image Dataset for
  Computer Aided Gastrointestinal Disease Detection", ICML workshop ML4MHD 2023.
  27 classes, 8,000 images, from its OSF project https://osf.io/84e7f/ (the project's
  files as one zip archive).

Check each data set's licence and terms of use before using it, and cite it.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import urllib.request
import zipfile
from pathlib import Path

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff")

KVASIR_URL = "https://datasets.simula.no/downloads/kvasir/kvasir-dataset-v2.zip"
HYPERKVASIR_URL = "https://datasets.simula.no/downloads/hyper-kvasir/hyper-kvasir-labeled-images.zip"
HYPERKVASIR_SPLIT_URL = "https://raw.githubusercontent.com/simula/hyper-kvasir/master/official_splits/2_fold_split.csv"
GASTROVISION_URL = "https://files.osf.io/v1/resources/84e7f/providers/osfstorage/?zip="
KVASIR_SEG_URL = "https://datasets.simula.no/downloads/kvasir-seg.zip"
#: Published image/mask pairs of Kvasir-SEG.
KVASIR_SEG_PAIRS = 1000

#: Published images per class.
KVASIR_COUNTS = {
    name: 1000
    for name in (
        "dyed-lifted-polyps",
        "dyed-resection-margins",
        "esophagitis",
        "normal-cecum",
        "normal-pylorus",
        "normal-z-line",
        "polyps",
        "ulcerative-colitis",
    )
}
#: The five lower-GI classes of HyperKvasir's labelled images (Borgli et al. 2020, table 2).
HYPERKVASIR_COUNTS = {"cecum": 1009, "bbps-2-3": 1148, "bbps-0-1": 646, "impacted-stool": 131, "polyps": 1028}
#: GastroVision's 27 classes (Jha et al. 2023, figure 2 and metadata), 8,000 images.
GASTROVISION_COUNTS = {
    "Normal mucosa and vascular pattern in the large bowel": 1467,
    "Accessory tools": 1266,
    "Normal stomach": 969,
    "Small bowel_terminal ileum": 846,
    "Colon polyps": 820,
    "Pylorus": 393,
    "Gastroesophageal_junction_normal z-line": 330,
    "Dyed-resection-margins": 246,
    "Duodenal bulb": 205,
    "Ileocecal valve": 200,
    "Blood in lumen": 171,
    "Dyed-lifted-polyps": 141,
    "Normal esophagus": 140,
    "Colorectal cancer": 139,
    "Cecum": 113,
    "Esophagitis": 107,
    "Barrett's esophagus": 95,
    "Resected polyps": 92,
    "Retroflex rectum": 67,
    "Gastric polyps": 65,
    "Mucosal inflammation large bowel": 29,
    "Colon diverticula": 29,
    "Resection margins": 25,
    "Angiectasia": 17,
    "Erythema": 15,
    "Esophageal varices": 7,
    "Ulcer": 6,
}


def fetch(url: str, target: Path) -> Path:
    """Download ``url`` to ``target`` (via a ``.part`` file), printing progress; skip if present."""
    if target.exists():
        print(f"already downloaded: {target}")
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(target.name + ".part")
    print(f"downloading {url}\n        → {target}")
    with urllib.request.urlopen(url) as response, open(partial, "wb") as out:
        total = int(response.headers.get("Content-Length") or 0)
        done = 0
        while chunk := response.read(1 << 20):
            out.write(chunk)
            done += len(chunk)
            shown = f"{done / 2**20:,.0f} MiB" + (f" of {total / 2**20:,.0f} MiB" if total else "")
            print(f"\r  {shown}", end="", flush=True)
    print()
    partial.replace(target)
    return target


def count_images(root: Path, classes) -> dict[str, int]:
    """Image files per class folder directly below ``root`` (0 for a missing folder)."""
    return {
        name: sum(1 for p in (root / name).glob("*") if p.suffix.lower() in IMAGE_EXTENSIONS)
        if (root / name).is_dir()
        else 0
        for name in classes
    }


def report(found: dict[str, int], expected: dict[str, int]) -> bool:
    """Print found against published counts per class; True when all match."""
    width = max(map(len, expected))
    ok = True
    for name, count in expected.items():
        flag = "ok" if found.get(name) == count else "MISMATCH"
        ok &= flag == "ok"
        print(f"  {name:<{width}}  {found.get(name, 0):>5} / {count:<5} {flag}")
    print("all counts match the published ones" if ok else "some counts differ from the published ones")
    return ok


def _find_class_root(base: Path, marker: str) -> Path | None:
    """The folder below ``base`` that holds a sub-folder called ``marker``."""
    return next((p.parent for p in base.rglob(marker) if p.is_dir()), None)


def _extract(archive: Path, into: Path) -> None:
    print(f"unpacking {archive} → {into}")
    with zipfile.ZipFile(archive) as zf:
        zf.extractall(into)


def kvasir(dest: Path, archive: Path | None, verify_only: bool) -> bool:
    """Kvasir v2 into ``dest/kvasir-dataset-v2``."""
    root = dest / "kvasir-dataset-v2"
    if not verify_only and not root.is_dir():
        _extract(archive or fetch(KVASIR_URL, dest / "kvasir-dataset-v2.zip"), dest)
    print(f"Kvasir v2 in {root}:")
    return report(count_images(root, KVASIR_COUNTS), KVASIR_COUNTS)


def gastrovision(dest: Path, archive: Path | None, verify_only: bool) -> bool:
    """GastroVision into ``dest/gastrovision`` (the OSF archive may nest a second zip)."""
    root = dest / "gastrovision"
    if not verify_only and not root.is_dir():
        staging = dest / "gastrovision-download"
        _extract(archive or fetch(GASTROVISION_URL, dest / "gastrovision-osf.zip"), staging)
        found = _find_class_root(staging, "Pylorus")
        for inner in sorted(staging.rglob("*.zip")) if found is None else []:
            _extract(inner, inner.parent)
        found = found or _find_class_root(staging, "Pylorus")
        if found is None:
            print(f"no GastroVision class folders found in the archive (unpacked in {staging})", file=sys.stderr)
            return False
        shutil.move(str(found), root)
        shutil.rmtree(staging)
    print(f"GastroVision in {root}:")
    return report(count_images(root, GASTROVISION_COUNTS), GASTROVISION_COUNTS)


def hyperkvasir(dest: Path, archive: Path | None, verify_only: bool) -> bool:
    """HyperKvasir's labelled-images zip and official 2-fold split into ``dest/hyper-kvasir-raw``.

    The zip is not unpacked: ``prepare_hyperkvasir.py`` reads the five classes from it.
    """
    raw = dest / "hyper-kvasir-raw"
    if verify_only:
        archive = archive or raw / "hyper-kvasir-labeled-images.zip"
    else:
        archive = archive or fetch(HYPERKVASIR_URL, raw / "hyper-kvasir-labeled-images.zip")
        fetch(HYPERKVASIR_SPLIT_URL, raw / "2_fold_split.csv")
    with zipfile.ZipFile(archive) as zf:
        names = [Path(n) for n in zf.namelist() if Path(n).suffix.lower() in IMAGE_EXTENSIONS]
    found = {c: sum(1 for n in names if n.parent.name == c and "lower-gi-tract" in n.parts) for c in HYPERKVASIR_COUNTS}
    print(f"HyperKvasir lower-GI classes in {archive}:")
    ok = report(found, HYPERKVASIR_COUNTS)
    print(f"next: python data_scripts/prepare_hyperkvasir.py {archive} --split-csv {raw / '2_fold_split.csv'}")
    return ok


def kvasir_seg(dest: Path, archive: Path | None, verify_only: bool) -> bool:
    """Kvasir-SEG's zip into ``dest/kvasir-seg-raw``, not unpacked: ``prepare_kvasir_seg.py`` reads it."""
    raw = dest / "kvasir-seg-raw"
    if verify_only:
        archive = archive or raw / "kvasir-seg.zip"
    else:
        archive = archive or fetch(KVASIR_SEG_URL, raw / "kvasir-seg.zip")
    with zipfile.ZipFile(archive) as zf:
        names = [Path(n) for n in zf.namelist() if Path(n).suffix.lower() in IMAGE_EXTENSIONS]
    found = {part: sum(1 for n in names if n.parent.name == part) for part in ("images", "masks")}
    print(f"Kvasir-SEG in {archive}:")
    ok = report(found, {"images": KVASIR_SEG_PAIRS, "masks": KVASIR_SEG_PAIRS})
    print(f"next: python data_scripts/prepare_kvasir_seg.py {archive}")
    return ok


COMMANDS = {"kvasir": kvasir, "gastrovision": gastrovision, "hyperkvasir": hyperkvasir, "kvasir-seg": kvasir_seg}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Download a real endoscopy data set and verify its image counts per class.",
        epilog="Then set NERO_LITE_DATA to --dest so that nero_lite.data.load(NAME) finds it.",
    )
    parser.add_argument("dataset", choices=sorted(COMMANDS), help="which data set")
    parser.add_argument("--dest", type=Path, default=Path("data"), help="folder to put it in (default: ./data)")
    parser.add_argument("--archive", type=Path, help="use this already downloaded zip instead of downloading")
    parser.add_argument("--verify-only", action="store_true", help="only count the images of an existing copy")
    args = parser.parse_args(argv)
    ok = COMMANDS[args.dataset](args.dest.expanduser(), args.archive, args.verify_only)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
