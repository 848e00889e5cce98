"""Densities that treat the rotation coordinate as an angle: p(η) = p(θ | x̂) · p(η_rest | θ, x̂).

Shared by :class:`CircularFlowPrior` and :class:`DiscreteRotationPrior` (SPEC section 9): the angle
lives on the circle, so there is no seam at ±π, and the other coordinates get a conditional flow
on their box that sees the angle through ``(cos θ, sin θ)``.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Size, Tensor
from torch.distributions import Distribution


def wrap_angle(theta: Tensor) -> Tensor:
    """Map angles onto ``[-π, π)``."""
    return torch.remainder(theta + math.pi, 2 * math.pi) - math.pi


def rotation_index(group, prior: str) -> int:
    """Index of ``"rot"`` in ``group.names``; ``ValueError`` unless its box is the full circle ``0 ± π``."""
    if "rot" not in group.names:
        raise ValueError(f"{prior} needs a group with a 'rot' coordinate, got coordinates {group.names}")
    i = group.names.index("rot")
    bound, offset = float(group.bounds[i]), float(group.offset[i])
    if abs(bound - math.pi) > 1e-4 or abs(offset) > 1e-6:
        raise ValueError(
            f"{prior} models 'rot' on the whole circle, so its box must be 0 ± π; got {offset} ± {bound}")
    return i


class CircularUniform(Distribution):
    """Uniform on ``[-π, π)``: batch ``zero.shape[:-1]``, event ``(1,)``; ``zero`` fixes dtype/device."""

    has_rsample = True

    def __init__(self, zero: Tensor) -> None:
        self.zero = zero
        super().__init__(zero.shape[:-1], zero.shape[-1:], validate_args=False)

    def log_prob(self, x: Tensor) -> Tensor:
        return torch.full(x.shape[:-1], -math.log(2 * math.pi), dtype=x.dtype, device=x.device)

    def rsample(self, sample_shape: Size = Size()) -> Tensor:
        u = torch.rand(Size(sample_shape) + self.zero.shape, dtype=self.zero.dtype, device=self.zero.device)
        return (2 * u - 1) * math.pi

    def expand(self, batch_shape: Size, _instance=None) -> CircularUniform:
        return CircularUniform(self.zero.expand(Size(batch_shape) + self.zero.shape[-1:]))


class RotationJoint(Distribution):
    """``p(η) = p(θ) · p(η_rest | features, cos θ, sin θ)`` with θ = η[..., rot] read modulo 2π.

    Args:
        angle: distribution of θ on ``[-π, π)`` with batch ``B`` and event ``(1,)``.
        rest: ``context -> Distribution`` over the other coordinates (batch ``(...)``, event
            ``(dim - 1,)``), with ``context = cat(features, cos θ, sin θ)``; ``None`` when the
            group has only the rotation.
        features: ``(*B, F)`` features of x̂.
        rot: position of the rotation in η.
        dim: width of η.

    ``log_prob(eta: (..., *B, dim)) -> (..., *B)`` is the exact joint density; angles outside
    ``[-π, π)`` are wrapped, so the density integrates to 1 over any 2π window of θ.
    """

    def __init__(self, angle: Distribution, rest: Callable[[Tensor], Distribution] | None,
                 features: Tensor, rot: int, dim: int) -> None:
        self.angle, self.rest, self.features, self.rot = angle, rest, features, rot
        super().__init__(angle.batch_shape, Size([dim]), validate_args=False)

    @property
    def has_rsample(self) -> bool:
        return self.angle.has_rsample

    def _rest_dist(self, theta: Tensor) -> Distribution:
        f = self.features.expand(theta.shape[:-1] + self.features.shape[-1:])
        return self.rest(torch.cat([f, torch.cos(theta), torch.sin(theta)], dim=-1))

    def log_prob(self, eta: Tensor) -> Tensor:
        dim = self.event_shape[0]
        if eta.shape[-1] != dim:
            raise ValueError(f"eta must have {dim} coordinates in its last dimension, got shape {tuple(eta.shape)}")
        theta = wrap_angle(eta[..., self.rot:self.rot + 1])
        lp = self.angle.log_prob(theta)
        if self.rest is not None:
            rest = torch.cat([eta[..., :self.rot], eta[..., self.rot + 1:]], dim=-1)
            lp = lp + self._rest_dist(theta).log_prob(rest)
        return lp

    def _draw(self, sample_shape: Size, reparametrized: bool) -> Tensor:
        shape = Size(sample_shape)
        theta = self.angle.rsample(shape) if reparametrized else self.angle.sample(shape)
        if self.rest is None:
            return theta
        rest_dist = self._rest_dist(theta)
        rest = rest_dist.rsample() if reparametrized else rest_dist.sample()
        return torch.cat([rest[..., :self.rot], theta, rest[..., self.rot:]], dim=-1)

    def rsample(self, sample_shape: Size = Size()) -> Tensor:
        if not self.has_rsample:
            raise NotImplementedError(f"{type(self.angle).__name__} over the angle has no rsample")
        return self._draw(sample_shape, True)

    def sample(self, sample_shape: Size = Size()) -> Tensor:
        with torch.no_grad():
            return self._draw(sample_shape, self.has_rsample)

    def expand(self, batch_shape: Size, _instance=None) -> RotationJoint:
        batch_shape = Size(batch_shape)
        features = self.features.expand(batch_shape + self.features.shape[-1:])
        return RotationJoint(self.angle.expand(batch_shape), self.rest, features, self.rot, self.event_shape[0])
