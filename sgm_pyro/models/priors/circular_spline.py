"""One layer of the circular flow: a rotation of the circle, then a circular spline (SPEC section 9).

zuko's ``CircularRQSTransform`` (a fixed shift by π, then an RQS on ``[-π, π]`` with slope 1 at
both ends) pins the density at the seam: for one layer, ``p(θ = 0 | x̂) = 1/(2π)`` for every x̂,
however the rest of the spline bends. A narrow density at the identity, exactly what untransformed
data need, then has a notch at its mode. Here each layer has two more parameters, both predicted
from x̂ and zero-initialised (the layer starts as zuko's):

* the knot slope shared by both ends of the spline (equal ends keep the density continuous
  across ±π, Rezende et al., 2020), so the density at the seam is free;
* a rotation ``φ`` of the circle before the spline, so the seam and the knots can move away from
  a mode instead of a mode having to sit on a knot.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor
from torch.distributions import Transform, constraints
from zuko.transforms import ComposedTransform, MonotonicRQSTransform

__all__ = ["CircleRotation", "CircularSpline", "circular_layer", "circular_layer_shapes"]


class CircleRotation(Transform):
    """``θ ↦ ((θ − φ) mod 2π) − π`` on ``[-π, π)``: a rotation by ``−φ − π`` (volume preserving).

    With ``φ = 0`` this is zuko's ``CircularShiftTransform(bound=π)``.
    """

    domain = constraints.interval(-math.pi, math.pi)
    codomain = constraints.interval(-math.pi, math.pi)
    bijective = True
    sign = +1

    def __init__(self, phi: Tensor) -> None:
        super().__init__()
        self.phi = phi

    def _call(self, x: Tensor) -> Tensor:
        return torch.remainder(x - self.phi, 2 * math.pi) - math.pi

    def _inverse(self, y: Tensor) -> Tensor:
        return torch.remainder(y + self.phi, 2 * math.pi) - math.pi

    def log_abs_det_jacobian(self, x: Tensor, y: Tensor) -> Tensor:
        return torch.zeros_like(x)


class CircularSpline(MonotonicRQSTransform):
    """zuko's RQS on ``[-π, π]`` with a learned slope shared by its two end knots.

    Args:
        widths, heights: unconstrained bin sizes ``(*, K)``.
        derivatives: unconstrained inner knot slopes ``(*, K - 1)``.
        end: unconstrained end-knot slope ``(*, 1)`` (0 gives slope 1, zuko's fixed value).
        slope: minimum slope.
    """

    def __init__(self, widths: Tensor, heights: Tensor, derivatives: Tensor, end: Tensor,
                 slope: float = 1e-3) -> None:
        super().__init__(widths, heights, derivatives, bound=math.pi, slope=slope)
        # The same soft clamp zuko applies to the inner slopes keeps the end slope >= `slope`.
        inner = derivatives / (1 + abs(derivatives / math.log(slope)))
        end = end / (1 + abs(end / math.log(slope)))
        self.derivatives = torch.exp(torch.cat([end, inner, end], dim=-1))


def circular_layer_shapes(bins: int) -> list[tuple[int, ...]]:
    """Parameter shapes of one layer: widths, heights, inner slopes, end slope, rotation."""
    return [(bins,), (bins,), (bins - 1,), (1,), (1,)]


def circular_layer(widths: Tensor, heights: Tensor, derivatives: Tensor, end: Tensor, phi: Tensor,
                   slope: float = 1e-3) -> Transform:
    """Scoring direction (θ -> base): rotate by ``φ``, then the circular spline. ``φ = end = 0``: zuko's layer."""
    return ComposedTransform(CircleRotation(phi[..., 0]), CircularSpline(widths, heights, derivatives, end, slope=slope))
