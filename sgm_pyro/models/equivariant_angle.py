"""Rotation and hue estimates equivariant by construction: the group average of a point on the plane."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from ..groups import Group, ProductGroup
from ..groups.base import PERIODS
from ..nn import MLP, downsample_to
from .box_normal import wrap_period



def angle_to_value(angle: Tensor, group: Group, index: int, period: float) -> Tensor:
    """The coordinate's value in box units, ``(η - offset) / bound``, read off a point's angle in ``(-π, π]``.

    The angle is ``2π (η - offset) / period``: the point ``(1, 0)`` is the box's centre (where a
    zero-initialised head starts) and the seam, half a period away, is on the box's edge.
    """
    value = wrap_period(angle * (period / (2 * math.pi)), period)
    return value / group.bounds[index].to(angle.dtype)


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

    The same average over hue shifts by ``k / copies`` (``coordinate="hue"``) gives a hue estimate that
    shifts with the image's hue, exactly for those shifts, since a hue shift is pointwise: a data set of
    uniformly coloured shapes is canonicalised in colour from the first step, which a head that outputs
    hue as one number on the box (with a seam where hue 1 meets hue 0) does not learn at a CPU budget.

    The group is passed at call time so that this module adds no copy of the group's buffers.

    Args:
        image_shape: ``(C, H, W)`` of the inputs.
        copies: order of the cyclic group averaged over (a multiple of 4 keeps the quarter turns exact).
        hidden: hidden widths of ``φ``, an MLP on the (pooled) pixels of each rotated copy.
        input_size: average-pool larger images to ``input_size x input_size`` before rotating them
            (the angle needs no fine detail, and at 64x64 this is a quarter of the cost).
        coordinate: ``"rot"`` (rotations, period 2π) or ``"hue"`` (hue shifts, period 1).
        harmonics: the orders ``m`` of the points ``v_m(x) = Σ_k R(m θ_k) φ_m(T_{-θ_k} x)``, largest
            first, each a multiple of the next (default ``(1,)``: the point above). ``v_m`` turns ``m``
            times as fast as the image, so ``atan2(v_m) / m`` is the angle modulo ``2π / m``, and a
            shape with ``m``-fold symmetry, for which every ``v_j`` with ``j`` not a multiple of ``m``
            vanishes (or, off-centre, carries no orientation), still gets a pose that un-rotates it
            within its symmetry cell: ``(4, 2, 1)`` reads a square's pose from ``v_4``, an ellipse's
            from ``v_2``, and resolves an asymmetric shape's 90° and 180° ambiguities with ``v_2`` and
            ``v_1`` (see :meth:`angle`). No continuous map can do this with one harmonic: the pose of
            a C4-symmetric image must jump by 90° somewhere on its orbit (docs/results.md §3).
    """

    def __init__(self, image_shape: Sequence[int], *, copies: int = 8, hidden: Sequence[int] = (256, 128),
                 input_size: int | None = 32, coordinate: str = "rot", harmonics: Sequence[int] = (1,)) -> None:
        super().__init__()
        if int(copies) < 2:
            raise ValueError(f"copies must be at least 2, got {copies}")
        if coordinate not in PERIODS:
            raise ValueError(f"coordinate must be one of {tuple(PERIODS)}, got {coordinate!r}")
        harmonics = check_harmonics(harmonics, int(copies) // 2)
        c, h, w = (int(s) for s in image_shape)
        if input_size is not None and max(h, w) > int(input_size):
            h = w = int(input_size)
        else:
            input_size = None
        self.copies, self.input_size, self.coordinate = int(copies), input_size, coordinate
        self.period, self.harmonics = PERIODS[coordinate], harmonics
        self.phi = MLP(c * h * w, hidden, 2 * len(harmonics))
        angles = 2 * math.pi * torch.arange(self.copies, dtype=torch.float64) / self.copies
        # copy k is shifted back by the k-th element of the cyclic group, in the coordinate's units
        self.register_buffer("shifts", (-angles * self.period / (2 * math.pi)).float(), persistent=False)
        phases = angles[:, None] * torch.tensor(harmonics, dtype=torch.float64)  # (copies, harmonics)
        self.register_buffer("cos", phases.cos().float(), persistent=False)
        self.register_buffer("sin", phases.sin().float(), persistent=False)

    def rotated_copies(self, x: Tensor, group: Group, index: int) -> Tensor:
        """``T_{-θ_k} x`` for every k, shape ``(copies, N, C, H, W)``.

        On a square grid a quarter turn is an exact permutation of pixels (``torch.rot90`` agrees with
        the group's rotation, tests/models/test_prototype_heads.py), so with ``copies = 4m`` only the
        ``m - 1`` rotations by less than 90° are interpolated; the rest are quarter turns of those.
        A hue shift is pointwise and exact for every copy.
        """
        n, k = x.shape[0], self.copies
        if self.coordinate == "hue":
            color = group.color if isinstance(group, ProductGroup) else group
            return torch.cat([x[None], color.hue_shifts(x, self.shifts[1:])])
        square = self.coordinate == "rot" and x.shape[-1] == x.shape[-2] and k % 4 == 0
        m = k // 4 if square else k
        base = x[None]
        if m > 1:  # with 4 copies of a square image every copy is a quarter turn: nothing to interpolate
            # the shifts written inside the box, which holds one whole period around its offset
            off = group.offset[index].to(x.dtype)
            undo = off + wrap_period(self.shifts[1:m].to(x.dtype) - off, self.period)
            eta = x.new_zeros(m - 1, n, group.dim)
            eta[..., index] = undo[:, None]
            warped = group.apply(x.expand(m - 1, *x.shape).reshape(-1, *x.shape[1:]), eta.reshape(-1, group.dim))
            base = torch.cat([base, warped.reshape(m - 1, *x.shape)])  # (m, N, C, H, W)
        if not square:
            return base
        # copy j + m q is base j turned back by q quarter turns
        return torch.cat([torch.rot90(base, -q, dims=(-2, -1)) for q in range(4)])

    def forward(self, x: Tensor, group: Group, index: int) -> Tensor:
        """The points ``v_m(x)``, shape ``(N, len(harmonics), 2)`` as ``(cos-part, sin-part)``; ``index`` is the
        coordinate's in ``group``."""
        x = downsample_to(x, self.input_size)
        n, k, h = x.shape[0], self.copies, len(self.harmonics)
        rotated = self.rotated_copies(x, group, index).reshape(k * n, *x.shape[1:])
        p = self.phi(rotated).reshape(k, n, h, 2)
        cos, sin = self.cos.to(x.dtype)[:, None], self.sin.to(x.dtype)[:, None]  # (copies, 1, harmonics)
        return torch.stack([(cos * p[..., 0] - sin * p[..., 1]).sum(0),
                            (sin * p[..., 0] + cos * p[..., 1]).sum(0)], dim=-1)

    def angle(self, x: Tensor, group: Group, index: int) -> Tensor:
        """The angle ``2π η / period`` in ``(-π, π]``, shape ``(N,)``, unwrapped from the highest harmonic down.

        ``atan2(v_M) / M`` fixes the angle modulo ``2π / M``; each lower harmonic ``m`` then picks, among
        the candidates ``2π / M'`` apart (``M'`` the previous order), the one nearest ``atan2(v_m) / m``
        modulo ``2π / m``. The picks are integers, so the value's gradient reaches only ``φ_M``; every
        lower harmonic's own candidate receives the same gradient (a straight-through term of value 0),
        so that each ``φ_m`` learns the poses too and its picks move away from their boundaries.
        """
        v = self(x, group, index)
        a = torch.atan2(v[..., 1], v[..., 0])  # (N, harmonics)
        top = self.harmonics[0]
        theta = a[:, 0] / top
        if len(self.harmonics) == 1:
            return theta
        through, prev = theta.new_zeros(()), 2 * math.pi / top
        for j, m in enumerate(self.harmonics[1:], start=1):
            cell = 2 * math.pi / m
            estimate = a[:, j] / m
            theta = theta + prev * torch.round(wrap_period(estimate - theta, cell) / prev).detach()
            candidate = theta + wrap_period(estimate - theta, cell)  # the estimate, written next to theta
            through = through + (candidate - candidate.detach())
            prev = cell
        return wrap_period(theta + through / (len(self.harmonics) - 1), 2 * math.pi)


def check_harmonics(harmonics: Sequence[int], max_order: int | None = None) -> tuple[int, ...]:
    """``harmonics`` as a tuple of decreasing orders, each a multiple of the next, at most ``max_order``."""
    orders = tuple(int(m) for m in harmonics)
    top = max_order if max_order is not None else max(orders, default=1)
    if (not orders or any(not 1 <= m <= top for m in orders)
            or any(a <= b or a % b for a, b in zip(orders, orders[1:]))):
        bound = f" between 1 and copies / 2 = {max_order}" if max_order is not None else " of at least 1"
        raise ValueError(f"harmonics must be decreasing orders{bound}, each a multiple of the next, got {tuple(harmonics)}")
    return orders
