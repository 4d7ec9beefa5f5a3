"""The two networks of the method: f (GEOM's transform classifier) and g (the outlier head).

**f** is a wide residual network (WRN-d-k; Zagoruyko & Komodakis, BMVC 2016), the
architecture GEOM and the 2021 paper use (WRN-16-4, dropout 0.3): a 3×3 stem
convolution, three groups of pre-activation residual blocks with ``width``, ``2·width``
and ``4·width`` channels (strides 1, 2, 2), BN + ReLU, global average pooling and a
linear head with one logit per transform. WRN-16-4 is ``width=64, blocks=2``; the
CPU default of :class:`~nero_lite.semisup.config.SemisupConfig` is ``width=8, blocks=1`` (about 21 k parameters).
Its intermediate outputs are the features of the 2021 paper:

* ``z1``, ``z2``, ``z3`` — the outputs of the three groups (side ``S``, ``S/2``, ``S/4``);
* ``z4`` — the pooled feature (``4·width`` values);
* ``softmax`` — f's transform probabilities (``K`` values).

:func:`tap_features` records them with forward hooks during one ordinary forward pass.

**g** is the paper's Table 1 network adapted to our sizes: stages of
``Conv2d(k=4, s=1, p=2) → BN → ReLU → MaxPool(2)``; the first stage reads the
shallowest chosen map, and each deeper map is concatenated (along channels) to the
input of the stage at its resolution. Since the convolution adds one pixel and the
pooling halves, a stage maps side ``H`` to ``⌈H/2⌉``, which is exactly the side of f's
next group, so the maps line up without cropping. After the stage at ``S/4`` the map is
flattened, the flat features (``z4``, ``softmax``) are concatenated, and
``Linear → hidden, BN, ReLU, Linear → 1`` gives one logit (outlier-ness; the sigmoid
is applied in the loss). With 32×32 images and 64 filters the flattened map has
64 · 4 · 4 = 1024 values, as in the paper. The paper's Table 1 lists 4 values for z4;
we concatenate the whole pooled vector. Raw images can be fed as the map ``"x"``
(same resolution as ``z1``): that is the BCE baseline.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["FLAT_TAPS", "SPATIAL_TAPS", "WideResNet", "GNet", "tap_features"]

#: Spatial maps g can read, with their resolution level (side ``S / 2**level``).
SPATIAL_TAPS = {"x": 0, "z1": 0, "z2": 1, "z3": 2}
#: Vectors g concatenates after flattening.
FLAT_TAPS = ("z4", "softmax")
_HOOKED = {"z1": "group1", "z2": "group2", "z3": "group3", "z4": "pool"}


class _Block(nn.Module):
    """Pre-activation residual block: BN-ReLU-conv3×3-BN-ReLU-dropout-conv3×3, plus a 1×1 shortcut where shapes change."""

    def __init__(self, cin: int, cout: int, stride: int, dropout: float):
        super().__init__()
        self.bn1, self.bn2 = nn.BatchNorm2d(cin), nn.BatchNorm2d(cout)
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.dropout = nn.Dropout(dropout)
        self.shortcut = nn.Conv2d(cin, cout, 1, stride, bias=False) if (cin != cout or stride != 1) else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = torch.relu(self.bn1(x))
        h = self.conv2(self.dropout(torch.relu(self.bn2(self.conv1(a)))))
        return h + self.shortcut(a if isinstance(self.shortcut, nn.Conv2d) else x)


class WideResNet(nn.Module):
    """f: WRN-(6·blocks+4)-(width/16), one logit per transform.

    Parameters
    ----------
    num_outputs : int
        K, the number of transforms.
    width : int
        Channels of the first group (the groups have ``width, 2·width, 4·width``).
    blocks : int
        Residual blocks per group.
    dropout : float
        Dropout between the two convolutions of every block.
    """

    def __init__(self, num_outputs: int, width: int = 16, blocks: int = 1, dropout: float = 0.0):
        super().__init__()
        if width < 1 or blocks < 1:
            raise ValueError(f"width and blocks must be positive, got width={width}, blocks={blocks}")
        self.stem = nn.Conv2d(3, 16, 3, 1, 1, bias=False)
        groups, cin = [], 16
        for cout, stride in ((width, 1), (2 * width, 2), (4 * width, 2)):
            layers = [_Block(cin if i == 0 else cout, cout, stride if i == 0 else 1, dropout) for i in range(blocks)]
            groups.append(nn.Sequential(*layers))
            cin = cout
        self.group1, self.group2, self.group3 = groups
        self.final = nn.Sequential(nn.BatchNorm2d(4 * width), nn.ReLU())
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.head = nn.Linear(4 * width, num_outputs)
        self.dims = {"z1": width, "z2": 2 * width, "z3": 4 * width, "z4": 4 * width, "softmax": num_outputs}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.group3(self.group2(self.group1(self.stem(x))))
        return self.head(self.pool(self.final(h)))


def tap_features(f: WideResNet, x: torch.Tensor, layers: tuple[str, ...]) -> dict[str, torch.Tensor]:
    """The requested features of ``f`` on the batch ``x``, from one forward pass.

    Forward hooks on ``f.group1``, ``f.group2``, ``f.group3`` and ``f.pool`` record
    ``z1``, ``z2``, ``z3`` and ``z4``; ``softmax`` is :math:`\\operatorname{softmax}(f(x))`.
    """
    unknown = set(layers) - set(_HOOKED) - {"softmax"}
    if unknown:
        raise ValueError(f"unknown feature(s) {sorted(unknown)}; choose from {(*_HOOKED, 'softmax')}")
    captured: dict[str, torch.Tensor] = {}

    def hook(name):
        return lambda module, inputs, output: captured.__setitem__(name, output)

    handles = [getattr(f, _HOOKED[name]).register_forward_hook(hook(name)) for name in layers if name in _HOOKED]
    try:
        logits = f(x)
    finally:
        for handle in handles:
            handle.remove()
    captured["softmax"] = logits.softmax(1)
    return {name: captured[name] for name in layers}


class GNet(nn.Module):
    """g: the outlier head of the 2021 paper (Table 1), for any subset of the taps.

    Parameters
    ----------
    dims : dict
        Tap name → channels (spatial taps ``x``, ``z1``, ``z2``, ``z3``) or length
        (flat taps ``z4``, ``softmax``).
    size : int
        The side ``S`` of the level-0 maps (the input images and ``z1``).
    filters : int
        Output channels of every convolution (paper: 64).
    hidden : int
        Width of the hidden linear layer (paper: 1024).
    """

    def __init__(self, dims: dict[str, int], size: int, filters: int = 64, hidden: int = 1024):
        super().__init__()
        unknown = set(dims) - set(SPATIAL_TAPS) - set(FLAT_TAPS)
        if unknown or not dims:
            raise ValueError(f"g needs taps from {(*SPATIAL_TAPS, *FLAT_TAPS)}, got {sorted(dims)}")
        self.spatial = [name for name in dims if name in SPATIAL_TAPS]
        self.flat = [name for name in dims if name in FLAT_TAPS]
        self.joins: list[list[str]] = []
        stages, flat_dim = [], sum(dims[name] for name in self.flat)
        if self.spatial:
            first = min(SPATIAL_TAPS[name] for name in self.spatial)
            side = size
            for _ in range(first):
                side = (side + 1) // 2
            for level in range(first, 3):
                join = [name for name in self.spatial if SPATIAL_TAPS[name] == level]
                cin = (filters if level > first else 0) + sum(dims[name] for name in join)
                stages.append(
                    nn.Sequential(nn.Conv2d(cin, filters, 4, 1, 2), nn.BatchNorm2d(filters), nn.ReLU(), nn.MaxPool2d(2))
                )
                self.joins.append(join)
                side = (side + 1) // 2
            flat_dim += filters * side * side
        self.stages = nn.ModuleList(stages)
        self.mlp = nn.Sequential(nn.Linear(flat_dim, hidden), nn.BatchNorm1d(hidden), nn.ReLU(), nn.Linear(hidden, 1))

    def forward(self, features: dict[str, torch.Tensor]) -> torch.Tensor:
        """One outlier logit per sample (N)."""
        parts = []
        if self.stages:
            h = None
            for join, stage in zip(self.joins, self.stages):
                h = stage(torch.cat(([h] if h is not None else []) + [features[name] for name in join], 1))
            parts.append(h.flatten(1))
        parts += [features[name].flatten(1) for name in self.flat]
        return self.mlp(torch.cat(parts, 1)).squeeze(1)
