"""A mixed discrete/continuous prior program for data whose true rotations are multiples of 2π/n.

SPEC section 9: a too-wide superset on data with a discrete symmetry (PatchCamelyon: multiples
of 90°) gives near-uniform densities. Here the angle is a mixture of n narrow von Mises bumps at
``k·2π/n`` with weights from x̂'s features, in closed form, so the site ``"eta"`` keeps an exact
marginal density and plugs into the same maximum-likelihood fit as the other priors.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.distributions import Categorical, Distribution, Independent, MixtureSameFamily, VonMises

from .base import PriorProgram
from .features import FeatureNet
from .flow import ConditionalBoxFlow
from .rotation_joint import RotationJoint, rotation_index, wrap_angle


def _softplus_inverse(y: float) -> float:
    return y + math.log(-math.expm1(-y))


class DiscreteRotationPrior(PriorProgram):
    """p_ψ(η | x̂) = [Σ_k w_k(x̂) vM(θ; k·2π/n, κ_k)] · p(η_rest | θ, x̂).

    Args:
        group: transformation group with a ``"rot"`` coordinate of bound π and offset 0.
        image_shape: ``(C, H, W)`` of x̂.
        n: number of rotations ``k·2π/n``, ``k = 0..n-1``.
        width: initial angular width σ_k (radians) of each bump; ``κ_k = 1/σ_k²``.
        min_width: floor on σ_k; exact multiples of 2π/n would otherwise drive κ to infinity
            under maximum likelihood.
        transforms, bins, bound, hidden, slope: the conditional flow of the other coordinates
            (see :class:`ConditionalBoxFlow`); it sees the features and ``(cos θ, sin θ)``.
        feature_hidden, dropout, input_size: see :class:`FeatureNet`.

    The mixture weights start uniform (zero-initialised head). ``distribution(x_hat)``: batch
    ``(N,)``, event ``(group.dim,)``; sampling is not reparametrised (von Mises draws are not).
    """

    def __init__(self, group, image_shape: Sequence[int], n: int = 4, *, width: float = 0.05,
                 min_width: float = 0.005, transforms: int = 4, bins: int = 6, bound: float = 3.0,
                 hidden: Sequence[int] = (256, 256), feature_hidden: Sequence[int] = (1024, 512, 256),
                 dropout: float = 0.1, input_size: int | None = None, slope: float = 1e-3) -> None:
        rot = rotation_index(group, type(self).__name__)
        if int(n) != n or n < 1:
            raise ValueError(f"n must be a positive integer number of rotations, got {n}")
        if not 0 < min_width < width:
            raise ValueError(f"need 0 < min_width < width (radians), got min_width={min_width}, width={width}")
        super().__init__(group, image_shape)
        self.rot, self.n, self.min_width = rot, int(n), float(min_width)
        self.features = FeatureNet(self.image_shape, feature_hidden, dropout, input_size)
        feat = self.features.out_features
        self.logits = nn.Linear(feat, self.n)
        nn.init.zeros_(self.logits.weight)
        nn.init.zeros_(self.logits.bias)
        self.register_buffer("centers", wrap_angle(torch.arange(self.n) * (2 * math.pi / self.n)))
        self.raw_width = nn.Parameter(torch.full((self.n,), _softplus_inverse(width - min_width)))
        rest = [i for i in range(group.dim) if i != rot]
        self.rest_flow = (ConditionalBoxFlow(group, feat + 2, rest, transforms=transforms, bins=bins,
                                             bound=bound, hidden=hidden, slope=slope) if rest else None)

    def widths(self) -> Tensor:
        """Angular widths σ_k (radians), shape ``(n,)``."""
        return self.min_width + F.softplus(self.raw_width)

    def angle_distribution(self, features: Tensor) -> Distribution:
        """The mixture over θ given features ``(N, F)``: batch ``(N,)``, event ``(1,)``."""
        n_rows = features.shape[0]
        kappa = self.widths().pow(-2)
        shape = (n_rows, self.n, 1)
        components = Independent(VonMises(self.centers[:, None].expand(shape), kappa[:, None].expand(shape),
                                          validate_args=False), 1)
        weights = Categorical(logits=self.logits(features), validate_args=False)
        return MixtureSameFamily(weights, components, validate_args=False)

    def _distribution(self, x_hat: Tensor) -> Distribution:
        f = self.features(x_hat)
        return RotationJoint(self.angle_distribution(f), self.rest_flow, f, self.rot, self.dim)
