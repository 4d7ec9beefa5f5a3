"""Training of the semi-supervised networks: GEOM's transform classifier f and the outlier head g.

Both run the package's one training loop, :func:`nero_lite.training.train_epochs`; what is
theirs is the batch: which (image, transform) pairs and outliers it holds, and the loss.
The detectors of :mod:`nero_lite.semisup.detectors` call these on a cache miss, with the
images already prepared (normalised float input at the configured size, on the device).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from ..training import train_epochs
from .config import SemisupConfig
from .transforms import GeometricTransforms

__all__ = ["train_outlier_head", "train_transform_classifier"]


def train_transform_classifier(
    f: nn.Module,
    transforms: GeometricTransforms,
    x_id: torch.Tensor,
    x_out: torch.Tensor | None,
    config: SemisupConfig,
    *,
    seed: int,
    desc: str = "GEOM f",
    progress: bool = True,
) -> list[dict]:
    """Train f to tell which transform was applied: GEOM, or GEOM+ when ``x_out`` holds outliers.

    Adam (``config.geom_lr``) over every (ID image, transform) pair in a seeded order, in
    batches of ``config.batch_size``, minimising :math:`\\mathrm{CE}(f(T_k x), k)`; with
    outliers, each batch adds as many outliers with random transforms and the term
    :math:`\\lambda\\,\\mathrm{CE}(f(T_k o), \\mathcal U_K)` (``config.oe_weight``).
    Returns the loss and transform accuracy of every epoch.
    """
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.Adam(f.parameters(), lr=config.geom_lr)
    n, k_count, device = len(x_id), len(transforms), x_id.device

    def step(pairs: torch.Tensor) -> tuple[torch.Tensor, int, dict[str, int]]:
        k = (pairs // n).to(device)
        logits = f(transforms.apply(x_id[(pairs % n).to(device)], k))
        loss = F.cross_entropy(logits, k)
        if x_out is not None:
            j = torch.randint(len(x_out), (len(pairs),), generator=generator).to(device)
            k_out = torch.randint(k_count, (len(pairs),), generator=generator).to(device)
            log_p = f(transforms.apply(x_out[j], k_out)).log_softmax(1)
            loss = loss + config.oe_weight * (-log_p.mean(1)).mean()
        return loss, len(pairs), {"transform_accuracy": (logits.argmax(1) == k).sum().item()}

    def batches():
        return torch.randperm(n * k_count, generator=generator).split(config.batch_size)

    return train_epochs(f, optimizer, config.geom_epochs, batches, step, desc=desc, progress=progress)


def train_outlier_head(
    g: nn.Module,
    features: Callable[[torch.Tensor], dict[str, torch.Tensor]],
    transforms: GeometricTransforms,
    x_id: torch.Tensor,
    x_out: torch.Tensor,
    config: SemisupConfig,
    *,
    seed: int,
    desc: str = "g",
    progress: bool = True,
) -> list[dict]:
    """Train g with BCE to tell ID images (0) from outliers (1), both under random transforms.

    Every step takes ``config.g_batch_size`` ID images in a seeded order and as many
    outliers drawn with replacement, a random transform per image, and g reads
    ``features`` of the transformed batch. Adam, lr ``config.g_lr`` divided by 10 after
    80 % of the steps. Returns the loss of every epoch.
    """
    device = x_id.device
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.Adam(g.parameters(), lr=config.g_lr)
    steps = config.g_epochs * math.ceil(len(x_id) / config.g_batch_size)
    scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, [int(0.8 * steps)], gamma=0.1)

    def step(idx: torch.Tensor) -> tuple[torch.Tensor, int, dict[str, int]]:
        j = torch.randint(len(x_out), (len(idx),), generator=generator)
        x = torch.cat([x_id[idx.to(device)], x_out[j.to(device)]])
        k = torch.randint(len(transforms), (len(x),), generator=generator).to(device)
        y = torch.cat([torch.zeros(len(idx)), torch.ones(len(idx))]).to(device)
        return F.binary_cross_entropy_with_logits(g(features(transforms.apply(x, k))), y), len(x), {}

    def batches():
        return torch.randperm(len(x_id), generator=generator).split(config.g_batch_size)

    return train_epochs(g, optimizer, config.g_epochs, batches, step, scheduler=scheduler, desc=desc, progress=progress)
