"""The prototype inference network q_ω(η | x) (SPEC section 3)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import pyro
import pyro.distributions as dist
import torch
from pyro.nn import PyroModule
from torch import Tensor, nn
from torch.distributions import transforms as T

from ..groups import Group
from ..nn import MLP, ConvFeatures, downsample_to

NETWORKS = ("mlp", "cnn")


class PrototypeInference(PyroModule):
    """``q_ω(η | x) = offset + b · squash(μ_ω(x) + σ ε)``, ``ε ~ N(0, I)``.

    The mean head is zero-initialised, so training starts at the identity transformation; ``σ`` is
    one learned value per η coordinate (initialised at ``sigma_init``). Called as a Pyro program it
    samples the site ``"eta"`` (it is the guide of :class:`~sgm_pyro.models.SGM`).

    Args:
        group: the transformation group (its box and ``squash`` flag define the output map).
        image_shape: ``(C, H, W)`` of the inputs.
        net: ``"mlp"`` (the reference: raw pixels, GELU, LayerNorm) or ``"cnn"`` (stride-2 convs).
        hidden: hidden widths of the MLP head (reference ``(2048, 1024, 512, 256)``).
        input_size: average-pool inputs to ``input_size x input_size`` before the network (a large
            saving at 64x64 on a CPU; ``None`` keeps the full resolution).
        channels: convolution widths of the ``"cnn"`` network.
        sigma_init: initial σ of every coordinate.
    """

    def __init__(self, group: Group, image_shape: Sequence[int], *, net: str = "mlp",
                 hidden: Sequence[int] = (2048, 1024, 512, 256), input_size: int | None = None,
                 channels: Sequence[int] = (16, 32, 64, 64), sigma_init: float = 0.01) -> None:
        super().__init__()
        if net not in NETWORKS:
            raise ValueError(f"net must be one of {NETWORKS}, got {net!r}")
        if len(image_shape) != 3:
            raise ValueError(f"image_shape must be (C, H, W), got {tuple(image_shape)}")
        if sigma_init <= 0:
            raise ValueError(f"sigma_init must be positive, got {sigma_init}")
        self.group = group
        self.image_shape = tuple(int(s) for s in image_shape)
        self.input_size = input_size
        c, h, w = self.image_shape
        if input_size is not None:
            h = w = int(input_size)
        if net == "mlp":
            self.features = nn.Identity()
            width = c * h * w
        else:
            self.features = ConvFeatures((c, h, w), channels)
            width = self.features.out_features
        self.head = MLP(width, hidden, group.dim, zero_last=True)
        self.log_sigma = nn.Parameter(torch.full((group.dim,), math.log(sigma_init)))

    @property
    def sigma(self) -> Tensor:
        return self.log_sigma.exp()

    def mean_unconstrained(self, x: Tensor) -> Tensor:
        """``μ_ω(x)`` before the squash and box map, shape ``(N, dim)``."""
        return self.head(self.features(downsample_to(x, self.input_size)))

    def mode(self, x: Tensor) -> Tensor:
        """The pose ``η = f_ω(x)``: the box image of the mean, shape ``(N, dim)``."""
        return self.group.to_box(self.mean_unconstrained(x))

    def rsample(self, x: Tensor, num_samples: int | None = None) -> Tensor:
        """Reparameterised draws of η, shape ``(N, dim)`` or ``(num_samples, N, dim)``."""
        mu = self.mean_unconstrained(x)
        shape = mu.shape if num_samples is None else (num_samples,) + mu.shape
        eps = torch.randn(shape, dtype=mu.dtype, device=mu.device)
        return self.group.to_box(mu + self.sigma * eps)

    def distribution(self, x: Tensor) -> dist.TransformedDistribution:
        """``q_ω(η | x)`` as a distribution with batch ``(N,)`` and event ``(dim,)``."""
        mu = self.mean_unconstrained(x)
        base = dist.Normal(mu, self.sigma.expand_as(mu)).to_event(1)
        g = self.group
        maps: list[T.Transform] = []
        if g.squash:
            maps.append(T.IndependentTransform(T.TanhTransform(cache_size=1), 1))
        maps.append(T.AffineTransform(g.offset, g.bounds, event_dim=1))
        return dist.TransformedDistribution(base, maps)

    def forward(self, x: Tensor) -> Tensor:
        """Guide program: sample site ``"eta"`` (the caller owns the data plate)."""
        return pyro.sample("eta", self.distribution(x))
