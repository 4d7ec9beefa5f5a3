"""Hyperparameter presets: our defaults, or the settings of NERO's official code.

:func:`nero_lite.detectors.create` builds a detector from one of two presets, and keyword
arguments given to it override the preset::

    detectors.create("react")                                   # preset="ours"
    detectors.create("react", preset="official", arch="resnet18")  # τ = 0.9

* ``"ours"`` (the default): the class defaults, each the setting of the paper that
  introduced the method (NERO's count of neurons as the same share of every feature
  dimension D); each class docstring says which and why.
* ``"official"``: the settings of NERO's official code (Chhetri et al., MICCAI 2025;
  github.com/bhattarailab/NERO, ``ood/run_nero.py`` and ``ood/cv_uncertainty.py``), which
  produced the paper's tables. Two of them depend on the architecture, so this preset
  needs ``arch``: a name starting with ``"resnet"`` (``"resnet18"``, ``"resnet18d"``) is a
  ResNet, one starting with ``"vit"`` or ``"deit"`` (``"vit"`` is DeiT-Tiny,
  ``"deit_small"`` the paper's DeiT-Small) a vision transformer (:func:`arch_family`).

Where the presets differ (h: standardised features, a: features, P: NECO's principal
projection, z: logits):

============  ===============================================  ===============================================
detector      ours                                             official (where in the official code)
============  ===============================================  ===============================================
nero          k = round(175 D / 512) neurons in the norm       k = 175 for every D (``run_nero.py``,
              factor (175 at ResNet-18's D = 512)              ``relevanacy_algo``)
react         clip τ = 90th percentile of the training         τ = 0.9 (ResNet), 0.99 (ViT/DeiT)
              activations                                      (``cv_uncertainty.py``, ``ReAct_Energy``)
neco          ‖P h‖ / ‖h‖ for every architecture               ResNet: ours; ViT/DeiT: ‖P h‖ / ‖a‖ · max z
                                                               (``cv_uncertainty.py``, ``Neco``)
odin          T = 1000, ε = 0.0014                             T = 100, ε = 0.0005 (``cv_uncertainty.py``,
                                                               ``odin_score``)
============  ===============================================  ===============================================

MSP, MaxLogit, Energy (T = 1), Mahalanobis, ViM and GradNorm (T = 1) have the same settings
in both. KNN, ASH and SHE are not in the official code: its preset is ours for them.

Differences that are not hyperparameters, which no preset reproduces (the class
docstrings give the details): the official Entropy clips probabilities at
:math:`10^{-6}` (ties among saturated softmaxes; ours is exact); its GradNorm is ours times
the number of classes C (the same ranking); its ViM subspace rule switches at D ≥ 2048
instead of 1500 (the same dimension unless 1500 ≤ D < 2048); its NERO PCA lets
scikit-learn pick the solver, which is randomized, an approximation, at D = 512 for 427
or more training samples (fewer than 5120 from scikit-learn 1.5 on; ours is exact). Its
FPR95 counts one more ID sample when 0.95 n is whole: :func:`nero_lite.metrics.fpr_at_tpr`
with ``convention="official"``.

The preset was called ``"reference"`` before (a word that also named the centroids of NERO,
the bundle's pool of images and an FPR95 convention): that name, and ``reference_params``,
still work for one release, with a :class:`DeprecationWarning`.
"""

from __future__ import annotations

import warnings
from typing import Any

import pandas as pd

from ..constants import PRESETS

__all__ = ["PAPER_RESULTS", "PRESETS", "arch_family", "official_params", "paper_table", "preset_params"]


# registry detectors absent from NERO's official code: its preset is ours for them
_NOT_IN_OFFICIAL = ("knn", "ash", "she")


def arch_family(arch: str) -> str:
    """The family of an architecture name: ``"resnet"`` (starts with ``"resnet"``) or ``"vit"`` (``"vit"``, ``"deit"``)."""
    if not isinstance(arch, str):
        raise ValueError(f"arch must be an architecture name such as 'resnet18' or 'vit', got {arch!r}")
    if arch.startswith("resnet"):
        return "resnet"
    if arch.startswith(("vit", "deit")):
        return "vit"
    raise ValueError(
        f"unknown architecture family of arch={arch!r}: the official preset knows ResNets "
        "(names starting with 'resnet') and vision transformers (names starting with 'vit' or 'deit')"
    )


def _official(family: str) -> dict[str, dict[str, Any]]:
    """Every registry name with the official code's settings for one architecture family."""
    vit = family == "vit"
    return {
        "msp": {"temperature": 1.0},
        "maxlogit": {},
        "energy": {"temperature": 1.0},
        "entropy": {},
        "odin": {"temperature": 100.0, "epsilon": 0.0005, "norm_std": None},
        "mahalanobis": {},
        "vim": {"dim": None},
        "neco": {"dim": 100, "use_maxlogit": vit, "denominator": "raw" if vit else "standardised"},
        "react": {"threshold": 0.99 if vit else 0.9},
        "gradnorm": {"temperature": 1.0},
        **{name: {} for name in _NOT_IN_OFFICIAL},
        "nero": {"pca_fraction": 2 / 3, "k": 175, "centroids_per_class": 1, "target": "softmax", "epsilon": 0.0},
    }


def official_params(name: str, arch: str) -> dict[str, Any]:
    """Keyword arguments that give detector ``name`` the settings of NERO's official code on ``arch``.

    An empty dict where the official code has no setting of its own (or no such detector).
    """
    params = _official(arch_family(arch))
    if name not in params:
        raise ValueError(f"unknown detector {name!r}; available: {', '.join(params)}")
    return dict(params[name])


def __getattr__(name: str):
    """``reference_params``, the previous name of :func:`official_params`, with a deprecation warning."""
    if name == "reference_params":
        warnings.warn("nero_lite.detectors.presets.reference_params is now official_params", DeprecationWarning, stacklevel=2)
        return official_params
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def preset_params(name: str, preset: str = "ours", arch: str | None = None) -> dict[str, Any]:
    """Keyword arguments of detector ``name`` under ``preset`` (``{}`` for ``"ours"``: the class defaults).

    ``arch`` is required by ``"official"``; when given it must name a known family
    (:func:`arch_family`) under every preset.
    """
    if preset == "reference":
        warnings.warn('preset="official" is now preset="official" (the settings of NERO\'s official code)',
                      DeprecationWarning, stacklevel=3)
        preset = "official"
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; choose one of {PRESETS}")
    if arch is not None:
        arch_family(arch)
    if preset == "ours":
        if name not in _official("resnet"):
            raise ValueError(f"unknown detector {name!r}; available: {', '.join(_official('resnet'))}")
        return {}
    if arch is None:
        raise ValueError(
            "preset='official' depends on the architecture: pass arch=, e.g. 'resnet18', 'resnet18d', 'vit' or 'deit_small'"
        )
    return official_params(name, arch)


#: The NERO paper's results table (Chhetri et al., MICCAI 2025), AUROC % and FPR95 % per
#: detector (registry names; the paper's "Energy+ReAct" is ``"react"``), for the settings
#: (model, data set) in this order. Produced with the official preset: ImageNet-pretrained
#: models fine-tuned at 224 px (:meth:`nero_lite.training.Recipe.paper`).
PAPER_RESULTS: dict[str, tuple[tuple[float, float], ...]] = {
    "msp": ((90.30, 41.72), (66.93, 90.56), (87.05, 40.18), (70.00, 90.74)),
    "odin": ((91.77, 35.44), (69.79, 79.27), (88.41, 36.40), (73.37, 83.68)),
    "energy": ((88.85, 52.36), (70.31, 79.79), (85.77, 44.02), (75.35, 83.68)),
    "entropy": ((90.38, 41.86), (67.37, 87.32), (87.20, 39.94), (70.34, 90.19)),
    "maxlogit": ((88.90, 52.38), (70.08, 80.44), (85.77, 44.02), (75.11, 84.20)),
    "mahalanobis": ((84.05, 54.06), (65.93, 89.69), (94.50, 21.86), (75.68, 81.43)),
    "vim": ((90.62, 41.10), (72.70, 76.98), (93.88, 24.38), (76.69, 78.37)),
    "neco": ((89.64, 47.90), (79.81, 71.61), (88.31, 37.60), (76.95, 81.92)),
    "react": ((86.57, 53.78), (61.93, 83.86), (83.49, 46.84), (73.42, 83.22)),
    "gradnorm": ((85.33, 54.68), (62.55, 90.50), (71.33, 57.80), (54.85, 88.68)),
    "nero": ((90.76, 28.84), (75.95, 74.33), (92.73, 18.96), (82.03, 76.74)),
}
_PAPER_SETTINGS = (("ResNet-18", "Kvasir-v2"), ("ResNet-18", "GastroVision"), ("DeiT-S", "Kvasir-v2"), ("DeiT-S", "GastroVision"))


def paper_table(model: str = "ResNet-18", dataset: str = "Kvasir-v2") -> pd.DataFrame:
    """One setting of :data:`PAPER_RESULTS`: a row per detector, columns ``auroc`` and ``fpr95`` (%).

    ``model`` is ``"ResNet-18"`` or ``"DeiT-S"``, ``dataset`` ``"Kvasir-v2"`` or ``"GastroVision"``.
    """
    if (model, dataset) not in _PAPER_SETTINGS:
        raise ValueError(f"the paper reports {', '.join(' on '.join(s) for s in _PAPER_SETTINGS)}; got {model} on {dataset}")
    column = _PAPER_SETTINGS.index((model, dataset))
    return pd.DataFrame({name: dict(zip(("auroc", "fpr95"), values[column])) for name, values in PAPER_RESULTS.items()}).T
