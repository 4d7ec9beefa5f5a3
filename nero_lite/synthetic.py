"""The embedded data set: synthetic endoscopy-like images, generated from a seed.

Every image is composed from a few layers, all computed with vectorised torch
operations on whole batches (no per-pixel Python loops):

* **mucosa** — a pink/red albedo with smooth low-frequency texture and darker,
  curvy, branching vessels (the zero-level lines of smooth random fields);
* **shading** — light fall-off from the endoscope's lamp and a dark lumen;
* **structure** — what makes a class (folds, an opening, a mucosal boundary);
* **specular highlights** — small saturated white spots on the wet surface;
* a **circular field of view** (black outside), a per-image camera white balance,
  sensor noise, and anti-aliasing by rendering at ``supersample`` times the size and
  average-pooling.

In-distribution classes (modelled on Kvasir's normal anatomical landmarks):

``folds``
    Colon-like: haustral fold rings around a dark, off-centre lumen.
``pylorus``
    Stomach-like: a round dark opening with a raised rim and radial folds.
``z-line``
    Oesophagus-like: a zig-zag boundary between red (gastric) mucosa near the lumen
    and pale (squamous) mucosa with palisade vessels further out.

Out-of-distribution classes (modelled on findings the classifier never sees). All
are drawn on top of a random in-distribution scene, so they share its mucosa,
vessels, lighting and lumen. Under a finding the class-defining structure is shown
at a random strength (``landmark``: a view centred on a finding shows less of the
landmark); the findings vary in size and contrast, and some are small and faint
on purpose:

``polyp`` (near)
    A shaded dome protruding from the mucosa, with a shadow rim and a highlight.
``ulcer`` (near)
    Irregular white-yellow fibrin patches with a red halo.
``inflamed`` (near)
    Redder, swollen mucosa: erythema spots, blurred vessels, granular texture.
``dyed`` (far)
    Mucosa stained deep blue (as after chromoendoscopy with indigo carmine): the
    shapes of an in-distribution scene, in colours none of them has.

Ground truth for explanations: :func:`ood_ground_truth` returns the OOD images of
:func:`generate` together with the mask of each local finding (the polyp's dome, the
ulcer's fibrin patches) and a counterfactual, the same image rendered without the
finding (same scene, highlights and noise). Computing them consumes no random draws,
so the images are the same with or without it.

The difficulty knobs live in :class:`SyntheticConfig`; :data:`DEFAULT_CONFIG` is the
setting the book uses. Measured with it at 64×64 (timm ResNet-18 from scratch, the
recipe of :mod:`nero_lite.training` with 8 or 10 epochs, two seeds, CPU): ID test
accuracy 99.7–100 %; MSP AUROC on the near-OOD classes pooled 0.76–0.81 (each class
0.70–0.82), on ``dyed`` 0.86–0.99. Generating the default set takes 12–40 s on two
cores, depending on how busy they are.
"""

from __future__ import annotations

import functools
import math
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from .progress import bar

__all__ = [
    "DEFAULT_CONFIG",
    "ID_CLASSES",
    "OOD_CLASSES",
    "OOD_KIND",
    "GroundTruth",
    "SyntheticConfig",
    "generate",
    "generate_class",
    "ood_ground_truth",
]

#: The in-distribution classes, in label order (normal anatomical landmarks).
ID_CLASSES = ("folds", "pylorus", "z-line")
#: The OOD classes (findings the classifier never sees during training).
OOD_CLASSES = ("polyp", "ulcer", "inflamed", "dyed")
#: ``"near"`` or ``"far"`` per OOD class.
OOD_KIND = {"polyp": "near", "ulcer": "near", "inflamed": "near", "dyed": "far"}

_CHUNK = 64  # images rendered at once: bounds memory, and small layers stay in the CPU cache

Range = tuple[float, float]


@dataclass(frozen=True)
class SyntheticConfig:
    """Counts and difficulty knobs of the synthetic set.

    Sizes are fractions of the image side; ranges are ``(low, high)`` of a uniform
    draw per image. Smaller, fainter anomalies make near-OOD detection harder.

    Attributes
    ----------
    n_train, n_test : int
        Images per in-distribution class in the training and test split.
    n_ood : int
        Images per OOD class.
    polyp_radius, polyp_contrast : (float, float)
        Radius of the polyp dome and the strength of its shading and colour (0 = invisible).
    ulcer_radius, ulcer_opacity : (float, float)
        Radius of a fibrin patch and how opaque it is.
    inflammation : (float, float)
        Strength of the redness, spots and vessel blur of ``inflamed`` (0 = none).
    inflamed_area : (float, float)
        Fraction of the mucosa that is inflamed.
    dye_coverage : (float, float)
        Fraction of the mucosa stained blue in ``dyed``.
    landmark : (float, float)
        Visibility of the in-distribution structure (folds, pyloric folds, red zone of
        the z-line) under the OOD findings: 1 as in the ID images, 0 plain mucosa.
    white_balance_green, white_balance_blue : (float, float)
        Per-image camera gain of green and blue relative to red, the same for every
        class: it keeps the absolute colour from being a clean class cue (without it a
        classifier calls anything bluish "z-line", with full confidence).
    noise : float
        Standard deviation of the sensor noise (intensities in [0, 1]).
    supersample : int
        Render at this multiple of the size, then average-pool (anti-aliasing).
    """

    n_train: int = 600
    n_test: int = 200
    n_ood: int = 200
    polyp_radius: Range = (0.04, 0.16)
    polyp_contrast: Range = (0.25, 1.0)
    ulcer_radius: Range = (0.03, 0.11)
    ulcer_opacity: Range = (0.3, 1.0)
    inflammation: Range = (0.25, 1.0)
    inflamed_area: Range = (0.3, 1.0)
    dye_coverage: Range = (0.75, 1.0)
    landmark: Range = (0.3, 1.0)
    white_balance_green: Range = (0.88, 1.12)
    white_balance_blue: Range = (0.75, 1.3)
    noise: float = 0.015
    supersample: int = 2


#: The difficulty the book's chapters use (see the module docstring for its measured effect).
DEFAULT_CONFIG = SyntheticConfig()


# --------------------------------------------------------------------------- helpers
class _Draw:
    """Seeded random draws of per-image parameters and smooth random fields."""

    def __init__(self, seed: int, n: int, side: int):
        self.gen = torch.Generator().manual_seed(seed)
        self.n, self.side = n, side

    def uniform(self, low: float, high: float, channels: int = 1) -> torch.Tensor:
        """``n×channels×1×1`` uniform draws in ``[low, high)``."""
        return low + (high - low) * torch.rand(self.n, channels, 1, 1, generator=self.gen)

    def field(self, cells: int, channels: int = 1) -> torch.Tensor:
        """Smooth Gaussian random field, ``n×channels×side×side``, about zero mean and unit std.

        Standard normal noise on a ``cells×cells`` lattice, upsampled bicubically to
        four pixels per cell, then bilinearly to the full side (the std shrinks to
        about 0.87, undone here): ``cells`` sets the feature size (about
        ``side / cells`` pixels).
        """
        lattice = torch.randn(self.n, channels, cells, cells, generator=self.gen)
        middle = min(self.side, 4 * cells)
        smooth = F.interpolate(lattice, size=(middle, middle), mode="bicubic", align_corners=False)
        if middle < self.side:
            smooth = F.interpolate(smooth, size=(self.side, self.side), mode="bilinear", align_corners=False)
        return smooth / 0.87

    def fractal(self, cells: tuple[int, ...], channels: int = 1) -> torch.Tensor:
        """Sum of :meth:`field` octaves with halving amplitude, about unit std."""
        total = sum(0.5**k * self.field(c, channels) for k, c in enumerate(cells))
        return total / math.sqrt(sum(0.25**k for k in range(len(cells))))

    def point(self, radius: float) -> torch.Tensor:
        """``n×2×1×1`` points (y, x) uniform in a disc of this radius around the centre."""
        angle = self.uniform(0.0, 2 * math.pi)
        dist = radius * self.uniform(0.0, 1.0).sqrt()
        return torch.cat([dist * torch.sin(angle), dist * torch.cos(angle)], dim=1)

    def choice(self, k: int) -> torch.Tensor:
        """``n`` integers in ``[0, k)``."""
        return torch.randint(k, (self.n,), generator=self.gen)


def _grid(side: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Pixel-centre coordinates ``y, x`` in ``[-1, 1]``, each ``1×1×side×side``."""
    t = (torch.arange(side, dtype=torch.float32) + 0.5) / side * 2 - 1
    y, x = torch.meshgrid(t, t, indexing="ij")
    return y[None, None], x[None, None]


def _polar(side: int, centre: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Distance and angle of every pixel from ``centre`` (``n×2×1×1``, y then x)."""
    y, x = _grid(side)
    dy, dx = y - centre[:, :1], x - centre[:, 1:]
    return torch.sqrt(dy**2 + dx**2), torch.atan2(dy, dx)


def _lines(field: torch.Tensor, width: float) -> torch.Tensor:
    """Thin curvy lines along the zero level of a smooth field (1 on the line, 0 away)."""
    return torch.exp(-((field / width) ** 2))


@dataclass
class _Scene:
    """The layers of a batch of images before rendering (sizes ``n×c×side×side``)."""

    colour: torch.Tensor  # albedo, 3 channels in [0, 1]
    shade: torch.Tensor  # lighting multiplier, 1 channel
    gloss: torch.Tensor  # where the surface is wet and shiny (specular spots appear there)
    lumen_centre: torch.Tensor  # n×2×1×1
    lumen_radius: torch.Tensor  # n×1×1×1
    finding: torch.Tensor | None = None  # n×1×side×side, 1 where a local finding is (OOD scenes only)


# --------------------------------------------------------------------------- mucosa
def _mucosa(draw: _Draw, base: tuple[float, float, float], vessels: torch.Tensor) -> torch.Tensor:
    """Albedo of mucosa: a jittered base colour, smooth texture and dark branching vessels."""
    colour = torch.tensor(base).view(1, 3, 1, 1) * (1 + draw.uniform(-0.08, 0.08, 3))
    texture = draw.fractal((3, 6, 12))
    tint = draw.fractal((4, 8))
    colour = colour * (1 + 0.07 * texture) * torch.cat([torch.ones_like(tint), 1 + 0.06 * tint, 1 + 0.05 * tint], 1)
    width = 0.1 * (0.6 + 0.4 * torch.sigmoid(2 * draw.field(4)))
    trunk_field, branch_field, twig_field = draw.field(5), draw.field(10), draw.field(20)
    trunks = _lines(trunk_field, width)
    branches = _lines(branch_field, 1.3 * width) * _lines(trunk_field, 8 * width)
    twigs = _lines(twig_field, 2.2 * width) * _lines(branch_field, 8 * width)
    network = torch.maximum(trunks, torch.maximum(0.9 * branches, 0.7 * twigs))
    network = network * torch.sigmoid(3 * draw.field(3) + 1.5) * vessels
    return colour * (1 - network * torch.tensor([0.25, 0.45, 0.35]).view(1, 3, 1, 1))


def _lighting(draw: _Draw, centre: torch.Tensor, radius: torch.Tensor, depth: Range) -> torch.Tensor:
    """Lamp fall-off toward the edge plus a dark lumen of the given radius at ``centre``."""
    lamp = draw.point(0.3)
    dist_lamp, _ = _polar(draw.side, lamp)
    falloff = 1 - draw.uniform(0.35, 0.6) * dist_lamp**2
    dist, _ = _polar(draw.side, centre)
    wobble = 1 + 0.15 * draw.field(4)
    dark = draw.uniform(*depth) * torch.exp(-((dist * wobble / radius) ** 2))
    return (falloff * (1 - dark)).clamp_min(0.02)


# --------------------------------------------------------------------------- ID scenes
def _folds(draw: _Draw, vessels: torch.Tensor, landmark: torch.Tensor) -> _Scene:
    """Colon-like: haustral folds as rings around an off-centre dark lumen."""
    centre = draw.point(0.5)
    radius = draw.uniform(0.12, 0.28)
    colour = _mucosa(draw, (0.86, 0.50, 0.44), vessels)
    dist, angle = _polar(draw.side, centre)
    warp = 1 + 0.2 * draw.field(3) + draw.uniform(0, 0.15) * torch.cos(3 * angle + draw.uniform(0, 2 * math.pi))
    phase = draw.uniform(8.0, 12.0) * torch.log(dist * warp + 0.1) + draw.uniform(0, 2 * math.pi)
    wave = torch.sin(phase + 0.4 * torch.sin(phase))
    strength = draw.uniform(0.45, 0.8) * torch.sigmoid(2.5 * draw.field(3) + 0.8) * landmark
    valley = ((1 - wave) / 2) ** 3
    ridge = ((1 + wave) / 2) ** 8
    shade = _lighting(draw, centre, radius, (0.85, 0.97)) * (1 - strength * valley + 0.2 * strength * ridge)
    return _Scene(colour, shade, 0.3 + 0.7 * ridge * strength, centre, radius)


def _pylorus(draw: _Draw, vessels: torch.Tensor, landmark: torch.Tensor) -> _Scene:
    """Stomach-like: a round dark opening with a raised rim and radial folds."""
    centre = draw.point(0.35)
    radius = draw.uniform(0.06, 0.14)
    colour = _mucosa(draw, (0.90, 0.56, 0.42), 0.35 * vessels)
    dist, angle = _polar(draw.side, centre)
    folds = draw.choice(5).float().view(-1, 1, 1, 1) + 5
    wave = torch.sin(folds * angle + 1.5 * draw.field(3) + draw.uniform(0, 2 * math.pi))
    reach = torch.exp(-(dist - radius).clamp_min(0) / draw.uniform(0.25, 0.5))
    strength = draw.uniform(0.3, 0.6) * landmark
    rim = torch.exp(-(((dist - 1.6 * radius) / (0.6 * radius)) ** 2)) * landmark
    opening = torch.sigmoid((radius - dist * (1 + 0.1 * draw.field(5))) / 0.015)
    shade = _lighting(draw, centre, 3 * radius, (0.2, 0.4))
    shade = shade * (1 - strength * reach * ((1 - wave) / 2) ** 3 + 0.25 * rim) * (1 - 0.93 * opening)
    gloss = 0.5 + 0.5 * rim
    return _Scene(colour, shade, gloss, centre, radius)


def _z_line(draw: _Draw, vessels: torch.Tensor, landmark: torch.Tensor) -> _Scene:
    """Oesophagus-like: red mucosa around the lumen, a zig-zag border, pale mucosa outside."""
    centre = draw.point(0.3)
    radius = draw.uniform(0.10, 0.2)
    dist, angle = _polar(draw.side, centre)
    border = draw.uniform(0.35, 0.6)
    harmonics = (3, 5, 7, 9, 13)
    zigzag = sum(draw.uniform(0.0, 0.09) * torch.sin(k * angle + draw.uniform(0, 2 * math.pi)) for k in harmonics)
    inside = torch.sigmoid((border * (1 + zigzag + 0.15 * draw.field(6)) - dist) / 0.04) * landmark
    red = _mucosa(draw, (0.78, 0.30, 0.28), 0.4 * vessels)
    spokes = draw.choice(16).float().view(-1, 1, 1, 1) + 20
    palisade = _lines(torch.sin(spokes * angle + 2 * draw.field(4)), 0.15) * torch.sigmoid(2 * draw.field(3))
    pale = _mucosa(draw, (0.92, 0.72, 0.66), 0.5 * vessels)
    pale = pale * (1 - 0.2 * palisade * vessels * landmark * torch.tensor([0.5, 1.0, 0.9]).view(1, 3, 1, 1))
    colour = inside * red + (1 - inside) * pale
    shade = _lighting(draw, centre, radius, (0.85, 0.97))
    return _Scene(colour, shade, 0.4 + 0.3 * (1 - inside), centre, radius)


_SCENES = {"folds": _folds, "pylorus": _pylorus, "z-line": _z_line}


def _background(draw: _Draw, landmark: Range) -> _Scene:
    """A random in-distribution scene per image (the canvas of the OOD findings).

    ``landmark`` is the range of the visibility of the class-defining structure
    (folds, radial folds and rim, red zone): 1 as in the ID classes, 0 plain mucosa.
    """
    kinds = draw.choice(len(ID_CLASSES))
    parts = []
    for k, name in enumerate(ID_CLASSES):
        index = torch.nonzero(kinds == k).flatten()
        sub = _Draw(int(torch.randint(2**62, (1,), generator=draw.gen)), len(index), draw.side)
        scene = _SCENES[name](sub, sub.uniform(0.6, 1.0), sub.uniform(*landmark)) if len(index) else None
        parts.append((index, scene))
    layers = {}
    for field in ("colour", "shade", "gloss", "lumen_centre", "lumen_radius"):
        template = next(getattr(scene, field) for _, scene in parts if scene is not None)
        out = torch.empty((draw.n, *template.shape[1:]))
        for index, scene in parts:
            if scene is not None:
                out[index] = getattr(scene, field)
        layers[field] = out
    return _Scene(**layers)


# --------------------------------------------------------------------------- OOD findings
def _place(draw: _Draw, scene: _Scene, radius: torch.Tensor) -> torch.Tensor:
    """Centres for a finding of this radius: inside the field of view, off the lumen."""
    centre = draw.point(0.75)
    away = centre - scene.lumen_centre
    dist = away.norm(dim=1, keepdim=True).clamp_min(1e-3)
    needed = scene.lumen_radius + 1.1 * radius
    centre = torch.where(dist < needed, scene.lumen_centre + away / dist * needed, centre)
    limit = (0.92 - radius).clamp_min(0.1)
    norm = centre.norm(dim=1, keepdim=True).clamp_min(1e-3)
    return centre * torch.clamp(limit / norm, max=1.0)


def _polyp(draw: _Draw, scene: _Scene, config: SyntheticConfig) -> _Scene:
    """A shaded dome with a shadow rim, a slightly different surface and a wet top."""
    radius = 2 * draw.uniform(*config.polyp_radius)
    contrast = draw.uniform(*config.polyp_contrast)
    centre = _place(draw, scene, radius)
    dist, angle = _polar(draw.side, centre)
    inside = torch.sigmoid((radius - dist) / (0.08 * radius + 0.01))
    height = torch.sqrt((1 - (dist / radius) ** 2).clamp_min(0))
    light = draw.uniform(-0.6, 0.6, 2)
    slope = dist / radius
    normal_dot = (slope * (torch.sin(angle) * light[:, :1] + torch.cos(angle) * light[:, 1:]) + height)
    normal_dot = normal_dot / torch.sqrt(1 + (light**2).sum(1, keepdim=True))
    shade = scene.shade * (1 + contrast * inside * (0.9 * normal_dot - 0.45))
    rim = torch.exp(-(((dist - radius) / (0.35 * radius)) ** 2)) * (dist > radius).float()
    shade = shade * (1 - 0.45 * contrast * rim)
    surface = 1 + 0.1 * draw.field(max(4, draw.side // 6)) + draw.uniform(-0.1, 0.1, 3)
    tone = torch.tensor([1.04, 0.86, 0.92]).view(1, 3, 1, 1) * surface
    colour = scene.colour * (1 + 0.8 * contrast * inside * (tone - 1))
    gloss = torch.maximum(scene.gloss, inside * height**4 * contrast)
    return _Scene(colour, shade, gloss, scene.lumen_centre, scene.lumen_radius, (dist < radius).float())


def _ulcer(draw: _Draw, scene: _Scene, config: SyntheticConfig) -> _Scene:
    """One or two irregular white-yellow fibrin patches with a red halo."""
    colour, shade = scene.colour, scene.shade
    finding = torch.zeros_like(shade)
    for count in range(2):
        radius = 2 * draw.uniform(*config.ulcer_radius)
        opacity = draw.uniform(*config.ulcer_opacity) * (draw.uniform(0, 1) < (1.0, 0.4)[count]).float()
        centre = _place(draw, scene, radius)
        dist, _ = _polar(draw.side, centre)
        edge = radius * (1 + 0.35 * draw.field(max(6, draw.side // 10)))
        patch = torch.sigmoid((edge - dist) / (0.01 + 0.05 * radius)) * opacity
        fibrin = torch.tensor([1.0, 0.94, 0.80]).view(1, 3, 1, 1) * (1 + 0.06 * draw.fractal((8, 16), 3))
        halo = torch.exp(-(((dist - 1.3 * radius) / (0.6 * radius)) ** 2)) * opacity
        colour = colour * (1 - 0.4 * halo * torch.tensor([0.0, 1.0, 0.8]).view(1, 3, 1, 1))
        colour = colour * (1 - patch) + fibrin * patch
        shade = shade + patch * (1.0 - shade) * 0.5
        finding = torch.maximum(finding, ((edge > dist) & (opacity > 0)).float())
    return _Scene(colour, shade, scene.gloss, scene.lumen_centre, scene.lumen_radius, finding)


def _blur(image: torch.Tensor, passes: int = 2) -> torch.Tensor:
    """Box blur repeated ``passes`` times (close to a Gaussian), size kept."""
    for _ in range(passes):
        image = F.avg_pool2d(image, 5, stride=1, padding=2, count_include_pad=False)
    return image


def _inflamed(draw: _Draw, scene: _Scene, config: SyntheticConfig) -> _Scene:
    """Patchy inflammation: redder, blurred vessels, erythema spots, granular and glossy."""
    strength = draw.uniform(*config.inflammation)
    area = draw.uniform(*config.inflamed_area)
    region = torch.sigmoid(3 * (draw.field(3) + torch.special.ndtri(area))) * strength
    colour = scene.colour + region * (_blur(scene.colour) - scene.colour)
    colour = colour * (1 - region * torch.tensor([-0.05, 0.35, 0.28]).view(1, 3, 1, 1))
    spots = (draw.field(max(8, draw.side // 5)) - 2.1).clamp(0, 1) * 2
    colour = colour * (1 - (spots * region).clamp(max=1) * torch.tensor([0.15, 0.6, 0.5]).view(1, 3, 1, 1))
    colour = colour * (1 + 0.08 * region * draw.field(max(8, draw.side // 3)))
    gloss = (scene.gloss + 0.4 * region).clamp(max=1)
    return _Scene(colour, scene.shade, gloss, scene.lumen_centre, scene.lumen_radius, torch.zeros_like(scene.shade))


def _dyed(draw: _Draw, scene: _Scene, config: SyntheticConfig) -> _Scene:
    """Mucosa stained deep blue, the dye pooling in the pits, as after indigo-carmine spraying.

    The scene's shape (lumen, folds, lighting) stays; its colours leave the range of
    every in-distribution class — a far-OOD shift.
    """
    coverage = draw.uniform(*config.dye_coverage)
    stained = torch.sigmoid(4 * (draw.field(3) + torch.special.ndtri(coverage)))
    pits = torch.sigmoid(3 * draw.field(max(8, draw.side // 5)))
    brightness = 0.6 + 0.4 * scene.colour.mean(1, keepdim=True) / 0.6
    blue = torch.tensor([0.18, 0.33, 0.78]).view(1, 3, 1, 1) * (1 + draw.uniform(-0.1, 0.1, 3)) * brightness
    colour = scene.colour * (1 - stained) + blue * (0.6 + 0.4 * pits) * stained
    return _Scene(colour, scene.shade, scene.gloss, scene.lumen_centre, scene.lumen_radius, torch.zeros_like(scene.shade))


_FINDINGS = {"polyp": _polyp, "ulcer": _ulcer, "inflamed": _inflamed, "dyed": _dyed}


# --------------------------------------------------------------------------- rendering
def _specular(draw: _Draw, gloss: torch.Tensor) -> torch.Tensor:
    """Small saturated highlights: a few round spots and specks, where the surface is glossy."""
    y, x = _grid(draw.side)
    spots = torch.zeros_like(gloss)
    for _ in range(8):
        centre = draw.point(0.85)
        size = draw.uniform(0.015, 0.045) * (draw.uniform(0, 1) < 0.6).float()
        squash = draw.uniform(0.4, 1.0)
        dist2 = ((y - centre[:, :1]) / squash) ** 2 + (x - centre[:, 1:]) ** 2
        spots = torch.maximum(spots, torch.exp(-dist2 / (size**2 + 1e-8)))
    specks = (draw.field(max(8, draw.side // 4)) - 2.7).clamp(0, 1) * 3
    return ((2 * spots + specks) * gloss).clamp(0, 1)


def _render(draw: _Draw, scene: _Scene, size: int, config: SyntheticConfig) -> torch.Tensor:
    """Compose the layers, cut the circular field of view, downsample, white-balance, add noise → uint8."""
    highlight = _specular(draw, scene.gloss)
    rgb = scene.colour.clamp(0, 1) * scene.shade
    rgb = rgb * (1 - highlight) + highlight
    dist, _ = _polar(draw.side, torch.zeros(1, 2, 1, 1))
    rgb = rgb * torch.sigmoid((draw.uniform(0.97, 1.04) - dist) / 0.01)
    rgb = F.avg_pool2d(rgb, config.supersample) if config.supersample > 1 else rgb
    green, blue = draw.uniform(*config.white_balance_green), draw.uniform(*config.white_balance_blue)
    rgb = rgb * torch.cat([torch.ones_like(green), green, blue], 1)
    rgb = rgb + config.noise * torch.randn(rgb.shape, generator=draw.gen)
    return (rgb.clamp(0, 1) * 255).round().to(torch.uint8)


# --------------------------------------------------------------------------- public API
@contextmanager
def _one_thread():
    """Run torch on one CPU thread inside the block (restored after).

    The generator is a long chain of small element-wise operations on cache-sized
    chunks: one thread is about as fast as two on an idle machine and several times
    faster on a busy one, where threads wait for each other.
    """
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _stream_seed(seed: int, name: str, stream: int, chunk: int) -> int:
    """An independent 63-bit seed for one chunk of one class of one split."""
    key = [seed, (*ID_CLASSES, *OOD_CLASSES).index(name), stream, chunk]
    return int(np.random.SeedSequence(key).generate_state(1, dtype=np.uint64)[0] >> np.uint64(1))


@dataclass
class GroundTruth:
    """OOD images with where their finding is, and the same images rendered without it.

    Attributes
    ----------
    images : Tensor
        uint8, ``N×3×H×W``: exactly the images :func:`generate_class` renders.
    masks : Tensor
        bool, ``N×H×W``: the pixels of the local finding (the polyp's dome, the ulcer's
        fibrin patches); all ``False`` for the global findings (``inflamed``, ``dyed``),
        which change the whole mucosa.
    counterfactuals : Tensor
        uint8, ``N×3×H×W``: the same scene, lighting, highlights and sensor noise without
        the finding: what each image would have been had it been in-distribution.
    labels : Tensor
        int64, ``N``: indices into :data:`OOD_CLASSES`.
    """

    images: torch.Tensor
    masks: torch.Tensor
    counterfactuals: torch.Tensor
    labels: torch.Tensor


def _render_class(
    name: str, n: int, size: int, seed: int, config: SyntheticConfig, stream: int, ground_truth: bool
) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    """Images of one class and, with ``ground_truth`` (OOD classes only), their finding masks and counterfactuals.

    The counterfactual renders the finding's canvas scene from the same state of the
    random generator as the image itself, so both share every later draw (highlights,
    field of view, white balance, noise); the images are the same with or without it.
    """
    if name not in ID_CLASSES and name not in OOD_CLASSES:
        raise ValueError(f"unknown synthetic class {name!r}; choose from {ID_CLASSES + OOD_CLASSES}")
    if ground_truth and name not in OOD_CLASSES:
        raise ValueError(f"ground truth exists for the OOD classes {OOD_CLASSES} only, got {name!r}")
    side = size * config.supersample
    images, masks, counterfactuals = [], [], []
    with _one_thread():
        for chunk, start in enumerate(range(0, n, _CHUNK)):
            draw = _Draw(_stream_seed(seed, name, stream, chunk), min(_CHUNK, n - start), side)
            if name in _SCENES:
                scene = _SCENES[name](draw, draw.uniform(0.6, 1.0), torch.ones(draw.n, 1, 1, 1))
                images.append(_render(draw, scene, size, config))
                continue
            canvas = _background(draw, config.landmark)
            scene = _FINDINGS[name](draw, canvas, config)
            state = draw.gen.get_state()
            images.append(_render(draw, scene, size, config))
            if ground_truth:
                draw.gen.set_state(state)
                counterfactuals.append(_render(draw, canvas, size, config))
                pooled = F.avg_pool2d(scene.finding, config.supersample) if config.supersample > 1 else scene.finding
                masks.append(pooled[:, 0] >= 0.5)
    if not images:
        empty = torch.empty(0, 3, size, size, dtype=torch.uint8)
        return empty, (torch.empty(0, size, size, dtype=torch.bool) if ground_truth else None), (empty if ground_truth else None)
    if not ground_truth:
        return torch.cat(images), None, None
    return torch.cat(images), torch.cat(masks), torch.cat(counterfactuals)


def generate_class(
    name: str, n: int, *, size: int = 64, seed: int = 0, config: SyntheticConfig = DEFAULT_CONFIG, stream: int = 0
) -> torch.Tensor:
    """Render ``n`` images of one class.

    Parameters
    ----------
    name : str
        One of :data:`ID_CLASSES` or :data:`OOD_CLASSES`.
    n : int
        Number of images.
    size : int
        Side of the square images in pixels.
    seed, stream : int
        The images are a deterministic function of ``(seed, name, stream, n, size, config)``;
        different streams give independent images (used for the train and test splits).
    config : SyntheticConfig
        Difficulty knobs.

    Returns
    -------
    torch.Tensor
        uint8 images, ``n×3×size×size``.
    """
    return _render_class(name, n, size, seed, config, stream, ground_truth=False)[0]


def ood_ground_truth(config: SyntheticConfig = DEFAULT_CONFIG, *, size: int = 64, seed: int = 0) -> GroundTruth:
    """The OOD test split of :func:`generate` (same images, same order) with finding masks and counterfactuals.

    Ground truth for explanations: a map that explains why an image is OOD should put
    its relevance on ``masks`` (polyps and ulcers), and replacing the pixels it points
    at by those of ``counterfactuals`` should bring the image back towards
    in-distribution.
    """
    return GroundTruth(*(tensor.clone() for tensor in _rendered_ground_truth(config, size, seed)))


@functools.lru_cache(maxsize=2)
def _rendered_ground_truth(config: SyntheticConfig, size: int, seed: int) -> tuple[torch.Tensor, ...]:
    """The tensors of :func:`ood_ground_truth`, rendered once per process and arguments (seconds each time
    otherwise); callers get copies, so that changing one leaves the next call's whole."""
    parts = [
        _render_class(name, config.n_ood, size, seed, config, stream=2, ground_truth=True) for name in OOD_CLASSES
    ]
    images, masks, counterfactuals = (torch.cat(part) for part in zip(*parts))
    labels = torch.arange(len(OOD_CLASSES)).repeat_interleave(config.n_ood)
    return images, masks, counterfactuals, labels


def generate(
    config: SyntheticConfig = DEFAULT_CONFIG, *, size: int = 64, seed: int = 0, progress: bool = False
) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Render the whole synthetic set: ID train, ID test and OOD test.

    Parameters
    ----------
    config : SyntheticConfig
        Counts and difficulty knobs.
    size : int
        Side of the square images in pixels.
    seed : int
        Everything is a deterministic function of the seed (and the other arguments).
    progress : bool
        Show a progress bar over the classes.

    Returns
    -------
    dict
        ``{"train": (images, labels), "test": ..., "ood": ...}``; images are uint8
        ``N×3×size×size``; labels index :data:`ID_CLASSES` (train, test) or
        :data:`OOD_CLASSES` (ood).
    """
    plan = {
        "train": (ID_CLASSES, config.n_train, 0),
        "test": (ID_CLASSES, config.n_test, 1),
        "ood": (OOD_CLASSES, config.n_ood, 2),
    }
    jobs = [(split, name) for split, (classes, _, _) in plan.items() for name in classes]
    images: dict[str, list[torch.Tensor]] = {split: [] for split in plan}
    for split, name in bar(jobs, desc="generating synthetic images", show=progress):
        _, count, stream = plan[split]
        images[split].append(generate_class(name, count, size=size, seed=seed, config=config, stream=stream))
    return {
        split: (torch.cat(images[split]), torch.arange(len(classes)).repeat_interleave(count))
        for split, (classes, count, _) in plan.items()
    }
