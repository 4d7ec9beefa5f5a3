"""The geometric transforms GEOM learns to recognise (Golan & El-Yaniv, NeurIPS 2018).

GEOM composes, in this order, a horizontal flip, a translation and a rotation by a
multiple of 90°:

.. math::

    T_{(f, t_x, t_y, r)}(x) = \\operatorname{rot}_{90 r}\\big(\\operatorname{shift}_{t_x, t_y}(\\operatorname{flip}^f(x))\\big),
    \\qquad f \\in \\{0, 1\\},\\ t_x, t_y \\in \\{0, -s, +s\\},\\ r \\in \\{0, 1, 2, 3\\},

2 × 3 × 3 × 4 = 72 transforms, with :math:`s` a quarter of the image side (8 pixels on
GEOM's 32 × 32 images). The pixels a shift uncovers are filled by reflection, as GEOM
does (torch's ``"reflect"`` padding, which mirrors about the edge pixel). A network
that tells the transforms apart must know how an upright, centred ID image looks.

Kinds of transform set (``K`` = number of transforms):

* ``"full"`` — all 72 of GEOM;
* ``"rot_flip"`` — the 8 flips × rotations, no shift;
* ``"rot"`` — the 4 rotations;
* ``"shift"`` — the 9 shifts, no flip or rotation.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import torch
import torch.nn.functional as F

__all__ = ["KINDS", "Transform", "GeometricTransforms", "geometric_transforms"]

#: The transform sets :func:`geometric_transforms` builds (72, 8, 4 and 9 transforms).
KINDS = ("full", "rot_flip", "rot", "shift")


@dataclass(frozen=True)
class Transform:
    """One transform: ``flip`` first, then a shift of ``(tx, ty)`` shift units
    (each −1, 0 or +1; +x moves the content right, +y down), then ``rot`` quarter
    turns counter-clockwise (:func:`torch.rot90`)."""

    flip: bool
    tx: int
    ty: int
    rot: int


class GeometricTransforms:
    """An ordered set of :class:`Transform`; the index ``k`` of a transform is its label.

    Parameters
    ----------
    transforms : sequence of Transform
    shift : float
        One shift unit as a fraction of the image side (GEOM: 8 / 32 = 0.25).
    """

    def __init__(self, transforms: list[Transform], shift: float = 0.25):
        if not transforms:
            raise ValueError("a transform set needs at least one transform")
        if not 0.0 <= shift < 0.5:
            raise ValueError(f"shift must be in [0, 0.5), got {shift}")
        self.transforms = tuple(transforms)
        self.shift = shift

    def __len__(self) -> int:
        return len(self.transforms)

    def __getitem__(self, k: int) -> Transform:
        return self.transforms[k]

    def __repr__(self) -> str:
        return f"GeometricTransforms(K={len(self)}, shift={self.shift})"

    def _one(self, x: torch.Tensor, t: Transform) -> torch.Tensor:
        if t.flip:
            x = x.flip(-1)
        if t.tx or t.ty:
            h, w = x.shape[-2:]
            sy, sx = round(self.shift * h), round(self.shift * w)
            padded = F.pad(x, (sx, sx, sy, sy), mode="reflect")
            top, left = sy - t.ty * sy, sx - t.tx * sx
            x = padded[..., top : top + h, left : left + w]
        return torch.rot90(x, t.rot, dims=(-2, -1)) if t.rot else x

    def apply(self, x: torch.Tensor, k: int | torch.Tensor) -> torch.Tensor:
        """Transform every image of the batch ``x`` (N×C×H×W): all by transform ``k``
        (an int), or image ``i`` by transform ``k[i]`` (a length-N tensor).

        Rotations by 90° need square images; the result has the shape of ``x``.
        """
        if x.shape[-1] != x.shape[-2]:
            raise ValueError(f"geometric transforms need square images, got {tuple(x.shape[-2:])}")
        if isinstance(k, int):
            return self._one(x, self.transforms[k])
        k = torch.as_tensor(k, device=x.device)
        if k.shape != (len(x),):
            raise ValueError(f"k must hold one transform index per image: shape {(len(x),)}, got {tuple(k.shape)}")
        out = torch.empty_like(x)
        for index in k.unique().tolist():
            mask = k == index
            out[mask] = self._one(x[mask], self.transforms[index])
        return out

    def expand(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """All K transforms of every image: ``(K·N)×C×H×W`` images ordered transform-major
        (``T_0 x_1 … T_0 x_N, T_1 x_1, …``) and their labels ``k``."""
        images = torch.cat([self._one(x, t) for t in self.transforms])
        labels = torch.arange(len(self), device=x.device).repeat_interleave(len(x))
        return images, labels


def geometric_transforms(kind: str = "full", shift: float = 0.25) -> GeometricTransforms:
    """GEOM's transform set (``"full"``, K = 72) or a subset (``"rot_flip"``, 8; ``"rot"``, 4; ``"shift"``, 9)."""
    if kind not in KINDS:
        raise ValueError(f"unknown transform kind {kind!r}; choose one of {tuple(KINDS)}")
    flips = (False, True) if kind in ("full", "rot_flip") else (False,)
    shifts = (0, -1, 1) if kind in ("full", "shift") else (0,)
    rotations = range(4) if kind != "shift" else (0,)
    transforms = [Transform(f, tx, ty, r) for f, tx, ty, r in itertools.product(flips, shifts, shifts, rotations)]
    return GeometricTransforms(transforms, shift)
