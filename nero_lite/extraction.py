"""Extraction: the head input and output of a classifier, in one forward pass per batch.

:func:`capture_head` records the head's input (the features) and output (the logits) while
the model runs its ordinary forward pass; :func:`extract` gathers them with the head's
weights into an :class:`~nero_lite.outputs.Outputs`, what every detector reads; the
attribution (:mod:`nero_lite.attribution`) uses the same capture inside the graph.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn

from .data import ImageSet, to_input
from .devices import resolve_device
from .models import find_head
from .outputs import Outputs
from .progress import bar as progress_bar

__all__ = ["accuracy", "capture_head", "extract"]


@torch.no_grad()
@contextmanager
def capture_head(model: nn.Module, head: nn.Linear | None = None, *, detach: bool = True) -> Iterator[dict[str, torch.Tensor]]:
    """Record the classifier head's input (``"features"``) and output (``"logits"``) during the forward passes in the block.

    The head is :func:`~nero_lite.models.find_head`'s unless given. The input is read by a forward *pre*-hook:
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

    Hooks on the classifier head (:func:`~nero_lite.models.find_head`, or ``head=``; :func:`capture_head`)
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
