"""Shortcut masking: HyperKvasir's class-correlated black box and on-screen text, found and blacked out."""

from __future__ import annotations

import dataclasses
import math

import torch

from .images import Splits

__all__ = ["CORNER_FRACTION", "TEXT_MARGIN_FRACTION", "corner_box_present", "corner_region", "mask_region", "mask_shortcut"]

#: Side of the lower-left square blacked out by :func:`mask_shortcut`, as a fraction of
#: the image side. Measured on the 585 HyperKvasir images of ``hyperkvasir-lowergi``:
#: the black box spans columns 0 to 0.31 and rows 0.68 to 1.0 of the side (49×51 px
#: of 160) in 97 % of the images that have it; 0.35 covers it with a margin.
CORNER_FRACTION = 0.35
#: Width of the left strip holding HyperKvasir's burned-in on-screen text (patient
#: data, timings, a row of dots), as a fraction of the side: bright text pixels end at
#: 0.14 of the side.
TEXT_MARGIN_FRACTION = 0.15


def mask_shortcut(
    images: torch.Tensor, corner: float = CORNER_FRACTION, text_margin: float = 0.0
) -> torch.Tensor:
    """Black out the lower-left corner (and optionally the left text margin) of images.

    HyperKvasir's images carry a black box in the lower-left corner whose presence
    depends on the class; blacking the same region out in every image makes it
    constant, so no model can use it.

    Parameters
    ----------
    images : Tensor
        ``…×3×H×W`` images (any dtype); not modified.
    corner : float
        Side of the blacked-out lower-left rectangle as a fraction of the height and
        width (:data:`CORNER_FRACTION` covers HyperKvasir's box).
    text_margin : float
        Width of a full-height left strip to black out as well, as a fraction of the
        width (:data:`TEXT_MARGIN_FRACTION` covers HyperKvasir's on-screen text); 0 = none.

    Returns
    -------
    Tensor
        A masked copy.
    """
    height, width = images.shape[-2:]
    masked = images.clone()
    if corner > 0:
        masked[..., height - math.ceil(corner * height) :, : math.ceil(corner * width)] = 0
    if text_margin > 0:
        masked[..., :, : math.ceil(text_margin * width)] = 0
    return masked


def mask_region(images: torch.Tensor, region: torch.Tensor) -> torch.Tensor:
    """A copy of ``…×3×H×W`` images with the pixels of the ``H×W`` boolean ``region`` blacked out.

    ``mask_region(images, corner_region(H))`` equals ``mask_shortcut(images)`` for square
    images; any other region (a control corner, a strip) is masked the same way.
    """
    region = torch.as_tensor(region, dtype=torch.bool, device=images.device)
    if region.shape != images.shape[-2:]:
        raise ValueError(f"region of shape {tuple(region.shape)} does not match images of {tuple(images.shape[-2:])} pixels")
    masked = images.clone()
    masked[..., region] = 0
    return masked


def corner_region(size: int, corner: float = CORNER_FRACTION) -> torch.Tensor:
    """The ``size×size`` boolean mask of the lower-left square :func:`mask_shortcut` blacks out."""
    region = torch.zeros(size, size, dtype=torch.bool)
    side = math.ceil(corner * size)
    region[size - side :, :side] = True
    return region


def corner_box_present(images: torch.Tensor, darkness: int = 20) -> torch.Tensor:
    """Whether each uint8 image carries HyperKvasir's black lower-left box.

    The box spans columns 0–0.31 and rows 0.68–1.0 of the side; an image has it when the
    brightest channel, averaged over the box's interior (rows 0.74–0.96, columns
    0.03–0.27), stays below ``darkness`` (of 255). On ``hyperkvasir-lowergi`` this finds
    the box in 54 % of the polyp images and in 90–100 % of every other class, at 64 and
    160 px: used as an OOD score on its own, the box already separates polyps from the
    routine classes.

    Returns
    -------
    Tensor
        bool, one value per image (``N``).
    """
    if images.dtype != torch.uint8 or images.ndim != 4:
        raise ValueError(f"expected uint8 N×3×H×W images, got {images.dtype} {tuple(images.shape)}")
    height, width = images.shape[-2:]
    interior = images[..., int(0.74 * height) : int(0.96 * height), int(0.03 * width) : int(0.27 * width)]
    return interior.amax(dim=-3).float().mean(dim=(-2, -1)) < darkness


def _masked(splits: Splits, mask_corner: bool, mask_text: bool) -> Splits:
    """Apply :func:`mask_shortcut` identically to the three sets (unchanged when both are off)."""
    if not (mask_corner or mask_text):
        return splits
    options = {
        "corner": CORNER_FRACTION if mask_corner else 0.0,
        "text_margin": TEXT_MARGIN_FRACTION if mask_text else 0.0,
    }
    sets = {
        key: dataclasses.replace(getattr(splits, key), images=mask_shortcut(getattr(splits, key).images, **options))
        for key in ("train", "test", "ood")
    }
    return dataclasses.replace(splits, **sets)
