"""The reference VAE networks (SPEC section 6): a conv encoder and its mirror decoder.

Encoder: 3x3 convolutions (the first two with stride 2), each followed by a channel LayerNorm and
GELU, then an MLP with one hidden layer of 256 units that outputs a diagonal Gaussian.
Decoder: the mirror image, an MLP then 3x3 transposed convolutions back to ``(C, H, W)``.
Both accept any number of leading batch dims, so a Pyro particle plate passes straight through.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch.nn.functional as F
from torch import Tensor, nn

from .cnn import ChannelNorm

__all__ = ["ConvDecoder", "ConvEncoder", "default_channels"]


def _check_config(image_shape: Sequence[int], latent_dim: int, channels: Sequence[int]) -> tuple:
    shape = tuple(int(s) for s in image_shape)
    if len(shape) != 3 or min(shape) < 1:
        raise ValueError(f"image_shape must be (C, H, W) with positive entries, got {tuple(image_shape)}")
    if not isinstance(latent_dim, int) or latent_dim < 1:
        raise ValueError(f"latent_dim must be a positive int, got {latent_dim!r}")
    if len(channels) == 0 or min(channels) < 1:
        raise ValueError(f"channels must be a non-empty sequence of positive ints, got {tuple(channels)}")
    return shape


def _strides(channels: Sequence[int]) -> list[int]:
    return [2 if i < 2 else 1 for i in range(len(channels))]


def _spatial_sizes(h: int, w: int, strides: Sequence[int]) -> list[tuple[int, int]]:
    """Feature-map sizes before each conv and after the last (3x3, padding 1)."""
    sizes = [(h, w)]
    for s in strides:
        h, w = (h + 1) // 2 if s == 2 else h, (w + 1) // 2 if s == 2 else w
        sizes.append((h, w))
    return sizes


class ConvEncoder(nn.Module):
    """``q(z | x)``'s network: ``x: (..., C, H, W) → (loc, scale)``, each ``(..., latent_dim)``.

    Args:
        image_shape: ``(C, H, W)``; any size and channel count (28x28x1, 64x64x3, ...).
        latent_dim: size of ``z`` (20 in the reference code).
        channels: conv widths; ``(64, 128)`` for 28x28, ``(64, 128, 256)`` for 64x64.
        hidden: width of the MLP head.
        min_scale: added to the softplus scale so ``q`` never collapses to a point.
    """

    def __init__(
        self,
        image_shape: Sequence[int],
        latent_dim: int = 20,
        channels: Sequence[int] = (64, 128),
        hidden: int = 256,
        min_scale: float = 1e-4,
    ) -> None:
        super().__init__()
        self.image_shape = _check_config(image_shape, latent_dim, channels)
        self.latent_dim, self.min_scale = latent_dim, min_scale
        c, h, w = self.image_shape
        strides = _strides(channels)
        layers: list[nn.Module] = []
        for ch, s in zip(channels, strides):
            layers += [nn.Conv2d(c, ch, 3, stride=s, padding=1), ChannelNorm(ch), nn.GELU()]
            c = ch
        self.convs = nn.Sequential(*layers)
        fh, fw = _spatial_sizes(h, w, strides)[-1]
        self.head = nn.Sequential(
            nn.Flatten(),
            nn.Linear(c * fh * fw, hidden),
            nn.LayerNorm(hidden),
            nn.GELU(),
            nn.Linear(hidden, 2 * latent_dim),
        )

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        lead = x.shape[:-3]
        out = self.head(self.convs(x.reshape(-1, *self.image_shape)))
        loc, raw = out.reshape(*lead, 2 * self.latent_dim).chunk(2, dim=-1)
        return loc, F.softplus(raw) + self.min_scale


class ConvDecoder(nn.Module):
    """The mirror of :class:`ConvEncoder`: ``z: (..., latent_dim) → mean: (..., C, H, W)``.

    Transposed convolutions undo the encoder's strides with the ``output_padding`` that restores
    the exact encoder sizes, so odd sizes (28 → 14 → 7 → 14 → 28, 27 → 14 → 7 → 14 → 27) work.
    The output is unbounded: it is the mean of a Gaussian on ``[-1, 1]`` pixels.
    """

    def __init__(
        self,
        image_shape: Sequence[int],
        latent_dim: int = 20,
        channels: Sequence[int] = (64, 128),
        hidden: int = 256,
    ) -> None:
        super().__init__()
        self.image_shape = _check_config(image_shape, latent_dim, channels)
        self.latent_dim = latent_dim
        c, h, w = self.image_shape
        strides = _strides(channels)
        sizes = _spatial_sizes(h, w, strides)
        self.start_shape = (channels[-1], *sizes[-1])
        self.head = nn.Sequential(
            nn.Linear(latent_dim, hidden),
            nn.LayerNorm(hidden),
            nn.GELU(),
            nn.Linear(hidden, channels[-1] * sizes[-1][0] * sizes[-1][1]),
            nn.GELU(),
        )
        outs = [c, *channels[:-1]]  # layer i maps channels[i] back to the encoder's input width
        layers: list[nn.Module] = []
        for i in reversed(range(len(channels))):
            (th, tw), (ih, iw), s = sizes[i], sizes[i + 1], strides[i]
            pad = (th - ((ih - 1) * s + 1), tw - ((iw - 1) * s + 1))  # 3x3, padding 1
            layers.append(
                nn.ConvTranspose2d(channels[i], outs[i], 3, stride=s, padding=1, output_padding=pad)
            )
            if i > 0:
                layers += [ChannelNorm(outs[i]), nn.GELU()]
        self.deconvs = nn.Sequential(*layers)

    def forward(self, z: Tensor) -> Tensor:
        lead = z.shape[:-1]
        feats = self.head(z.reshape(-1, self.latent_dim)).reshape(-1, *self.start_shape)
        return self.deconvs(feats).reshape(*lead, *self.image_shape)


def default_channels(image_shape: Sequence[int]) -> tuple[int, ...]:
    """Reference widths: ``(64, 128)`` up to 32x32 images, ``(64, 128, 256)`` above."""
    return (64, 128) if max(image_shape[1:]) <= 32 else (64, 128, 256)

