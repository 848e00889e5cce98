"""The distribution of q_ω(η | x): a diagonal normal pushed onto the box (SPEC section 3).

``η = offset + b · squash(u)``, ``u ~ N(μ, σ)``. Its log-density is computed in the unconstrained
coordinate ``u``:

    log q(η) = log N(u; μ, σ) − Σ log b − Σ log(1 − tanh² u)        (the last term only if squashed)

with the stable ``log(1 − tanh² u) = 2 (log 2 − |u| − softplus(−2|u|))`` of the priors' box map.

Why not ``TransformedDistribution(Normal, [Tanh, Affine])``: in float32, ``tanh(u)`` rounds to ±1
from ``|u| ≈ 9`` and loses most of its digits from ``|u| ≈ 7``, so ``atanh`` of the stored η gives
±inf (NaN log-densities) or a ``u`` far from the one drawn (log q too low by many nats, which
inflates importance weights). A squashed pose network reaches that range on dSprites. Here:

* every draw remembers its ``u`` (a one-entry cache, like torch's transform caches), so scoring the
  tensor the distribution returned (what Pyro's traces, the IWLB and the ArviZ export do) is exact;
* any other η is scored at the pre-image ``u`` nearest ``μ`` among all ``u`` that round to the same
  floating-point η (computed in float64): exact where η resolves ``u``, and finite where it does
  not, erring towards a larger q (smaller importance weights) rather than inflating them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import pyro.distributions as dist
import torch
from pyro.distributions import constraints
from torch import Size, Tensor

from .priors.box_map import log1m_tanh2

__all__ = ["BoxNormal"]

# Rounding steps between u and the stored η (tanh, scale, offset), each worth up to one ulp.
ROUNDING_ULPS = 3


class BoxNormal(dist.TorchDistribution):
    """``offset + bounds · squash(N(loc, scale))`` with batch ``loc.shape[:-1]`` and event ``(dim,)``.

    Args:
        loc, scale: ``(..., dim)`` mean and standard deviation of the unconstrained ``u``.
        offset, bounds: ``(dim,)`` box centre and half-widths.
        squash: whether ``tanh`` enforces the box (otherwise ``η = offset + bounds · u`` on ℝ).
        circular: index (or indices) of unsquashed coordinates whose box is the whole circle (a
            rotation with half-width π, a hue with half-width 0.5). Their draws are wrapped into the
            box and their density is that of the wrapped normal, ``Σ_k N(u + 2k; μ, σ)`` in box units:
            a rotation by ``π + δ`` is the rotation by ``−π + δ``, and a pose head that reads the angle
            off the circle puts means near ±π, where an unwrapped draw would leave the support of
            every prior on the box.
    """

    arg_constraints = {"loc": constraints.real, "scale": constraints.positive}
    has_rsample = True

    def __init__(self, loc: Tensor, scale: Tensor, offset: Tensor, bounds: Tensor, squash: bool,
                 circular: int | Sequence[int] | None = None) -> None:
        self.loc, self.scale = torch.broadcast_tensors(loc, scale)
        self.offset, self.bounds, self.squash = offset, bounds, bool(squash)
        circular = () if circular is None else (int(circular),) if isinstance(circular, int) else tuple(circular)
        if circular and self.squash:
            raise ValueError("circular wrapping applies to unsquashed coordinates only")
        self.circular = circular
        self._cache: tuple[Tensor, Tensor] | None = None  # (η, u) of the latest draw
        super().__init__(self.loc.shape[:-1], self.loc.shape[-1:], validate_args=False)

    @constraints.dependent_property
    def support(self):
        if not self.squash:
            return constraints.real_vector
        return constraints.independent(constraints.interval(self.offset - self.bounds, self.offset + self.bounds), 1)

    def expand(self, batch_shape, _instance=None) -> BoxNormal:
        shape = Size(batch_shape) + self.event_shape
        return BoxNormal(self.loc.expand(shape), self.scale.expand(shape), self.offset, self.bounds, self.squash,
                         self.circular)

    def to_box(self, u: Tensor) -> Tensor:
        """``offset + bounds · squash(u)`` (the group's ``to_box``), the circular coordinate wrapped."""
        if self.circular:
            cols = list(u.unbind(-1))
            for c in self.circular:
                cols[c] = wrap_unit(cols[c])
            u = torch.stack(cols, dim=-1)
        return self.offset + self.bounds * (torch.tanh(u) if self.squash else u)

    def rsample(self, sample_shape: Size = Size()) -> Tensor:
        shape = self._extended_shape(Size(sample_shape))
        u = self.loc + self.scale * torch.randn(shape, dtype=self.loc.dtype, device=self.loc.device)
        eta = self.to_box(u)
        self._cache = (eta, u)
        return eta

    def log_prob_unconstrained(self, u: Tensor) -> Tensor:
        """``log q`` of the η whose pre-image is ``u: (..., dim)``, shape ``(...)``."""
        z = (u - self.loc) / self.scale
        log_n = -0.5 * z.square()
        if self.circular:
            # the wrapped normal: images of the draw one, two turns away (σ of a rotation is < π in practice)
            cols = list(log_n.unbind(-1))
            for c in self.circular:
                d = wrap_unit(u[..., c] - self.loc[..., c])[..., None] + 2.0 * WRAPS.to(u)
                cols[c] = torch.logsumexp(-0.5 * (d / self.scale[..., c, None]).square(), dim=-1)
            log_n = torch.stack(cols, dim=-1)
        lp = (log_n - self.scale.log() - 0.5 * math.log(2 * math.pi)).sum(-1)
        lp = lp - self.bounds.log().sum(-1)
        if self.squash:
            lp = lp - log1m_tanh2(u).sum(-1)
        return lp

    def log_prob(self, value: Tensor) -> Tensor:
        if value.shape[-1] != self.event_shape[0]:
            raise ValueError(f"eta must have {self.event_shape[0]} coordinates in its last dimension, "
                             f"got shape {tuple(value.shape)}")
        if self._cache is not None and value is self._cache[0]:
            return self.log_prob_unconstrained(self._cache[1])
        if not self.squash:
            return self.log_prob_unconstrained((value - self.offset) / self.bounds)
        u = nearest_preimage(value, self.loc, self.offset, self.bounds)
        lp = self.log_prob_unconstrained(u.to(self.loc.dtype))
        # u = ±inf: η outside the (closed) box, where q has no mass (avoid -inf + inf = NaN).
        return torch.where(torch.isfinite(u).all(-1), lp, torch.full_like(lp, -math.inf))


WRAPS = torch.arange(-2.0, 3.0)


def wrap_period(t: Tensor, period: float) -> Tensor:
    """``t`` wrapped into ``[-period / 2, period / 2)``."""
    return torch.remainder(t + period / 2, period) - period / 2


def wrap_unit(u: Tensor) -> Tensor:
    """``u`` wrapped into ``[-1, 1)``: the box coordinate of a full-circle rotation or hue, period 2."""
    return wrap_period(u, 2.0)


def nearest_preimage(eta: Tensor, loc: Tensor, offset: Tensor, bounds: Tensor) -> Tensor:
    """The ``u`` nearest ``loc`` with ``offset + bounds · tanh(u)`` rounding to ``eta``, in float64.

    Every ``u`` in ``[atanh(v_lo), atanh(v_hi)]`` may have given the stored value, where ``v_lo``,
    ``v_hi`` bound the values within ``ROUNDING_ULPS`` units in the last place of ``eta`` (in its
    dtype), in box units: ``tanh``, the scaling and the offset each round once; near ±1 that interval is wide (unbounded once η sits on the boundary),
    and ``loc`` picks the most likely point of it. Shapes broadcast: ``(..., dim)``.
    """
    inf = torch.tensor(math.inf, dtype=eta.dtype, device=eta.device)
    lo, hi = eta, eta
    for _ in range(ROUNDING_ULPS):
        lo, hi = torch.nextafter(lo, -inf), torch.nextafter(hi, inf)
    lo, hi = lo.double(), hi.double()
    off, b = offset.double(), bounds.double()
    u_lo = torch.atanh(((lo - off) / b).clamp(-1, 1))
    u_hi = torch.atanh(((hi - off) / b).clamp(-1, 1))
    return torch.minimum(torch.maximum(loc.double(), u_lo), u_hi)
