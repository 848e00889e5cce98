"""The bijection between the box ``offset ± bounds`` and the unconstrained flow space.

``group.to_box(u) = offset + bounds · (tanh(u) if squash else u)`` (docs/architecture.md). A flow
over η must include the Jacobian of this map in its log-density, so it lives here as a torch
``Transform`` (direction η -> u, zuko's data -> base convention) rather than as a bare call.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.distributions import Transform, constraints
from zuko.lazy import LazyTransform


def log1m_tanh2(u: Tensor) -> Tensor:
    """``log(1 - tanh(u)²)`` without cancellation for large ``|u|``."""
    a = u.abs()
    return 2.0 * (math.log(2.0) - a - F.softplus(-2.0 * a))


class BoxLatentTransform(Transform):
    """``u = from_box(η)`` on the last dimension: ``(..., d) -> (..., d)``, event dim 1.

    Squashed boxes: η is clamped to ``(1 - eps)`` of the half-width before ``atanh``, so η exactly
    on the box boundary (tanh saturates to ±1 in float32 from |u| ≈ 9) keeps a finite log-density.

    Args:
        offset, bounds: ``(d,)`` box centre and half-widths.
        squash: whether the box is enforced by ``tanh``.
        eps: relative clamp margin for squashed boxes.
    """

    domain = constraints.independent(constraints.real, 1)
    codomain = constraints.real_vector
    bijective = True
    sign = +1

    def __init__(self, offset: Tensor, bounds: Tensor, squash: bool, eps: float = 1e-6) -> None:
        super().__init__()
        self.offset, self.bounds, self.squash, self.eps = offset, bounds, bool(squash), eps

    def __repr__(self) -> str:
        return f"{self.__class__.__name__}(dim={self.bounds.shape[-1]}, squash={self.squash})"

    def _call(self, eta: Tensor) -> Tensor:
        v = (eta - self.offset) / self.bounds
        return torch.atanh(v.clamp(-1 + self.eps, 1 - self.eps)) if self.squash else v

    def _inverse(self, u: Tensor) -> Tensor:
        return self.offset + self.bounds * (torch.tanh(u) if self.squash else u)

    def log_abs_det_jacobian(self, eta: Tensor, u: Tensor) -> Tensor:
        # Written in terms of u, which is finite in both directions (sampling passes the base
        # value, scoring the clamped atanh), unlike 1 - v² at the boundary.
        ladj = -torch.log(self.bounds).sum(-1).expand(u.shape[:-1])
        if self.squash:
            ladj = ladj - log1m_tanh2(u).sum(-1)
        return ladj


class BoxLatent(LazyTransform):
    """Lazy :class:`BoxLatentTransform` reading the group's box at call time (so it follows ``.to``).

    Args:
        group: the transformation group (``offset``, ``bounds``, ``squash``).
        index: the η coordinates this flow covers (default: all).
    """

    def __init__(self, group, index: Tensor | None = None) -> None:
        super().__init__()
        self.group = group
        idx = torch.arange(group.dim) if index is None else torch.as_tensor(index, dtype=torch.long)
        self.register_buffer("index", idx)

    def forward(self, c: Tensor | None = None) -> Transform:
        """Context is ignored: the box does not depend on x̂."""
        return BoxLatentTransform(self.group.offset[self.index], self.group.bounds[self.index],
                                  self.group.squash)
