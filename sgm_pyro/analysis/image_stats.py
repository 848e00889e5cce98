"""Summary statistics of single-channel images and the exact 1-D Wasserstein distance.

These are the model-agnostic quantities behind the dSprites recovery test (SPEC section 7): a
shape's position is measured by the centre of mass of its pixels, its size by the lit area, and a
learned distribution is compared with the true one by the Wasserstein-1 distance of these
statistics.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

STATISTICS: tuple[str, ...] = ("com_x", "com_y", "area")
# Interpolating warps (bicubic especially) overshoot [-1, 1] a little; anything far beyond it is a
# scaling mistake (e.g. [0, 255] pixels), which we refuse rather than clip silently.
_RANGE_TOLERANCE = 0.5


def image_statistics(images: Tensor) -> dict[str, Tensor]:
    """Centre of mass and area of each image.

    Pixel weights are ``w = (x + 1) / 2`` clipped to ``[0, 1]`` (background -1 weighs 0, a lit
    pixel +1 weighs 1; the clip absorbs interpolation overshoot).

    Args:
        images: ``(N, 1, H, W)`` in ``[-1, 1]``, with ``H, W >= 2``.

    Returns:
        ``{"com_x", "com_y", "area"}``, each a float ``(N,)`` tensor on ``images``' device:
        ``com_x = Σ w·col / Σ w / (W - 1)`` and ``com_y = Σ w·row / Σ w / (H - 1)`` (fractions in
        ``[0, 1]``: 0 is the left / top pixel centre), and ``area = mean(w)``. A blank image
        (``Σ w = 0``) has no centre of mass: its ``com_x`` and ``com_y`` are NaN.
    """
    if not isinstance(images, Tensor):
        raise ValueError(f"images must be a torch.Tensor of shape (N, 1, H, W), got {type(images).__name__}")
    if images.dim() != 4 or images.shape[1] != 1:
        raise ValueError(f"images must have shape (N, 1, H, W) (one channel), got {tuple(images.shape)}")
    n, _, h, w = images.shape
    if n == 0:
        raise ValueError("images is empty (0 images)")
    if h < 2 or w < 2:
        raise ValueError(f"images must be at least 2x2 pixels to place a centre of mass, got {h}x{w}")
    if not images.is_floating_point():
        raise ValueError(f"images must be floating point in [-1, 1], got dtype {images.dtype}")
    if not torch.isfinite(images).all():
        raise ValueError("images contains NaN or inf pixels")
    lo, hi = images.min().item(), images.max().item()
    if lo < -1 - _RANGE_TOLERANCE or hi > 1 + _RANGE_TOLERANCE:
        raise ValueError(f"images must have values in [-1, 1], got range [{lo:.4g}, {hi:.4g}]")
    weights = ((images[:, 0].double() + 1.0) / 2.0).clamp(0.0, 1.0)  # (N, H, W); float64 sums
    mass = weights.sum(dim=(1, 2))
    rows = torch.arange(h, dtype=weights.dtype, device=weights.device)
    cols = torch.arange(w, dtype=weights.dtype, device=weights.device)
    safe = torch.where(mass > 0, mass, torch.ones_like(mass))
    nan = torch.full_like(mass, float("nan"))
    com_y = torch.where(mass > 0, (weights.sum(2) * rows).sum(1) / safe / (h - 1), nan)
    com_x = torch.where(mass > 0, (weights.sum(1) * cols).sum(1) / safe / (w - 1), nan)
    dtype = images.dtype
    return {"com_x": com_x.to(dtype), "com_y": com_y.to(dtype), "area": (mass / (h * w)).to(dtype)}


def as_sample(values: Tensor | np.ndarray | Sequence[float], name: str = "values") -> np.ndarray:
    """Flatten an empirical sample to a finite, non-empty float64 numpy vector (``ValueError`` otherwise)."""
    if isinstance(values, Tensor):
        values = values.detach().cpu().double().numpy()
    arr = np.asarray(values, dtype=np.float64).reshape(-1)
    if arr.size == 0:
        raise ValueError(f"{name} is empty: a sample needs at least one value")
    if not np.isfinite(arr).all():
        raise ValueError(f"{name} contains NaN or inf values ({int((~np.isfinite(arr)).sum())} of {arr.size})")
    return arr


def wasserstein_1d(a: Tensor | np.ndarray | Sequence[float], b: Tensor | np.ndarray | Sequence[float]) -> float:
    """Exact Wasserstein-1 distance between two empirical 1-D samples (sizes may differ).

    ``W1 = ∫ |F_a(t) - F_b(t)| dt``: both empirical CDFs are step functions that only change at
    sample values, so the integral is an exact finite sum over the merged, sorted support.

    Args:
        a, b: samples of any shape (flattened), finite and non-empty.

    Returns:
        The distance as a Python float (in the units of the samples).
    """
    a, b = np.sort(as_sample(a, "a")), np.sort(as_sample(b, "b"))
    support = np.sort(np.concatenate([a, b]))
    widths = np.diff(support)
    # F(t) on each interval [support[i], support[i+1]): the fraction of values <= support[i].
    cdf_a = np.searchsorted(a, support[:-1], side="right") / a.size
    cdf_b = np.searchsorted(b, support[:-1], side="right") / b.size
    return float(np.sum(np.abs(cdf_a - cdf_b) * widths))
