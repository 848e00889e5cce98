"""Products of groups: colour then affine (SPEC section 2.3)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from .affine import AffineGroup
from .base import Group
from .color import ColorGroup


class ProductGroup(Group):
    """``T_η(x) = affine(colour(x, η_c), η_a)`` with ``η = concat(η_a, η_c)``.

    Composition and inverse act per factor; a chain costs one colour conversion and one warp.
    Both factors must agree on ``squash`` (the density maps act on the whole η at once).
    """

    def __init__(self, color: ColorGroup, affine: AffineGroup) -> None:
        if not isinstance(color, ColorGroup) or not isinstance(affine, AffineGroup):
            raise ValueError("ProductGroup expects (ColorGroup, AffineGroup), got "
                             f"({type(color).__name__}, {type(affine).__name__})")
        if color.squash != affine.squash:
            raise ValueError(f"ColorGroup(squash={color.squash}) and AffineGroup(squash={affine.squash}) "
                             "must use the same squash setting in a ProductGroup")
        super().__init__(affine.names + color.names, torch.cat([affine.bounds, color.bounds]),
                         torch.cat([affine.offset, color.offset]), squash=affine.squash)
        self.color = color
        self.affine = affine

    def split(self, eta: Tensor) -> tuple[Tensor, Tensor]:
        """``(η_a, η_c)`` views of ``eta``."""
        return eta[..., : self.affine.dim], eta[..., self.affine.dim:]

    def config(self) -> dict:
        """Plain-data constructor arguments (for checkpoints and run folders)."""
        return {"name": "affine+color", "affine": self.affine.config(), "color": self.color.config()}

    def validate_images(self, x: Tensor, name: str = "x") -> None:
        self.color.validate_images(x, name)

    def apply_chain(self, x: Tensor, etas: Sequence[Tensor]) -> Tensor:
        if len(etas) == 0:
            raise ValueError("apply_chain needs at least one eta batch")
        self._check(x, etas)
        parts = [self.split(e.to(x.dtype)) for e in etas]
        # Colour is pointwise, so it commutes with the warp: add the colour parameters of the whole
        # chain, convert once, then warp once with the composed affine matrix.
        coloured = self.color.apply_color(x, torch.stack([c for _, c in parts]).sum(0))
        inv = self.affine.chain_matrix([-a for a, _ in reversed(parts)])
        return self.affine.warp_inverse(coloured, inv)


def affine_part(group: Group) -> Group:
    """The affine factor of a :class:`ProductGroup`, else ``group`` itself."""
    return group.affine if isinstance(group, ProductGroup) else group
