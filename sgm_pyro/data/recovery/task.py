"""A recovery task: per-class prototypes and laws of η, a group, and a seeded generator.

The true η of every image is drawn first, in the group's own coordinates, and the image is made
from it as ``x = group.apply(x̂_class, η)`` with ``x̂_class`` the class's canonical prototype; so
``x = T_η(x̂)`` holds by construction, in exactly the convention of the model's group.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import torch
from torch import Tensor

from ...groups import Group
from ..laws import Sampler, pick


@dataclass(frozen=True)
class RecoveryData:
    """Images with their true poses.

    ``images``: ``(N, C, H, W)`` in ``[-1, 1]``; ``eta``: ``(N, group.dim)`` true η (rotations wrapped
    to ``[-π, π)``, hue to ``[0, 1)``); ``labels``: ``(N,)`` int64 class indices; ``class_names``
    and ``symmetry`` (each class's rotational symmetry order, 1 for an asymmetric prototype) per class.
    """

    images: Tensor
    eta: Tensor
    labels: Tensor
    class_names: tuple[str, ...]
    symmetry: tuple[int, ...]


@dataclass(frozen=True)
class ClassLaw:
    """One prototype and the law of its η.

    ``laws`` maps coordinate names to samplers ``(n, generator) -> (n,)``; absent coordinates are 0
    (the identity). ``tied`` maps a coordinate to another whose draw it copies (isotropic scale:
    ``{"log_sy": "log_sx"}``). ``symmetry``: the prototype's rotational symmetry order; its true
    rotation is drawn in one fundamental domain, since rotations a multiple of ``2π/symmetry``
    apart give the same image. ``modes``: how many rotation modes the truth has (``None``: not a
    multimodal law worth counting).
    """

    name: str
    prototype: Callable[[], Tensor]
    laws: Mapping[str, Sampler]
    tied: Mapping[str, str] = field(default_factory=dict)
    symmetry: int = 1
    modes: int | None = None
    weight: float = 1.0


@dataclass(frozen=True)
class RecoveryTask:
    """A benchmark task: ``generate(n, seed)`` draws images and their true η.

    ``make_group`` builds a fresh group with the box the model is given (also used to draw the
    images). ``image_shape`` is ``(C, H, W)``.
    """

    name: str
    description: str
    image_shape: tuple[int, int, int]
    make_group: Callable[[], Group]
    classes: tuple[ClassLaw, ...]

    @property
    def class_names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.classes)

    def generate(self, n: int, seed: int = 0) -> RecoveryData:
        """``n`` images and their true η, reproducible from ``seed`` (CPU random numbers)."""
        if isinstance(n, bool) or not isinstance(n, int) or n <= 0:
            raise ValueError(f"n must be a positive int, got {n!r}")
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise ValueError(f"seed must be an int, got {seed!r}")
        generator = torch.Generator().manual_seed(seed)
        group = self.make_group()
        weights = torch.tensor([c.weight for c in self.classes], dtype=torch.float64)
        labels = pick((weights / weights.sum()).cumsum(0), n, generator)
        eta = torch.zeros(n, group.dim)
        images = torch.empty(n, *self.image_shape)
        for k, law in enumerate(self.classes):
            idx = (labels == k).nonzero().squeeze(1)
            if idx.numel() == 0:
                continue
            eta[idx] = draw_eta(group, law, idx.numel(), generator)
            proto = law.prototype()
            images[idx] = group.apply(proto.expand(idx.numel(), *proto.shape[1:]), eta[idx]).clamp(-1.0, 1.0)
        return RecoveryData(images, eta, labels, self.class_names, tuple(c.symmetry for c in self.classes))


def draw_eta(group: Group, law: ClassLaw, n: int, generator: torch.Generator) -> Tensor:
    """``(n, group.dim)`` draws of η from ``law``, in the order of ``group.names`` (fixes the random stream)."""
    unknown = (set(law.laws) | set(law.tied)) - set(group.names)
    if unknown:
        raise ValueError(f"class {law.name!r} has laws for {sorted(unknown)}, not coordinates of {group.names}")
    eta = torch.zeros(n, group.dim)
    for i, name in enumerate(group.names):
        if name in law.laws:
            eta[:, i] = law.laws[name](n, generator).float()
    for name, source in law.tied.items():
        eta[:, group.names.index(name)] = eta[:, group.names.index(source)]
    if "rot" in group.names:
        i = group.names.index("rot")
        eta[:, i] = torch.remainder(eta[:, i] + math.pi, 2 * math.pi) - math.pi
    if "hue" in group.names:
        i = group.names.index("hue")
        eta[:, i] = torch.remainder(eta[:, i], 1.0)
    return eta
