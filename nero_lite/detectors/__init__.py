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
two hyperparameter presets, ours (the default) and that of NERO's official code::

    detectors.create("nero", preset="official", arch="vit")  # k = 175, as the paper's code

A detector, fitted or not, is kept in one safetensors file (no pickle; the layout is in
:mod:`.saving`) and read back by :func:`load`, scoring bit for bit as before::

    detectors.create("nero").fit(train).save("nero.safetensors")
    nero = detectors.load("nero.safetensors")
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from ..constants import DETECTORS
from ..progress import bar as progress_bar
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

if TYPE_CHECKING:
    from ..outputs import Outputs

__all__ = [
    "ASHDetector",
    "Detector",
    "EnergyDetector",
    "EntropyDetector",
    "FeatureCentroidDetector",
    "Fitted",
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
    "fit_each",
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
    the class defaults, or ``"official"``, those of NERO's official code for the
    architecture ``arch`` (required there, e.g. ``"resnet18"``, ``"vit"``,
    ``"deit_small"``). Keyword ``params`` override the preset.
    """
    try:
        cls = _REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown detector {name!r}; available: {', '.join(_REGISTRY)}") from None
    return cls(**{**preset_params(name, preset, arch), **params})


@dataclass
class Fitted:
    """What :func:`fit_each` did: the ``detectors`` fitted (name → detector, in their order),
    those ``skipped`` (name → the first line of why) and each one's fitting ``seconds``."""

    detectors: dict[str, Detector] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)


def fit_each(detectors: dict[str, Detector], outputs: Outputs, *, skip_failing: bool = True, progress: bool = True,
             desc: str = "fit detectors") -> Fitted:
    """Fit each of ``detectors`` (name → unfitted detector) on the training ``outputs``.

    A detector that cannot be fitted on them raises :class:`ValueError` (e.g. KNN with fewer
    training samples than ``k``): it is skipped and its reason kept when ``skip_failing``,
    else the error is raised. The caller says how it reports the skipped ones.
    """
    fitted = Fitted()
    for name, detector in progress_bar(detectors.items(), desc=desc, show=progress):
        start = time.perf_counter()
        try:
            fitted.detectors[name] = detector.fit(outputs)
        except ValueError as error:
            if not skip_failing:
                raise
            fitted.skipped[name] = str(error).splitlines()[0]
            continue
        fitted.seconds[name] = time.perf_counter() - start
    return fitted


def load(path: str | Path) -> Detector:
    """The registry detector saved at ``path`` by :meth:`~nero_lite.detectors.base.Detector.save`.

    Its class is the one registered under the saved name. Raises :class:`FileNotFoundError`
    without a file and :class:`ValueError` for a file that is not a saved detector, is of
    another format version, fails its checksum, or names no registry detector
    (:func:`~nero_lite.detectors.saving.load_detector`).
    """
    return load_detector(path, _REGISTRY)
