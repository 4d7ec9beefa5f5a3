"""Classifiers: creation, seeded training with a weight cache, and one-pass extraction.

The data flow of the book is ``data.load`` → :func:`train_classifier` (or cached
weights) → :func:`extract` (one forward pass → :class:`~nero_lite.outputs.Outputs`)
→ detectors → metrics.

The architectures are built with timm, from scratch unless asked otherwise:

* ``"resnet18"`` — timm's ResNet-18 (He et al., CVPR 2016), the NERO paper's CNN.
* ``"resnet18d"`` — timm's ResNet-18-D (He et al., "Bag of Tricks for Image
  Classification with Convolutional Neural Networks", CVPR 2019): a deep stem, and
  average pooling before the 1×1 convolution of each downsampling shortcut, where
  ResNet-18 uses a stride-2 1×1 convolution that reads one pixel of every 2×2 block and
  leaves a fixed grid of spots in every relevance map. The package default.
* ``"vit"`` — DeiT-Tiny (Touvron et al., ICML 2021) with its patch size adapted to the
  image size (``img_size // 8``), so a 64×64 image gives 8×8 = 64 tokens.
* ``"deit_small"`` — DeiT-S (timm ``deit_small_patch16_224``, D = 384), the NERO paper's
  transformer, with 16-pixel patches.
* any other timm model name whose classifier is one ``nn.Linear``.

Starting weights (:func:`create_model`): nothing is downloaded unless ``pretrained=True``
(timm's hub, ImageNet weights; for ResNet-18 torchvision's, as in the NERO paper), and
``weights=PATH`` reads a local safetensors or ``weights_only`` torch file: a whole
classifier whose head matches the classes, or a backbone (e.g. ImageNet weights saved
earlier) whose head is replaced. :meth:`Recipe.paper` is the NERO paper's fine-tuning
recipe (Chhetri et al., MICCAI 2025, ``model_training/train.py`` of the official code).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import timm
import torch
from timm.models import load_state_dict
from torch import nn
from torchvision.transforms import v2

from .cache import TRAINED_VERSION, fingerprint, keyed_path, sha256, train_or_load
from .constants import ARCHITECTURES
from .data import ImageSet, to_input
from .outputs import Outputs
from .progress import bar as progress_bar

__all__ = [
    "ARCHITECTURES",
    "Outputs",
    "PRETRAINED_TAGS",
    "Recipe",
    "accuracy",
    "augment",
    "capture_head",
    "create_model",
    "extract",
    "find_head",
    "read_weights",
    "resolve_device",
    "size_problem",
    "synchronize",
    "train_classifier",
    "train_epochs",
]

#: The timm model and pretrained tag each named architecture loads with ``pretrained=True``
#: (``resnet18.tv_in1k`` is torchvision's ImageNet ResNet-18, the NERO paper's starting point).
PRETRAINED_TAGS = {
    "resnet18d": "resnet18d.ra2_in1k",
    "resnet18": "resnet18.tv_in1k",
    "vit": "deit_tiny_patch16_224.fb_in1k",
    "deit_small": "deit_small_patch16_224.fb_in1k",
}


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


def synchronize(device: torch.device) -> None:
    """Wait for the queued work of a CUDA ``device`` (nothing to wait for on the CPU): call before reading a clock."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def size_problem(arch: str, img_size: int, name: str = "the image size") -> str | None:
    """Why ``arch`` cannot take ``img_size``-pixel images (``name`` is what the message calls the size), or ``None``.

    The one statement of the transformers' size rules, for :func:`create_model` and the
    command line's ``--size`` check: ``vit`` cuts an image into an 8×8 grid of patches of at
    least 2 pixels, ``deit_small`` into 16-pixel patches. The CNNs take any size.
    """
    if arch == "vit" and (img_size % 8 or img_size < 16):
        return f"the vit cuts images into an 8×8 grid of patches, so {name} must be a multiple of 8 (at least 16), got {img_size}"
    if arch == "deit_small" and img_size % 16:
        return f"deit_small cuts images into 16-pixel patches, so {name} must be a multiple of 16, got {img_size}"
    return None


def _timm_kwargs(arch: str, img_size: int) -> tuple[str, dict]:
    """The timm model name and keyword arguments of ``arch`` at ``img_size``."""
    problem = size_problem(arch, img_size)
    if problem:
        raise ValueError(problem)
    if arch in ("resnet18", "resnet18d"):
        return arch, {}
    if arch == "vit":
        return "deit_tiny_patch16_224", {"img_size": img_size, "patch_size": img_size // 8}
    if arch == "deit_small":
        return "deit_small_patch16_224", {"img_size": img_size}
    if timm.is_model(arch):
        return arch, {}
    raise ValueError(f"unknown architecture {arch!r}; choose one of {ARCHITECTURES} or a timm model name")


def read_weights(path: str | Path) -> dict[str, torch.Tensor]:
    """A state dict from a safetensors file, or a torch file loaded with ``weights_only=True``.

    Read by timm's ``load_state_dict`` (which unwraps ``{"state_dict": ...}`` and
    ``{"model": ...}`` checkpoints and a ``module.`` prefix); a file that needs unpickling
    arbitrary objects is refused, never executed.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"weights file not found: {path}")
    try:
        state = load_state_dict(str(path), use_ema=False)
    except Exception as error:  # pickle.UnpicklingError, safetensors' and torch's own errors
        raise ValueError(
            f"{path} is not a safetensors or weights-only torch state dict ({type(error).__name__}); "
            "save it with safetensors.torch.save_file(model.state_dict(), ...) or torch.save(model.state_dict(), ...)"
        ) from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"{path} does not hold a state dict of tensors")
    return state


def _head_name(model: nn.Module) -> str:
    head = find_head(model)
    return next(name for name, module in model.named_modules() if module is head)


def create_model(
    arch: str,
    num_classes: int,
    img_size: int = 64,
    *,
    pretrained: bool = False,
    weights: str | Path | None = None,
) -> nn.Module:
    """A classifier with a linear head of ``num_classes`` outputs.

    Parameters
    ----------
    arch : str
        One of :data:`~nero_lite.constants.ARCHITECTURES` or a timm model name whose classifier is one ``nn.Linear``.
    pretrained : bool
        Start from timm's ImageNet weights (:data:`PRETRAINED_TAGS` for the named
        architectures), downloaded from timm's hub: the explicit opt-in for users online.
        The head is new.
    weights : path, optional
        Start from a local file (:func:`read_weights`). A whole classifier of ``arch``,
        with a head of ``num_classes`` outputs, is loaded as it is (``model.head_loaded``
        is True: it needs no training). Any other file of ``arch`` (e.g. ImageNet weights
        with a 1000-class head, or none) is loaded through timm's ``pretrained_cfg_overlay``,
        which resamples a ViT's position embedding to ``img_size`` and leaves the head new.

    Without ``pretrained`` and ``weights`` the model is randomly initialised and nothing
    is downloaded.
    """
    name, kwargs = _timm_kwargs(arch, img_size)
    if pretrained and weights is not None:
        raise ValueError("give pretrained=True (timm's hub) or weights=PATH (a local file), not both")
    if weights is not None:
        state = read_weights(weights)
        model = timm.create_model(name, pretrained=False, num_classes=num_classes, **kwargs)
        _check_linear_head(model, arch, num_classes)
        head = _head_name(model)
        expected = model.state_dict()
        backbone = {k for k in expected if not k.startswith(head + ".")}
        missing = sorted(backbone - set(state))
        if missing:
            raise ValueError(
                f"{weights} does not hold {arch} weights: {len(missing)} of its {len(backbone)} backbone tensors "
                f"are missing (e.g. {missing[0]!r})"
            )
        if all(k in state and state[k].shape == v.shape for k, v in expected.items()):
            model.load_state_dict({k: state[k] for k in expected})
            model.head_loaded = True
            return model
        model = timm.create_model(
            name, pretrained=True, pretrained_cfg_overlay={"file": str(weights), "num_classes": 0},
            num_classes=num_classes, **kwargs,
        )
    elif pretrained:
        model = timm.create_model(PRETRAINED_TAGS.get(arch, name), pretrained=True, num_classes=num_classes, **kwargs)
    else:
        model = timm.create_model(name, pretrained=False, num_classes=num_classes, **kwargs)
    _check_linear_head(model, arch, num_classes)
    model.head_loaded = False
    return model


def _check_linear_head(model: nn.Module, arch: str, num_classes: int) -> None:
    head = find_head(model)
    if head.out_features != num_classes or head is not model.get_classifier():
        raise ValueError(f"{arch} has no linear classifier head of {num_classes} outputs; nero_lite needs one (NERO reads its input)")


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
        paper; see :func:`create_model` for the others.
    recipe : Recipe, optional
        Hyperparameters; :class:`Recipe` defaults when omitted, :meth:`Recipe.paper` for
        the NERO paper's fine-tuning.
    seed : int
        Seeds initialisation, batch order and augmentation.
    pretrained, weights
        The starting weights (see :func:`create_model`): timm's ImageNet weights, or a
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
            scheduler = torch.optim.lr_scheduler.OneCycleLR(
                optimizer, max_lr=recipe.lr, total_steps=recipe.epochs * steps_per_epoch, pct_start=0.1
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


@torch.no_grad()
@contextmanager
def capture_head(model: nn.Module, head: nn.Linear | None = None, *, detach: bool = True) -> Iterator[dict[str, torch.Tensor]]:
    """Record the classifier head's input (``"features"``) and output (``"logits"``) during the forward passes in the block.

    The head is :func:`find_head`'s unless given. The input is read by a forward *pre*-hook:
    entered before a zennit composite's context, it runs before the rule hooks and sees
    the tensor the model computed, the one relevance and gradients start from. With
    ``detach=False`` both tensors stay in the autograd graph (for gradients and LRP through
    the head, :mod:`nero_lite.attribution`); :func:`extract` detaches them. The entries hold
    the last forward pass; the hooks are removed when the block ends, also on an error.
    """
    head = head or find_head(model)
    captured: dict[str, torch.Tensor] = {}

    def before(module, args):
        captured["features"] = args[0].detach() if detach else args[0]

    def after(module, args, output):
        captured["logits"] = output.detach() if detach else output

    handles = [head.register_forward_pre_hook(before), head.register_forward_hook(after)]
    try:
        yield captured
    finally:
        for handle in handles:
            handle.remove()


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

    Hooks on the classifier head (:func:`find_head`, or ``head=``; :func:`capture_head`)
    record the head's input (the features ``a``) and output (the logits ``z = W a + b``)
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
    features, logits = [], []
    with capture_head(model, head) as captured:
        for start in progress_bar(range(0, len(images), batch_size), desc="extract", show=progress):
            model(prepare(images[start : start + batch_size]))
            features.append(captured["features"].flatten(1).float())
            logits.append(captured["logits"].float())
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
