"""Colour transformations in HSV (SPEC section 2.2): hue shift, log-saturation, log-value."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from .base import Group

COLOR_NAMES = ("hue", "log_sat", "log_val")
# GalaxyMNIST superset of SPEC 2.4 (hue offset 0.5 is applied by the caller's offset argument).
_DEFAULT_BOUNDS = (0.5, 2.31, 0.51)


def _clip_straight_through(v: Tensor) -> Tensor:
    """Clip to [0, 1] in the forward pass, identity in the backward pass (SPEC 2.2)."""
    return v + (v.clamp(0.0, 1.0) - v).detach()


def rgb_to_hsv(rgb: Tensor, eps: float = 1e-8) -> Tensor:
    """``(N, 3, H, W)`` RGB in ``[0, 1]`` → HSV with every channel in ``[0, 1]``."""
    r, g, b = rgb.unbind(1)
    maxc, argmax = rgb.max(1)
    minc = rgb.min(1).values
    delta = maxc - minc
    safe_delta = torch.where(delta > eps, delta, torch.ones_like(delta))
    h = torch.where(argmax == 0, torch.remainder((g - b) / safe_delta, 6.0),
                    torch.where(argmax == 1, (b - r) / safe_delta + 2.0, (r - g) / safe_delta + 4.0))
    h = torch.where(delta > eps, h / 6.0, torch.zeros_like(h))
    s = torch.where(maxc > eps, delta / torch.where(maxc > eps, maxc, torch.ones_like(maxc)), torch.zeros_like(maxc))
    return torch.stack((h, s, maxc), 1)


def hsv_to_rgb(hsv: Tensor) -> Tensor:
    """Inverse of :func:`rgb_to_hsv`, written without branches so it is differentiable everywhere."""
    h, s, v = hsv.unbind(1)
    n = torch.tensor([5.0, 3.0, 1.0], dtype=hsv.dtype, device=hsv.device).view(1, 3, 1, 1)
    k = torch.remainder(n + 6.0 * h.unsqueeze(1), 6.0)
    ramp = torch.minimum(torch.minimum(k, 4.0 - k), torch.ones_like(k)).clamp_min(0.0)
    return v.unsqueeze(1) - (v * s).unsqueeze(1) * ramp


class ColorGroup(Group):
    """HSV colour changes ``η_c = (hue, log_sat, log_val)`` of RGB images in ``[-1, 1]``.

    ``h ← (h + hue) mod 1``, ``s ← clip(s·e^{log_sat})``, ``v ← clip(v·e^{log_val})``; the clips pass
    gradients straight through. Composition adds parameters, the inverse negates them (exact while
    nothing clips).
    """

    def __init__(self, bounds=None, offset=None, *, squash: bool = False) -> None:
        super().__init__(COLOR_NAMES, bounds, offset, squash=squash, default_bounds=_DEFAULT_BOUNDS)

    def config(self) -> dict:
        """Plain-data constructor arguments (for checkpoints and run folders)."""
        return {"name": "color", "bounds": self.bounds.tolist(), "offset": self.offset.tolist(),
                "squash": self.squash}

    def validate_images(self, x: Tensor, name: str = "x") -> None:
        super().validate_images(x, name)
        if x.shape[1] != 3:
            raise ValueError(f"{name} must have 3 (RGB) channels for colour transformations, got {x.shape[1]}")

    def apply_chain(self, x: Tensor, etas: Sequence[Tensor]) -> Tensor:
        """Apply the colour chain: the parameters add, and the image is converted once."""
        if len(etas) == 0:
            raise ValueError("apply_chain needs at least one eta batch")
        self._check(x, etas)
        return self.apply_color(x, torch.stack(list(etas)).sum(0).to(x.dtype))

    def apply_color(self, x: Tensor, eta: Tensor) -> Tensor:
        """Apply one colour change without validation (internal fast path)."""
        h, s, v = rgb_to_hsv((x + 1.0) / 2.0).unbind(1)
        hue, log_sat, log_val = (eta[:, i, None, None] for i in range(3))
        hsv = torch.stack((torch.remainder(h + hue, 1.0),
                           _clip_straight_through(s * log_sat.exp()),
                           _clip_straight_through(v * log_val.exp())), 1)
        return hsv_to_rgb(hsv) * 2.0 - 1.0

    def hue_shifts(self, x: Tensor, shifts: Tensor) -> Tensor:
        """``x`` with its hue shifted by each of ``shifts: (K,)``, shape ``(K, N, 3, H, W)``.

        The image is converted to HSV once for all ``K`` shifts (a hue shift is exact: nothing clips).
        """
        h, s, v = rgb_to_hsv((x + 1.0) / 2.0).unbind(1)
        k = shifts.shape[0]
        hue = torch.remainder(h[None] + shifts.to(x.dtype).view(k, 1, 1, 1), 1.0)
        hsv = torch.stack((hue, s.expand_as(hue), v.expand_as(hue)), 2).flatten(0, 1)
        return (hsv_to_rgb(hsv) * 2.0 - 1.0).view(k, *x.shape)
