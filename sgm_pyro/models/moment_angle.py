"""A parameter-free rotation estimate from the image's complex moments about its centroid.

Any continuous pose network must leave part of a square's rotation in its prototype, or jump
somewhere in the square's 90° cell (docs/results.md §3, "Why the squares are never un-rotated").
A learned head that can jump has been tried three ways on dSprites (harmonics on the circle head,
on the equivariant head, and the equivariant head centred first) and each broke stage 1. This
head chooses the jump instead of learning it. With the image's weights ``w`` (its intensity above
the background) and ``d = z − c`` the position of a pixel relative to the centroid ``c`` (``z``
complex, counter-clockwise as displayed is positive), the normalised moments

    ν_m = Σ w d^m |d|² / Σ w |d|^(m+2)

turn as ``e^{i m α}`` when the image turns by ``α`` about any point, do not change under a shift or
an isotropic scale, and have ``|ν_m| ≤ 1``. An angle read off ``ν_m`` (``arg ν_m / m``) is fixed
modulo ``2π / m``, the cell of a shape with ``m``-fold symmetry: a square is read off its 4th
moment, an ellipse its 2nd, a heart its 3rd, and where a shape is not point-symmetric the cell is
resolved to the whole circle by a first-order moment (see :class:`MomentAngle` for the rule).
Measured on procedural dSprites at 64x64 (docs/results.md §3) against the true orientation:
residual spread 0.6° for squares modulo 90°, 1.0° for ellipses modulo 180°, 0.8° for hearts.

It sees moments, not shapes: it suits single objects on a plain background (dSprites and the
recovery tasks), not natural images whose background carries weight. Nothing in it is learned, so
the invariance loss sends it no gradient; the rest of the pose comes from the pose network.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from ..groups import Group, affine_part
from ..nn import downsample_to

# Complex moments c_pq = Σ w z^p z̄^q up to this total order: ν_5's denominator needs |z|^8.
_TOP = 8


def _monomial_coefficients(top: int) -> Tensor:
    """``K[p, q, a, b]``: the coefficient of ``x^a y^b`` in ``(x + iy)^p (x − iy)^q``, for ``p + q ≤ top``."""
    k = torch.zeros(top + 1, top + 1, top + 1, top + 1, dtype=torch.complex128)
    for p in range(top + 1):
        for q in range(top + 1 - p):
            for i in range(p + 1):
                for j in range(q + 1):
                    # x^(p-i) (iy)^i from the first factor, x^(q-j) (-iy)^j from the second
                    k[p, q, p - i + q - j, i + j] += math.comb(p, i) * math.comb(q, j) * (1j) ** i * (-1j) ** j
    return k


def _powers(t: Tensor) -> Tensor:
    """``t[..., None] ** (0, 1, ..., _TOP)`` by a running product (``pow`` costs more at these sizes)."""
    return torch.cat([torch.ones_like(t)[..., None], t[..., None].expand(*t.shape, _TOP).cumprod(-1)], -1)


class MomentAngle(nn.Module):
    """``(N, C, H, W)`` images → rotation angle in ``[-π, π)`` read off their complex moments.

    Three moments decide: ``ν_2`` (elongation), and ``ν_3``, ``ν_4`` of the image *whitened* by its
    covariance (``d ↦ C^{-1/2} d``, which commutes with rotations and undoes a stretch of a shape
    whose own covariance is round). Stage 1's random views stretch the shapes, and a stretched
    square's ``ν_2`` can outgrow its ``ν_4``; whitened, its ``ν_4`` moves by 0.1° under a stretch of
    ±0.375 in each log-scale. The rule, with ``s_m = |ν_m|`` of the whitened image:

    * ``max(s_3, s_4) < threshold`` (an ellipse, whose whitened image is a disk): ``arg ν_2 / 2``,
      modulo 180°;
    * else the larger of the two: ``arg ν_4 / 4`` (a square, modulo 90°) or ``arg ν_3 / 3`` (a heart);
    * where ``s_3 ≥ threshold`` the shape is not point-symmetric and the cell is resolved to the
      whole circle by ``arg(ν_3² ν̄_5)``, which turns once per turn. (A first moment about the
      centroid is 0; weighted by ``|d|²`` it is about 0.008 for a heart and picked the wrong third of
      the circle for 0.8% of turned hearts, against none for this one.) Its margin is a quarter of the
      heart's 120° cell, so small hearts, whose moments the pixels blur, can still take the wrong
      third: 0.2% of the paper's hearts (scale 0.9 to 1) lie more than 30° from the others.

    Args:
        threshold: the ``s_3``, ``s_4`` that count as structure (dSprites at 64x64: ellipses ≤ 0.23,
            squares' ``s_4`` ≥ 0.36 and hearts' ``s_3`` ≥ 0.26 under the views' stretches).
        input_size: average-pool larger images to this size first (``None``: full size).
        fill: the background value; a pixel weighs its channel mean's excess over it.
    """

    def __init__(self, *, threshold: float = 0.28, input_size: int | None = None, fill: float = -1.0) -> None:
        super().__init__()
        if not 0 < threshold < 1:
            raise ValueError(f"threshold must lie in (0, 1) (every |ν_m| ≤ 1), got {threshold}")
        self.threshold, self.input_size, self.fill = float(threshold), input_size, float(fill)
        self.register_buffer("coefficients", _monomial_coefficients(_TOP), persistent=False)
        # binomials[m, j] = C(m, j): buffers, so that no step copies a table to the device
        binomials = torch.tensor([[math.comb(m, j) for j in range(_TOP + 1)] for m in range(_TOP + 1)],
                                 dtype=torch.float64)
        self.register_buffer("binomials", binomials, persistent=False)

    def complex_moments(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """``c[:, p, q] = Σ w d^p d̄^q`` about the centroid, complex128 ``(N, 9, 9)``, and the covariance ``(N, 2, 2)``.

        Each is a polynomial in ``μ_ab = Σ w dx^a dy^b``, which two batched matrix products give at once;
        a complex power per pixel cost more than the pose network at 64x64. The sums over pixels run in
        the images' dtype about the centroid (nothing large cancels there); the polynomials in float64.
        """
        x = downsample_to(x, self.input_size)
        w = ((x[:, 0] if x.shape[1] == 1 else x.mean(1)) - self.fill).clamp_(min=0)  # (N, H, W), a new tensor
        h, wd = w.shape[-2:]
        s = max(h - 1, wd - 1, 1) / 2  # one unit for both axes: turns stay turns on a non-square image
        xs = (torch.arange(wd, dtype=w.dtype, device=w.device) - (wd - 1) / 2) / s
        ys = ((h - 1) / 2 - torch.arange(h, dtype=w.dtype, device=w.device)) / s  # y up: anticlockwise > 0
        rows, cols = w.sum(-1), w.sum(-2)
        mass = rows.sum(-1).clamp(min=torch.finfo(w.dtype).tiny)
        cx = (cols * xs).sum(-1) / mass
        cy = (rows * ys).sum(-1) / mass
        px = _powers(xs[None, :] - cx[:, None])  # (N, W, P): dx^a
        py = _powers(ys[None, :] - cy[:, None])  # (N, H, P): dy^b
        mu = (py.transpose(1, 2) @ (w @ px)).transpose(1, 2).to(torch.float64)  # (N, a, b)
        mass = mass.to(torch.float64)
        c = torch.einsum("pqab,nab->npq", self.coefficients.to(w.device), mu.to(torch.complex128))
        cov = torch.stack([mu[:, 2, 0], mu[:, 1, 1], mu[:, 1, 1], mu[:, 0, 2]], -1).view(-1, 2, 2) / mass[:, None, None]
        # each pixel is a square of side 1/s, not a point: its own variance 1/(12 s²) keeps the covariance of a
        # sliver of a shape (a view that pushed it out of the frame) invertible, so its whitening stays finite
        cov = cov + torch.eye(2, dtype=cov.dtype, device=cov.device) / (12 * s * s)
        return c, cov

    def _whitened(self, c: Tensor, cov: Tensor):
        """``(m, n) ↦ Σ w d'^m d̄'^n`` for ``d' = C^{-1/2} d`` (``z' = α z + β z̄``, expanded binomially)."""
        # C^{-1/2} of a 2x2 SPD matrix in closed form: √C = (C + √det C · I) / √(tr C + 2 √det C), and
        # the inverse of a symmetric 2x2 (no batched linalg call: on a GPU those check for errors on the host)
        a, b, d = cov[:, 0, 0], cov[:, 0, 1], cov[:, 1, 1]
        root_det = (a * d - b * b).clamp(min=1e-300).sqrt()
        scale = (a + d + 2 * root_det).clamp(min=1e-300).sqrt()
        r00, r01, r11 = (a + root_det) / scale, b / scale, (d + root_det) / scale
        det_r = (r00 * r11 - r01 * r01).clamp(min=1e-300)
        l00, l01, l10, l11 = r11 / det_r, -r01 / det_r, -r01 / det_r, r00 / det_r
        alpha = torch.complex((l00 + l11) / 2, (l10 - l01) / 2)
        beta = torch.complex((l00 - l11) / 2, (l10 + l01) / 2)

        pa, pb = _powers(alpha), _powers(beta)  # (N, P)
        pac, pbc = pa.conj(), pb.conj()

        def moment(m: int, n: int) -> Tensor:
            j, k = torch.arange(m + 1, device=c.device), torch.arange(n + 1, device=c.device)
            left = self.binomials[m, : m + 1] * pa[:, j] * pb[:, m - j]  # (N, m + 1)
            right = self.binomials[n, : n + 1] * pac[:, k] * pbc[:, n - k]  # (N, n + 1)
            terms = c[:, (j[:, None] + n - k[None, :]), (m - j[:, None] + k[None, :])]  # (N, m + 1, n + 1)
            return torch.einsum("nj,nk,njk->n", left, right, terms)
        return moment

    @staticmethod
    def _normalised(moment, m: int) -> Tensor:
        """``ν_m = Σ w d^m |d|² / Σ w |d|^(m+2)``; for odd ``m`` the denominator is its Cauchy-Schwarz bound
        ``(Σ w |d|^(m+1) Σ w |d|^(m+3))^½`` (not a polynomial otherwise), so that still ``|ν_m| ≤ 1``."""
        if m % 2 == 0:
            norm = moment((m + 2) // 2, (m + 2) // 2).real
        else:
            norm = (moment((m + 1) // 2, (m + 1) // 2).real * moment((m + 3) // 2, (m + 3) // 2).real).sqrt()
        return moment(m + 1, 1) / norm.clamp(min=1e-300)

    def moments(self, x: Tensor) -> dict[str, Tensor]:
        """``{"nu2": ν_2, "w3": ν_3, "w4": ν_4, "w5": ν_5}`` (the last three of the whitened image), complex ``(N,)``."""
        c, cov = self.complex_moments(x)
        raw = lambda m, n: c[:, m, n]  # noqa: E731
        white = self._whitened(c, cov)
        return {"nu2": self._normalised(raw, 2), **{f"w{m}": self._normalised(white, m) for m in (3, 4, 5)}}

    @torch.no_grad()
    def angle(self, x: Tensor, group: Group | None = None, index: int | None = None) -> Tensor:
        """The angle ``(N,)`` in the images' dtype; ``group`` and ``index`` are accepted for the heads' common call."""
        nu = self.moments(x)
        s3, s4 = nu["w3"].abs(), nu["w4"].abs()
        square = s4 >= s3
        shaped = torch.maximum(s3, s4) >= self.threshold
        order = torch.where(shaped, torch.where(square, 4.0, 3.0), 2.0).to(torch.float64)
        value = torch.where(shaped, torch.where(square, nu["w4"], nu["w3"]), nu["nu2"])
        theta = torch.angle(value) / order
        cell = 2 * math.pi / order
        # Among theta + k·cell, the candidate a quarter cell from the first-order angle. For a mirror-symmetric
        # shape (a heart) that angle minus theta is a multiple of half a cell, so the nearest candidate would be
        # a tie; the quarter-cell offset puts every such shape a quarter cell from the rounding boundary.
        first = torch.angle(nu["w3"] ** 2 * nu["w5"].conj())
        gap = torch.remainder(first - theta + math.pi, 2 * math.pi) - math.pi
        resolved = theta + cell * torch.round(gap / cell - 0.25)
        theta = torch.where(s3 >= self.threshold, resolved, theta)
        theta = torch.where(torch.isfinite(theta), theta, 0.0)  # a blank image has no orientation: the identity
        return (torch.remainder(theta + math.pi, 2 * math.pi) - math.pi).to(x.dtype)


def background_fill(group: Group) -> float:
    """The value a warp of ``group`` fills the frame with (-1 when it names none)."""
    return float(getattr(affine_part(group), "fill", -1.0))
