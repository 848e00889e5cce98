"""Align learned poses with true ones: the prototype's canonical pose is arbitrary (a gauge).

The SGM learns ``x = T_η̂(x̂_learned)`` while the data were made as ``x = T_η(x̂_true)``. If the
learned prototype is ``x̂_learned = T_{g}(x̂_true)`` for one group element ``g`` per class, then
``A(η) = A(η̂) · A(g)``: the learned poses are the true ones composed on the right with a constant.
So per class we estimate ``G = A(g)`` from the pairs ``A(η̂_i)⁻¹ A(η_i)`` over the class's images, as
the coordinate-wise median of their logarithms (a circular median for the rotation), and map every
learned pose (and every sample of ``p(η | x̂)``) through ``η̂ ↦ log(A(η̂) G)``. (The element-wise median
of the matrices themselves is biased where the pairs' rotations spread: over rotations uniform on
±45° the median of ``s cos θ`` is ``0.92 s``, which charged a model that keeps a square's rotation in
its prototype with a log-scale offset of −0.08 it did not have.) One group element per class is
fitted, a handful of numbers against hundreds of images, so the alignment cannot hide a distribution
of the wrong shape.

A prototype with rotational symmetry of order ``m`` (a square: 4) leaves the true pose defined only
up to a rotation by ``2π/m``; each image's true pose is taken as the representative closest to the
class's alignment (the rotation is then compared on the ``m``-fold circle anyway).

Colour parameters compose by addition (SPEC 2.2), so their alignment is a shift: a circular mean
for hue (period 1), a median for log-saturation and log-value.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from ..groups import AffineGroup, ColorGroup, Group, ProductGroup


def split_group(group: Group) -> tuple[AffineGroup | None, ColorGroup | None]:
    """The affine and colour factors of ``group`` (``None`` where absent)."""
    if isinstance(group, ProductGroup):
        return group.affine, group.color
    if isinstance(group, AffineGroup):
        return group, None
    if isinstance(group, ColorGroup):
        return None, group
    raise ValueError(f"pose alignment supports AffineGroup, ColorGroup and ProductGroup, got {type(group).__name__}")


def matrix_angle(m: Tensor) -> Tensor:
    """Rotation angle of the linear part of ``(..., 3, 3)`` matrices, in the ``rot`` convention of SPEC 2.1."""
    return torch.atan2(m[..., 0, 1] - m[..., 1, 0], m[..., 0, 0] + m[..., 1, 1])


def _init_from_matrix(affine: AffineGroup, m: Tensor) -> Tensor:
    """A starting η for :func:`affine_log`: rotation and log column norms read off the matrix."""
    cols = {"tx": m[:, 0, 2], "ty": m[:, 1, 2], "rot": matrix_angle(m),
            "log_sx": m[:, :2, 0].norm(dim=1).log(), "log_sy": m[:, :2, 1].norm(dim=1).log(),
            "shear": torch.zeros_like(m[:, 0, 0])}
    return torch.stack([cols[n] for n in affine.names], dim=1)


def affine_log(affine: AffineGroup, m: Tensor, iterations: int = 30) -> Tensor:
    """``η`` with ``A(η) ≈ m``, ``(N, dim)``, for ``m: (N, 3, 3)`` (least squares on the top two rows).

    The group's coordinates are Lie-algebra coordinates with no closed-form logarithm for every
    generator subset, so each row is solved by damped Gauss-Newton in float64 (central-difference
    Jacobians, all rows at once) from a start read off the matrix. A matrix outside the group
    (e.g. a rotation composed with unequal scales) gets its closest member. Rotations are
    returned wrapped to ``[-π, π)``.
    """
    target = m.detach().double()[:, :2].reshape(-1, 6)
    eta = _init_from_matrix(affine, m.detach().double())
    f = lambda e: affine._matrix(e)[:, :2].reshape(-1, 6)
    eye = torch.eye(affine.dim, dtype=torch.float64)
    h = 1e-6
    damping = torch.full((eta.shape[0], 1, 1), 1e-3, dtype=torch.float64)
    residual = f(eta) - target
    for _ in range(iterations):
        if residual.abs().max() < 1e-12:
            break
        jac = torch.stack([(f(eta + h * eye[i]) - f(eta - h * eye[i])) / (2 * h) for i in range(affine.dim)], -1)
        jtj, jtr = jac.transpose(1, 2) @ jac, (jac.transpose(1, 2) @ residual[..., None])
        step = torch.linalg.solve(jtj + damping * (eye + torch.diag_embed(jtj.diagonal(dim1=1, dim2=2))), jtr)[..., 0]
        trial = eta - step
        new = f(trial) - target
        better = new.square().sum(1) < residual.square().sum(1)
        eta = torch.where(better[:, None], trial, eta)
        residual = torch.where(better[:, None], new, residual)
        damping = torch.where(better[:, None, None], damping * 0.3, damping * 10).clamp(1e-12, 1e8)
    out = eta
    if "rot" in affine.names:
        i = affine.names.index("rot")
        out[:, i] = torch.remainder(out[:, i] + math.pi, 2 * math.pi) - math.pi
    return out.to(m.dtype)


def circular_mean(angles: Tensor, period: float = 2 * math.pi) -> Tensor:
    """Circular mean of a 1-D sample (same units and period as the input), a scalar tensor."""
    z = angles.double() * (2 * math.pi / period)
    return torch.atan2(torch.sin(z).mean(), torch.cos(z).mean()) * (period / (2 * math.pi))


def log_median(affine: AffineGroup, m: Tensor) -> Tensor:
    """The coordinate-wise median of ``log m`` over ``m: (N, 3, 3)``, a circular median for the rotation; ``(dim,)``."""
    coords = affine_log(affine, m.double())
    med = coords.median(dim=0).values
    if "rot" in affine.names:
        i = affine.names.index("rot")
        ref = circular_mean(coords[:, i])
        med[i] = ref + (torch.remainder(coords[:, i] - ref + math.pi, 2 * math.pi) - math.pi).median()
    return med


def rotation_matrix(affine: AffineGroup, angles: Tensor) -> Tensor:
    """``A(η)`` of pure rotations by ``angles: (N,)``, ``(N, 3, 3)`` float64."""
    eta = torch.zeros(angles.shape[0], affine.dim, dtype=torch.float64)
    eta[:, affine.names.index("rot")] = angles.double()
    return affine._matrix(eta)


class ClassAlignment:
    """The alignment of one class: ``G`` (affine, ``(3, 3)`` or ``None``) and the colour shift.

    Build it with :meth:`fit` from paired true and learned poses; :meth:`apply` maps any learned
    poses ``(M, dim)`` (data poses or samples of ``p(η | x̂)``) into the true prototype's frame.
    """

    def __init__(self, group: Group, matrix: Tensor | None, color_shift: Tensor | None) -> None:
        self.group, self.matrix, self.color_shift = group, matrix, color_shift
        self.affine, self.color = split_group(group)

    @classmethod
    def fit(cls, group: Group, true_eta: Tensor, learned_eta: Tensor, symmetry: int = 1) -> tuple[ClassAlignment, Tensor]:
        """Estimate the alignment; returns it and the true poses as representatives ``(N, dim)``.

        ``true_eta``, ``learned_eta``: ``(N, dim)`` for the same images; ``symmetry``: the rotational
        symmetry order of the class's prototype.
        """
        affine, color = split_group(group)
        true_eta, learned_eta = true_eta.double(), learned_eta.double()
        rep = true_eta.clone()
        matrix = shift = None
        na = affine.dim if affine is not None else 0
        if affine is not None:
            a_true, a_hat = affine._matrix(true_eta[:, :na]), affine._matrix(learned_eta[:, :na])
            d = torch.linalg.solve(a_hat, a_true)                      # A(η̂)⁻¹ A(η)
            if symmetry > 1 and "rot" in affine.names:
                step = 2 * math.pi / symmetry
                delta = matrix_angle(d)
                ref = circular_mean(delta * symmetry) / symmetry
                k = torch.round(torch.remainder(ref - delta + math.pi, 2 * math.pi) / step - math.pi / step)
                a_true = a_true @ rotation_matrix(affine, k * step)
                d = torch.linalg.solve(a_hat, a_true)
                rep[:, :na] = affine_log(affine, a_true)
            matrix = affine._matrix(log_median(affine, d)[None])[0]
        if color is not None:
            diff = true_eta[:, na:] - learned_eta[:, na:]
            shift = torch.stack([circular_mean(diff[:, 0], 1.0), diff[:, 1].median(), diff[:, 2].median()])
        return cls(group, matrix, shift), rep

    def apply(self, learned_eta: Tensor) -> Tensor:
        """Learned poses ``(M, dim)`` mapped into the true prototype's frame, ``(M, dim)`` float64."""
        eta = learned_eta.double()
        parts = []
        na = self.affine.dim if self.affine is not None else 0
        if self.affine is not None:
            parts.append(affine_log(self.affine, self.affine._matrix(eta[:, :na]) @ self.matrix))
        if self.color is not None:
            c = eta[:, na:] + self.color_shift
            c[:, 0] = torch.remainder(c[:, 0], 1.0)
            parts.append(c)
        return torch.cat(parts, dim=1)

    def summary(self) -> dict:
        """The fitted alignment as plain data (for the JSON of results)."""
        out: dict = {}
        if self.matrix is not None:
            out["affine_matrix"] = self.matrix.tolist()
            out["rotation_deg"] = math.degrees(float(matrix_angle(self.matrix)))
        if self.color_shift is not None:
            out["color_shift"] = self.color_shift.tolist()
        return out
