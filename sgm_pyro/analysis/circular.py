"""Statistics of angles: rotation is a coordinate on the circle, so its spread is circular."""

from __future__ import annotations

import math

import torch
from torch import Tensor

# R = |mean e^{iθ}| is 0 for a perfectly uniform sample, where the circular std is infinite; the
# floor keeps the result a finite (very large) number that JSON and plots can carry.
_MIN_RESULTANT = 1e-12


def wrap_degrees(angles_deg: Tensor) -> Tensor:
    """Angles in degrees wrapped to ``[-180, 180)``, same shape."""
    return torch.remainder(angles_deg + 180.0, 360.0) - 180.0


def circular_std_deg(angles_rad: Tensor, dim: int | None = None) -> Tensor:
    """Circular standard deviation ``sqrt(-2 ln R)`` in degrees, ``R = |mean_k e^{iθ_k}|``.

    Unlike the ordinary std it ignores the seam at ±π: angles clustered around π (half of them
    near -π) still have a small spread. For a tight cluster it equals the ordinary std.

    Args:
        angles_rad: angles in radians, any shape.
        dim: the dimension holding the sample (reduced); ``None`` pools every value.

    Returns:
        A float tensor: a scalar for ``dim=None``, else ``angles_rad`` without ``dim``.
    """
    angles = angles_rad.double()
    if dim is None:
        angles, dim = angles.reshape(-1), 0
    if angles.shape[dim] == 0:
        raise ValueError("circular_std_deg needs at least one angle")
    resultant = torch.hypot(torch.cos(angles).mean(dim), torch.sin(angles).mean(dim))
    std = (-2.0 * torch.log(resultant.clamp(_MIN_RESULTANT, 1.0))).clamp_min(0.0).sqrt()
    return std * (180.0 / math.pi)


def kuiper_uniform(angles_rad: Tensor) -> float:
    """Kuiper's distance ``V = max(F_n − F) + max(F − F_n)`` of a sample to the uniform law on the circle.

    A Kolmogorov–Smirnov-type distance that, unlike KS, does not depend on where the circle is cut,
    so a density that avoids one side scores the same wherever that side is. 0 for a perfectly
    even sample, 1 for a point mass; for ``n`` uniform draws it is about ``1.75 / sqrt(n)``.
    """
    a = torch.remainder(angles_rad.detach().double().reshape(-1), 2 * math.pi) / (2 * math.pi)
    n = a.numel()
    if n == 0:
        raise ValueError("kuiper_uniform needs at least one angle")
    a, _ = a.sort()
    i = torch.arange(1, n + 1, dtype=a.dtype, device=a.device)
    return float((i / n - a).max() + (a - (i - 1) / n).max())
