"""A colour head that sees the image as a set of pixels, so it cannot mistake size for brightness.

A colour change acts on each pixel alone, and an affine warp only moves pixels about. A pose
network that reads the whole image can therefore explain a bigger shape (more bright pixels) as a
brighter one: on the recovery benchmark's colour task the reference MLP answered a pure change of
scale with about a third of the right log-scale and put the rest into its log-value, so the
prototypes kept most of the data's scale (docs/recovery.md, "Size or brightness"). This head reads ``log_sat`` and
``log_val`` (and a hue that no circle head reads) from per-pixel features pooled by a maximum and
by an attention-weighted mean over the pixels. Both poolings are blind to where a pixel is and to
how many pixels the shape covers, so the head is invariant to every warp up to interpolation,
and the affine coordinates are left to the network that sees the geometry.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from ..nn import MLP, downsample_to


class PixelSetColour(nn.Module):
    """``(N, C, H, W)`` images → ``(N, out_features)`` unconstrained colour coordinates.

    Args:
        channels: image channels ``C``.
        out_features: how many coordinates it outputs (zero-initialised: it starts at the identity).
        width: width of the per-pixel features.
        hidden: hidden widths of the network on the pooled features.
        input_size: average-pool the image to ``input_size x input_size`` first (``None``: full size).
    """

    def __init__(self, channels: int, out_features: int, *, width: int = 32, hidden: Sequence[int] = (64,),
                 input_size: int | None = 16) -> None:
        super().__init__()
        if out_features < 1 or width < 1:
            raise ValueError(f"out_features and width must be positive, got {out_features} and {width}")
        self.input_size = input_size
        self.pixel = nn.Sequential(nn.Linear(channels, width), nn.GELU(), nn.Linear(width, width), nn.GELU())
        self.score = nn.Linear(width, 1)
        self.head = MLP(2 * width, hidden, out_features, zero_last=True)

    def forward(self, x: Tensor) -> Tensor:
        pixels = downsample_to(x, self.input_size).flatten(2).transpose(1, 2)  # (N, H·W, C)
        f = self.pixel(pixels)
        weights = torch.softmax(self.score(f), dim=1)  # (N, H·W, 1): sums to 1 over the pixels
        pooled = torch.cat([f.amax(dim=1), (weights * f).sum(dim=1)], dim=1)
        return self.head(pooled)
