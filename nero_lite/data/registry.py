"""The data set registry: the published data sets :func:`~nero_lite.data.load` knows by name, and where they live."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from .folders import existing_folder

__all__ = ["DATASETS", "SEGMENTED_FOLDER", "RealDataset", "data_root", "dataset_folder"]


def data_root() -> Path | None:
    """The folder named by ``NERO_LITE_DATA`` (real data sets live below it), or ``None``."""
    value = os.environ.get("NERO_LITE_DATA", "").strip()
    return Path(value).expanduser() if value else None


@dataclass(frozen=True)
class RealDataset:
    """A published data set: its conventional folder name and its ID/OOD class split."""

    folder: str
    id_classes: tuple[str, ...]
    ood_kind: dict[str, str]
    description: str

    @property
    def ood_classes(self) -> tuple[str, ...]:
        """The OOD classes, in a fixed order."""
        return tuple(self.ood_kind)


#: The real data sets :func:`load` knows by name.
#:
#: * ``hyperkvasir`` — the five lower-GI classes of HyperKvasir's labelled images
#:   (Borgli et al., Sci. Data 2020), as in ``hyperkvasir-lowergi`` (prepared with
#:   ``data_scripts/prepare_hyperkvasir.py``): the three routine classes are ID; polyps
#:   (an unseen finding) and impacted stool (shares colour and texture with bbps-0-1)
#:   are near-OOD.
#: * ``kvasir`` — Kvasir-v2 (Pogorelov et al., MMSys 2017): the three normal landmarks
#:   are ID; the findings are OOD. The two dyed classes are marked far-OOD (indigo-carmine
#:   blue never appears in the ID classes), the other findings near-OOD.
#: * ``gastrovision`` — GastroVision (Jha et al., 2023), 27 classes. ID: the 10 normal
#:   or anatomical-landmark classes plus "Accessory tools" (instruments seen during
#:   routine examinations, not a finding) — the 11 most frequent non-pathological classes,
#:   5,996 of the 8,000 images. OOD: the 16 pathological-finding and polyp-removal
#:   classes; the two dyed ones far-OOD, the rest near-OOD. The NERO paper uses 11 ID
#:   classes but does not publish which; this is our choice.
DATASETS: dict[str, RealDataset] = {
    "hyperkvasir": RealDataset(
        folder="hyperkvasir-lowergi",
        id_classes=("cecum", "bbps-2-3", "bbps-0-1"),
        ood_kind={"polyps": "near", "impacted-stool": "near"},
        description="HyperKvasir lower-GI labelled images (five classes)",
    ),
    "kvasir": RealDataset(
        folder="kvasir-dataset-v2",
        id_classes=("normal-cecum", "normal-pylorus", "normal-z-line"),
        ood_kind={
            "dyed-lifted-polyps": "far",
            "dyed-resection-margins": "far",
            "esophagitis": "near",
            "polyps": "near",
            "ulcerative-colitis": "near",
        },
        description="Kvasir v2 (eight classes, 1,000 images each)",
    ),
    "gastrovision": RealDataset(
        folder="gastrovision",
        id_classes=(
            "Normal mucosa and vascular pattern in the large bowel",
            "Accessory tools",
            "Normal stomach",
            "Small bowel_terminal ileum",
            "Pylorus",
            "Gastroesophageal_junction_normal z-line",
            "Duodenal bulb",
            "Ileocecal valve",
            "Normal esophagus",
            "Cecum",
            "Retroflex rectum",
        ),
        ood_kind={
            "Colon polyps": "near",
            "Dyed-resection-margins": "far",
            "Blood in lumen": "near",
            "Dyed-lifted-polyps": "far",
            "Colorectal cancer": "near",
            "Esophagitis": "near",
            "Barrett's esophagus": "near",
            "Resected polyps": "near",
            "Gastric polyps": "near",
            "Mucosal inflammation large bowel": "near",
            "Colon diverticula": "near",
            "Resection margins": "near",
            "Angiectasia": "near",
            "Erythema": "near",
            "Esophageal varices": "near",
            "Ulcer": "near",
        },
        description="GastroVision (27 classes, 8,000 images)",
    ),
}


#: Folder name of the Kvasir-SEG polyps below ``NERO_LITE_DATA`` (prepared with
#: ``data_scripts/prepare_kvasir_seg.py``): ``images/<id>.jpg``, ``masks/<id>.png``, ``manifest.csv``.
SEGMENTED_FOLDER = "kvasir-seg-polyps"


def dataset_folder(name: str, root: str | os.PathLike | None) -> Path:
    """The folder of a named data set: ``root``, else below ``NERO_LITE_DATA``."""
    spec = DATASETS[name]
    if root is not None:
        return existing_folder(Path(root).expanduser())
    base = data_root()
    if base is None:
        raise FileNotFoundError(
            f"no folder for {name!r}: pass root=... or set NERO_LITE_DATA to the folder holding '{spec.folder}/' "
            f"(prepare it with the scripts in data_scripts/)"
        )
    for candidate in (base / spec.folder, base):
        if (candidate / spec.id_classes[0]).is_dir():
            return candidate
    raise FileNotFoundError(f"{spec.description} not found: expected {base / spec.folder} (NERO_LITE_DATA={base})")
