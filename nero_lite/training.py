"""Training: the recipe, the one training loop of the package, and a classifier trained once and cached.

:class:`Recipe` holds the hyperparameters (the book's, or :meth:`Recipe.paper`, the NERO
paper's fine-tuning recipe: Chhetri et al., MICCAI 2025, ``model_training/train.py`` of the
official code); :func:`train_epochs` is the loop every trainer of the package runs (the
classifiers here, the networks of :mod:`nero_lite.semisup`); :func:`train_classifier`
trains a :func:`~nero_lite.models.create_model` classifier on the ID training images, seeded,
or loads the weights trained before for the same data, architecture, recipe and seed
(:func:`nero_lite.cache.train_or_load`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torchvision.transforms import v2

from .cache import TRAINED_VERSION, fingerprint, keyed_path, sha256, train_or_load
from .data import ImageSet, to_input
from .devices import resolve_device
from .models import PRETRAINED_TAGS, create_model
from .progress import bar as progress_bar

__all__ = ["Recipe", "augment", "train_classifier", "train_epochs", "warmup_fraction"]


@dataclass(frozen=True)
class Recipe:
    """Training hyperparameters; part of the cache key.

    The default (the book's, for small images trained from scratch): AdamW with a
    one-cycle cosine schedule (linear warm-up over the first 10 % of steps), light
    augmentation (random horizontal/vertical flips and transposes, i.e. 90° rotations,
    which leave an endoscopic view plausible). :meth:`paper` is the NERO paper's
    fine-tuning recipe.

    Attributes
    ----------
    optimizer : {"adamw", "adam"}
    schedule : {"onecycle", "constant"}
    augment : bool
        Random horizontal and vertical flips (each p = 0.5).
    transpose : bool
        With ``augment``, also transpose square images (p = 0.5).
    photometric : bool
        torchvision's ``ColorJitter(brightness=0.25, contrast=0.25, saturation=0.25)``,
        ``RandomInvert(0.3)`` and ``RandomEqualize(0.3)``, per image.
    """

    epochs: int = 8
    batch_size: int = 64
    lr: float = 2e-3
    weight_decay: float = 0.05
    augment: bool = True
    optimizer: str = "adamw"
    schedule: str = "onecycle"
    transpose: bool = True
    photometric: bool = False

    def __post_init__(self):
        if self.optimizer not in ("adamw", "adam"):
            raise ValueError(f"optimizer must be 'adamw' or 'adam', got {self.optimizer!r}")
        if self.schedule not in ("onecycle", "constant"):
            raise ValueError(f"schedule must be 'onecycle' or 'constant', got {self.schedule!r}")

    @classmethod
    def paper(cls) -> Recipe:
        """The NERO paper's recipe: Adam (lr 1e-4, no weight decay, constant), batch 32,
        20 epochs; random flips, ColorJitter 0.25, RandomInvert 0.3, RandomEqualize 0.3;
        ImageNet normalisation (:func:`~nero_lite.data.to_input`, used everywhere).

        From the official code's ``model_training/train.py`` (Chhetri et al., MICCAI
        2025), where it fine-tunes ImageNet weights at 224 px: combine it with
        ``pretrained=True`` (or ``weights=``) and ``size=224`` for the paper's setting.
        """
        return cls(epochs=20, batch_size=32, lr=1e-4, weight_decay=0.0, optimizer="adam", schedule="constant",
                   transpose=False, photometric=True)

    def key(self) -> dict:
        """The cache-key form: the first five fields always, later ones only when they differ
        from their default, so that weights cached before those fields existed stay valid."""
        values, defaults = asdict(self), Recipe()
        first = ("epochs", "batch_size", "lr", "weight_decay", "augment")
        return {f.name: values[f.name] for f in fields(self) if f.name in first or values[f.name] != getattr(defaults, f.name)}


_PHOTOMETRIC = v2.Compose([
    v2.ColorJitter(brightness=0.25, contrast=0.25, saturation=0.25),
    v2.RandomInvert(0.3),
    v2.RandomEqualize(0.3),
])


def augment(x: torch.Tensor, generator: torch.Generator, recipe: Recipe) -> torch.Tensor:
    """The recipe's augmentation of a uint8 batch. Flips and transposes draw from ``generator``;
    the photometric transforms from torch's global generator, seeded by :func:`train_classifier`."""
    n = len(x)
    flip_h = torch.rand(n, generator=generator) < 0.5
    flip_v = torch.rand(n, generator=generator) < 0.5
    x = torch.where(flip_h[:, None, None, None], x.flip(3), x)
    x = torch.where(flip_v[:, None, None, None], x.flip(2), x)
    transpose = torch.rand(n, generator=generator) < 0.5
    if recipe.transpose and x.shape[2] == x.shape[3]:
        x = torch.where(transpose[:, None, None, None], x.transpose(2, 3), x)
    if recipe.photometric:
        x = torch.stack([_PHOTOMETRIC(image) for image in x])
    return x


def train_epochs(
    module: nn.Module,
    optimizer: torch.optim.Optimizer,
    epochs: int,
    batches: Callable[[], Iterable[Any]],
    step: Callable[[Any], tuple[torch.Tensor, int, dict[str, int]]],
    *,
    scheduler: torch.optim.lr_scheduler.LRScheduler | None = None,
    desc: str = "train",
    progress: bool = True,
) -> list[dict]:
    """The training loop of every network in the package: ``epochs`` passes over ``batches()``.

    ``module`` is put in training mode. Each epoch calls ``batches()`` once (draw its
    shuffled order there) and, for every batch, ``step(batch)``, which returns the loss,
    the number of samples it averages over and counts to report (e.g. correct
    predictions); then the gradients are reset, the loss back-propagated and the
    optimizer (and ``scheduler``, per step) stepped. Returns one record per epoch:
    ``{"epoch": e, "loss": mean loss, <count>: count / samples, ...}``, the means
    weighted by each batch's samples. Used by :func:`train_classifier` and by the
    networks of :mod:`nero_lite.semisup` (``nero_lite.semisup.training``).
    """
    module.train()
    history = []
    bar = progress_bar(range(epochs), desc=desc, show=progress)
    for epoch in bar:
        total, seen, counts = 0.0, 0, {}
        for batch in batches():
            loss, size, found = step(batch)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            if scheduler is not None:
                scheduler.step()
            total, seen = total + loss.item() * size, seen + size
            for name, value in found.items():
                counts[name] = counts.get(name, 0) + value
        history.append({"epoch": epoch + 1, "loss": total / seen, **{name: value / seen for name, value in counts.items()}})
        shown = {"loss": history[-1]["loss"], **{"acc" if name.endswith("accuracy") else name: history[-1][name] for name in counts}}
        bar.set_postfix({label: f"{value:.3f}" for label, value in shown.items()})
    return history


def warmup_fraction(total_steps: int) -> float:
    """The share of the one-cycle schedule spent warming up: 0.1, and at least two steps from 3 steps on.

    torch's ``OneCycleLR`` divides by (``pct_start · total_steps`` − 1), zero when a tenth of
    the steps is exactly one step (10 steps: 5 epochs of a set of 64 to 128 images at batch 64).
    """
    return max(0.1, 2 / total_steps) if total_steps >= 3 else 0.1


def train_classifier(
    data: ImageSet,
    arch: str = "resnet18d",
    recipe: Recipe | None = None,
    *,
    seed: int = 0,
    pretrained: bool = False,
    weights: str | Path | None = None,
    device: str | torch.device = "auto",
    cache: bool = True,
    progress: bool = True,
) -> nn.Module:
    """Train (or load from the cache) a classifier on the ID training images.

    Parameters
    ----------
    data : ImageSet
        ID training images (uint8) and labels, e.g. ``splits.train``.
    arch : str
        ``"resnet18d"`` by default: its shortcuts average-pool before their 1×1
        convolution, so its relevance maps carry no fixed grid (see
        :mod:`nero_lite.faithfulness`); ``"resnet18"`` is the plain ResNet-18 of the NERO
        paper; see :func:`~nero_lite.models.create_model` for the others.
    recipe : Recipe, optional
        Hyperparameters; :class:`Recipe` defaults when omitted, :meth:`Recipe.paper` for
        the NERO paper's fine-tuning.
    seed : int
        Seeds initialisation, batch order and augmentation.
    pretrained, weights
        The starting weights (see :func:`~nero_lite.models.create_model`): timm's ImageNet weights, or a
        local file (the cache key holds its SHA-256). Training fine-tunes all of them.
    cache : bool
        Reuse weights trained before for the same (data, arch, recipe, seed) under
        :func:`nero_lite.cache.cache_dir`; weights are stored as safetensors, written
        atomically.

    Returns
    -------
    nn.Module
        The model in eval mode, on ``device``. ``model.training_history`` lists the
        mean loss and accuracy of each epoch; ``model.from_cache`` says whether the
        weights were loaded.
    """
    recipe = recipe or Recipe()
    device = resolve_device(device)
    if len(data) == 0:
        raise ValueError("cannot train on an empty ImageSet")
    num_classes = len(data.classes)
    img_size = data.images.shape[-1]
    key = {
        "version": TRAINED_VERSION,
        "data": fingerprint(data.images, data.labels),
        "arch": arch,
        "recipe": recipe.key(),
        "seed": seed,
        "num_classes": num_classes,
        "img_size": img_size,
    }
    if pretrained or weights is not None:
        key["init"] = f"timm:{PRETRAINED_TAGS.get(arch, arch)}" if pretrained else f"file:{sha256(Path(weights))}"

    def build(for_loading: bool) -> nn.Module:
        if for_loading:
            return create_model(arch, num_classes, img_size)
        return create_model(arch, num_classes, img_size, pretrained=pretrained, weights=weights).to(device)

    def train(model: nn.Module) -> list[dict]:
        generator = torch.Generator().manual_seed(seed)
        optimizer_class = torch.optim.AdamW if recipe.optimizer == "adamw" else torch.optim.Adam
        optimizer = optimizer_class(model.parameters(), lr=recipe.lr, weight_decay=recipe.weight_decay)
        steps_per_epoch = int(np.ceil(len(data) / recipe.batch_size))
        scheduler = None
        if recipe.schedule == "onecycle":
            total_steps = recipe.epochs * steps_per_epoch
            scheduler = torch.optim.lr_scheduler.OneCycleLR(
                optimizer, max_lr=recipe.lr, total_steps=total_steps, pct_start=warmup_fraction(total_steps)
            )
        loss_fn = nn.CrossEntropyLoss()

        def step(idx: torch.Tensor) -> tuple[torch.Tensor, int, dict[str, int]]:
            x = data.images[idx]
            if recipe.augment:
                x = augment(x, generator, recipe)
            y = data.labels[idx].to(device)
            logits = model(to_input(x, device))
            return loss_fn(logits, y), len(idx), {"train_accuracy": (logits.argmax(1) == y).sum().item()}

        return train_epochs(
            model, optimizer, recipe.epochs, lambda: torch.randperm(len(data), generator=generator).split(recipe.batch_size),
            step, scheduler=scheduler, desc=f"train {arch}", progress=progress,
        )  # fmt: skip

    torch.manual_seed(seed)
    trained = train_or_load(keyed_path("models", arch, key), key, build, train, cache)
    model = trained.network
    model.training_history = trained.history
    model.from_cache = trained.from_cache
    return model.to(device).eval()
