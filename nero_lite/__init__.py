"""nero_lite: explainable out-of-distribution detection for medical imaging.

Modules, in the order data flows through them:

* :mod:`nero_lite.constants` — the names and numbers the command line offers before anything heavy is imported.
* :mod:`nero_lite.synthetic` — the embedded synthetic endoscopy set, its finding masks and counterfactuals.
* :mod:`nero_lite.data` — images, shortcut masking, the data sets and real-image loaders:
  ``data.images`` (``ImageSet``, ``to_input``), ``data.masking``,
  ``data.registry`` (the real data sets), ``data.folders`` (reading
  and splitting folders), ``data.caching`` and ``data.loaders`` (``load``).
* :mod:`nero_lite.cache` — the cache folder, atomic writes, checksummed entries, networks trained once (:func:`~nero_lite.cache.train_or_load`).
* :mod:`nero_lite.notebook` — a chapter's early, visible stop when what it needs is missing (chapter 8 without the real images).
* :mod:`nero_lite.progress` — every progress bar, and the one switch that hides them (``NERO_LITE_PROGRESS=0``).
* :mod:`nero_lite.devices` — the device (CUDA when there is one) and its clock.
* :mod:`nero_lite.models` — timm classifiers by name, their starting weights, their head.
* :mod:`nero_lite.training` — the recipe, the training loop, classifiers trained once and cached.
* :mod:`nero_lite.extraction` — the head's input and output in one forward pass (:func:`~nero_lite.extraction.extract`).
* :mod:`nero_lite.outputs` — the :class:`~nero_lite.outputs.Outputs` record detectors consume.
* :mod:`nero_lite.detectors` — NERO and the 13 baselines, one scikit-learn-style interface:
  :mod:`~nero_lite.detectors.base` (the contract), :mod:`~nero_lite.detectors.saving` (saved detectors), :mod:`~nero_lite.detectors.logits`,
  :mod:`~nero_lite.detectors.odin`, :mod:`~nero_lite.detectors.distance`,
  :mod:`~nero_lite.detectors.subspace`, :mod:`~nero_lite.detectors.shaping`,
  :mod:`~nero_lite.detectors.gradient`, :mod:`~nero_lite.detectors.nero` and
  :mod:`~nero_lite.detectors.presets` (the official code's settings).
* :mod:`nero_lite.metrics` — AUROC, FPR95, AUPR-In/Out (higher score = more in-distribution).
* :mod:`nero_lite.compare` — every detector on the same outputs, in one table.
* :mod:`nero_lite.paired` — two methods compared pair by pair (seeds, classes, images): paired tests and their verdicts.
* :mod:`nero_lite.study` — the whole pipeline over seeds and masking settings.
* :mod:`nero_lite.relevance` — LRP relevance of the head-input neurons and of inner layers.
* :mod:`nero_lite.canonizers` — zennit canonizers and composites for timm's ResNets and ViTs.
* :mod:`nero_lite.attribution` — LRP, CRP and gradient × input maps of the classifier and of NERO's score.
* :mod:`nero_lite.explain` — why an image is flagged: NERO's score taken apart, reports with concept maps.
* :mod:`nero_lite.sanity` — the model-randomization check of the reports, their cost, region shares.
* :mod:`nero_lite.faithfulness` — explanations measured against where the finding is.
* :mod:`nero_lite.semisup` — semi-supervised OOD from intermediate layers (GEOM, GEOM+, BCE, the 2021 method):
  :mod:`~nero_lite.semisup.transforms`, :mod:`~nero_lite.semisup.networks`,
  :mod:`~nero_lite.semisup.training`, :mod:`~nero_lite.semisup.detectors`,
  :mod:`~nero_lite.semisup.outliers`, :mod:`~nero_lite.semisup.protocol`,
  :mod:`~nero_lite.semisup.plots`, and the paper's handwritten digits (:mod:`~nero_lite.semisup.digits`).
* :mod:`nero_lite.plots` — the figures the book shows.
* :mod:`nero_lite.bench` — detector metrics and NERO's throughput against a plain forward pass.
* :mod:`nero_lite.bundle` — a fitted model, its preprocessing, detectors and thresholds, saved and loaded as one (:class:`~nero_lite.bundle.Bundle`).
* :mod:`nero_lite.report` — the self-contained HTML report of flagged images.
* :mod:`nero_lite.cli` — ``python -m nero_lite evaluate|fit|flag`` (``score`` is ``evaluate``): the pipeline on your own folders,
  one module per command (:mod:`~nero_lite.cli.evaluate`, :mod:`~nero_lite.cli.fit`, :mod:`~nero_lite.cli.flag`), with
  :mod:`~nero_lite.cli.options` (the shared options and checks) and :mod:`~nero_lite.cli.common` (what the commands share when they run).
"""

import warnings
from importlib import metadata

# timm imports huggingface_hub, which imports tqdm.auto: in a notebook without ipywidgets
# that warns "IProgress not found" on every import, although our bars are plain text.
warnings.filterwarnings("ignore", message="IProgress not found")

from .version import __version__  # noqa: E402


def __getattr__(name: str):
    """``nero_lite.load_bundle`` (a bundle written by ``python -m nero_lite fit``), imported on first use.

    Loading :mod:`nero_lite.bundle` brings in the models and the attribution stack (timm,
    zennit, zennit-crp); ``import nero_lite.metrics`` and the command line's ``--help`` do
    not need them.
    """
    if name == "load_bundle":
        from .bundle import load_bundle

        return load_bundle
    raise AttributeError(f"module 'nero_lite' has no attribute {name!r}")

_STACK = ("torch", "torchvision", "timm", "zennit", "zennit-crp", "ray", "jupyter-book")


def versions() -> dict[str, str]:
    """Installed versions of the stack the book runs on (``"absent"`` where not installed)."""
    found = {}
    for name in _STACK:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = "absent"
    return found
