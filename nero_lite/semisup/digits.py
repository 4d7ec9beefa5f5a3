"""The paper's own setting: one-class handwritten digits, with letters as training outliers.

The 2021 paper ("Semi-supervised out-of-distribution detection using the output of
intermediate layers in deep neural networks", IPSJ Journal 62(4)) runs its one-class
protocol on MNIST, with EMNIST letters as the training outliers. Its central observation
is there: GEOM is weakest on the digits that look alike under rotation (0 and 8), and g
on the intermediate layers closes that gap. Neither data set ships with the package, so
this module builds the closest setting that needs no download:

* **Digits** — :func:`digits_splits`: scikit-learn's 1,797 real handwritten digits
  (:func:`sklearn.datasets.load_digits`, the test set of UCI's "optdigits", written by
  13 people: 32 × 32 binary bitmaps reduced to 8 × 8 by counting the ink pixels of every 4 × 4
  block, so each value is in 0 … 16), ten ID classes ``"0" … "9"``, no OOD classes:
  the protocol's test OOD set is the nine other digits, as in the paper.
* **Letters** — :func:`letter_outliers`: EMNIST's role is played by letters *rendered*
  from the DejaVu fonts that ship with matplotlib (Sans, Serif and Mono, each upright,
  bold, slanted and bold slanted), upper and lower case under one class per letter as in
  EMNIST letters, with a seeded random affine jitter and stroke width, rasterised as a
  32 × 32 binary bitmap and reduced to 8 × 8 by :func:`block_counts` — the reduction the
  digits went through. Rendered glyphs are cleaner and more alike than handwriting, so
  they are a narrower pool than EMNIST's 145,600 handwritten letters.

Both are stored as grey uint8 RGB images, ink bright on a black background (count
:math:`c` → :math:`\\operatorname{round}(255\\,c / 16)`), at their native 8 × 8: GEOM's
rotations and flips, f (a WRN whose groups run at 8, 4 and 2 pixels) and g all work at
that size (:data:`DIGITS_CONFIG`).

:data:`PAPER_TABLE3` and :data:`PAPER_LAYERS` hold the paper's MNIST numbers for the
comparison tables :func:`per_class_table` and :func:`layer_table` build.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from matplotlib.font_manager import FontProperties
from matplotlib.path import Path
from matplotlib.textpath import TextPath
from matplotlib.transforms import Affine2D
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

from ..data import ImageSet, Splits
from ..paired import PairedDifference
from .config import SemisupConfig
from .protocol import summarize

__all__ = [
    "DIGITS",
    "DIGITS_CONFIG",
    "FONTS",
    "LETTERS",
    "PAPER_LAYERS",
    "PAPER_TABLE3",
    "ROTATION_AMBIGUOUS",
    "block_counts",
    "class_gap",
    "counts_to_images",
    "digits_splits",
    "layer_table",
    "letter_outliers",
    "paper_class_gap",
    "per_class_table",
]

#: The ID classes of :func:`digits_splits`.
DIGITS = tuple("0123456789")
#: The classes of :func:`letter_outliers`: one per letter, upper and lower case together (as EMNIST letters).
LETTERS = tuple("abcdefghijklmnopqrstuvwxyz")
#: The matplotlib fonts letters are rendered in, as (family, style, weight).
FONTS = tuple(
    (family, style, weight)
    for family, slanted in (("DejaVu Sans", "oblique"), ("DejaVu Serif", "italic"), ("DejaVu Sans Mono", "oblique"))
    for style in ("normal", slanted)
    for weight in ("normal", "bold")
)
#: The digits the paper singles out; they look alike under a half turn, so GEOM's f cannot name the transform.
ROTATION_AMBIGUOUS = ("0", "8")

#: The paper's Table 3 on MNIST (AUROC %, 65,536 EMNIST-letter outliers), per normal class
#: where our transcription has it, and the mean over the ten classes. Source: IPSJ Journal
#: 62(4), 2021, Table 3, as transcribed in the project's paper digest, which gives the
#: per-class entries of GEOM and the proposed method on the two classes where GEOM is
#: weakest (0 and 8) and the means of every method; the other cells are NaN (not transcribed).
PAPER_TABLE3 = pd.DataFrame(
    {
        "geom": {"0": 81.5, "8": 82.0, "mean": 92.6},
        "geom+": {"mean": 93.3},
        "bce": {"mean": 89.1},
        "proposed": {"0": 99.2, "8": 97.6, "mean": 98.0},
    },
    index=[*DIGITS, "mean"],
)
#: The paper's per-layer table (Table 2) on MNIST, AUROC % averaged over the ten normal
#: classes, of GEOM and of g trained on one feature of f (its softmax, or one of z1 … z4)
#: or on all of z1 … z4 (``proposed``). Source: IPSJ Journal 62(4), 2021, Table 2.
PAPER_LAYERS = pd.Series(
    {"geom": 92.6, "softmax": 92.1, "z4": 94.5, "z3": 98.5, "z2": 97.8, "z1": 96.4, "proposed": 98.0}, name="paper"
)

#: The chapter's configuration for the digits, GEOM's 8 rotations × flips (a digit has an
#: "up"; on 8 × 8 images a shift would move it by 2 pixels), the native 8 × 8 size, f
#: trained for 10 epochs over the 8-fold set (GEOM's ⌈200/K⌉ would be 25), every training
#: and test image of a class; networks as in the CPU default of
#: :class:`~nero_lite.semisup.config.SemisupConfig`. Measured on a shared 2-core CPU, one
#: thread, nothing cached: the protocol over the 10 digits × 3 seeds with GEOM, GEOM+, BCE,
#: the proposed g and its 5 one-feature ablations takes about 3 minutes.
DIGITS_CONFIG = SemisupConfig(transforms="rot_flip", image_size=None, geom_epochs=10, n_train=None, n_test=None)

_BITMAP, _BLOCK = 32, 4  # the UCI bitmaps and their blocks


def block_counts(bitmaps: torch.Tensor, block: int = _BLOCK) -> torch.Tensor:
    """The UCI reduction: ink pixels of every ``block × block`` tile of binary bitmaps.

    .. math:: c_{ij} = \\sum_{u, v < b} B_{b i + u,\\; b j + v} \\in \\{0, \\dots, b^2\\}

    ``bitmaps`` is N×H×W (bool or 0/1) with H and W multiples of ``block``; the result is
    the int64 N×(H/b)×(W/b) count (32 × 32 with b = 4 gives the 8 × 8 digits, 0 … 16).
    """
    if bitmaps.ndim != 3 or bitmaps.shape[-1] % block or bitmaps.shape[-2] % block:
        raise ValueError(f"bitmaps must be N×H×W with sides divisible by {block}, got {tuple(bitmaps.shape)}")
    n, h, w = bitmaps.shape
    return bitmaps.long().reshape(n, h // block, block, w // block, block).sum((2, 4))


def counts_to_images(counts: torch.Tensor | np.ndarray, top: int = _BLOCK**2) -> torch.Tensor:
    """Counts in 0 … ``top`` (N×H×W) → grey uint8 RGB images N×3×H×W, :math:`\\operatorname{round}(255\\,c / \\text{top})`."""
    counts = torch.as_tensor(counts, dtype=torch.float64)
    if counts.ndim != 3 or counts.min() < 0 or counts.max() > top:
        raise ValueError(f"counts must be N×H×W in [0, {top}]")
    grey = (counts * 255 / top).round().to(torch.uint8)
    return grey.unsqueeze(1).expand(-1, 3, -1, -1).contiguous()


def digits_splits(train_fraction: float = 2 / 3, seed: int = 0) -> Splits:
    """scikit-learn's 1,797 handwritten digits as a :class:`~nero_lite.data.Splits` for the one-class protocol.

    Ten ID classes ``"0" … "9"`` split into train and test per class (stratified,
    ``train_fraction`` of each class to train, seeded; the writers are not known, so the
    same hands appear in both), 8 × 8 grey images (see :func:`counts_to_images`); ``ood`` is empty, so in
    :func:`~nero_lite.semisup.protocol.run_protocol` the test OOD set of a normal digit
    is the nine other digits' test images.
    """
    digits = load_digits()
    images, labels = counts_to_images(digits.images), torch.as_tensor(digits.target, dtype=torch.long)
    train, test = train_test_split(
        np.arange(len(labels)), train_size=train_fraction, stratify=digits.target, random_state=seed
    )
    train, test = torch.as_tensor(np.sort(train)), torch.as_tensor(np.sort(test))
    classes = list(DIGITS)
    empty = ImageSet(images=images[:0], labels=labels[:0], classes=[])
    return Splits(
        name="digits",
        train=ImageSet(images[train], labels[train], classes),
        test=ImageSet(images[test], labels[test], classes),
        ood=empty,
        ood_kind={},
    )


def _rasterise(path: Path, transform: Affine2D) -> np.ndarray:
    """The 32 × 32 binary bitmap of a glyph outline under ``transform`` (even–odd fill, pixel centres)."""
    centres = np.stack(np.meshgrid(np.arange(_BITMAP) + 0.5, np.arange(_BITMAP) + 0.5), -1).reshape(-1, 2)
    ink = np.zeros(len(centres), dtype=bool)
    for polygon in path.to_polygons(transform):
        ink ^= Path(polygon).contains_points(centres)
    return ink.reshape(_BITMAP, _BITMAP)


def letter_outliers(
    n_per_class: int = 40,
    seed: int = 0,
    letters: Sequence[str] = LETTERS,
    *,
    max_rotation: float = 15.0,
    max_shear: float = 15.0,
    stroke_steps: Sequence[int] = (0, 1),
) -> ImageSet:
    """Letters rendered from matplotlib's fonts, reduced like the digits: the stand-in for EMNIST letters.

    Every image draws from ``seed`` a font of :data:`FONTS`, upper or lower case, and an
    affine jitter: the glyph is scaled to fill the 32 × 32 box as the UCI digits do (height
    80–100 % of the side, width at most 70 %), sheared by up to ``max_shear`` degrees,
    rotated by up to ``max_rotation`` degrees and moved by up to 2 pixels. Its bitmap is
    then thickened by a number of 3 × 3 dilations drawn from ``stroke_steps`` (each widens
    a stroke by 2 pixels) and reduced to 8 × 8 by :func:`block_counts`.

    Returns an :class:`~nero_lite.data.ImageSet` with one class per letter and
    ``n_per_class`` images of each, in the format of :func:`digits_splits`.
    """
    if n_per_class < 1:
        raise ValueError(f"n_per_class must be positive, got {n_per_class}")
    if not letters or any(len(c) != 1 or not c.isalpha() for c in letters):
        raise ValueError(f"letters must be single letters, got {list(letters)}")
    rng = np.random.default_rng(seed)
    glyphs: dict[tuple[str, int], Path] = {}
    bitmaps, strokes = [], []
    for letter in letters:
        for _ in range(n_per_class):
            char = letter.upper() if rng.random() < 0.5 else letter.lower()
            font = int(rng.integers(len(FONTS)))
            if (char, font) not in glyphs:
                family, style, weight = FONTS[font]
                glyphs[char, font] = TextPath((0, 0), char, size=10, prop=FontProperties(family=family, style=style, weight=weight))
            path = glyphs[char, font]
            box = path.get_extents()
            height = rng.uniform(0.8, 1.0) * _BITMAP
            scale = min(height / box.height, 0.7 * _BITMAP / box.width)
            transform = (
                Affine2D()
                .translate(-(box.x0 + box.x1) / 2, -(box.y0 + box.y1) / 2)
                .scale(scale, -scale)  # image rows grow downwards
                .skew_deg(rng.uniform(-max_shear, max_shear), 0)
                .rotate_deg(rng.uniform(-max_rotation, max_rotation))
                .translate(*(_BITMAP / 2 + rng.uniform(-2, 2, size=2)))
            )
            bitmaps.append(_rasterise(path, transform))
            strokes.append(int(rng.choice(stroke_steps)))
    bitmaps = torch.as_tensor(np.stack(bitmaps), dtype=torch.float32).unsqueeze(1)
    steps = torch.as_tensor(strokes)
    for step in range(1, int(steps.max()) + 1):
        thicker = steps >= step
        bitmaps[thicker] = F.max_pool2d(bitmaps[thicker], 3, stride=1, padding=1)
    images = counts_to_images(block_counts(bitmaps[:, 0] > 0))
    labels = torch.arange(len(letters)).repeat_interleave(n_per_class)
    return ImageSet(images=images, labels=labels, classes=list(letters))


def per_class_table(
    results: pd.DataFrame, methods: Sequence[str] = ("geom", "geom+", "bce", "proposed"), metric: str = "auroc"
) -> pd.DataFrame:
    """Our per-class AUROC (%) beside :data:`PAPER_TABLE3`.

    Rows: the normal classes of ``results``, then ``"mean"`` (the paper's statistic:
    averaged over the classes within a seed, then over the seeds;
    :func:`~nero_lite.semisup.protocol.summarize`). Columns: ``(method, "mean")`` and
    ``(method, "std")`` over the seeds of ``results``, and ``(method, "paper")``.
    """
    classes = [*dict.fromkeys(results["normal_class"]), "mean"]
    paper = PAPER_TABLE3.reindex(index=classes, columns=list(methods))
    columns = {}
    for method in methods:
        rows = results[results["method"] == method]
        if rows.empty:
            raise ValueError(f"no results for method {method!r}")
        ours = pd.concat([summarize(rows, by=["normal_class"], metric=metric), summarize(rows, metric=metric).set_axis(["mean"])])
        columns[method, "mean"], columns[method, "std"] = 100 * ours["mean"], 100 * ours["std"]
        columns[method, "paper"] = paper[method]
    return pd.DataFrame(columns).reindex(classes)


def layer_table(
    results: pd.DataFrame, methods: Sequence[str] = ("geom", "z1", "z2", "z3", "z4", "proposed"), metric: str = "auroc"
) -> pd.DataFrame:
    """Our class-averaged AUROC (%) per method (mean and std over seeds) beside :data:`PAPER_LAYERS`."""
    methods = list(methods)
    missing = set(methods) - set(results["method"])
    if missing:
        raise ValueError(f"no results for method(s) {sorted(missing)}")
    table = 100 * summarize(results[results["method"].isin(methods)], metric=metric)[["mean", "std"]].reindex(methods)
    table["paper"] = PAPER_LAYERS.reindex(methods)
    return table


def class_gap(
    results: pd.DataFrame, method: str, classes: Sequence[str] = ROTATION_AMBIGUOUS, metric: str = "auroc"
) -> PairedDifference:
    """How much worse ``method`` does on ``classes`` than on average, seed by seed.

    In each seed :math:`s`, :math:`d_s = \\overline{\\mathrm{AUROC}}_{\\text{all classes}} -
    \\overline{\\mathrm{AUROC}}_{\\text{classes}}` (means over the normal classes); a positive
    gap means the classes are harder than average. Returned as a
    :class:`~nero_lite.paired.PairedDifference` (mean ± std over seeds).
    """
    rows = results[results["method"] == method]
    missing = set(classes) - set(rows["normal_class"])
    if rows.empty or missing:
        raise ValueError(f"no results for method {method!r} on normal class(es) {sorted(missing) or list(classes)}")
    overall = rows.groupby("seed")[metric].mean()
    chosen = rows[rows["normal_class"].isin(classes)].groupby("seed")[metric].mean()
    return PairedDifference(f"{method} on all classes", f"{method} on {', '.join(classes)}", overall - chosen)


def paper_class_gap(method: str, classes: Sequence[str] = ROTATION_AMBIGUOUS) -> float:
    """The gap of :func:`class_gap` in the paper's Table 3 (AUROC %): its mean over the ten
    classes minus its mean over ``classes``; NaN where :data:`PAPER_TABLE3` lacks a value."""
    if method not in PAPER_TABLE3:
        return float("nan")
    column = PAPER_TABLE3[method]
    return float(column["mean"] - column[list(classes)].mean(skipna=False))
