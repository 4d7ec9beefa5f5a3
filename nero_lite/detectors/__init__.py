"""Out-of-distribution detectors: NERO and thirteen baselines, behind one registry.

Every detector follows :class:`~nero_lite.detectors.base.Detector`: hyperparameters in
``__init__``, ``fit(train_outputs)`` → ``self``, ``score(outputs)`` → one value per
sample, **higher = more in-distribution**. Run them by name::

    from nero_lite import detectors
    for name in detectors.available():
        scores = detectors.create(name).fit(train).score(test)

Modules, one per family: :mod:`.logits` (MSP, MaxLogit, Energy, Entropy), :mod:`.odin`,
:mod:`.distance` (Mahalanobis, KNN, SHE), :mod:`.subspace` (ViM, NECO), :mod:`.shaping`
(ReAct, ASH), :mod:`.gradient` (GradNorm), :mod:`.nero` (NERO); :mod:`.presets` holds the
two hyperparameter presets, ours (the default) and that of NERO's reference code::

    detectors.create("nero", preset="reference", arch="vit")  # k = 175, as the paper's code

A detector, fitted or not, is kept in one safetensors file (no pickle; the layout is in
:mod:`.saving`) and read back by :func:`load`, scoring bit for bit as before::

    detectors.create("nero").fit(train).save("nero.safetensors")
    nero = detectors.load("nero.safetensors")
"""

from __future__ import annotations

from pathlib import Path

from ..constants import DETECTORS
from .base import Detector, NotFittedError, Paper
from .distance import KNNDetector, MahalanobisDetector, SHEDetector
from .gradient import GradNormDetector
from .logits import EnergyDetector, EntropyDetector, MaxLogitDetector, MSPDetector
from .nero import FeatureCentroidDetector, NeroDetector
from .odin import OdinDetector
from .presets import PRESETS, preset_params
from .saving import load_detector
from .shaping import ASHDetector, ReActDetector
from .subspace import NecoDetector, ViMDetector

__all__ = [
    "ASHDetector",
    "Detector",
    "EnergyDetector",
    "EntropyDetector",
    "FeatureCentroidDetector",
    "GradNormDetector",
    "KNNDetector",
    "MSPDetector",
    "MahalanobisDetector",
    "MaxLogitDetector",
    "NecoDetector",
    "NeroDetector",
    "NotFittedError",
    "OdinDetector",
    "PRESETS",
    "Paper",
    "ReActDetector",
    "SHEDetector",
    "ViMDetector",
    "available",
    "create",
    "load",
]

_REGISTRY: dict[str, type[Detector]] = {
    cls.name: cls
    for cls in (
        MSPDetector,
        MaxLogitDetector,
        EnergyDetector,
        EntropyDetector,
        OdinDetector,
        MahalanobisDetector,
        ViMDetector,
        NecoDetector,
        ReActDetector,
        GradNormDetector,
        KNNDetector,
        ASHDetector,
        SHEDetector,
        NeroDetector,
    )
}
if tuple(_REGISTRY) != DETECTORS:  # the command line offers nero_lite.constants.DETECTORS without importing this package
    raise ImportError(f"nero_lite.constants.DETECTORS {DETECTORS} differs from the registry {tuple(_REGISTRY)}")


def available() -> list[str]:
    """Names accepted by :func:`create`, baselines first and NERO last."""
    return list(_REGISTRY)


def create(name: str, preset: str = "ours", arch: str | None = None, **params) -> Detector:
    """A new detector by registry name, e.g. ``create("knn", k=10)``.

    ``preset`` picks the hyperparameters (:mod:`~nero_lite.detectors.presets`): ``"ours"``,
    the class defaults, or ``"reference"``, those of NERO's reference code for the
    architecture ``arch`` (required there, e.g. ``"resnet18"``, ``"vit"``,
    ``"deit_small"``). Keyword ``params`` override the preset.
    """
    try:
        cls = _REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown detector {name!r}; available: {', '.join(_REGISTRY)}") from None
    return cls(**{**preset_params(name, preset, arch), **params})


def load(path: str | Path) -> Detector:
    """The registry detector saved at ``path`` by :meth:`~nero_lite.detectors.base.Detector.save`.

    Its class is the one registered under the saved name. Raises :class:`FileNotFoundError`
    without a file and :class:`ValueError` for a file that is not a saved detector, is of
    another format version, fails its checksum, or names no registry detector
    (:func:`~nero_lite.detectors.saving.load_detector`).
    """
    return load_detector(path, _REGISTRY)
