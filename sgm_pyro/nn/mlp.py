"""Multi-layer perceptrons with GELU and LayerNorm (the reference networks of SPEC 3 and 4)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from .. import native
from . import fused


class MLP(nn.Sequential):
    """``Linear → LayerNorm → GELU (→ Dropout)`` blocks, then a final ``Linear``.

    Args:
        in_features: input width (inputs are flattened from dimension 1 on).
        hidden: hidden widths, e.g. ``(2048, 1024, 512, 256)``.
        out_features: output width.
        dropout: dropout probability after each hidden block.
        zero_last: zero-initialise the final layer so the network starts by outputting 0
            (the identity transformation for pose heads, SPEC 3).
    """

    def __init__(self, in_features: int, hidden: Sequence[int], out_features: int, *, dropout: float = 0.0,
                 zero_last: bool = False) -> None:
        layers: list[nn.Module] = [nn.Flatten()]
        width = in_features
        for h in hidden:
            layers += [nn.Linear(width, h), nn.LayerNorm(h), nn.GELU()]
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
            width = h
        last = nn.Linear(width, out_features)
        if zero_last:
            nn.init.zeros_(last.weight)
            nn.init.zeros_(last.bias)
        layers.append(last)
        super().__init__(*layers)
        self.in_features, self.out_features = in_features, out_features

    def forward(self, x: Tensor) -> Tensor:
        """The blocks in order; on a CPU each ``Linear → LayerNorm → GELU`` runs as one fused
        function (:mod:`sgm_pyro.nn.fused`) when its kernel is built."""
        if x.device.type != "cpu" or not native.is_enabled():
            return super().forward(x)
        modules, i = list(self), 0
        while i < len(modules):
            block = modules[i:i + 3]
            if len(block) == 3 and fused.fusable(x, *block):
                x = fused.linear_layer_norm_gelu(x, block[0], block[1])
                i += 3
            else:
                x = modules[i](x)
                i += 1
        return x


def downsample_to(x: Tensor, size: int | None) -> Tensor:
    """Average-pool square images to ``size x size`` (no-op when ``size`` is None or already met)."""
    if size is None or x.shape[-1] == size:
        return x
    return torch.nn.functional.adaptive_avg_pool2d(x, size)
