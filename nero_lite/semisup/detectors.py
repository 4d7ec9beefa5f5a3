"""GEOM, GEOM+, the intermediate-layer detector and the BCE baseline, as ``fit``/``score`` detectors.

All scores follow the package convention: **higher = more in-distribution**.

* :class:`GeomDetector` — GEOM (Golan & El-Yaniv, "Deep Anomaly Detection Using
  Geometric Transformations", NeurIPS 2018): f learns which transform ``T_k`` was
  applied to an ID image; the score is :math:`\\sum_k \\operatorname{softmax}(f(T_k x))_k`.
  With ``outlier_exposure=True`` it is GEOM+ (Hendrycks, Mazeika & Dietterich, "Deep
  Anomaly Detection with Outlier Exposure", ICLR 2019): f is also pushed towards the
  uniform distribution on training outliers.
* :class:`IntermediateLayerDetector` — the 2021 IPSJ paper ("Semi-supervised
  out-of-distribution detection using the output of intermediate layers in deep
  neural networks"): f frozen, a head g on its intermediate features ``z1 … z4`` is
  trained with binary cross-entropy against a few training outliers; the score is
  :math:`-\\sum_k \\sigma(g(z(T_k x)))`.
* :class:`BceDetector` — the same head g on the raw images (no frozen features).

Trained weights are cached under ``nero_lite.cache.cache_dir() / "semisup"`` as
safetensors, keyed by the data, the outliers, the hyperparameters and the seed.
"""

from __future__ import annotations

from collections.abc import Callable
from abc import ABC, abstractmethod

import torch
import torch.nn.functional as F
from torch import nn

from ..cache import TRAINED_VERSION, fingerprint, key_digest, keyed_path, train_or_load
from ..data import ImageSet, to_input
from ..detectors.base import NotFittedError, signature_repr
from ..devices import resolve_device
from .config import SemisupConfig
from .networks import GNet, WideResNet, tap_features
from .training import train_outlier_head, train_transform_classifier
from .transforms import GeometricTransforms, geometric_transforms

__all__ = [
    "PROPOSED_LAYERS",
    "BceDetector",
    "GeomDetector",
    "IntermediateLayerDetector",
]

PROPOSED_LAYERS = ("z1", "z2", "z3", "z4")


_F_FIELDS = ("transforms", "shift", "image_size", "width", "blocks", "dropout", "geom_epochs", "geom_lr", "batch_size")
_G_FIELDS = ("transforms", "shift", "image_size", "g_filters", "g_hidden", "g_epochs", "g_lr", "g_batch_size")


def _images(data: ImageSet | torch.Tensor, name: str) -> torch.Tensor:
    images = data.images if isinstance(data, ImageSet) else data
    if not isinstance(images, torch.Tensor) or images.dtype != torch.uint8 or images.ndim != 4:
        raise TypeError(f"{name} must be an ImageSet or a uint8 N×3×H×W tensor")
    if len(images) == 0:
        raise ValueError(f"{name} is empty: need at least one image")
    return images


def _prepare(images: torch.Tensor, size: int | None, device: torch.device) -> torch.Tensor:
    """uint8 images → normalised float input, resized to ``size``."""
    x = to_input(images, device)
    if size is not None and x.shape[-1] != size:
        x = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    return x


def _per_transform(
    images: torch.Tensor,
    transforms: GeometricTransforms,
    size: int | None,
    device: torch.device,
    value: Callable[[torch.Tensor, int], torch.Tensor],
    batch_size: int = 256,
) -> torch.Tensor:
    """N×K matrix of ``value(T_k x, k)`` (one number per image), computed batch by batch."""
    rows = []
    with torch.no_grad():
        for start in range(0, len(images), batch_size):
            x = _prepare(images[start : start + batch_size], size, device)
            rows.append(torch.stack([value(transforms.apply(x, k), k) for k in range(len(transforms))], 1).float().cpu())
    return torch.cat(rows)


def _train_or_load(name: str, key: dict, network: nn.Module, train: Callable[[], list[dict]], cache: bool):
    """``(history, seconds, from_cache)`` of ``network`` trained for ``key`` or loaded (:func:`nero_lite.cache.train_or_load`)."""
    trained = train_or_load(keyed_path("semisup", name, key), key, lambda for_loading: network, lambda _: train(), cache)
    return trained.history, trained.seconds, trained.from_cache


class GeomDetector:
    """GEOM: a transform classifier f trained on ID images; GEOM+ with ``outlier_exposure=True``.

    f (a :class:`~nero_lite.semisup.networks.WideResNet`) is trained with Adam on every
    pair (x, k) of an ID image and a transform to minimise :math:`\\mathrm{CE}(f(T_k x), k)`.
    GEOM+ adds, on a batch of training outliers ``o`` with random transforms, the
    outlier-exposure term :math:`\\lambda\\,\\mathrm{CE}(f(T_k o), \\mathcal U_K)`, the
    cross-entropy to the uniform distribution over the K transforms. The score is

    .. math:: s(x) = \\sum_{k=1}^{K} \\operatorname{softmax}(f(T_k x))_k \\in [0, K],

    the simplified normality score of Golan & El-Yaniv (NeurIPS 2018); higher = more ID.

    Parameters
    ----------
    config : SemisupConfig, optional
    outlier_exposure : bool
        GEOM+: ``fit`` then needs training outliers.
    seed : int
        Seeds f's initialisation, dropout and batch order.
    device : "auto", "cpu", "cuda", ...
    cache : bool
        Reuse f's weights trained before with the same data, outliers, config and seed.
    progress : bool
        Show a progress bar over epochs.

    Attributes (after ``fit``)
    ----------
    network_ : WideResNet
        f, in eval mode.
    transforms_ : GeometricTransforms
    history_ : list of dict
        Mean loss and transform accuracy of every epoch.
    fit_seconds_ : float
        Training time (of the original run when loaded from the cache).
    from_cache_ : bool
    key_ : str
        Digest identifying f (data, outliers, config, seed).
    """

    def __init__(
        self,
        config: SemisupConfig | None = None,
        *,
        outlier_exposure: bool = False,
        seed: int = 0,
        device: str | torch.device = "auto",
        cache: bool = True,
        progress: bool = True,
    ):
        self.config = config
        self.outlier_exposure = outlier_exposure
        self.seed = seed
        self.device = device
        self.cache = cache
        self.progress = progress

    __repr__ = signature_repr

    @property
    def effective_config(self) -> SemisupConfig:
        """``config``, or the defaults when it was not given."""
        return self.config or SemisupConfig()

    def fit(self, train: ImageSet | torch.Tensor, outliers: ImageSet | torch.Tensor | None = None) -> GeomDetector:
        """Train f on ``train`` (ID images; labels are not used) and, for GEOM+, ``outliers``."""
        images = _images(train, "train")
        if self.outlier_exposure:
            if outliers is None:
                raise ValueError("GEOM+ (outlier_exposure=True) needs training outliers: fit(train, outliers)")
            outlier_images = _images(outliers, "outliers")
        elif outliers is not None:
            raise ValueError("plain GEOM does not use outliers; set outlier_exposure=True for GEOM+")
        cfg, device = self.effective_config, resolve_device(self.device)
        self.transforms_ = transforms = geometric_transforms(cfg.transforms, cfg.shift)
        key = {
            "version": TRAINED_VERSION,
            "data": fingerprint(images),
            "config": {name: getattr(cfg, name) for name in _F_FIELDS},
            "seed": self.seed,
        }
        if self.outlier_exposure:
            key["outliers"] = fingerprint(outlier_images)
            key["oe_weight"] = cfg.oe_weight
        torch.manual_seed(self.seed)
        f = WideResNet(len(transforms), cfg.width, cfg.blocks, cfg.dropout).to(device)

        def train_f() -> list[dict]:
            x_id = _prepare(images, cfg.image_size, device)
            x_out = _prepare(outlier_images, cfg.image_size, device) if self.outlier_exposure else None
            desc = "GEOM+ f" if self.outlier_exposure else "GEOM f"
            return train_transform_classifier(f, transforms, x_id, x_out, cfg, seed=self.seed, desc=desc, progress=self.progress)

        name = "geom+" if self.outlier_exposure else "geom"
        self.history_, self.fit_seconds_, self.from_cache_ = _train_or_load(name, key, f, train_f, self.cache)
        self.network_ = f.eval()
        self.key_ = key_digest(key)
        return self

    def check_fitted(self) -> None:
        if not hasattr(self, "network_"):
            raise NotFittedError(f"{type(self).__name__} is not fitted: call fit(train) first")

    def softmax_matrix(self, images: ImageSet | torch.Tensor) -> torch.Tensor:
        """N×K matrix :math:`\\operatorname{softmax}(f(T_k x))_k`: f's confidence in the right transform."""
        self.check_fitted()
        images, device = _images(images, "images"), next(self.network_.parameters()).device
        return _per_transform(
            images, self.transforms_, self.effective_config.image_size, device, lambda x, k: self.network_(x).softmax(1)[:, k]
        )

    def score(self, images: ImageSet | torch.Tensor) -> torch.Tensor:
        """GEOM's normality :math:`\\sum_k \\operatorname{softmax}(f(T_k x))_k` (N, CPU); higher = more ID."""
        return self.softmax_matrix(images).sum(1)

    def transform_accuracy(self, images: ImageSet | torch.Tensor) -> float:
        """Fraction of (image, transform) pairs whose transform f predicts correctly (chance: 1/K)."""
        self.check_fitted()
        images, device = _images(images, "images"), next(self.network_.parameters()).device
        hits = _per_transform(
            images, self.transforms_, self.effective_config.image_size, device, lambda x, k: self.network_(x).argmax(1) == k
        )
        return float(hits.mean())


class _OutlierHead(ABC):
    """g trained with BCE (ID = 0, outlier = 1) on randomly transformed images; subclasses say what g reads."""

    kind: str
    config: SemisupConfig | None
    __repr__ = signature_repr

    @property
    def effective_config(self) -> SemisupConfig:
        """``config``, or the defaults when it was not given."""
        return self.config or SemisupConfig()

    @abstractmethod
    def _setup(self, device: torch.device) -> tuple[GeometricTransforms, dict]:
        """Check the inputs; return the transform set and the cache-key part that identifies the features."""

    @abstractmethod
    def _dims(self) -> dict[str, int]:
        """Channels or length of every feature g reads."""

    @abstractmethod
    def _features(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """The features g reads, for a batch of transformed model inputs."""

    def fit(self, train: ImageSet | torch.Tensor, outliers: ImageSet | torch.Tensor | None) -> _OutlierHead:
        """Train g to tell ``train`` (ID) from ``outliers``, both under random transforms.

        Every step takes ``g_batch_size`` ID images and as many outliers drawn with
        replacement (the few outliers are oversampled so batches stay balanced), a
        random transform per image, and minimises
        :math:`\\mathrm{BCE}(\\sigma(g), y)` with y = 0 for ID and 1 for outliers.
        Adam, lr ``g_lr`` divided by 10 after 80 % of the steps.
        """
        if outliers is None:
            raise ValueError(f"{type(self).__name__} is semi-supervised: fit(train, outliers) needs training outliers")
        images, outlier_images = _images(train, "train"), _images(outliers, "outliers")
        cfg, device = self.effective_config, resolve_device(self.device)
        self.transforms_, feature_key = self._setup(device)
        key = {
            "version": TRAINED_VERSION,
            "features": feature_key,
            "data": fingerprint(images),
            "outliers": fingerprint(outlier_images),
            "config": {name: getattr(self.effective_config, name) for name in _G_FIELDS},
            "seed": self.seed,
        }
        size = cfg.image_size or images.shape[-1]
        torch.manual_seed(self.seed)
        g = GNet(self._dims(), size, cfg.g_filters, cfg.g_hidden).to(device)

        def train_g() -> list[dict]:
            x_id, x_out = _prepare(images, cfg.image_size, device), _prepare(outlier_images, cfg.image_size, device)
            return train_outlier_head(
                g, self._features, self.transforms_, x_id, x_out, cfg, seed=self.seed, desc=f"{self.kind} g",
                progress=self.progress,
            )  # fmt: skip

        self.history_, self.fit_seconds_, self.from_cache_ = _train_or_load(self.kind, key, g, train_g, self.cache)
        self.network_ = g.eval()
        return self

    def outlier_probabilities(self, images: ImageSet | torch.Tensor) -> torch.Tensor:
        """N×K matrix :math:`\\sigma(g(T_k x))`: g's probability that ``T_k x`` is an outlier."""
        if not hasattr(self, "network_"):
            raise NotFittedError(f"{type(self).__name__} is not fitted: call fit(train, outliers) first")
        images = _images(images, "images")
        device = next(self.network_.parameters()).device
        return _per_transform(
            images, self.transforms_, self.effective_config.image_size, device,
            lambda x, k: torch.sigmoid(self.network_(self._features(x))),
        )  # fmt: skip

    def score(self, images: ImageSet | torch.Tensor) -> torch.Tensor:
        """:math:`-\\sum_k \\sigma(g(T_k x))` (N, CPU); higher = more ID."""
        return -self.outlier_probabilities(images).sum(1)


class IntermediateLayerDetector(_OutlierHead):
    """The 2021 paper's detector: g on the intermediate features of a frozen GEOM network f.

    .. math:: s(x) = -\\sum_{k=1}^{K} \\sigma\\big(g(z_1, z_2, z_3, z_4 \\text{ of } f(T_k x))\\big)

    The paper sums g's outlier probability over the transforms (an OOD-ness); the sign
    is flipped here so that higher = more ID.

    Parameters
    ----------
    geom : GeomDetector
        A fitted GEOM (not GEOM+) detector; its f is frozen and its transforms reused.
    layers : tuple of str
        The features g reads: any of ``"z1", "z2", "z3", "z4", "softmax"``. The
        paper's method is ``("z1", "z2", "z3", "z4")``; ``("z3",)`` etc. are its
        per-layer ablations and ``("softmax",)`` the last-layer-only one.
    config : SemisupConfig, optional
        g's hyperparameters; ``geom.config`` when omitted (the image size and the
        transforms always come from ``geom``).
    seed, device, cache, progress
        As in :class:`GeomDetector`; ``seed`` seeds g and the outlier batches.
    """

    kind = "intermediate"

    def __init__(
        self,
        geom: GeomDetector,
        layers: tuple[str, ...] = PROPOSED_LAYERS,
        config: SemisupConfig | None = None,
        *,
        seed: int = 0,
        device: str | torch.device = "auto",
        cache: bool = True,
        progress: bool = True,
    ):
        self.geom = geom
        self.layers = layers
        self.config = config
        self.seed = seed
        self.device = device
        self.cache = cache
        self.progress = progress

    @property
    def effective_config(self) -> SemisupConfig:
        """``config``, or GEOM's when it was not given."""
        return self.config or self.geom.effective_config

    def _setup(self, device: torch.device) -> tuple[GeometricTransforms, dict]:
        self.geom.check_fitted()
        layers = tuple(self.layers)
        unknown = set(layers) - {*PROPOSED_LAYERS, "softmax"}
        if unknown or not layers:
            raise ValueError(f"layers must be a non-empty subset of {(*PROPOSED_LAYERS, 'softmax')}, got {layers}")
        geom_cfg = self.geom.effective_config
        if (self.effective_config.transforms, self.effective_config.shift, self.effective_config.image_size) != (
            geom_cfg.transforms, geom_cfg.shift, geom_cfg.image_size,
        ):  # fmt: skip
            raise ValueError("config must use GEOM's transforms, shift and image_size")
        self.geom.network_.to(device).eval()
        self.layers_ = layers
        return self.geom.transforms_, {"geom": self.geom.key_, "layers": list(layers)}

    def _dims(self) -> dict[str, int]:
        return {name: self.geom.network_.dims[name] for name in self.layers_}

    def _features(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        with torch.no_grad():
            return tap_features(self.geom.network_, x, self.layers_)


class BceDetector(_OutlierHead):
    """The BCE baseline: the network g of :class:`IntermediateLayerDetector` on raw images.

    Same training (BCE, balanced batches, random transforms) and score,
    :math:`s(x) = -\\sum_k \\sigma(g(T_k x))`, but g's first stage reads the image itself
    instead of the frozen features of f.

    Parameters
    ----------
    config : SemisupConfig, optional
    seed, device, cache, progress
        As in :class:`GeomDetector`.
    """

    kind = "bce"

    def __init__(
        self,
        config: SemisupConfig | None = None,
        *,
        seed: int = 0,
        device: str | torch.device = "auto",
        cache: bool = True,
        progress: bool = True,
    ):
        self.config = config
        self.seed = seed
        self.device = device
        self.cache = cache
        self.progress = progress

    def _setup(self, device: torch.device) -> tuple[GeometricTransforms, dict]:
        return geometric_transforms(self.effective_config.transforms, self.effective_config.shift), {"raw": 3}

    def _dims(self) -> dict[str, int]:
        return {"x": 3}

    def _features(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"x": x}
