"""The self-supervised invariance objective of stage 1 (SPEC section 3)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from ..groups.base import CoordinateScale
from ..models.prototype import PrototypeInference
from ..nn import downsample_to
from .distributed import all_reduce_sum


# Measured on MNIST (docs/results.md §8), constant weights 0 / 0.2 / 1.0 / 3.0: held-out x-MSE after 300
# steps on fully rotated digits 0.177 / 0.200 / 0.234 / 0.320; median ±15° class 59° / 22° / 18° / 16.5°.
# A constant weight trades one against the other. So 0.2 is only the base weight of the default
EQUIVARIANT_UPRIGHT_WEIGHT = 0.2
# and 3.0 the weight for concentrated poses (``upright_concentrated_weight``): poses spread over the circle
# keep 0.2, poses gathered about one angle get up to 3.0. Measured (§8): x-MSE after 300 steps on fully
# rotated digits 0.197 / 0.190, seeds 0 / 1 (constant 0.2: 0.191 / 0.180); median ±15° class 16.2° /
# 16.4° / 17.3°, seeds 0 / 1 / 2 (constant 0.2: 22.1°, seed 0).
EQUIVARIANT_CONCENTRATED_UPRIGHT_WEIGHT = 3.0


def pose_concentration(angle: Tensor, sync_ranks: bool = False) -> Tensor:
    """Unbiased estimate of ``|E e^{iθ}|²`` from ``n`` angles, clipped to ``[0, 1]``.

    ``n |mean e^{iθ}|² − 1`` has expectation ``(n − 1) |E e^{iθ}|²`` for independent angles, so the
    estimate is 0 on average for angles uniform on the circle, whatever the batch size. With
    ``sync_ranks`` the sums are taken over the union of the ranks' batches (one all-reduce), so
    data-parallel training weighs the prior as one process with the whole batch would.
    """
    angle = angle.detach()
    # the count as a fill, not a copy from the host (which could wait on the device)
    sums = torch.stack([torch.cos(angle).sum(), torch.sin(angle).sum(), angle.new_full((), float(angle.shape[0]))])
    if sync_ranks:
        sums = all_reduce_sum(sums)
    c, s, n = sums.unbind()
    est = ((c.square() + s.square()) / n - 1.0) / (n - 1.0).clamp_min(1.0)
    return torch.where(n > 1.5, est.clamp(0.0, 1.0), torch.ones_like(est))


@dataclass
class InvarianceLoss:
    """Invariance (+ invertibility) loss of the prototype network.

    For each example and each of ``num_draws`` draws: two random views ``x_r1 = T_{r1}(x)`` and
    ``x_r2 = T_{r2}(x)`` (``r2 = 0`` when not ``symmetric``), poses ``η_i ~ q_ω(· | x_ri)``, and the
    reconstruction ``x' = x`` warped once by the chain ``r1, η_1⁻¹, η_2, r2⁻¹``. If ``f_ω`` is invariant
    both views map to the same prototype and the chain is the identity, so
    ``L_x = mean (x - x')²`` is zero.

    The invertibility term penalises prototypes that push content out of the frame: the prototype
    ``x̂_1 = T_{η_1}⁻¹(x_r1)`` (one warp of ``x``) is warped back by ``η_1`` and compared with ``x_r1``.
    (Composing those two steps into one warp would make the term identically zero, so this is the
    one place where a second interpolation is intended.)

    Args:
        num_draws: ``S`` in SPEC 3 (5 by default).
        inv_weight: weight of the invertibility term (0.1 MNIST, 1.0 dSprites, 0 colour data).
        symmetric: draw both views at random (``False``: ``r2`` is the identity).
        augment_scale: random views are uniform on ``offset ± augment_scale · bounds``: one number,
            one per coordinate, or ``{coordinate: number}`` (the others 1). A factor below 1 on a
            coordinate keeps the views inside a box narrower than the poses may reach, so that a
            view composed with the data's own pose stays inside the squashed box.
        upright_weight: weight of a canonicalisation prior on the training images themselves,
            ``mean(1 − cos f_rot(x))`` (Mondal et al., NeurIPS 2023, "Equivariant adaptation of large
            pretrained models"). An equivariant pose head canonicalises every image but is indifferent
            to *which* orientation its prototype takes, so prototypes of one class can come out at
            any angle, and the prior then has to learn that angle from x̂; this term picks, among the
            canonical orientations, the one closest to the data as given. It cannot narrow a fully
            rotated data set, whose poses an equivariant head spreads over the circle by construction.
            Ignored without a ``"rot"`` coordinate. ``None`` (default): ``EQUIVARIANT_UPRIGHT_WEIGHT``
            for an equivariant head, 0 for the others (for a head that is not equivariant the term
            would compete with invariance itself).
        upright_concentrated_weight: the prior's weight when the batch's poses are concentrated. The
            weight used is ``w + (w_c − w) ρ̂²``, with ``ρ̂²`` the unbiased estimate of the poses' squared
            mean resultant length ``|E e^{i f_rot(x)}|²`` (``pose_concentration``, no gradient). Poses
            spread over the circle (fully rotated data, where a strong prior fights the invariance loss)
            keep the base weight ``w``; poses gathered about one angle (mostly upright data, where it
            picks the canonical orientation) get up to ``w_c``. ``None`` (default):
            ``EQUIVARIANT_CONCENTRATED_UPRIGHT_WEIGHT`` for an equivariant head whose ``upright_weight``
            is the default too; otherwise the base weight alone.
        isotropy_weight: weight of a second canonicalisation prior on the training images,
            ``mean((f_log_sx(x) − f_log_sy(x))²) / b²`` with ``b`` the log-scale half-width. An
            ellipse is unchanged by a rotation conjugated by its own stretch, so its pose is not
            identified along that orbit: a pose network can explain its orientation partly by
            swapping the stretch between the axes (docs/recovery.md, "Size or brightness"). This term
            picks the least anisotropic of the equivalent poses. It assumes the data's own scales
            are near isotropic, so it is off (0) by default. Ignored without both log-scales.
        image_size: average-pool ``x`` to ``image_size x image_size`` before the views are drawn
            (``None``: full resolution). The transformations act on normalised coordinates, so
            the loss means the same at any resolution; at 64x64 a 32x32 loss costs a quarter of
            the warps, and a pose network that pools its input to 32x32 sees the same pixels.
    """

    num_draws: int = 5
    inv_weight: float = 0.1
    symmetric: bool = True
    augment_scale: CoordinateScale = 1.0
    image_size: int | None = None
    upright_weight: float | None = None
    upright_concentrated_weight: float | None = None
    isotropy_weight: float = 0.0

    def upright_weight_for(self, inference: PrototypeInference) -> float:
        if self.upright_weight is not None:
            return float(self.upright_weight)
        return EQUIVARIANT_UPRIGHT_WEIGHT if inference.rotation_head == "equivariant" else 0.0

    def upright_concentrated_weight_for(self, inference: PrototypeInference) -> float | None:
        if self.upright_concentrated_weight is not None:
            return float(self.upright_concentrated_weight)
        if self.upright_weight is None and inference.rotation_head == "equivariant":
            return EQUIVARIANT_CONCENTRATED_UPRIGHT_WEIGHT
        return None  # a weight the user set stays constant

    def __call__(self, inference: PrototypeInference, x: Tensor, *, sync_ranks: bool = False) -> dict[str, Tensor]:
        """Loss terms for a batch ``x: (N, C, H, W)``: ``{"loss", "mse"[, "inv", "upright", ...]}`` scalars.

        ``sync_ranks``: estimate the poses' concentration over every rank's batch (training only;
        every rank must make the call).
        """
        g = inference.group
        x = downsample_to(x, self.image_size)
        s, n = self.num_draws, x.shape[0]
        r1 = g.sample_uniform(s * n, scale=self.augment_scale).to(x.dtype)
        r2 = g.sample_uniform(s * n, scale=self.augment_scale).to(x.dtype) if self.symmetric \
            else g.identity(s * n, dtype=x.dtype)
        # Every warp below reads x minus the group's background and writes the same, so none of them
        # shifts its input and output; the shift is undone once, for the network's input.
        b = g.background
        x2 = (x - b if b else x).repeat(2 * s, 1, 1, 1)  # draws stacked along the batch, both views: (2SN, C, H, W)
        xs = x2[: s * n]
        views = g.element(torch.cat([r1, r2]))
        v1, v2 = views[: s * n], views[s * n:]
        x_r = g.act(x2, views, background=b) if self.symmetric else \
            torch.cat([g.act(xs, v1, background=b), xs])
        eta = inference.rsample(x_r + b if b else x_r)
        e1 = g.element(eta[: s * n])
        to_proto1 = g.compose(v1, g.invert(e1))  # r1, then η1⁻¹
        recon = g.act(xs, g.compose(to_proto1, g.element(eta[s * n:]), g.invert(v2)), background=b)
        mse = F.mse_loss(recon, xs)  # one fused pass each way, where sub, square and mean take three
        terms = {"mse": mse}
        loss = mse
        if self.inv_weight > 0:
            proto1 = g.act(xs, to_proto1, background=b)
            inv = F.mse_loss(g.act(proto1, e1, background=b), x_r[: s * n])
            terms["inv"] = inv
            loss = loss + self.inv_weight * inv
        weight, top, eta_x = self.upright_weight_for(inference), self.upright_concentrated_weight_for(inference), None
        if (weight > 0 or (top or 0.0) > 0) and "rot" in g.names:
            i = g.names.index("rot")
            eta_x = inference.mode(x)
            angle = eta_x[:, i] - g.offset[i]
            upright = (1.0 - torch.cos(angle)).mean()
            terms["upright"] = upright
            if top is not None and top != weight:
                conc = pose_concentration(angle, sync_ranks)
                terms["pose_concentration"] = conc
                weight = weight + (top - weight) * conc
            # a constant weight as a fill on the device, not a copy from the host on every step
            terms["upright_weight"] = weight if torch.is_tensor(weight) else upright.new_full((), weight)
            loss = loss + weight * upright
        if self.isotropy_weight > 0 and {"log_sx", "log_sy"} <= set(g.names):
            i, j = g.names.index("log_sx"), g.names.index("log_sy")
            eta_x = inference.mode(x) if eta_x is None else eta_x
            aniso = ((eta_x[:, i] - eta_x[:, j]) / g.bounds[i]).square().mean()
            terms["isotropy"] = aniso
            loss = loss + self.isotropy_weight * aniso
        terms["loss"] = loss
        return terms
