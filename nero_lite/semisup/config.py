"""The hyperparameters of the semi-supervised experiments: :class:`SemisupConfig`, read by the
detectors (:mod:`~nero_lite.semisup.detectors`) and their training loops
(:mod:`~nero_lite.semisup.training`)."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["SemisupConfig"]


@dataclass(frozen=True)
class SemisupConfig:
    """Hyperparameters of the semi-supervised experiments (part of every cache key).

    The defaults are sized for a 2-core CPU; :meth:`full` is the paper's setting for a GPU.
    The CPU default keeps GEOM's 9 shifts and drops its rotations and flips: endoscopic
    views have no "up", so on the book's data f cannot tell rotations or flips apart
    (measured: 72-way transform accuracy stalls at 1/8, the shifts found through the
    position of the circular field of view, the rest at chance), and the 9 shifts are
    the part of GEOM's set f learns, at 1/8 of its cost.

    Measured with the defaults on the synthetic set (64 px resized to 24; 100 normal
    images, 16 outliers, 210 test images), one thread of a shared 2-core CPU: GEOM fit
    2 s, g on z1…z4 fit 1 s and score 0.7 s, BCE fit 0.6 s, GEOM+ fit 4 s.

    Attributes
    ----------
    transforms : {"full", "shift", "rot_flip", "rot"}
        GEOM's transform set (72) or a subset: 9 shifts, 8 rotations × flips, 4 rotations.
    shift : float
        Translation unit as a fraction of the image side (GEOM: 0.25).
    image_size : int or None
        Images are resized (antialiased bilinear) to this side first; None keeps them.
    width, blocks, dropout : int, int, float
        f = WRN-(6·blocks+4)-(width/16) (:class:`~nero_lite.semisup.networks.WideResNet`).
    geom_epochs, geom_lr : int, float
        f's training: epochs over every (image, transform) pair, Adam learning rate.
    batch_size : int
        f's batch size; with outlier exposure, each batch adds as many outliers.
    oe_weight : float
        λ of GEOM+'s loss ``CE(f(T_k x), k) + λ · CE(f(T_k o), uniform)`` (Hendrycks et al.: 0.5).
    g_filters, g_hidden : int
        g's convolution channels and hidden width (paper: 64 and 1024).
    g_epochs, g_lr, g_batch_size : int, float, int
        g's training: epochs over the ID images, Adam learning rate (divided by 10
        after 80 % of the steps, as in the paper), ID images per batch (each batch
        adds as many outliers, drawn with replacement).
    n_train, n_test : int or None
        The protocol's cap on normal training images, and on test images per class
        (:func:`~nero_lite.semisup.outliers.one_class_splits`); None uses all.
    """

    transforms: str = "shift"
    shift: float = 0.25
    image_size: int | None = 24
    width: int = 8
    blocks: int = 1
    dropout: float = 0.0
    geom_epochs: int = 4
    geom_lr: float = 1e-3
    batch_size: int = 64
    oe_weight: float = 0.5
    g_filters: int = 16
    g_hidden: int = 64
    g_epochs: int = 8
    g_lr: float = 1e-3
    g_batch_size: int = 32
    n_train: int | None = 100
    n_test: int | None = 30

    @classmethod
    def full(cls) -> SemisupConfig:
        """The paper's setting, for a GPU: K = 72, WRN-16-4 with dropout 0.3, g with 64
        filters and 1024 hidden units, GEOM's ⌈200/K⌉ = 3 epochs over the 72-fold set,
        all images at their native size."""
        return cls(
            transforms="full", image_size=None, width=64, blocks=2, dropout=0.3, geom_epochs=3, batch_size=128,
            g_filters=64, g_hidden=1024, g_epochs=30, g_batch_size=64, n_train=None, n_test=None,
        )  # fmt: skip
