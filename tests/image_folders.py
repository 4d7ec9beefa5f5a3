"""Tiny ImageFolder trees for the command-line tests: colour classes a small CNN can tell apart."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image


def draw(folder: Path, count: int, colour: tuple[int, int, int], seed: int) -> None:
    """``count`` 24×24 PNGs in ``folder``: a class colour plus noise."""
    folder.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    for i in range(count):
        pixels = np.clip(np.array(colour) + rng.normal(0, 25, (24, 24, 3)), 0, 255).astype(np.uint8)
        Image.fromarray(pixels).save(folder / f"img{i:02d}.png")


def colour_tree(root: Path) -> Path:
    """train/ (12 per class) and id/ (4 per class) with three colour classes, ood/ with two kinds (5 each)."""
    colours = {"red": (200, 40, 40), "green": (40, 200, 40), "blue": (40, 40, 200)}
    for k, (name, colour) in enumerate(colours.items()):
        draw(root / "train" / name, 12, colour, seed=k)
        draw(root / "id" / name, 4, colour, seed=10 + k)
    draw(root / "ood" / "grey", 5, (128, 128, 128), seed=20)
    draw(root / "ood" / "yellow", 5, (200, 200, 40), seed=21)
    return root
