"""The `Outputs` record: what one forward pass of a classifier gives a detector.

Every detector in :mod:`nero_lite.detectors` is fitted and scored on an `Outputs`
object. :func:`nero_lite.extraction.extract` builds one from a model and images; users
who bring their own features build one directly from tensors or numpy arrays.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np
import torch

__all__ = ["Outputs"]


def _as_tensor(name: str, value, dtype: torch.dtype | None = None) -> torch.Tensor:
    if isinstance(value, np.ndarray):
        value = torch.from_numpy(np.ascontiguousarray(value))
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"Outputs.{name} must be a torch.Tensor or numpy array, got {type(value).__name__}")
    if dtype is torch.long and value.is_floating_point():
        whole = torch.isfinite(value) & (value == value.round())
        if not whole.all():
            bad = value[~whole][0].item()
            raise ValueError(f"Outputs.{name} must be whole class indices (-1 = unknown), got {bad!r}")
    if dtype is not None:
        value = value.to(dtype)
    elif not value.is_floating_point():
        value = value.float()
    return value


@dataclass
class Outputs:
    """Head inputs and outputs of a linear-head classifier for N samples.

    Attributes
    ----------
    features : Tensor, shape (N, D)
        Input of the classifier head (penultimate activations ``a``).
    logits : Tensor, shape (N, C)
        ``z = a W^T + b``.
    labels : Tensor, shape (N,), long
        Class index of each sample; ``-1`` where unknown (e.g. OOD samples).
    weight : Tensor, shape (C, D)
        Weight ``W`` of the linear head.
    bias : Tensor, shape (C,)
        Bias ``b`` of the linear head.

    Numpy arrays are accepted and converted; shapes are checked on creation. ``logits``,
    ``weight`` and ``bias`` are cast to the floating dtype of ``features``; float labels
    must be whole numbers.
    """

    features: torch.Tensor
    logits: torch.Tensor
    labels: torch.Tensor
    weight: torch.Tensor
    bias: torch.Tensor

    def __post_init__(self):
        self.features = _as_tensor("features", self.features)
        # one floating dtype for the record, the features' (e.g. float64 features with a float32 head)
        dtype = self.features.dtype
        self.logits = _as_tensor("logits", self.logits, dtype)
        self.weight = _as_tensor("weight", self.weight, dtype)
        self.bias = _as_tensor("bias", self.bias, dtype)
        if self.labels is None:
            self.labels = torch.full((len(self.features),), -1, dtype=torch.long)
        self.labels = _as_tensor("labels", self.labels, torch.long)
        if self.features.ndim != 2:
            raise ValueError(f"Outputs.features must be 2-D (N, D), got shape {tuple(self.features.shape)}")
        n, d = self.features.shape
        if self.weight.ndim != 2 or self.weight.shape[1] != d:
            raise ValueError(f"Outputs.weight must have shape (C, {d}), got {tuple(self.weight.shape)}")
        c = self.weight.shape[0]
        if tuple(self.bias.shape) != (c,):
            raise ValueError(f"Outputs.bias must have shape ({c},), got {tuple(self.bias.shape)}")
        if tuple(self.logits.shape) != (n, c):
            raise ValueError(f"Outputs.logits must have shape ({n}, {c}), got {tuple(self.logits.shape)}")
        if tuple(self.labels.shape) != (n,):
            raise ValueError(f"Outputs.labels must have shape ({n},), got {tuple(self.labels.shape)}")

    def __len__(self) -> int:
        return len(self.features)

    @property
    def num_classes(self) -> int:
        return self.weight.shape[0]

    @property
    def device(self) -> torch.device:
        return self.features.device

    def to(self, device) -> "Outputs":
        """A copy with every tensor on ``device``."""
        return Outputs(**{f.name: getattr(self, f.name).to(device) for f in fields(self)})

    def detach(self) -> "Outputs":
        """A copy whose tensors are cut from the autograd graph."""
        return Outputs(**{f.name: getattr(self, f.name).detach() for f in fields(self)})

    def subset(self, index) -> "Outputs":
        """The samples selected by ``index`` (a boolean mask or integer indices)."""
        return Outputs(
            features=self.features[index],
            logits=self.logits[index],
            labels=self.labels[index],
            weight=self.weight,
            bias=self.bias,
        )

    def predictions(self) -> torch.Tensor:
        """Predicted class per sample (argmax of the logits)."""
        return self.logits.argmax(dim=1)
