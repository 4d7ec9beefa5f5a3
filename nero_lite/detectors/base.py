"""The detector contract: one score convention, scikit-learn style state, shared checks, saved files.

**Convention (everywhere in nero_lite): a higher score means more in-distribution.**
Methods whose papers define an outlier score (an energy, a distance, a NERO score)
are negated here, once, in the detector that implements them.

**Saved detectors**: :meth:`Detector.save` and :meth:`Detector.load`, one safetensors file
each, never a pickle (the layout: :mod:`nero_lite.detectors.saving`).
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import torch
from sklearn.exceptions import NotFittedError

from ..outputs import Outputs

__all__ = [
    "Detector",
    "NotFittedError",
    "Paper",
    "check_outputs",
    "check_positive",
    "class_means",
    "init_parameters",
    "labelled",
    "signature_repr",
]


@dataclass(frozen=True)
class Paper:
    """Citation data of the paper a detector implements (``str`` gives the short form)."""

    authors: str
    title: str
    venue: str
    year: int

    def __str__(self) -> str:
        return f"{self.authors}, {self.venue} {self.year}"


class Detector:
    """Base class of every out-of-distribution detector in :mod:`nero_lite.detectors`.

    ``score(outputs)`` returns one float per sample, **higher = more in-distribution**.

    scikit-learn conventions: ``__init__`` only stores the hyperparameters (the papers'
    defaults); ``fit(train)`` learns from in-distribution training outputs, stores what
    it learned in attributes ending with ``_`` and returns ``self``; scoring a detector
    that needs fitting before ``fit`` raises :class:`sklearn.exceptions.NotFittedError`. Detectors that
    need no fitting (``requires_fit = False``) accept ``fit`` and work without it.

    Inputs are :class:`~nero_lite.outputs.Outputs` records (numpy arrays are converted
    when the record is built). Detectors that use class labels (Mahalanobis, SHE, NERO)
    fit on the samples with a label (``-1`` = unknown is skipped) and need every class of
    the head among them; the others fit on every training sample. Scores are computed batched, on the device and in the
    floating dtype of ``outputs.features``; learned tensors are moved there.
    """

    name: ClassVar[str]
    paper: ClassVar[Paper]
    requires_fit: ClassVar[bool] = False
    #: Whether the detector perturbs the input itself, as ODIN does. Such a detector is
    #: scored with ``score_images(model, x)`` on normalised model input, not with
    #: ``score(outputs)``, which ignores the perturbation; :func:`nero_lite.compare.compare_detectors`
    #: and :meth:`nero_lite.bundle.Bundle.score` read this flag instead of the class.
    needs_images: ClassVar[bool] = False
    #: The scikit-learn classes whose fitted instances the detector keeps (e.g. a
    #: ``PCA``): :meth:`~nero_lite.detectors.base.Detector.save` stores their attributes
    #: as tensors and JSON, :meth:`~nero_lite.detectors.base.Detector.load` rebuilds them
    #: from those; an estimator of any other class cannot be saved.
    estimators: ClassVar[tuple[type, ...]] = ()
    #: The old names of renamed fitted attributes, each mapped to its new name; a detector
    #: saved under an old name loads into the new one (:meth:`~nero_lite.detectors.base.Detector.load`).
    renamed_state: ClassVar[dict[str, str]] = {}

    def fit(self, train: Outputs) -> Detector:
        """Learn from in-distribution training outputs; returns ``self``."""
        train = check_outputs(train, "train")
        with torch.no_grad():
            self._fit(train)
        self.n_features_in_ = train.features.shape[1]
        self.n_classes_ = train.num_classes
        return self

    def score(self, outputs: Outputs) -> torch.Tensor:
        """One score per sample, shape ``(N,)``; higher = more in-distribution."""
        outputs = self._check(outputs)
        with torch.no_grad():
            return self._score(outputs)

    def _fit(self, train: Outputs) -> None:
        """Learn the fitted attributes; detectors that need no fitting learn nothing."""

    def _score(self, outputs: Outputs) -> torch.Tensor:
        raise NotImplementedError

    def _check(self, outputs: Outputs, name: str = "outputs") -> Outputs:
        """Validate ``outputs`` against the fitted state (and that there is one if needed)."""
        outputs = check_outputs(outputs, name)
        if not hasattr(self, "n_features_in_"):
            if self.requires_fit:
                raise NotFittedError(f"{type(self).__name__} is not fitted yet: call fit(train) before scoring")
            return outputs
        if outputs.features.shape[1] != self.n_features_in_:
            raise ValueError(
                f"{name}.features has D={outputs.features.shape[1]} columns, "
                f"but {type(self).__name__} was fitted with D={self.n_features_in_}"
            )
        if outputs.num_classes != self.n_classes_:
            raise ValueError(
                f"{name}.weight has C={outputs.num_classes} classes, "
                f"but {type(self).__name__} was fitted with C={self.n_classes_}"
            )
        return outputs

    def __repr__(self) -> str:
        return signature_repr(self)

    def save(self, path: str | Path) -> None:
        """Write the detector to ``path``, one safetensors file (layout: :mod:`nero_lite.detectors.saving`).

        Hyperparameters and fitted state are saved; a detector that needs fitting must be
        fitted first (:class:`~sklearn.exceptions.NotFittedError` otherwise). The write is
        atomic: an interrupted save leaves ``path`` as it was. Missing parent folders are
        created. The suffix ``.safetensors`` is customary, not required.
        """
        if self.requires_fit and not hasattr(self, "n_features_in_"):
            raise NotFittedError(f"{type(self).__name__} is not fitted yet: call fit(train) before save")
        from .saving import save_detector  # saving builds on this module: imported when used

        save_detector(self, path)

    @classmethod
    def load(cls, path: str | Path) -> Detector:
        """The detector saved at ``path`` by :meth:`save`, which must be one of this class.

        ``NeroDetector.load(path)``; :func:`nero_lite.detectors.load` reads any registry
        detector. Tensors come back on the CPU (scoring moves them to the outputs' device).
        """
        if not hasattr(cls, "name"):
            raise TypeError(
                "Detector.load needs a detector class, e.g. NeroDetector.load(path); "
                "nero_lite.detectors.load(path) reads any registry detector"
            )
        from .saving import load_detector

        return load_detector(path, {cls.name: cls})


def init_parameters(cls: type) -> list[inspect.Parameter]:
    """The named parameters of ``cls.__init__``, ``self`` and ``*args``/``**kwargs`` left out."""
    named = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    return [p for p in list(inspect.signature(cls.__init__).parameters.values())[1:] if p.kind in named]


def signature_repr(obj) -> str:
    """``Name(a=1)``: the keyword arguments of ``__init__`` whose stored value differs from the default.

    scikit-learn style, for any object whose ``__init__`` stores its arguments unchanged
    under their own names (the detectors here and in :mod:`nero_lite.semisup`).
    """
    changed = [
        f"{p.name}={getattr(obj, p.name)!r}"
        for p in init_parameters(type(obj))
        if p.default is not inspect.Parameter.empty and getattr(obj, p.name) != p.default
    ]
    return f"{type(obj).__name__}({', '.join(changed)})"


def check_outputs(outputs: Outputs, name: str) -> Outputs:
    """Reject anything but a non-empty, finite :class:`~nero_lite.outputs.Outputs` record."""
    if not isinstance(outputs, Outputs):
        raise TypeError(f"{name} must be a nero_lite.outputs.Outputs record, got {type(outputs).__name__}")
    if len(outputs) == 0:
        raise ValueError(f"{name} holds no samples")
    for field in ("features", "logits", "weight", "bias"):
        if not torch.isfinite(getattr(outputs, field)).all():
            raise ValueError(f"{name}.{field} contains NaN or inf")
    return outputs


def check_positive(name: str, value: float) -> None:
    """A hyperparameter that must be > 0 (checked at use, scikit-learn style)."""
    if not value > 0:
        raise ValueError(f"{name} must be > 0, got {value!r}")


def labelled(train: Outputs) -> Outputs:
    """The samples of ``train`` with a known label, after checking that every class has one."""
    known = train.subset(train.labels >= 0)
    num_classes = train.num_classes
    if (known.labels >= num_classes).any():
        raise ValueError(f"train.labels holds class indices >= C={num_classes}, the number of classes of the head")
    counts = torch.bincount(known.labels, minlength=num_classes)
    empty = (counts == 0).nonzero().flatten().tolist()
    if empty:
        raise ValueError(f"train.labels: class(es) {empty} have no training samples; every class needs at least one")
    return known


def class_means(x: torch.Tensor, labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Mean row of ``x`` per class, shape ``(num_classes, x.shape[1])``; every class must occur."""
    sums = torch.zeros(num_classes, x.shape[1], dtype=x.dtype, device=x.device).index_add_(0, labels, x)
    return sums / torch.bincount(labels, minlength=num_classes).unsqueeze(1).to(x.dtype)
