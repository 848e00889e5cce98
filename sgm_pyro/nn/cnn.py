"""A small convolutional feature extractor: the fast alternative to the reference pose MLP."""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn


class ChannelNorm(nn.Module):
    """LayerNorm over the channel dimension of ``(N, C, H, W)`` maps."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(channels)

    def forward(self, x: Tensor) -> Tensor:
        return self.norm(x.movedim(1, -1)).movedim(-1, 1)


class ConvFeatures(nn.Sequential):
    """Stride-2 3x3 convolutions with GELU and channel LayerNorm, flattened at the end.

    ``(N, C, H, W) → (N, out_features)``; ``out_features`` is computed from ``image_shape``.
    """

    def __init__(self, image_shape: Sequence[int], channels: Sequence[int] = (16, 32, 64, 64)) -> None:
        c, h, w = image_shape
        layers: list[nn.Module] = []
        for ch in channels:
            layers += [nn.Conv2d(c, ch, 3, stride=2, padding=1), ChannelNorm(ch), nn.GELU()]
            c, h, w = ch, (h + 1) // 2, (w + 1) // 2
        layers.append(nn.Flatten())
        super().__init__(*layers)
        self.out_features = c * h * w
