"""The names and numbers the command line offers in its help and checks while parsing, in a module
that imports nothing, so that ``python -m nero_lite --help`` and a usage error load no torch.

Each is defined here once; the modules that use them import them from here:
:data:`ARCHITECTURES` (:mod:`nero_lite.models`), :data:`DETECTORS` (the registry of
:mod:`nero_lite.detectors`), :data:`PRESETS` (:mod:`nero_lite.detectors.presets`),
:data:`CORNER_FRACTION` and :data:`TEXT_MARGIN_FRACTION` (:mod:`nero_lite.data`) and
:data:`POOL_PER_CLASS` (:mod:`nero_lite.bundle`).
"""

__all__ = ["ARCHITECTURES", "CORNER_FRACTION", "DETECTORS", "FLAG_COLUMNS", "POOL_PER_CLASS", "PRESETS", "TEXT_MARGIN_FRACTION"]

#: The architectures :func:`~nero_lite.models.create_model` names (any timm model name is accepted too); the first is the default.
ARCHITECTURES = ("resnet18d", "resnet18", "vit", "deit_small")
#: The registry names of :func:`nero_lite.detectors.create`, baselines first and NERO last.
DETECTORS = ("msp", "maxlogit", "energy", "entropy", "odin", "mahalanobis", "vim", "neco", "react", "gradnorm",
             "knn", "ash", "she", "nero")
#: The names :func:`nero_lite.detectors.create` accepts as ``preset``: ours (the default), the official code's.
PRESETS = ("ours", "official")
#: Side of the lower-left square blacked out by :func:`~nero_lite.data.mask_shortcut`, as a fraction of
#: the image side. Measured on the 585 HyperKvasir images of ``hyperkvasir-lowergi``:
#: the black box spans columns 0 to 0.31 and rows 0.68 to 1.0 of the side (49×51 px
#: of 160) in 97 % of the images that have it; 0.35 covers it with a margin.
CORNER_FRACTION = 0.35
#: Width of the left strip holding HyperKvasir's burned-in on-screen text (patient
#: data, timings, a row of dots), as a fraction of the side: bright text pixels end at
#: 0.14 of the side.
TEXT_MARGIN_FRACTION = 0.15
#: Training images per class that ``fit`` keeps in the bundle's pool of reference images
#: (:func:`~nero_lite.bundle.reference_pool`).
POOL_PER_CLASS = 32
#: The columns of ``flags.csv``, written by ``python -m nero_lite flag``
#: (:meth:`~nero_lite.bundle.BundleScores.columns` but ``file``).
FLAG_COLUMNS = ("file", "score", "threshold", "flagged", "predicted", "nearest", "top_neurons")
