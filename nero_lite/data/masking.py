"""Shortcut masking: HyperKvasir's class-correlated black box and on-screen text, found and blacked out."""

from __future__ import annotations

import dataclasses
import math

import torch

from ..constants import CORNER_FRACTION, TEXT_MARGIN_FRACTION
from .images import ImageSet, Splits, image_tensor

__all__ = ["CORNER_FRACTION", "TEXT_MARGIN_FRACTION", "corner_box_present", "corner_region", "mask_region", "Preprocessing", "mask_shortcut", "shortcut_regions"]



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


def shortcut_regions(size: int) -> dict[str, torch.Tensor]:
    """The regions where HyperKvasir's shortcuts sit, each beside a control of the same shape: ``size×size`` boolean masks.

    ``"lower-left corner (box)"`` (:func:`corner_region`), ``"upper-right corner (control)"``
    (the same square, mirrored), ``"left strip (text)"`` (the left :data:`TEXT_MARGIN_FRACTION`
    of the columns, rounded up) and ``"right strip (control)"`` (mirrored). A map's share in a
    region means something only beside its share in the control (:func:`nero_lite.sanity.region_share`).
    """
    strip = torch.zeros(size, size, dtype=torch.bool)
    strip[:, : math.ceil(TEXT_MARGIN_FRACTION * size)] = True
    corner = corner_region(size)
    return {"lower-left corner (box)": corner, "upper-right corner (control)": corner.flip(0).flip(1),
            "left strip (text)": strip, "right strip (control)": strip.flip(1)}


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


@dataclasses.dataclass(frozen=True)
class Preprocessing:
    """What is done to every image before the classifier sees it, as one record.

    ``size``: the side the images are read at (``None``: as they come); ``mask_corner`` and
    ``mask_text``: the lower-left square and the left strip blacked out
    (:func:`mask_shortcut` with :data:`CORNER_FRACTION` and :data:`TEXT_MARGIN_FRACTION`).
    A bundle keeps one (``Bundle.preprocessing``); the loaders mask the three sets with
    :meth:`apply_splits`. Masking twice changes nothing.
    """

    size: int | None = None
    mask_corner: bool = False
    mask_text: bool = False

    def apply(self, images: ImageSet | torch.Tensor) -> torch.Tensor:
        """The uint8 images masked as asked; with a ``size``, images of another size are refused (``ValueError``)."""
        pixels = image_tensor(images)
        if self.size is not None and tuple(pixels.shape[-2:]) != (self.size, self.size):
            raise ValueError(f"expected {self.size}×{self.size} images, got {tuple(pixels.shape[-2:])}")
        if not (self.mask_corner or self.mask_text):
            return pixels
        return mask_shortcut(pixels, corner=CORNER_FRACTION if self.mask_corner else 0.0,
                             text_margin=TEXT_MARGIN_FRACTION if self.mask_text else 0.0)

    def apply_splits(self, splits: Splits) -> Splits:
        """The three sets of ``splits`` masked alike (``splits`` itself when nothing is masked)."""
        if not (self.mask_corner or self.mask_text):
            return splits
        sets = {key: dataclasses.replace(getattr(splits, key), images=self.apply(getattr(splits, key).images))
                for key in ("train", "test", "ood")}
        return dataclasses.replace(splits, **sets)
