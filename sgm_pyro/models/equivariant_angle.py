"""A rotation estimate that is equivariant by construction: the group average of a point on the plane."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from ..groups import Group
from ..nn import MLP, downsample_to


class EquivariantPoint(nn.Module):
    """``v(x) = Σ_k R(θ_k) φ(T_{-θ_k} x)`` over ``θ_k = 2πk / copies``: a point of the plane whose angle turns
    with the image.

    For a rotation ``α`` by a multiple of ``2π / copies``, ``v(T_α x) = R(α) v(x)`` exactly, whatever the
    weights of ``φ`` (the Reynolds average over the cyclic group, as in the canonicalisation functions of
    Kaba et al., ICML 2023); between those angles ``φ`` learns to interpolate. A pose read off
    ``atan2(v)`` therefore tells an image from its half-turn from the first step on, which a network
    trained from scratch on the invariance loss need not learn (docs/results.md §8: the reference
    heads canonicalise a digit's axis but not its direction). An image that is itself symmetric under a
    rotation of the cyclic group has ``v = 0``: its pose is not defined, and none is needed.

    The group is passed at call time so that this module adds no copy of the group's buffers.

    Args:
        image_shape: ``(C, H, W)`` of the inputs.
        copies: order of the cyclic group averaged over (a multiple of 4 keeps the quarter turns exact).
        hidden: hidden widths of ``φ``, an MLP on the (pooled) pixels of each rotated copy.
        input_size: average-pool larger images to ``input_size x input_size`` before rotating them
            (the angle needs no fine detail, and at 64x64 this is a quarter of the cost).
    """

    def __init__(self, image_shape: Sequence[int], *, copies: int = 8, hidden: Sequence[int] = (256, 128),
                 input_size: int | None = 32) -> None:
        super().__init__()
        if int(copies) < 2:
            raise ValueError(f"copies must be at least 2, got {copies}")
        c, h, w = (int(s) for s in image_shape)
        if input_size is not None and max(h, w) > int(input_size):
            h = w = int(input_size)
        else:
            input_size = None
        self.copies, self.input_size = int(copies), input_size
        self.phi = MLP(c * h * w, hidden, 2)
        angles = 2 * math.pi * torch.arange(self.copies, dtype=torch.float64) / self.copies
        # the copies are rotated back by θ_k, written inside the box (−π, π]
        self.register_buffer("undo", torch.remainder(math.pi - angles, 2 * math.pi).sub(math.pi).float(),
                             persistent=False)
        self.register_buffer("cos", angles.cos().float(), persistent=False)
        self.register_buffer("sin", angles.sin().float(), persistent=False)

    def rotated_copies(self, x: Tensor, group: Group, index: int) -> Tensor:
        """``T_{-θ_k} x`` for every k, shape ``(copies, N, C, H, W)``.

        On a square grid a quarter turn is an exact permutation of pixels (``torch.rot90`` agrees with
        the group's rotation, tests/models/test_prototype_heads.py), so with ``copies = 4m`` only the
        ``m - 1`` rotations by less than 90° are interpolated; the rest are quarter turns of those.
        """
        n, k = x.shape[0], self.copies
        square = x.shape[-1] == x.shape[-2] and k % 4 == 0
        m = k // 4 if square else k
        base = x[None]
        if m > 1:  # with 4 copies of a square image every copy is a quarter turn: nothing to interpolate
            eta = x.new_zeros(m - 1, n, group.dim)
            eta[..., index] = self.undo[1:m].to(x.dtype)[:, None]
            warped = group.apply(x.expand(m - 1, *x.shape).reshape(-1, *x.shape[1:]), eta.reshape(-1, group.dim))
            base = torch.cat([base, warped.reshape(m - 1, *x.shape)])  # (m, N, C, H, W)
        if not square:
            return base
        # copy j + m q is base j turned back by q quarter turns
        return torch.cat([torch.rot90(base, -q, dims=(-2, -1)) for q in range(4)])

    def forward(self, x: Tensor, group: Group, index: int) -> Tensor:
        """The point ``v(x)``, shape ``(N, 2)`` as ``(cos-part, sin-part)``; ``index`` is the group's rotation."""
        x = downsample_to(x, self.input_size)
        n, k = x.shape[0], self.copies
        rotated = self.rotated_copies(x, group, index).reshape(k * n, *x.shape[1:])
        p = self.phi(rotated).reshape(k, n, 2)
        cos, sin = self.cos.to(x.dtype)[:, None], self.sin.to(x.dtype)[:, None]
        return torch.stack([(cos * p[..., 0] - sin * p[..., 1]).sum(0),
                            (sin * p[..., 0] + cos * p[..., 1]).sum(0)], dim=-1)
