"""The feature network shared by the learned prior programs p_ψ(η | x̂) (SPEC section 4)."""

from __future__ import annotations

from collections.abc import Sequence
from math import prod

from torch import Tensor, nn

from ...nn import downsample_to


class FeatureNet(nn.Module):
    """An MLP on the flattened prototype: ``(Linear, GELU, LayerNorm, Dropout)`` per hidden width.

    The reference density conditions every part of the flow (base mean and scale, coupling
    conditioners) on these features; dropout matters because the stage-2 density overfits
    (SPEC section 4).

    Args:
        image_shape: ``(C, H, W)`` of the prototypes.
        hidden: hidden widths; the last one is the feature width. Empty: the features are the
            flattened pixels themselves.
        dropout: dropout probability after each hidden layer.
        input_size: average-pool x̂ to ``input_size x input_size`` first (a large saving for 64x64
            prototypes on a CPU); ``None`` keeps the full resolution.

    Shapes:
        ``x_hat: (N, C, H, W)`` -> ``(N, out_features)``.
    """

    def __init__(self, image_shape: Sequence[int], hidden: Sequence[int] = (1024, 512, 256),
                 dropout: float = 0.1, input_size: int | None = None) -> None:
        super().__init__()
        self.image_shape = tuple(int(s) for s in image_shape)
        self.input_size = None if input_size is None else int(input_size)
        c, h, w = self.image_shape
        in_features = c * self.input_size**2 if self.input_size is not None else prod(self.image_shape)
        layers: list[nn.Module] = [nn.Flatten(start_dim=1)]
        for width in hidden:
            layers += [nn.Linear(in_features, width), nn.GELU(), nn.LayerNorm(width)]
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
            in_features = width
        self.net = nn.Sequential(*layers)
        self.out_features = in_features

    def forward(self, x_hat: Tensor) -> Tensor:
        """``x_hat: (N, C, H, W)`` -> features ``(N, out_features)``."""
        return self.net(downsample_to(x_hat, self.input_size))
