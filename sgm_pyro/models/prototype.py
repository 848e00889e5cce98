"""The prototype inference network q_ω(η | x) (SPEC section 3)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import pyro
import torch
from pyro.nn import PyroModule
from torch import Tensor, nn

from ..groups import Group, affine_part
from ..nn import MLP, ConvFeatures, downsample_to
from .box_normal import BoxNormal
from .equivariant_angle import PERIODS, EquivariantPoint, angle_to_value, check_harmonics
from .moment_angle import MomentAngle, background_fill
from .pixel_set_colour import PixelSetColour

NETWORKS = ("mlp", "cnn")
ROTATION_HEADS = ("circle", "equivariant", "real", "moments")
HUE_HEADS = ("circle", "equivariant", "real")  # moments read geometry, not colour
COLOUR_HEADS = ("set", "mlp")
# The equivariant hue head sees images pooled to at most this size: colour needs no spatial detail, and
# averaging a shape with its black background keeps its hue.
HUE_INPUT_SIZE = 8


def circular_index(group: Group, name: str = "rot") -> int | None:
    """Index of the coordinate ``name`` (``"rot"`` or ``"hue"``) when its box covers its whole circle
    (a half-width of at least half the period: π for a rotation, 0.5 for a hue), else None."""
    return group.names.index(name) if group.covers_circle(name) else None


def circular_indices(group: Group) -> tuple[int, ...]:
    """Indices of every coordinate whose box covers its whole circle (see :func:`circular_index`)."""
    return tuple(i for i in (circular_index(group, n) for n in PERIODS) if i is not None)


class PrototypeInference(PyroModule):
    """``q_ω(η | x) = offset + b · squash(μ_ω(x) + σ ε)``, ``ε ~ N(0, I)``.

    The mean head is zero-initialised, so training starts at the identity transformation (except for
    a full-circle rotation read by the equivariant head, see ``rotation_head``); ``σ`` is
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
        rotation_head: how the angle of a full-circle rotation (a ``"rot"`` box of half-width π)
            is read; for any other box every head is ``"real"``.

            * ``"equivariant"`` (default): the angle of the group average of a point,
              :class:`EquivariantPoint`. Equivariant by construction under the cyclic group of
              ``rotation_copies`` rotations (exact for quarter turns), so a digit and its half-turn
              get poses 180° apart from the first step; training starts at random poses, not at the
              identity, and ``InferenceConfig.upright_weight`` picks the canonical orientation
              nearest the data. ``rotation_copies`` and ``rotation_hidden`` set its network;
              ``rotation_harmonics=(4, 2, 1)`` lets it un-rotate shapes with 2- and 4-fold symmetry
              too (a square within its 90° cell; see :class:`EquivariantPoint`).
            * ``"circle"``: ``atan2(s, 1 + c)`` of a point predicted by the MLP: no seam at ±180°,
              but no equivariance either.
            * ``"real"``: the reference, one real number. A continuous map from rotated images to
              ℝ must jump somewhere on the circle (Zhou et al., CVPR 2019).
            * ``"moments"``: :class:`MomentAngle`, the angle of the image's strongest complex
              moment about its centroid, which nothing learns; it un-rotates a square within its
              90° cell, which no continuous head can. For single shapes on a plain background
              (the dSprites demo). The network's ``tx``, ``ty`` outputs then mean the translation
              of ``A(η)`` (where the prototype's centre lands), so that placing a shape does not
              depend on the angle the network never sees (:meth:`AffineGroup.translation_coordinates`).

            Measured on MNIST (docs/results.md §8): fully rotated digits get rotation densities
            of 125°–140° circular std with the equivariant head and about 50° (half the circle)
            with the others, and its held-out x-MSE after 300 steps is the lowest of the three.
        hue_head: the same choice for a hue whose box covers the whole colour circle (half-width
            0.5, as in the GalaxyMNIST box), with the hue read off a point at angle
            ``2π (hue − offset)``. ``"equivariant"`` (default) averages over ``rotation_copies`` hue
            shifts (exact for each, so nothing is interpolated) with its own ``φ`` of widths
            ``rotation_hidden`` on images pooled to 8x8. Measured on the recovery benchmark's
            colour task (docs/recovery.md): hue W1 0.0003–0.008 per shape, against 0.02–0.23 with the
            other heads; a shape of uniformly random hue is canonicalised only by this one.
        colour_head: who reads ``log_sat``, ``log_val`` (and a hue read by no circle head).
            ``"set"`` (default): :class:`PixelSetColour`, which sees the pixels as a set and so is
            blind to the geometry; ``"mlp"``: the pose network itself, as in the reference, which
            can mistake a bigger shape for a brighter one (docs/recovery.md, "Size or brightness").
    """

    def __init__(self, group: Group, image_shape: Sequence[int], *, net: str = "mlp",
                 hidden: Sequence[int] = (2048, 1024, 512, 256), input_size: int | None = None,
                 channels: Sequence[int] = (16, 32, 64, 64), sigma_init: float = 0.01,
                 rotation_head: str = "equivariant", rotation_copies: int = 8,
                 rotation_hidden: Sequence[int] = (256, 128), rotation_harmonics: Sequence[int] = (1,),
                 hue_head: str = "equivariant", colour_head: str = "set") -> None:
        super().__init__()
        if net not in NETWORKS:
            raise ValueError(f"net must be one of {NETWORKS}, got {net!r}")
        if len(image_shape) != 3:
            raise ValueError(f"image_shape must be (C, H, W), got {tuple(image_shape)}")
        if sigma_init <= 0:
            raise ValueError(f"sigma_init must be positive, got {sigma_init}")
        if rotation_head not in ROTATION_HEADS:
            raise ValueError(f"rotation_head must be one of {ROTATION_HEADS}, got {rotation_head!r}")
        if hue_head not in HUE_HEADS:
            raise ValueError(f"hue_head must be one of {HUE_HEADS}, got {hue_head!r}")
        if colour_head not in COLOUR_HEADS:
            raise ValueError(f"colour_head must be one of {COLOUR_HEADS}, got {colour_head!r}")
        self.group = group
        self.image_shape = tuple(int(s) for s in image_shape)
        self.input_size = input_size
        c, h, w = self.image_shape
        if input_size is not None:
            h = w = int(input_size)
        self.circle = circular_index(group) if rotation_head != "real" else None
        self.rotation_head = rotation_head if self.circle is not None else "real"
        self.hue = circular_index(group, "hue") if hue_head != "real" else None
        self.hue_head = hue_head if self.hue is not None else "real"
        # (index, name, head) of every coordinate read off a point on the circle, in the group's order
        self.circles = sorted((i, n, h) for i, n, h in ((self.circle, "rot", self.rotation_head),
                                                          (self.hue, "hue", self.hue_head)) if i is not None)
        # every coordinate read by an equivariant head: no other network is needed
        only_equivariant = sum(h == "equivariant" for _, _, h in self.circles) == group.dim
        if net == "mlp" or only_equivariant:
            self.features = nn.Identity()
            width = c * h * w
        else:
            self.features = ConvFeatures((c, h, w), channels)
            width = self.features.out_features
        self.rotation_harmonics = check_harmonics(rotation_harmonics)
        if self.rotation_head != "equivariant" and self.rotation_harmonics != (1,):
            # measured for the circle head (docs/results.md §3): squares not un-rotated, the demo's stage 1 broken
            raise ValueError(f"rotation_harmonics={self.rotation_harmonics} needs the equivariant rotation head "
                             f"on a full-circle rotation box (the head here is {self.rotation_head!r})")
        # a circle head emits one extra output per coordinate: (c, s) of its point replaces its single number
        extra = sum(h == "circle" for _, _, h in self.circles)
        self.head = None if only_equivariant else MLP(width, hidden, group.dim + extra, zero_last=True)

        def point(coordinate: str, head: str) -> EquivariantPoint | None:
            if head != "equivariant":
                return None
            size = min(input_size or 32, 32 if coordinate == "rot" else HUE_INPUT_SIZE)
            return EquivariantPoint(self.image_shape, copies=rotation_copies, hidden=rotation_hidden,
                                    input_size=size, coordinate=coordinate,
                                    harmonics=rotation_harmonics if coordinate == "rot" else (1,))

        # the colour coordinates the pixel-set head reads (none without a colour group, or with "mlp")
        names = ("log_sat", "log_val") + (("hue",) if self.hue_head == "real" else ())
        self.colour_indices = tuple(i for i, n in enumerate(group.names) if n in names) \
            if colour_head == "set" and self.head is not None else ()
        self.colour_head = "set" if self.colour_indices else "mlp"
        self.colour = PixelSetColour(c, len(self.colour_indices), input_size=input_size) \
            if self.colour_indices else None
        self.equivariant = point("rot", self.rotation_head)
        self.moment = MomentAngle(fill=background_fill(group)) if self.rotation_head == "moments" else None
        # the moment head's network places shapes by A(η)'s translation column (see rotation_head)
        self.places_centre = self.moment is not None and {"tx", "ty"} <= set(affine_part(group).names)
        self.equivariant_hue = point("hue", self.hue_head)
        self.log_sigma = nn.Parameter(torch.full((group.dim,), math.log(sigma_init)))

    @property
    def sigma(self) -> Tensor:
        return self.log_sigma.exp()

    def mean_unconstrained(self, x: Tensor) -> Tensor:
        """``μ_ω(x)`` before the squash and box map, shape ``(N, dim)``."""
        g = self.group
        if self.head is None:
            out = x.new_zeros(x.shape[0], g.dim)
        else:
            out = self.head(self.features(downsample_to(x, self.input_size)))
        if self.colour is not None:
            cols = list(out.unbind(1))
            for k, value in zip(self.colour_indices, self.colour(x).unbind(1)):
                cols[k] = value
            out = torch.stack(cols, dim=1)
        if not self.circles:
            return out
        cols, extra = list(out[:, :g.dim].unbind(1)), out[:, g.dim:]
        j = 0
        for i, name, head in self.circles:
            if head == "circle":
                # zero-initialised outputs give the point (1, 0): angle 0, the identity, with a finite gradient
                angle = torch.atan2(extra[:, j], 1.0 + cols[i])
                j += 1
            elif head == "moments":
                angle = self.moment.angle(x)
            else:
                angle = (self.equivariant if name == "rot" else self.equivariant_hue).angle(x, g, i)
            v = angle_to_value(angle, g, i, PERIODS[name])
            cols[i] = torch.atanh(v.clamp(-1 + 1e-6, 1 - 1e-6)) if g.squash else v
        out = torch.stack(cols, dim=1)
        return self._place_centre(out) if self.places_centre else out

    def _place_centre(self, u: Tensor) -> Tensor:
        """Read the network's ``tx``, ``ty`` as ``A(η)``'s translation and write the coordinates that give it."""
        g = self.group
        a = affine_part(g)
        eta = g.to_box(u)
        i, j = a.names.index("tx"), a.names.index("ty")
        v = a.translation_coordinates(eta[:, :a.dim], torch.stack([eta[:, i], eta[:, j]], -1))
        placed = eta.clone()
        placed[:, i], placed[:, j] = v[:, 0], v[:, 1]
        back = g.from_box(placed)
        out = u.clone()  # the other coordinates exactly as the network gave them
        out[:, i], out[:, j] = back[:, i], back[:, j]
        return out

    def mode(self, x: Tensor) -> Tensor:
        """The pose ``η = f_ω(x)``: the box image of the mean, shape ``(N, dim)``."""
        return self.group.to_box(self.mean_unconstrained(x))

    def rsample(self, x: Tensor, num_samples: int | None = None) -> Tensor:
        """Reparameterised draws of η, shape ``(N, dim)`` or ``(num_samples, N, dim)``."""
        mu = self.mean_unconstrained(x)
        shape = mu.shape if num_samples is None else (num_samples,) + mu.shape
        eps = torch.randn(shape, dtype=mu.dtype, device=mu.device)
        return self.group.to_box(mu + self.sigma * eps)

    def distribution(self, x: Tensor) -> BoxNormal:
        """``q_ω(η | x)`` as a distribution with batch ``(N,)`` and event ``(dim,)``.

        Its log-density is computed in the unconstrained coordinate (see :class:`BoxNormal`), so it
        stays finite and exact where a squashed network saturates ``tanh`` in float32.
        """
        mu = self.mean_unconstrained(x)
        g = self.group
        # an unsquashed full-circle rotation or hue is periodic: q is the wrapped normal there (see BoxNormal)
        wrap = None if g.squash else circular_indices(g)
        return BoxNormal(mu, self.sigma.expand_as(mu), g.offset, g.bounds, g.squash, wrap)

    def forward(self, x: Tensor) -> Tensor:
        """Guide program: sample site ``"eta"`` (the caller owns the data plate)."""
        return pyro.sample("eta", self.distribution(x))
