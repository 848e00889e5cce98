"""Closed-form exponential of the 2-D affine Lie algebra, batched and differentiable.

``torch.linalg.matrix_exp`` on thousands of 3x3 matrices runs a scaling-and-squaring loop of tiny
batched products; this closed form is about twice as fast forward and backward on a CPU. For ``X = [[M, t], [0, 0]]`` with a 2x2
block ``M = s I + N`` (``N`` traceless, so ``N² = δ I``) the exponential has the closed form

    expm(X) = [[E, V t], [0, 1]],   E = e^s (C(δ) I + S(δ) N),   V = ∫₀¹ e^{uM} du = p I + q N,

with ``C(δ) = cosh √δ`` and ``S(δ) = sinh √δ / √δ`` (cos / sin for δ < 0). The integrals ``p`` and
``q`` of smooth entire functions are evaluated by Gauss-Legendre quadrature (16 nodes in float64, 8 in
float32), exact to the dtype's round-off for the parameter ranges of SPEC 2.4, degrading gracefully beyond.
Every operation is elementwise over the batch.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

# Gauss-Legendre rules on [0, 1] by dtype. The integrands are entire, so n nodes converge like
# (|s| + |√δ|)²ⁿ / (2n)!-ish: against 32 nodes in float64, 8 nodes err by at most 1.5e-11 (relative) where
# |s| + |√δ| ≤ 4 (a half turn plus a log-scale of 0.85) and 1.4e-6 at 8, near float32 round-off; so float32
# takes 8 nodes (a stage-1 exponential with its backward in 2.6 ms instead of 4.0 ms for 5,120 matrices)
# and float64 keeps 16 (at most 2.5e-12 at 8).
_RULES = {n: np.polynomial.legendre.leggauss(n) for n in (8, 16)}
# Nodes and weights as tensors, one pair per (dtype, device): building them from numpy in every
# call is a blocking host-to-device copy on a GPU, twice per matrix.
_QUADRATURE: dict[tuple[torch.dtype, torch.device], tuple[Tensor, Tensor]] = {}


def quadrature_nodes(dtype: torch.dtype) -> int:
    """The number of Gauss-Legendre nodes used for ``dtype``: 8 for 32 bits and fewer, else 16."""
    return 8 if torch.finfo(dtype).bits <= 32 else 16


def _quadrature(dtype: torch.dtype, device: torch.device) -> tuple[Tensor, Tensor]:
    """Gauss-Legendre nodes and weights on ``[0, 1]``, each ``(n,)``, cached per dtype and device."""
    key = (dtype, device)
    if key not in _QUADRATURE:
        nodes, weights = _RULES[quadrature_nodes(dtype)]
        with torch.inference_mode(False):  # a cached inference tensor could not enter a later autograd graph
            _QUADRATURE[key] = (torch.tensor((nodes + 1) / 2, dtype=dtype, device=device),
                                 torch.tensor(weights / 2, dtype=dtype, device=device))
    return _QUADRATURE[key]


def _cosh_sinhc(delta: Tensor) -> tuple[Tensor, Tensor]:
    """``C(δ) = Σ δ^k/(2k)!`` and ``S(δ) = Σ δ^k/(2k+1)!`` for real δ of any sign, NaN-free gradients."""
    small = delta.abs() < 1e-3
    d = torch.where(small, torch.ones_like(delta), delta)  # keeps the unused branch finite
    r = d.abs().sqrt()
    pos = d > 0
    c_big = torch.where(pos, torch.cosh(r), torch.cos(r))
    s_big = torch.where(pos, torch.sinh(r), torch.sin(r)) / r
    c_small = 1 + delta * (1 / 2 + delta * (1 / 24 + delta / 720))
    s_small = 1 + delta * (1 / 6 + delta * (1 / 120 + delta / 5040))
    return torch.where(small, c_small, c_big), torch.where(small, s_small, s_big)


def affine_expm(m: Tensor, t: Tensor) -> Tensor:
    """``expm([[m, t], [0, 0]])`` as an affine ``(N, 2, 3)`` tensor, for ``m: (N, 2, 2)``, ``t: (N, 2)``."""
    a, b, c, d = m[:, 0, 0], m[:, 0, 1], m[:, 1, 0], m[:, 1, 1]
    s = (a + d) / 2
    h = (a - d) / 2  # N = [[h, b], [c, -h]]
    delta = h * h + b * c
    cc, ss = _cosh_sinhc(delta)
    es = s.exp()
    e00, e01 = es * (cc + ss * h), es * ss * b
    e10, e11 = es * ss * c, es * (cc - ss * h)
    p, q = _integral_pq(s, delta, m)
    tx, ty = t[:, 0], t[:, 1]
    vx = (p + q * h) * tx + q * b * ty
    vy = q * c * tx + (p - q * h) * ty
    return torch.stack([torch.stack([e00, e01, vx], -1), torch.stack([e10, e11, vy], -1)], -2)


def _integral_pq(s: Tensor, delta: Tensor, m: Tensor) -> tuple[Tensor, Tensor]:
    """``V = ∫₀¹ e^{uM} du = p I + q N`` by quadrature (see the module docstring)."""
    u, w = _quadrature(m.dtype, m.device)
    cu, su = _cosh_sinhc(delta[:, None] * u * u)
    ew = torch.exp(s[:, None] * u) * w
    return (ew * cu).sum(-1), (ew * u * su).sum(-1)


def expm_integral(m: Tensor) -> Tensor:
    """``V(m) = ∫₀¹ expm(u m) du``, ``(N, 2, 2)`` for ``m: (N, 2, 2)``: ``expm([[m, v], [0, 0]])`` translates by ``V v``."""
    a, b, c, d = m[:, 0, 0], m[:, 0, 1], m[:, 1, 0], m[:, 1, 1]
    s, h = (a + d) / 2, (a - d) / 2
    p, q = _integral_pq(s, h * h + b * c, m)
    return torch.stack([torch.stack([p + q * h, q * b], -1), torch.stack([q * c, p - q * h], -1)], -2)


def homogeneous(theta: Tensor) -> Tensor:
    """``(N, 2, 3)`` affine → ``(N, 3, 3)`` homogeneous matrix."""
    bottom = torch.zeros_like(theta[..., :1, :])
    bottom[..., 0, 2] = 1
    return torch.cat([theta, bottom], -2)


def affine_inverse(m: Tensor) -> Tensor:
    """Inverse of homogeneous affine matrices ``(N, 3, 3)`` in closed form (the 2x2 adjugate).

    The group's own inverse ``A(-η)`` is exact but costs an exponential; a matrix already built is
    inverted in a dozen elementwise operations, and with no numerical check that would read the
    values on the host (``det A(η) = e^{tr}`` is positive for every η).
    """
    a, b, c, d = m[:, 0, 0], m[:, 0, 1], m[:, 1, 0], m[:, 1, 1]
    tx, ty = m[:, 0, 2], m[:, 1, 2]
    r = 1.0 / (a * d - b * c)
    i00, i01, i10, i11 = d * r, -b * r, -c * r, a * r
    return homogeneous(torch.stack([torch.stack([i00, i01, -(i00 * tx + i01 * ty)], -1),
                                    torch.stack([i10, i11, -(i10 * tx + i11 * ty)], -1)], -2))
