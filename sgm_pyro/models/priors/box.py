"""The fixed uniform prior program on the box: no learning, the "full superset" baseline."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Size, Tensor
from torch.distributions import Distribution

from .base import PriorProgram


class ClosedBoxUniform(Distribution):
    """Uniform on the closed box ``[low, high]``: batch ``low.shape[:-1]``, event ``low.shape[-1:]``.

    Closed (unlike ``torch.distributions.Uniform``) because a squashed inference network can put
    η exactly on the boundary in float32; outside the box ``log_prob`` is ``-inf``.
    """

    has_rsample = True

    def __init__(self, low: Tensor, high: Tensor) -> None:
        self.low, self.high = torch.broadcast_tensors(low, high)
        super().__init__(self.low.shape[:-1], self.low.shape[-1:], validate_args=False)

    def log_prob(self, x: Tensor) -> Tensor:
        width = self.event_shape[0]
        if x.shape[-1] != width:
            raise ValueError(f"eta must have {width} coordinates in its last dimension, got shape {tuple(x.shape)}")
        inside = ((x >= self.low) & (x <= self.high)).all(-1)
        density = -torch.log(self.high - self.low).sum(-1)
        return torch.where(inside, density, torch.full_like(density, -torch.inf))

    def rsample(self, sample_shape: Size = Size()) -> Tensor:
        u = torch.rand(Size(sample_shape) + self.low.shape, dtype=self.low.dtype, device=self.low.device)
        return self.low + u * (self.high - self.low)

    def expand(self, batch_shape: Size, _instance=None) -> ClosedBoxUniform:
        shape = Size(batch_shape) + self.event_shape
        return ClosedBoxUniform(self.low.expand(shape), self.high.expand(shape))


class BoxPrior(PriorProgram):
    """p(η | x̂) = U(offset - bounds, offset + bounds), the same for every prototype.

    Args:
        group: transformation group (``bounds``, ``offset``).
        image_shape: optional ``(C, H, W)`` to validate x̂ against; x̂ is otherwise only used
            for its batch size.

    ``distribution(x_hat: (N, C, H, W))``: batch ``(N,)``, event ``(group.dim,)``.
    """

    def __init__(self, group, image_shape: Sequence[int] | None = None) -> None:
        super().__init__(group, image_shape)

    def _distribution(self, x_hat: Tensor) -> Distribution:
        shape = (x_hat.shape[0], self.dim)
        offset, bounds = self.group.offset, self.group.bounds
        return ClosedBoxUniform((offset - bounds).expand(shape), (offset + bounds).expand(shape))
