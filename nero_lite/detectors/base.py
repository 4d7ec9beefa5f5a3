"""The detector contract: one score convention, scikit-learn style state, shared checks, saved files.

**Convention (everywhere in nero_lite): a higher score means more in-distribution.**
Methods whose papers define an outlier score (an energy, a distance, a NERO score)
are negated here, once, in the detector that implements them.

**Saved detectors.** :meth:`Detector.save` writes a detector, fitted or not, to one
safetensors file, never a pickle; :meth:`Detector.load` (one class) and
:func:`nero_lite.detectors.load` (any registry detector) read it back, and the copy scores
the same outputs bit for bit::

    nero.save("nero.safetensors")
    nero = detectors.load("nero.safetensors")

The file is written atomically (:func:`nero_lite.cache.atomic_write`). Its tensors are the
fitted tensors and numpy arrays (and any tensor or array hyperparameter), moved to the CPU,
in their dtype and in their memory order: an array with a permuted layout, such as
scikit-learn's F-ordered ``PCA.components_``, is stored permuted to be contiguous and
comes back with its original strides, because a matrix product of the same numbers in
another layout can round differently. Its safetensors header metadata (a ``str → str``
map) holds two entries:

* ``"nero_lite.detector"``: JSON text, ``{"format_version": 1, "nero_lite_version":
  "0.1.0", "detector": "nero", "params": {...}, "fitted": {...}}``. ``detector`` is the
  registry name; ``params`` every keyword argument of ``__init__`` (the hyperparameters);
  ``fitted`` every other attribute (what ``fit`` learned, ``n_features_in_`` included;
  empty before ``fit``). ``None``, booleans, numbers, strings and lists are plain JSON;
  anything else is an object: ``{"tensor": KEY}`` (a torch tensor), ``{"array": KEY}``
  (a numpy array), ``{"scalar": KEY}`` (a numpy scalar, stored 0-d), each with
  ``"axes": [...]`` when the stored tensor is the original permuted by those axes;
  ``{"tuple": [...]}``; ``{"dict": {...}}``; and ``{"estimator": NAME, "state": {...}}``
  for a scikit-learn estimator of a class the detector lists in
  :attr:`Detector.estimators` (``state`` holds its attributes, encoded alike). ``KEY``
  names a tensor of the file, e.g. ``"fitted.pca_.components_"``.
* ``"sha256"``: hex SHA-256 of the JSON text (UTF-8) followed, for every tensor in key
  order, by ``\\0KEY\\0DTYPE\\0SHAPE\\0`` (``\\0`` a NUL byte, e.g.
  ``\\0fitted.centroids_\\0torch.float32\\0(3, 5)\\0``) and its bytes in C order: a damaged
  or edited file is refused. A checksum, not a signature: load only
  files you trust the origin of (loading runs no code from the file, but its numbers are
  taken as they are).
"""

from __future__ import annotations

import hashlib
import inspect
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import save_file
from sklearn.exceptions import NotFittedError

from .. import __version__
from ..cache import atomic_write
from ..outputs import Outputs

__all__ = [
    "FORMAT_VERSION",
    "Detector",
    "NotFittedError",
    "Paper",
    "check_outputs",
    "check_positive",
    "class_means",
    "labelled",
    "load_detector",
    "signature_repr",
]

#: Version of the saved-detector layout that :meth:`Detector.save` writes and
#: :func:`load_detector` reads; files of another version are refused.
FORMAT_VERSION = 1
# the metadata entries of a saved detector (the module docstring describes them)
_META_KEY = "nero_lite.detector"
_DIGEST_KEY = "sha256"


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
    #: The scikit-learn classes whose fitted instances the detector keeps (e.g. a
    #: ``PCA``): :meth:`~nero_lite.detectors.base.Detector.save` stores their attributes
    #: as tensors and JSON, :meth:`~nero_lite.detectors.base.Detector.load` rebuilds them
    #: from those; an estimator of any other class cannot be saved.
    estimators: ClassVar[tuple[type, ...]] = ()

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
        """Write the detector to ``path``, one safetensors file (layout: the module docstring).

        Hyperparameters and fitted state are saved; a detector that needs fitting must be
        fitted first (:class:`~sklearn.exceptions.NotFittedError` otherwise). The write is
        atomic: an interrupted save leaves ``path`` as it was. Missing parent folders are
        created. The suffix ``.safetensors`` is customary, not required.
        """
        if self.requires_fit and not hasattr(self, "n_features_in_"):
            raise NotFittedError(f"{type(self).__name__} is not fitted yet: call fit(train) before save")
        params = {p.name: getattr(self, p.name) for p in _init_parameters(type(self))}
        fitted = {key: value for key, value in vars(self).items() if key not in params}
        tensors: dict[str, torch.Tensor] = {}
        document = {
            "format_version": FORMAT_VERSION,
            "nero_lite_version": __version__,
            "detector": self.name,
            "params": {key: _encode(value, f"params.{key}", tensors, self.estimators) for key, value in params.items()},
            "fitted": {key: _encode(value, f"fitted.{key}", tensors, self.estimators) for key, value in fitted.items()},
        }
        text = json.dumps(document)
        metadata = {_META_KEY: text, _DIGEST_KEY: _digest(text, tensors)}
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, lambda temp: save_file(tensors, temp, metadata=metadata))

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
        return load_detector(path, {cls.name: cls})


def load_detector(path: str | Path, classes: dict[str, type[Detector]]) -> Detector:
    """The detector saved at ``path`` (:meth:`Detector.save`), of one of ``classes`` (by name).

    Raises :class:`FileNotFoundError` when there is no file, and :class:`ValueError` when it
    is not a saved detector, is of another format version, fails its checksum (damaged or
    edited), or names a detector that is not in ``classes``. Nothing is unpickled: the
    tensors are read by safetensors, the rest is JSON, and estimators are rebuilt only for
    the classes the detector lists in :attr:`Detector.estimators`.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no saved detector at {path}")
    try:
        with safe_open(path, framework="pt") as stream:
            metadata = stream.metadata() or {}
            tensors = {key: stream.get_tensor(key) for key in stream.keys()}
    except Exception as error:  # safetensors' own errors: the reason only, as in nero_lite.cache
        raise ValueError(f"{path} is not a safetensors file ({type(error).__name__}); is it damaged?") from None
    if _META_KEY not in metadata:
        raise ValueError(f"{path} is not a saved nero_lite detector (no {_META_KEY!r} metadata)")
    text = metadata[_META_KEY]
    try:
        document = json.loads(text)
        version = document["format_version"]
    except (ValueError, TypeError, KeyError):
        raise ValueError(f"{path}: the detector metadata is not valid JSON with a format_version; is it damaged?") from None
    if version != FORMAT_VERSION:
        raise ValueError(f"{path} is saved in detector format version {version!r}; this nero_lite reads {FORMAT_VERSION}")
    if metadata.get(_DIGEST_KEY) != _digest(text, tensors):
        raise ValueError(f"{path} fails its checksum: the file is damaged or was modified after saving")
    try:
        name, params, fitted = document["detector"], document["params"], document["fitted"]
    except (KeyError, TypeError):
        raise ValueError(f"{path}: the detector metadata lacks detector, params or fitted") from None
    if name not in classes:
        raise ValueError(f"{path} holds detector {name!r}; expected one of: {', '.join(classes)}")
    cls = classes[name]
    try:
        detector = cls(**{key: _decode(value, tensors, cls.estimators) for key, value in params.items()})
        _set_state(detector, fitted, tensors, cls.estimators)
    except (TypeError, ValueError, KeyError, AttributeError) as error:
        raise ValueError(f"{path}: cannot rebuild {cls.__name__} from the saved state ({error})") from None
    return detector


def _init_parameters(cls: type) -> list[inspect.Parameter]:
    """The named parameters of ``cls.__init__``, ``self`` and ``*args``/``**kwargs`` left out."""
    named = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    return [p for p in list(inspect.signature(cls.__init__).parameters.values())[1:] if p.kind in named]


def _dense_axes(strides: tuple[int, ...]) -> list[int]:
    """The axis order from the largest stride to the smallest: the memory order of a dense array."""
    return sorted(range(len(strides)), key=lambda axis: -abs(strides[axis]))


def _store(tensor: torch.Tensor, key: str, tensors: dict[str, torch.Tensor], tag: str) -> dict:
    """Put ``tensor`` into ``tensors`` in its memory order; the JSON reference to it."""
    tensor = tensor.detach().cpu()
    axes = _dense_axes(tensor.stride())
    tensors[key] = tensor.permute(axes).contiguous().clone()
    return {tag: key} if axes == sorted(axes) else {tag: key, "axes": axes}


def _encode(value: Any, key: str, tensors: dict[str, torch.Tensor], estimators: tuple[type, ...]) -> Any:
    """``value`` as JSON, its tensors and arrays put into ``tensors`` (the module docstring's layout)."""
    if isinstance(value, torch.Tensor):
        return _store(value, key, tensors, "tensor")
    if isinstance(value, np.ndarray | np.generic):  # before float: np.float64 is a float
        array = np.asarray(value)
        if array.dtype.hasobject:
            raise TypeError(f"cannot save {key}: a numpy array of Python objects")
        tag = "array" if isinstance(value, np.ndarray) else "scalar"
        strided = torch.from_numpy(np.array(array, copy=True, order="K"))
        return _store(strided, key, tensors, tag)
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, list):
        return [_encode(item, f"{key}.{i}", tensors, estimators) for i, item in enumerate(value)]
    if isinstance(value, tuple):
        return {"tuple": [_encode(item, f"{key}.{i}", tensors, estimators) for i, item in enumerate(value)]}
    if isinstance(value, dict) and all(isinstance(item, str) for item in value):
        return {"dict": {item: _encode(v, f"{key}.{item}", tensors, estimators) for item, v in value.items()}}
    if type(value) in estimators:
        state = {item: _encode(v, f"{key}.{item}", tensors, estimators) for item, v in vars(value).items()}
        return {"estimator": type(value).__name__, "state": state}
    raise TypeError(
        f"cannot save {key}: a {type(value).__name__}; a detector keeps tensors, arrays, plain values "
        "and the scikit-learn estimators its class lists in `estimators`"
    )


def _decode(value: Any, tensors: dict[str, torch.Tensor], estimators: tuple[type, ...]) -> Any:
    """The inverse of :func:`_encode`; a malformed entry raises ``ValueError`` or ``KeyError``."""
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, list):
        return [_decode(item, tensors, estimators) for item in value]
    if not isinstance(value, dict):
        raise ValueError(f"unexpected JSON value {value!r}")
    tag = next((t for t in ("tensor", "array", "scalar", "tuple", "dict", "estimator") if t in value), None)
    if tag in ("tensor", "array", "scalar"):
        if set(value) - {tag, "axes"}:
            raise ValueError(f"malformed entry {value!r}")
        stored = tensors[value[tag]]
        axes = value.get("axes", list(range(stored.ndim)))
        if sorted(axes) != list(range(stored.ndim)):
            raise ValueError(f"malformed axes in {value!r}")
        tensor = stored.permute(np.argsort(axes).tolist())
        return tensor if tag == "tensor" else tensor.numpy() if tag == "array" else tensor.numpy()[()]
    if tag == "tuple" and len(value) == 1:
        return tuple(_decode(item, tensors, estimators) for item in value["tuple"])
    if tag == "dict" and len(value) == 1:
        return {item: _decode(v, tensors, estimators) for item, v in value["dict"].items()}
    if tag == "estimator" and set(value) == {"estimator", "state"}:
        known = {cls.__name__: cls for cls in estimators}
        if value["estimator"] not in known:
            raise ValueError(f"estimator {value['estimator']!r} is not one of this detector's {sorted(known)}")
        estimator = known[value["estimator"]]()
        _set_state(estimator, value["state"], tensors, estimators)
        return estimator
    raise ValueError(f"malformed entry {value!r}")


def _set_state(obj: Any, state: dict, tensors: dict[str, torch.Tensor], estimators: tuple[type, ...]) -> None:
    """Set the decoded ``state`` as attributes of ``obj``; none may shadow an attribute of its class."""
    for key, value in state.items():
        if not key.isidentifier() or hasattr(type(obj), key):
            raise ValueError(f"bad attribute name {key!r} for {type(obj).__name__}")
        setattr(obj, key, _decode(value, tensors, estimators))


def _digest(text: str, tensors: dict[str, torch.Tensor]) -> str:
    """Hex SHA-256 of ``text`` and of each tensor's key, dtype, shape and bytes, in key order."""
    digest = hashlib.sha256(text.encode())
    for key in sorted(tensors):
        tensor = tensors[key].contiguous()
        digest.update(f"\0{key}\0{tensor.dtype}\0{tuple(tensor.shape)}\0".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy())
    return digest.hexdigest()


def signature_repr(obj) -> str:
    """``Name(a=1)``: the keyword arguments of ``__init__`` whose stored value differs from the default.

    scikit-learn style, for any object whose ``__init__`` stores its arguments unchanged
    under their own names (the detectors here and in :mod:`nero_lite.semisup`).
    """
    changed = [
        f"{p.name}={getattr(obj, p.name)!r}"
        for p in _init_parameters(type(obj))
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
