r"""Canonizers, a rule and composites that make LRP conserve relevance through timm's ResNet and ViT.

A zennit rule is attached to a *module*; operations written inline in a ``forward``
(``x += shortcut``, ``attn.softmax()``, a LayerNorm's division by its standard deviation)
carry the plain gradient instead. A canonizer (Anders et al., "Software for Dataset-wide
XAI: From Local Explanations to Global Insights with Zennit, CoRelAy, and ViRelAy",
arXiv 2106.13200, 2021) temporarily rewrites a model so that every such operation is
either a module with a rule or a map the gradient treats as LRP would.

* :class:`TimmResNetCanonizer` — timm's ``BasicBlock`` adds its shortcut in place
  (``x += shortcut``), which zennit's torchvision ``ResNetCanonizer`` does not recognise:
  the gradient then hands the *whole* relevance of the sum to both branches, and the
  batch norms are not merged. Ours merges every batch norm into the convolution before
  it and routes the addition through a :class:`zennit.layer.Sum` module, which the
  composites give the proportional (``Norm``) rule.
* :class:`BiasFreeZPlus` and :func:`resnet_composite` — zennit's ``ZPlus`` keeps the
  positive part of a bias in its denominator, so the biases of the merged batch norms
  absorb relevance (20–45 % on our trained ResNet-18). The :math:`z^+` rule of deep
  Taylor decomposition leaves the bias out and conserves relevance exactly.
* :class:`TimmViTCanonizer` with :func:`vit_composite` — transformer LRP as CP-LRP does
  it (Ali et al., "XAI for Transformers: Better Explanations through Conservative
  Propagation", ICML 2022): the LayerNorm's division by its standard deviation and the
  attention probabilities are held constant in the backward pass, so relevance flows
  through the value path only; residual additions go through ``Sum`` modules, GELU
  passes relevance on unchanged (the identity rule). AttnLRP (Achtibat et al.,
  "AttnLRP: Attention-Aware Layer-Wise Relevance Propagation for Transformers", ICML
  2024) also propagates through the softmax and the query–key products; it is not
  implemented here.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from timm.layers.attention import Attention
from timm.models.resnet import BasicBlock
from timm.models.vision_transformer import Block
from torch import nn
from zennit.canonizers import AttributeCanonizer, CompositeCanonizer, SequentialMergeBatchNorm
from zennit.composites import LAYER_MAP_BASE, LayerMapComposite, SpecialFirstLayerMapComposite
from zennit.core import BasicHook, stabilize
from zennit.layer import Sum
from zennit.rules import Epsilon, Flat, Norm, Pass
from zennit.types import Activation, Convolution, Linear

__all__ = [
    "BiasFreeZPlus",
    "TimmBasicBlockCanonizer",
    "TimmResNetCanonizer",
    "TimmViTCanonizer",
    "resnet_composite",
    "vit_composite",
]


def _add(sum_module: nn.Module, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``a + b`` through a zennit ``Sum`` module, so that a rule can split the relevance of the sum."""
    return sum_module(torch.stack([a, b], dim=-1))


class _MethodCanonizer(AttributeCanonizer):
    """An ``AttributeCanonizer`` whose attribute map is the subclass's ``_attribute_map`` classmethod."""

    def __init__(self):
        super().__init__(self._attribute_map)

    def copy(self) -> _MethodCanonizer:
        return type(self)()


class TimmBasicBlockCanonizer(_MethodCanonizer):
    r"""Routes the residual addition of timm's ``BasicBlock`` through a :class:`zennit.layer.Sum`.

    With :math:`y = f(x) + s(x)` and the ``Norm`` rule on the ``Sum``, the relevance
    :math:`R_y` is split in proportion to the two summands,
    :math:`R_f = f(x) / y \cdot R_y` and :math:`R_s = s(x) / y \cdot R_y`, so
    :math:`R_f + R_s = R_y` (Bach et al., PLOS ONE 2015). The in-place ``x += shortcut``
    of timm would instead give both branches the full :math:`R_y`.
    """

    @classmethod
    def _attribute_map(cls, name: str, module: nn.Module) -> dict | None:
        if isinstance(module, BasicBlock):
            return {"forward": cls._forward.__get__(module), "canonizer_sum": Sum()}
        return None

    @staticmethod
    def _forward(self: BasicBlock, x: torch.Tensor) -> torch.Tensor:
        shortcut = x if self.downsample is None else self.downsample(x)
        x = self.aa(self.act1(self.drop_block(self.bn1(self.conv1(x)))))
        x = self.bn2(self.conv2(x))
        if self.se is not None:
            x = self.se(x)
        if self.drop_path is not None:
            x = self.drop_path(x)
        return self.act2(_add(self.canonizer_sum, x, shortcut))


class TimmResNetCanonizer(CompositeCanonizer):
    """Canonizer for timm ResNets built of ``BasicBlock`` (ResNet-18/34, and their -D variants).

    Merges each batch norm into the convolution before it (``SequentialMergeBatchNorm``:
    :math:`W' = W \\gamma/\\sigma`, :math:`b' = (b - \\mu)\\gamma/\\sigma + \\beta`, in eval
    mode) and applies :class:`TimmBasicBlockCanonizer`. Use it with zennit's
    ``EpsilonPlusFlat`` or ``EpsilonGammaBox``; put the model in eval mode first.

    ResNet-18-D (``timm.create_model("resnet18d")``) needs nothing more: the batch norms
    of its deep stem follow their convolutions in module order and are merged too, and
    the average pool before each 1×1 shortcut convolution is an ``AvgPool2d``, which the
    composites give the proportional (``Norm``) rule, so relevance is conserved through
    it (``tests/test_explain.py`` checks both).
    """

    def __init__(self):
        super().__init__((SequentialMergeBatchNorm(), TimmBasicBlockCanonizer()))


def _without_bias(modifier):
    return lambda param, name: torch.zeros_like(param) if name == "bias" else modifier(param)


class BiasFreeZPlus(BasicHook):
    r"""The :math:`z^+` rule without a bias term (Montavon et al., "Explaining nonlinear classification
    decisions with deep Taylor decomposition", Pattern Recognition 2017).

    .. math::

        R_i = \sum_j \frac{x_i^+ w_{ij}^+ + x_i^- w_{ij}^-}{\sum_{i'} x_{i'}^+ w_{i'j}^+ + x_{i'}^- w_{i'j}^-} R_j

    As zennit's ``ZPlus`` (which is :math:`\alpha_1\beta_0` and also lets negative inputs
    meet negative weights), but the bias is left out of the denominator, so
    :math:`\sum_i R_i = \sum_j R_j` wherever the denominator is non-zero.

    ``non_negative=True`` keeps only the :math:`x^+ w^+` terms: for a layer whose inputs
    are never negative (every convolution of a ResNet after the first reads the output of
    a ReLU, or an average of such outputs) the :math:`x^- w^-` terms are exactly zero, and
    leaving them out halves the cost of the rule with the same result.
    """

    def __init__(self, non_negative: bool = False):
        if non_negative:
            super().__init__(
                input_modifiers=[lambda x: x.clamp(min=0)],
                param_modifiers=[_without_bias(lambda w: w.clamp(min=0))],
                output_modifiers=[lambda output: output],
                gradient_mapper=lambda out_grad, outputs: [out_grad / stabilize(outputs[0])],
                reducer=lambda inputs, gradients: inputs[0] * gradients[0],
            )
            return
        super().__init__(
            input_modifiers=[lambda x: x.clamp(min=0), lambda x: x.clamp(max=0)],
            param_modifiers=[_without_bias(lambda w: w.clamp(min=0)), _without_bias(lambda w: w.clamp(max=0))],
            output_modifiers=[lambda output: output] * 2,
            gradient_mapper=lambda out_grad, outputs: [out_grad / stabilize(sum(outputs))] * 2,
            reducer=lambda inputs, gradients: inputs[0] * gradients[0] + inputs[1] * gradients[1],
        )


def resnet_composite(epsilon: float = 1e-6) -> SpecialFirstLayerMapComposite:
    """``EpsilonPlusFlat`` with :class:`BiasFreeZPlus` on the convolutions, and :class:`TimmResNetCanonizer`.

    Flat rule on the first convolution, bias-free :math:`z^+` on the others (whose inputs
    are non-negative: ``non_negative=True``), ε on the linear head, proportional split at
    the residual sums and the global average pool. Relevance is conserved from the head
    input to the pixels.
    """
    layer_map = LAYER_MAP_BASE + [(Convolution, BiasFreeZPlus(non_negative=True)), (nn.Linear, Epsilon(epsilon=epsilon))]
    return SpecialFirstLayerMapComposite(layer_map, [(Linear, Flat())], canonizers=[TimmResNetCanonizer()])


class _ConstantStdLayerNorm(_MethodCanonizer):
    r"""LayerNorm with its standard deviation held constant in the backward pass.

    :math:`y = \gamma \odot (x - \bar x)/\sigma + \beta` keeps its forward value, but
    :math:`\sigma` is detached, so :math:`y` is linear in :math:`x` for the rules: with
    the ε rule the relevance :math:`R_y` is redistributed over the centred inputs and
    only :math:`\beta` absorbs a share (the LN rule of Ali et al., ICML 2022; AttnLRP's
    identity rule on the normalisation, Achtibat et al., ICML 2024).
    """

    @classmethod
    def _attribute_map(cls, name: str, module: nn.Module) -> dict | None:
        if isinstance(module, nn.LayerNorm):
            return {"forward": cls._forward.__get__(module)}
        return None

    @staticmethod
    def _forward(self: nn.LayerNorm, x: torch.Tensor) -> torch.Tensor:
        dims = tuple(range(-len(self.normalized_shape), 0))
        centred = x - x.mean(dim=dims, keepdim=True)
        std = (centred.pow(2).mean(dim=dims, keepdim=True) + self.eps).sqrt().detach()
        y = centred / std
        if self.weight is not None:
            y = y * self.weight
        if self.bias is not None:
            y = y + self.bias
        return y


class _ConstantAttentionBlock(_MethodCanonizer):
    r"""timm ViT ``Block`` and ``Attention`` with constant attention probabilities and ``Sum`` residuals.

    The attention probabilities :math:`A = \operatorname{softmax}(q k^\top/\sqrt{d})` are
    detached (CP-LRP, Ali et al., ICML 2022): relevance reaches the tokens only through
    the values, :math:`R_{v_i} = \sum_j A_{ji} R_{o_j}`, which conserves relevance because
    each row of :math:`A` sums to one. The two residual additions of each block go
    through ``Sum`` modules (see :class:`TimmBasicBlockCanonizer`).
    """

    @classmethod
    def _attribute_map(cls, name: str, module: nn.Module) -> dict | None:
        if isinstance(module, Block):
            return {"forward": cls._block_forward.__get__(module), "canonizer_sum1": Sum(), "canonizer_sum2": Sum()}
        if isinstance(module, Attention):
            return {"forward": cls._attention_forward.__get__(module)}
        return None

    @staticmethod
    def _block_forward(self: Block, x: torch.Tensor) -> torch.Tensor:
        x = _add(self.canonizer_sum1, x, self.drop_path1(self.ls1(self.attn(self.norm1(x)))))
        return _add(self.canonizer_sum2, x, self.drop_path2(self.ls2(self.mlp(self.norm2(x)))))

    @staticmethod
    def _attention_forward(self: Attention, x: torch.Tensor) -> torch.Tensor:
        b, n, _ = x.shape
        qkv = self.qkv(x).reshape(b, n, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        q, k = self.q_norm(q), self.k_norm(k)
        attention = F.softmax(q @ k.transpose(-2, -1) * self.scale, dim=-1).detach()
        x = (attention @ v).transpose(1, 2).reshape(b, n, self.attn_dim)
        return self.proj_drop(self.proj(self.norm(x)))


class TimmViTCanonizer(CompositeCanonizer):
    """Canonizer for timm ``VisionTransformer`` (ViT, DeiT): constant LayerNorm scale and attention, ``Sum`` residuals."""

    def __init__(self):
        super().__init__((_ConstantStdLayerNorm(), _ConstantAttentionBlock()))


def vit_composite(epsilon: float = 1e-6) -> LayerMapComposite:
    r"""The LRP composite for a timm ViT, with :class:`TimmViTCanonizer`.

    ε rule on every ``Linear`` and (canonized) ``LayerNorm``, ``Norm`` (proportional
    split) on the residual ``Sum`` modules, identity (``Pass``) on GELU, and the flat
    rule on the patch embedding (the first layer, as ``EpsilonPlusFlat`` does for CNNs).
    Relevance is conserved up to what the biases absorb and the share that stays on the
    learned class token (a constant input, like a bias).
    """
    layer_map = [
        (Activation, Pass()),
        (Sum, Norm()),
        (nn.Linear, Epsilon(epsilon=epsilon)),
        (nn.LayerNorm, Epsilon(epsilon=epsilon)),
    ]
    return SpecialFirstLayerMapComposite(
        layer_map, [(Convolution, Flat())], canonizers=[TimmViTCanonizer()]
    )
