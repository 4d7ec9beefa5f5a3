"""Saved detectors: one safetensors file per detector, never a pickle.

:meth:`Detector.save <nero_lite.detectors.base.Detector.save>` (:func:`save_detector`) writes a
detector, fitted or not, to one safetensors file; :meth:`Detector.load
<nero_lite.detectors.base.Detector.load>` (one class) and :func:`nero_lite.detectors.load` (any
registry detector) read it back (:func:`load_detector`), and the copy scores
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
  :attr:`~nero_lite.detectors.base.Detector.estimators` (``state`` holds its attributes, encoded alike). ``KEY``
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
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from ..cache import atomic_write
from ..version import __version__
from .base import Detector, init_parameters

__all__ = ["FORMAT_VERSION", "load_detector", "save_detector"]

#: Version of the saved-detector layout that :func:`save_detector` writes and
#: :func:`load_detector` reads; files of another version are refused.
FORMAT_VERSION = 1
# the metadata entries of a saved detector (the module docstring describes them)
_META_KEY = "nero_lite.detector"
_DIGEST_KEY = "sha256"


def save_detector(detector: Detector, path: str | Path) -> None:
    """Write ``detector`` to ``path`` atomically, in the layout of the module docstring.

    Its hyperparameters are the named parameters of its class's ``__init__``; every other
    attribute is fitted state. Missing parent folders are created.
    """
    params = {p.name: getattr(detector, p.name) for p in init_parameters(type(detector))}
    fitted = {key: value for key, value in vars(detector).items() if key not in params}
    tensors: dict[str, torch.Tensor] = {}
    document = {
        "format_version": FORMAT_VERSION,
        "nero_lite_version": __version__,
        "detector": detector.name,
        "params": {key: _encode(value, f"params.{key}", tensors, detector.estimators) for key, value in params.items()},
        "fitted": {key: _encode(value, f"fitted.{key}", tensors, detector.estimators) for key, value in fitted.items()},
    }
    text = json.dumps(document)
    metadata = {_META_KEY: text, _DIGEST_KEY: _digest(text, tensors)}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda temp: save_file(tensors, temp, metadata=metadata))


def load_detector(path: str | Path, classes: dict[str, type[Detector]]) -> Detector:
    """The detector saved at ``path`` (:func:`save_detector`), of one of ``classes`` (by name).

    Raises :class:`FileNotFoundError` when there is no file, and :class:`ValueError` when it
    is not a saved detector, is of another format version, fails its checksum (damaged or
    edited), or names a detector that is not in ``classes``. Nothing is unpickled: the
    tensors are read by safetensors, the rest is JSON, and estimators are rebuilt only for
    the classes the detector lists in :attr:`~nero_lite.detectors.base.Detector.estimators`.
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
        key = getattr(type(obj), "renamed_state", {}).get(key, key)  # saved by a release before the rename
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
