"""Semi-supervised OOD detection from intermediate layers (IPSJ Journal 62(4), 2021).

"Semi-supervised out-of-distribution detection using the output of intermediate layers
in deep neural networks": GEOM's transform classifier f (Golan & El-Yaniv, NeurIPS
2018) is trained on ID images, frozen, and a small network g on its intermediate
features is trained against a few known outliers. Compared with GEOM, GEOM+ (outlier
exposure; Hendrycks et al., ICLR 2019) and BCE (g on raw images).

Modules, one idea each:

* :mod:`~nero_lite.semisup.config` — :class:`~nero_lite.semisup.config.SemisupConfig`, the experiments' hyperparameters.
* :mod:`~nero_lite.semisup.transforms` — GEOM's geometric transforms, batched.
* :mod:`~nero_lite.semisup.networks` — f (a wide ResNet), its feature taps, and g.
* :mod:`~nero_lite.semisup.training` — f's and g's training, on the package's one loop (:func:`nero_lite.training.train_epochs`).
* :mod:`~nero_lite.semisup.detectors` — the ``fit``/``score`` detectors.
* :mod:`~nero_lite.semisup.outliers` — the texture outlier pool and one-class tasks.
* :mod:`~nero_lite.semisup.protocol` — :func:`~nero_lite.semisup.protocol.run_protocol`, :func:`~nero_lite.semisup.protocol.summarize`; the paired tests over class × seed (:func:`~nero_lite.paired.paired_difference`) are re-exported here.
* :mod:`~nero_lite.semisup.digits` — the paper's own setting: one-class handwritten digits, rendered letters as outliers, the paper's MNIST tables.
* :mod:`~nero_lite.semisup.plots` — the chapter's figures.

A chapter's run::

    from nero_lite import data, semisup
    splits = data.load("synthetic")
    results = semisup.run_protocol(splits, ["geom", "geom+", "bce", "proposed"], n_outliers=[16, 256])
    semisup.summarize(results, by=["method", "n_outliers"])

All scores: higher = more in-distribution.
"""

from ..detectors.base import NotFittedError
from .config import SemisupConfig
from .detectors import PROPOSED_LAYERS, BceDetector, GeomDetector, IntermediateLayerDetector
from .digits import (
    DIGITS,
    DIGITS_CONFIG,
    FONTS,
    LETTERS,
    PAPER_LAYERS,
    PAPER_TABLE3,
    ROTATION_AMBIGUOUS,
    block_counts,
    class_gap,
    counts_to_images,
    digits_splits,
    layer_table,
    letter_outliers,
    paper_class_gap,
    per_class_table,
)
from .networks import GNet, WideResNet, tap_features
from .outliers import TEXTURES, OneClassTask, one_class_splits, texture_outliers
from ..paired import PairedDifference, paired_difference
from .protocol import METHODS, mean_std, run_protocol, summarize
from .transforms import GeometricTransforms, Transform, geometric_transforms

__all__ = [
    "DIGITS",
    "DIGITS_CONFIG",
    "FONTS",
    "LETTERS",
    "METHODS",
    "PAPER_LAYERS",
    "PAPER_TABLE3",
    "PROPOSED_LAYERS",
    "ROTATION_AMBIGUOUS",
    "TEXTURES",
    "BceDetector",
    "GNet",
    "GeomDetector",
    "GeometricTransforms",
    "IntermediateLayerDetector",
    "NotFittedError",
    "OneClassTask",
    "PairedDifference",
    "SemisupConfig",
    "Transform",
    "WideResNet",
    "block_counts",
    "class_gap",
    "counts_to_images",
    "digits_splits",
    "geometric_transforms",
    "layer_table",
    "letter_outliers",
    "mean_std",
    "one_class_splits",
    "paired_difference",
    "paper_class_gap",
    "per_class_table",
    "run_protocol",
    "summarize",
    "tap_features",
    "texture_outliers",
]
