"""A batch of group elements kept as the chain of coordinate batches that composes it."""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor


@dataclass(frozen=True)
class Chain:
    """The element ``T_{η_k} ∘ ⋯ ∘ T_{η_1}`` for every row, stored as ``(η_1, …, η_k)``, each ``(N, dim)``.

    This is :class:`~sgm_pyro.groups.Group`'s default element representation: composing two chains
    concatenates them and nothing is evaluated until the group acts on an image, which it then does
    with one interpolation (``Group.apply_chain``). Indexing selects rows of every member.
    """

    etas: tuple[Tensor, ...]

    def __getitem__(self, index) -> Chain:
        return Chain(tuple(e[index] for e in self.etas))
