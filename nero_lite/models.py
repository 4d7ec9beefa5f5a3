"""Classifiers: creation, seeded training with a weight cache, and one-pass extraction.

The data flow of the book is ``data.load`` → :func:`train_classifier` (or cached
weights) → :func:`extract` (one forward pass → :class:`~nero_lite.outputs.Outputs`)
→ detectors → metrics.

Three architectures are built with timm, from scratch (nothing is downloaded):

* ``"resnet18"`` — timm's ResNet-18 (He et al., CVPR 2016), the NERO paper's CNN.
* ``"resnet18d"`` — timm's ResNet-18-D (He et al., "Bag of Tricks for Image
  Classification with Convolutional Neural Networks", CVPR 2019): a deep stem, and
  average pooling before the 1×1 convolution of each downsampling shortcut, where
  ResNet-18 uses a stride-2 1×1 convolution that reads one pixel of every 2×2 block and
  leaves a fixed grid of spots in every relevance map. The package default.
* ``"vit"`` — DeiT-Tiny (Touvron et al., ICML 2021) with its patch size adapted to the
  image size (``img_size // 8``), so a 64×64 image gives 8×8 = 64 tokens.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import asdict, dataclass

import numpy as np
import timm
import torch
from safetensors.torch import load_file, save_file
from torch import nn
from tqdm import tqdm

from .cache import cache_dir, fingerprint, read_entry, write_entry
from .data import ImageSet, to_input
from .outputs import Outputs

__all__ = [
    "ARCHITECTURES",
    "Outputs",
    "Recipe",
    "accuracy",
    "create_model",
    "extract",
    "find_head",
    "resolve_device",
    "train_classifier",
]

#: The architectures :func:`create_model` builds; the first is the default.
ARCHITECTURES = ("resnet18d", "resnet18", "vit")
_CACHE_VERSION = "2"  # 2: entries carry a checksum (nero_lite.cache)


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``"auto"`` → CUDA when available, else CPU; anything else is passed to ``torch.device``.

    Raises ``ValueError`` for a name torch does not know (e.g. ``"gpu"``) and for a CUDA
    device this machine does not have, before any work is spent.
    """
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError):
        raise ValueError(f"unknown device {str(device)!r}: use auto, cpu, cuda or cuda:N") from None
    if resolved.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise ValueError(f"device {str(device)!r} asked for, but CUDA is not available on this machine: use auto or cpu")
        if resolved.index is not None and resolved.index >= count:
            raise ValueError(f"device {str(device)!r} asked for, but this machine has {count} CUDA device(s)")
    return resolved


def create_model(arch: str, num_classes: int, img_size: int = 64) -> nn.Module:
    """A randomly initialised classifier with a linear head (no pretrained weights); ``arch`` in :data:`ARCHITECTURES`."""
    if arch in ("resnet18", "resnet18d"):
        return timm.create_model(arch, pretrained=False, num_classes=num_classes)
    if arch == "vit":
        patch = max(img_size // 8, 2)
        if img_size % patch:
            raise ValueError(f"vit needs an image size divisible by {patch}, got {img_size}")
        return timm.create_model(
            "deit_tiny_patch16_224", pretrained=False, num_classes=num_classes, img_size=img_size, patch_size=patch
        )
    raise ValueError(f"unknown architecture {arch!r}; choose one of {ARCHITECTURES}")


def find_head(model: nn.Module) -> nn.Linear:
    """The final linear layer of a timm or torchvision classifier.

    Tries timm's ``get_classifier()``, then the attributes ``fc``, ``head`` and
    ``classifier``, then the last ``nn.Linear`` of the model.
    """
    candidates = []
    if hasattr(model, "get_classifier"):
        candidates.append(model.get_classifier())
    candidates += [getattr(model, name, None) for name in ("fc", "head", "classifier")]
    for module in candidates:
        if isinstance(module, nn.Sequential):
            module = next((m for m in reversed(module) if isinstance(m, nn.Linear)), None)
        if isinstance(module, nn.Linear):
            return module
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise ValueError("the model has no nn.Linear layer: pass its classifier head explicitly with head=")
    return linears[-1]


@dataclass(frozen=True)
class Recipe:
    """Training hyperparameters; part of the cache key.

    AdamW with a one-cycle cosine schedule (linear warm-up over the first 10 % of
    steps), light augmentation (random horizontal/vertical flips and 90° rotations,
    which leave an endoscopic view plausible).
    """

    epochs: int = 8
    batch_size: int = 64
    lr: float = 2e-3
    weight_decay: float = 0.05
    augment: bool = True


def _augment(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    n = len(x)
    flip_h = torch.rand(n, generator=generator) < 0.5
    flip_v = torch.rand(n, generator=generator) < 0.5
    x = torch.where(flip_h[:, None, None, None], x.flip(3), x)
    x = torch.where(flip_v[:, None, None, None], x.flip(2), x)
    transpose = torch.rand(n, generator=generator) < 0.5
    if x.shape[2] == x.shape[3]:
        x = torch.where(transpose[:, None, None, None], x.transpose(2, 3), x)
    return x


def train_classifier(
    data: ImageSet,
    arch: str = "resnet18d",
    recipe: Recipe | None = None,
    *,
    seed: int = 0,
    device: str | torch.device = "auto",
    cache: bool = True,
    progress: bool = True,
) -> nn.Module:
    """Train (or load from the cache) a classifier on the ID training images.

    Parameters
    ----------
    data : ImageSet
        ID training images (uint8) and labels, e.g. ``splits.train``.
    arch : {"resnet18d", "resnet18", "vit"}
        ``"resnet18d"`` by default: its shortcuts average-pool before their 1×1
        convolution, so its relevance maps carry no fixed grid (see
        :mod:`nero_lite.faithfulness`); ``"resnet18"`` is the plain ResNet-18 of the NERO paper.
    recipe : Recipe, optional
        Hyperparameters; :class:`Recipe` defaults when omitted.
    seed : int
        Seeds initialisation, batch order and augmentation.
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
        "version": _CACHE_VERSION,
        "data": fingerprint(data.images, data.labels),
        "arch": arch,
        "recipe": asdict(recipe),
        "seed": seed,
        "num_classes": num_classes,
        "img_size": img_size,
    }
    digest = hashlib.sha1(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    weights_path = cache_dir(create=False) / "models" / f"{arch}-{digest}.safetensors"

    torch.manual_seed(seed)
    model = create_model(arch, num_classes, img_size)
    entry = read_entry(weights_path, load_file) if cache else None
    if entry is not None:
        state, meta = entry
        model.load_state_dict(state)
        model.training_history = meta["history"]
        model.from_cache = True
        return model.to(device).eval()

    model.to(device).train()
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=recipe.lr, weight_decay=recipe.weight_decay)
    steps_per_epoch = int(np.ceil(len(data) / recipe.batch_size))
    scheduler = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=recipe.lr, total_steps=recipe.epochs * steps_per_epoch, pct_start=0.1
    )
    loss_fn = nn.CrossEntropyLoss()
    history = []
    start = time.perf_counter()
    bar = tqdm(range(recipe.epochs), desc=f"train {arch}", disable=not progress)
    for epoch in bar:
        order = torch.randperm(len(data), generator=generator)
        total_loss, correct = 0.0, 0
        for idx in order.split(recipe.batch_size):
            x = data.images[idx]
            if recipe.augment:
                x = _augment(x, generator)
            y = data.labels[idx].to(device)
            logits = model(to_input(x, device))
            loss = loss_fn(logits, y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            total_loss += loss.item() * len(idx)
            correct += (logits.argmax(1) == y).sum().item()
        history.append({"epoch": epoch + 1, "loss": total_loss / len(data), "train_accuracy": correct / len(data)})
        bar.set_postfix(loss=f"{history[-1]['loss']:.3f}", acc=f"{history[-1]['train_accuracy']:.3f}")
    model.eval()
    model.training_history = history
    model.from_cache = False
    if cache:
        state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
        meta = {"key": key, "history": history, "seconds": time.perf_counter() - start}
        write_entry(weights_path, lambda temp: save_file(state, temp), meta)
    return model


@torch.no_grad()
def extract(
    model: nn.Module,
    data: ImageSet | torch.Tensor,
    device: str | torch.device = "auto",
    *,
    batch_size: int = 256,
    head: nn.Linear | None = None,
    progress: bool = True,
) -> Outputs:
    """Head inputs, logits and head parameters in one forward pass per batch.

    A forward hook on the classifier head (:func:`find_head`, or ``head=``) records
    the head's input (the features ``a``) and output (the logits ``z = W a + b``)
    while the model runs its ordinary ``forward``; this works for timm and
    torchvision CNNs and ViTs alike.

    Parameters
    ----------
    model : nn.Module
        A classifier whose last layer is an ``nn.Linear``.
    data : ImageSet or Tensor
        An :class:`~nero_lite.data.ImageSet` (uint8 images, normalised here with
        :func:`~nero_lite.data.to_input`; its labels are kept) or a float tensor that
        is already model input (labels ``-1``).
    device : "auto", "cpu", "cuda", ...
        Where the model runs; ``"auto"`` picks CUDA when available.

    Returns
    -------
    Outputs
        ``features`` (N×D), ``logits`` (N×C), ``labels`` (N), ``weight`` (C×D),
        ``bias`` (C), all on ``device`` (``Outputs.to("cpu")`` moves them).
    """
    device = resolve_device(device)
    head = head or find_head(model)
    if head.bias is None:
        raise ValueError("the classifier head has no bias; NERO treats the bias as an extra neuron")
    model = model.to(device).eval()
    if isinstance(data, ImageSet):
        images, labels, prepare = data.images, data.labels, lambda x: to_input(x, device)
    else:
        images, labels, prepare = data, None, lambda x: x.to(device)
    captured = {}

    def hook(module, inputs, output):
        captured["features"] = inputs[0].detach().flatten(1)
        captured["logits"] = output.detach()

    features, logits = [], []
    handle = head.register_forward_hook(hook)
    try:
        for start in tqdm(range(0, len(images), batch_size), desc="extract", disable=not progress):
            model(prepare(images[start : start + batch_size]))
            features.append(captured["features"].float())
            logits.append(captured["logits"].float())
    finally:
        handle.remove()
    return Outputs(
        features=torch.cat(features),
        logits=torch.cat(logits),
        labels=labels.to(device) if labels is not None else torch.full((len(images),), -1, device=device),
        weight=head.weight.detach().float().clone(),
        bias=head.bias.detach().float().clone(),
    )


def accuracy(outputs: Outputs) -> float:
    """Fraction of samples whose predicted class equals their label."""
    return float((outputs.predictions() == outputs.labels).float().mean())
