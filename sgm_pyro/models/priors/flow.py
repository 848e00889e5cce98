"""The default prior program: a conditional neural spline flow onto the box (SPEC section 4).

Sampling direction: ``z ~ N(μ(x̂), σ(x̂))`` -> masked RQS couplings -> ``tanh`` (if squashed) ->
``offset + bounds · (·)``. zuko stores flows in the scoring direction (η -> z), so the transform
list below reads backwards: box map first, then the couplings, with the base last.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial

import torch
from torch import Tensor, nn
from torch.distributions import Distribution
from zuko.distributions import DiagNormal, NormalizingFlow
from zuko.flows.coupling import GeneralCouplingTransform
from zuko.flows.gaussianization import ElementWiseTransform
from zuko.lazy import Flow, LazyDistribution
from zuko.transforms import CouplingTransform, MonotonicRQSTransform

from .base import PriorProgram
from .box_map import BoxLatent
from .features import FeatureNet


def zero_last_layer(mlp: nn.Sequential) -> None:
    """Zero the output layer of a conditioner so its transformation starts as the identity.

    Zero RQS parameters give equal bins and unit knot slopes, i.e. the identity spline.
    """
    last = mlp[-1]
    nn.init.zeros_(last.weight)
    if last.bias is not None:
        nn.init.zeros_(last.bias)


class IndexedCouplingTransform(CouplingTransform):
    """zuko's ``CouplingTransform`` built from precomputed split indices ``idx_a``, ``idx_b`` (``(d_a,)``, ``(d_b,)``).

    zuko recomputes them with ``mask.nonzero()`` each time a flow is built, once per coupling
    layer and call: a host sync (a blocking wait on a GPU) per layer and training step.
    """

    def __init__(self, meta, idx_a: Tensor, idx_b: Tensor) -> None:
        super(CouplingTransform, self).__init__()
        self.meta, self.idx_a, self.idx_b = meta, idx_a, idx_b


class IndexedCoupling(GeneralCouplingTransform):
    """A ``GeneralCouplingTransform`` that computes its split indices once, as buffers that follow ``.to``."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        # Not persistent: the mask already is, and saved models keep their state-dict keys.
        self.register_buffer("idx_a", self.mask.nonzero().squeeze(-1), persistent=False)
        self.register_buffer("idx_b", (~self.mask).nonzero().squeeze(-1), persistent=False)

    def forward(self, c: Tensor | None = None) -> CouplingTransform:
        return IndexedCouplingTransform(partial(self.meta, c), self.idx_a, self.idx_b)


class ConditionalDiagNormal(LazyDistribution):
    """Gaussian base whose mean and log-scale are a linear function of the context.

    Zero-initialised, so training starts from ``N(0, I)``. ``c: (..., context)`` -> batch
    ``(...)``, event ``(features,)``.
    """

    def __init__(self, context: int, features: int) -> None:
        super().__init__()
        self.head = nn.Linear(context, 2 * features)
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)

    def forward(self, c: Tensor | None = None) -> Distribution:
        loc, log_scale = self.head(c).chunk(2, dim=-1)
        return DiagNormal(loc, log_scale.exp())


class BoxFlowDistribution(NormalizingFlow):
    """A zuko ``NormalizingFlow`` that names the expected η width when given the wrong one."""

    def log_prob(self, x: Tensor) -> Tensor:
        width = self.event_shape[-1]
        if x.shape[-1] != width:
            raise ValueError(f"eta must have {width} coordinates in its last dimension, got shape {tuple(x.shape)}")
        return super().log_prob(x)


class ConditionalBoxFlow(Flow):
    """A conditional RQS flow for (a subset of) η on the group's box: ``c -> p(η[index] | c)``.

    Args:
        group: the transformation group; its box is read at call time.
        context: width of the conditioning vector ``c``.
        index: the η coordinates covered (default: all ``group.dim``).
        transforms: number of coupling layers (alternating checkered masks); with a single
            coordinate coupling is impossible, and each layer is an element-wise spline whose
            parameters depend on the context only.
        bins: spline bins on ``[-bound, bound]`` (identity outside).
        hidden: conditioner MLP widths (GELU).
        slope: minimum spline slope.

    ``forward(c: (..., context))`` returns a distribution with batch ``(...)``, event ``(d,)``.
    """

    def __init__(self, group, context: int, index: Sequence[int] | Tensor | None = None, *,
                 transforms: int = 4, bins: int = 6, bound: float = 3.0,
                 hidden: Sequence[int] = (256, 256), slope: float = 1e-3) -> None:
        box = BoxLatent(group, index)
        d = box.index.numel()
        univariate = partial(MonotonicRQSTransform, bound=bound, slope=slope)
        shapes = [(bins,), (bins,), (bins - 1,)]
        mlp = dict(hidden_features=tuple(hidden), activation=nn.GELU)
        layers = []
        for i in range(transforms):
            if d == 1:
                layer = ElementWiseTransform(1, context, univariate=univariate, shapes=shapes, **mlp)
            else:
                mask = torch.arange(d) % 2 == i % 2
                layer = IndexedCoupling(d, context, mask, univariate=univariate, shapes=shapes, **mlp)
            zero_last_layer(layer.hyper)
            layers.append(layer)
        super().__init__([box, *layers], base=ConditionalDiagNormal(context, d))

    def forward(self, c: Tensor | None = None) -> NormalizingFlow:
        flow = super().forward(c)
        return BoxFlowDistribution(flow.transform, flow.base)


class FlowPrior(PriorProgram):
    """The default prior program p_ψ(η | x̂): a conditional neural spline flow onto the box.

    A feature MLP on the flattened x̂ conditions a Gaussian base (mean and scale) and every
    coupling conditioner; the map onto the box (``tanh`` if ``group.squash``, then
    ``offset + bounds · (·)``) is part of the flow, so ``log_prob`` is a density of η itself.
    The identity-initialised couplings make the initial density ``to_box(N(0, I))``.

    Args:
        group: transformation group (``dim``, ``bounds``, ``offset``, ``squash``).
        image_shape: ``(C, H, W)`` of x̂.
        transforms, bins, bound, hidden, slope: see :class:`ConditionalBoxFlow`.
        feature_hidden, dropout, input_size: see :class:`FeatureNet`.

    ``distribution(x_hat: (N, C, H, W))``: batch ``(N,)``, event ``(group.dim,)``, with ``rsample``.
    """

    def __init__(self, group, image_shape: Sequence[int], *, transforms: int = 4, bins: int = 6,
                 bound: float = 3.0, hidden: Sequence[int] = (256, 256),
                 feature_hidden: Sequence[int] = (1024, 512, 256), dropout: float = 0.1,
                 input_size: int | None = None,
                 slope: float = 1e-3) -> None:
        super().__init__(group, image_shape)
        self.features = FeatureNet(self.image_shape, feature_hidden, dropout, input_size)
        self.flow = ConditionalBoxFlow(group, self.features.out_features, transforms=transforms, bins=bins,
                                       bound=bound, hidden=hidden, slope=slope)

    def _distribution(self, x_hat: Tensor) -> Distribution:
        return self.flow(self.features(x_hat))
