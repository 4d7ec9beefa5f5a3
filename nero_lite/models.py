"""Classifiers: the architectures by name, their starting weights and their head.

The data flow of the book is ``data.load`` → :func:`~nero_lite.training.train_classifier`
(or cached weights) → :func:`~nero_lite.extraction.extract` (one forward pass →
:class:`~nero_lite.outputs.Outputs`) → detectors → metrics. This module makes the models
(:func:`create_model`) and finds their head (:func:`find_head`); :mod:`nero_lite.training`
trains them, :mod:`nero_lite.extraction` runs them once, :mod:`nero_lite.devices` picks the
device.

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
earlier) whose head is replaced. :meth:`~nero_lite.training.Recipe.paper` is the NERO paper's fine-tuning
recipe (Chhetri et al., MICCAI 2025, ``model_training/train.py`` of the official code).
"""

from __future__ import annotations

from pathlib import Path

import timm
import torch
from timm.models import load_state_dict
from torch import nn

from .constants import ARCHITECTURES

__all__ = ["ARCHITECTURES", "PRETRAINED_TAGS", "create_model", "find_head", "read_weights", "size_problem"]

_MOVED = {
    "resolve_device": "devices", "synchronize": "devices",
    "Recipe": "training", "augment": "training", "train_epochs": "training", "train_classifier": "training",
    "capture_head": "extraction", "extract": "extraction", "accuracy": "extraction",
}

#: The timm model and pretrained tag each named architecture loads with ``pretrained=True``
#: (``resnet18.tv_in1k`` is torchvision's ImageNet ResNet-18, the NERO paper's starting point).
PRETRAINED_TAGS = {
    "resnet18d": "resnet18d.ra2_in1k",
    "resnet18": "resnet18.tv_in1k",
    "vit": "deit_tiny_patch16_224.fb_in1k",
    "deit_small": "deit_small_patch16_224.fb_in1k",
}


def __getattr__(name: str):
    """The names that moved out of this module, with a deprecation warning (one release):
    :mod:`nero_lite.devices`, :mod:`nero_lite.training`, :mod:`nero_lite.extraction`."""
    if name in _MOVED:
        import importlib
        import warnings

        module = _MOVED[name]
        warnings.warn(f"nero_lite.models.{name} is now nero_lite.{module}.{name}", DeprecationWarning, stacklevel=2)
        return getattr(importlib.import_module(f"nero_lite.{module}"), name)
    if name == "Outputs":
        from .outputs import Outputs

        return Outputs
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


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
