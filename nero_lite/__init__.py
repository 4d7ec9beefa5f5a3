"""nero_lite: explainable out-of-distribution detection for medical imaging.

Modules, in the order data flows through them:

* :mod:`nero_lite.data` — the embedded synthetic endoscopy set and real-image loaders.
* :mod:`nero_lite.models` — timm classifiers, cached training, one-pass :func:`~nero_lite.models.extract`.
* :mod:`nero_lite.outputs` — the :class:`~nero_lite.outputs.Outputs` record detectors consume.
* :mod:`nero_lite.metrics` — AUROC, FPR95, AUPR-In/Out (higher score = more in-distribution).
* :mod:`nero_lite.explain` — why an image is flagged: NERO's score taken apart, score maps, CRP reports.
* :mod:`nero_lite.faithfulness` — explanations measured against where the finding is.
* :mod:`nero_lite.plots` — the figures the book shows.
"""

import warnings
from importlib import metadata

# timm imports huggingface_hub, which imports tqdm.auto: in a notebook without ipywidgets
# that warns "IProgress not found" on every import, although our bars are plain text.
warnings.filterwarnings("ignore", message="IProgress not found")

__version__ = "0.1.0"

_STACK = ("torch", "torchvision", "timm", "zennit", "zennit-crp", "jupyter-book")


def versions() -> dict[str, str]:
    """Installed versions of the stack the book runs on (``"absent"`` where not installed)."""
    found = {}
    for name in _STACK:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = "absent"
    return found
