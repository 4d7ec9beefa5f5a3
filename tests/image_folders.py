"""Helpers of the command-line tests: tiny ImageFolder trees of colour classes a small CNN can tell
apart, and the one-line error check."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from nero_lite import cli


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


def one_line_error(argv: list[str], capsys) -> str:
    """Run ``python -m nero_lite ARGV``, expect exit status 2 and exactly one line on stderr; return it."""
    with pytest.raises(SystemExit) as stop:
        cli.main(argv)
    assert stop.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1, lines
    return lines[0]
