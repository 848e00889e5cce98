"""The rotated-MNIST protocol (SPEC section 7): one fixed random rotation per image."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from ..groups import AffineGroup

# Warp this many images at a time so the sampling grid of 60k images never sits in memory at once.
_CHUNK = 8192


def rotate_fixed(images: Tensor, max_degrees: float, seed: int = 0, *,
                 interpolation: str = "bilinear") -> tuple[Tensor, Tensor]:
    """Rotate each image once by its own angle drawn from U(−θ, θ), θ = ``max_degrees``.

    The angles come from a CPU generator seeded with ``seed``, so the same seed gives the same
    data set on every device. Rotation is about the image centre with the ``rot`` generator of
    :class:`~sgm_pyro.groups.AffineGroup` (positive = counter-clockwise as displayed); pixels
    that come from outside the frame are filled with −1 (background). One interpolation per image.

    Args:
        images: ``(N, C, H, W)`` float in [-1, 1].
        max_degrees: θ in [0, 180] (the paper uses 15, 90 and 180).
        seed: seed of the angle draw.
        interpolation: ``"bilinear"`` (default), ``"bicubic"`` or ``"nearest"``; results are
            clamped to [-1, 1] because bicubic can overshoot.

    Returns:
        ``rotated`` with the shape, dtype and device of ``images``, and ``angles`` ``(N,)`` in
        radians on the same device.
    """
    if not isinstance(images, Tensor) or images.dim() != 4 or images.shape[0] == 0:
        got = tuple(images.shape) if isinstance(images, Tensor) else type(images).__name__
        raise ValueError(f"images must be a non-empty (N, C, H, W) tensor, got {got}")
    if not images.is_floating_point():
        raise ValueError(f"images must be floating point in [-1, 1], got dtype {images.dtype}")
    if not 0 <= max_degrees <= 180:
        raise ValueError(f"max_degrees must be in [0, 180], got {max_degrees}")
    n = images.shape[0]
    generator = torch.Generator().manual_seed(seed)
    theta = math.radians(max_degrees)
    angles = ((2 * torch.rand(n, generator=generator, dtype=torch.float64) - 1) * theta).to(images.dtype)
    angles = angles.to(images.device)
    group = AffineGroup(bounds=(math.pi,), generators=("rot",), interpolation=interpolation).to(images.device)
    rotated = torch.cat([group.apply(images[i:i + _CHUNK], angles[i:i + _CHUNK, None])
                         for i in range(0, n, _CHUNK)])
    return rotated.clamp_(-1.0, 1.0), angles
