"""A prior program whose rotation density lives on the circle (SPEC section 9).

The angle gets a conditional circular spline flow (Rezende et al., 2020, "Normalizing Flows on Tori
and Spheres"), on a uniform base: each layer rotates the circle by a learned, x̂-dependent angle and
applies an RQS on [-π, π] whose two end knots share one learned slope (``circular_spline.py``; zuko's
``CircularRQSTransform`` fixes both, which pins one layer's density at θ = 0 to 1/(2π)). The density
is continuous across ±π, with no artificial seam, and any number of layers can hold a narrow mode
at any angle (tests/models/priors/test_prior_narrow_modes.py).
The other coordinates get a conditional spline flow on their box, as in :class:`FlowPrior`,
conditioned on the features and on ``(cos θ, sin θ)``.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial

import torch
from torch import Tensor, nn
from torch.distributions import Distribution
from zuko.flows.gaussianization import ElementWiseTransform
from zuko.lazy import Flow, LazyDistribution

from .base import PriorProgram
from .circular_spline import circular_layer, circular_layer_shapes
from .features import FeatureNet
from .flow import ConditionalBoxFlow, zero_last_layer
from .rotation_joint import CircularUniform, RotationJoint, rotation_index


class CircularUniformBase(LazyDistribution):
    """Lazy uniform base on ``[-π, π)`` (event ``(1,)``); a zero buffer carries dtype and device."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("zero", torch.zeros(1))

    def forward(self, c: Tensor | None = None) -> Distribution:
        return CircularUniform(self.zero)


class CircularAngleFlow(Flow):
    """``c: (..., context) -> p(θ | c)`` on ``[-π, π)``, batch ``(...)``, event ``(1,)``.

    Each layer is a rotation then a circular RQS (:func:`circular_layer`) whose parameters come from
    the context; zero-initialised conditioners make every layer a half-turn, so training starts
    from the uniform circle.
    """

    def __init__(self, context: int, *, transforms: int = 4, bins: int = 6,
                 hidden: Sequence[int] = (256, 256), slope: float = 1e-3) -> None:
        layers = []
        for _ in range(transforms):
            layer = ElementWiseTransform(1, context, univariate=partial(circular_layer, slope=slope),
                                         shapes=circular_layer_shapes(bins),
                                         hidden_features=tuple(hidden), activation=nn.GELU)
            zero_last_layer(layer.hyper)
            layers.append(layer)
        super().__init__(layers, base=CircularUniformBase())


class CircularFlowPrior(PriorProgram):
    """p_ψ(η | x̂) = p(θ | x̂) · p(η_rest | θ, x̂) with a circular flow on the rotation θ.

    θ is η's ``"rot"`` coordinate read directly as an angle (its box must be ``0 ± π``; a squashed
    group's tanh is not applied to it, and values outside ``[-π, π)`` are wrapped). The other
    coordinates map onto their box exactly as in :class:`FlowPrior`.

    Args:
        group: transformation group with a ``"rot"`` coordinate of bound π and offset 0.
        image_shape: ``(C, H, W)`` of x̂.
        transforms: layers of both the angle flow and the flow of the other coordinates.
        bins, bound, hidden, slope: spline and conditioner settings (``bound`` only applies to
            the non-angle flow; the circular splines cover ``[-π, π]``).
        feature_hidden, dropout, input_size: see :class:`FeatureNet`.

    ``distribution(x_hat: (N, C, H, W))``: batch ``(N,)``, event ``(group.dim,)``, with ``rsample``.
    """

    def __init__(self, group, image_shape: Sequence[int], *, transforms: int = 4, bins: int = 6,
                 bound: float = 3.0, hidden: Sequence[int] = (256, 256),
                 feature_hidden: Sequence[int] = (1024, 512, 256), dropout: float = 0.1,
                 input_size: int | None = None,
                 slope: float = 1e-3) -> None:
        rot = rotation_index(group, type(self).__name__)
        super().__init__(group, image_shape)
        self.rot = rot
        self.features = FeatureNet(self.image_shape, feature_hidden, dropout, input_size)
        width = self.features.out_features
        self.angle_flow = CircularAngleFlow(width, transforms=transforms, bins=bins, hidden=hidden, slope=slope)
        rest = [i for i in range(group.dim) if i != rot]
        self.rest_flow = (ConditionalBoxFlow(group, width + 2, rest, transforms=transforms, bins=bins,
                                             bound=bound, hidden=hidden, slope=slope) if rest else None)

    def _distribution(self, x_hat: Tensor) -> Distribution:
        f = self.features(x_hat)
        return RotationJoint(self.angle_flow(f), self.rest_flow, f, self.rot, self.dim)
