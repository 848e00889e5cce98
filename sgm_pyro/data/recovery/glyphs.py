"""Canonical prototypes of the recovery tasks: rectangle glyphs and RGB dSprites shapes.

Every prototype is centred on the image centre (the origin of the affine group's normalised
coordinates), so the group's rotations and scalings act about it, and it stays inside the disc of
radius 0.8 (normalised units) so that no task's transformation pushes content out of the frame.
Glyphs are drawn at 4x the resolution and average-pooled, so their edges are anti-aliased.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from ..dsprites import render_dsprites

SUPERSAMPLE = 4
# Rectangles (x0, x1, y0, y1) in normalised coordinates (x right, y down, [-1, 1] across the image).
# Neither glyph has a rotational symmetry, so every rotation of it is a different image.
GLYPHS: dict[str, tuple[tuple[float, float, float, float], ...]] = {
    # "F": a stem, a full top bar and a shorter middle bar.
    "F": ((-0.45, -0.15, -0.6, 0.6), (-0.15, 0.45, -0.6, -0.3), (-0.15, 0.2, -0.1, 0.15)),
    # "L": a stem and a foot.
    "L": ((-0.4, -0.1, -0.6, 0.6), (-0.1, 0.45, 0.3, 0.6)),
}


def glyph(name: str, size: int = 32) -> Tensor:
    """The glyph ``name`` (a key of :data:`GLYPHS`) as a ``(1, 1, size, size)`` image in ``[-1, 1]``."""
    if name not in GLYPHS:
        raise ValueError(f"unknown glyph {name!r}; expected one of {sorted(GLYPHS)}")
    fine = size * SUPERSAMPLE
    centres = (torch.arange(fine, dtype=torch.float32) + 0.5) / fine * 2.0 - 1.0
    y, x = torch.meshgrid(centres, centres, indexing="ij")
    inside = torch.zeros(fine, fine, dtype=torch.bool)
    for x0, x1, y0, y1 in GLYPHS[name]:
        inside |= (x >= x0) & (x <= x1) & (y >= y0) & (y <= y1)
    # Centre the glyph on its centroid so rotations turn it about its own middle.
    cy, cx = y[inside].mean(), x[inside].mean()
    step = 2.0 / fine
    inside = torch.roll(inside, shifts=(-int(round(float(cy) / step)), -int(round(float(cx) / step))), dims=(0, 1))
    image = F.avg_pool2d(inside.float()[None, None], SUPERSAMPLE)
    return image * 2.0 - 1.0


def dsprite_prototype(shape: int, size: int = 32, scale: float = 0.85) -> Tensor:
    """A dSprites shape (0 square, 1 ellipse, 2 heart) upright at the centre, ``(1, 1, size, size)`` in ``[-1, 1]``.

    Rendered by :func:`~sgm_pyro.data.dsprites.render_dsprites` at 64x64 and pooled to ``size``
    (``size`` must divide 64).
    """
    if 64 % size != 0:
        raise ValueError(f"size must divide 64, got {size}")
    latents = {"shape": torch.tensor([shape]), "scale": torch.tensor([scale]),
               "orientation": torch.zeros(1), "pos_x": torch.full((1,), 0.5), "pos_y": torch.full((1,), 0.5)}
    # pos 0.5 centres the shape at the frame centre, the origin of the group's rotations.
    return F.avg_pool2d(render_dsprites(latents), 64 // size)


def coloured(gray: Tensor, saturation: float, value: float) -> Tensor:
    """Paint a ``(N, 1, H, W)`` shape in ``[-1, 1]`` red with HSV ``(0, saturation, value)`` on black: ``(N, 3, H, W)``."""
    alpha = (gray + 1.0) / 2.0                       # coverage in [0, 1]
    red = torch.tensor([value, value * (1 - saturation), value * (1 - saturation)]).view(1, 3, 1, 1)
    return (alpha * red) * 2.0 - 1.0
