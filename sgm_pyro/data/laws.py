"""Latent laws for procedural dSprites: samplers, per-shape laws, and the two named law sets.

A *sampler* is any callable ``(n, generator) -> Tensor`` returning ``n`` float values (shape
``(n,)``) drawn with the given CPU ``torch.Generator``. Small factories build the common ones:
:func:`uniform`, :func:`trunc_normal`, :func:`constant`, :func:`choice` and :func:`mixture`.

A :class:`ShapeLaw` holds one sampler per continuous latent (``scale``, ``orientation``, ``pos_x``,
``pos_y``); a :class:`DSpritesLaws` holds one ``ShapeLaw`` per shape plus the shape weights.
``"paper"`` is the law set of SPEC section 7 (Allingham et al. 2024); ``"uniform"`` reproduces the
original dSprites factor grid (every combination equally likely).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, fields

import torch
from torch import Tensor

Sampler = Callable[[int, torch.Generator], Tensor]

SHAPES: tuple[str, ...] = ("square", "ellipse", "heart")
LATENTS: tuple[str, ...] = ("scale", "orientation", "pos_x", "pos_y")

# The original dSprites factor grid. Orientation uses 40 values in [0, 2π) (the original file
# repeats 0 as 2π; dropping the duplicate keeps "uniform" uniform on the circle).
SCALE_GRID = torch.linspace(0.5, 1.0, 6)
ORIENTATION_GRID = torch.arange(40) * (2 * math.pi / 40)
POSITION_GRID = torch.linspace(0.0, 1.0, 32)


def uniform(low: float, high: float) -> Sampler:
    """Continuous U(low, high)."""
    if not high >= low:
        raise ValueError(f"uniform needs low <= high, got low={low}, high={high}")

    def sample(n: int, generator: torch.Generator) -> Tensor:
        return low + (high - low) * torch.rand(n, generator=generator)

    return sample


def trunc_normal(mean: float, std: float, low: float, high: float) -> Sampler:
    """Normal(mean, std) truncated to [low, high], drawn exactly by the inverse CDF.

    Uses ``torch.special`` (erf / erfinv) in float64, so no scipy is needed; results are clamped
    to [low, high] to absorb the last rounding error.
    """
    if not (std > 0 and high > low):
        raise ValueError(f"trunc_normal needs std > 0 and low < high, got std={std}, [{low}, {high}]")

    def cdf(z: float) -> float:
        return 0.5 * (1.0 + math.erf(z / math.sqrt(2.0)))

    lo_u, hi_u = cdf((low - mean) / std), cdf((high - mean) / std)

    def sample(n: int, generator: torch.Generator) -> Tensor:
        u = lo_u + (hi_u - lo_u) * torch.rand(n, generator=generator, dtype=torch.float64)
        z = math.sqrt(2.0) * torch.special.erfinv(2.0 * u - 1.0)
        return (mean + std * z).clamp(low, high).float()

    return sample


def constant(value: float) -> Sampler:
    """A point mass at ``value`` (draws nothing from the generator)."""

    def sample(n: int, generator: torch.Generator) -> Tensor:
        return torch.full((n,), float(value))

    return sample


def choice(values: Sequence[float] | Tensor) -> Sampler:
    """Uniform over a finite set of values (e.g. the original dSprites grid)."""
    table = torch.as_tensor(values, dtype=torch.float32).flatten()
    if table.numel() == 0:
        raise ValueError("choice needs at least one value, got an empty set")

    def sample(n: int, generator: torch.Generator) -> Tensor:
        return table[torch.randint(table.numel(), (n,), generator=generator)]

    return sample


def mixture(components: Sequence[Sampler], weights: Sequence[float] | None = None) -> Sampler:
    """Mixture of samplers: each draw picks a component with probability ∝ ``weights``."""
    if len(components) == 0:
        raise ValueError("mixture needs at least one component, got none")
    w = torch.ones(len(components)) if weights is None else torch.as_tensor(weights, dtype=torch.float64)
    if w.shape != (len(components),) or (w < 0).any() or w.sum() <= 0:
        raise ValueError(f"mixture needs {len(components)} non-negative weights with a positive sum, got {weights}")
    cum = (w / w.sum()).cumsum(0).double()

    def sample(n: int, generator: torch.Generator) -> Tensor:
        which = pick(cum, n, generator)
        out = torch.empty(n)
        for k, component in enumerate(components):
            idx = (which == k).nonzero().squeeze(1)
            out[idx] = component(idx.numel(), generator).float()
        return out

    return sample


def pick(cumulative: Tensor, n: int, generator: torch.Generator) -> Tensor:
    """Indices drawn from the categorical whose cumulative probabilities are ``cumulative``."""
    u = torch.rand(n, generator=generator, dtype=torch.float64)
    # clamp_max guards against a last cumulative value of 0.999... from rounding.
    return torch.searchsorted(cumulative, u, right=True).clamp_max(cumulative.numel() - 1)


@dataclass(frozen=True)
class ShapeLaw:
    """Samplers of one shape's continuous latents.

    ``scale`` must stay in (0, 1] and ``pos_x``/``pos_y`` in [0, 1] (the renderer's frame guarantee
    holds there); ``orientation`` is in radians, any real value.
    """

    scale: Sampler
    orientation: Sampler
    pos_x: Sampler
    pos_y: Sampler

    @classmethod
    def from_mapping(cls, mapping: Mapping[str, Sampler]) -> ShapeLaw:
        missing = set(LATENTS) - set(mapping)
        extra = set(mapping) - set(LATENTS)
        if missing or extra:
            raise ValueError(f"a shape law needs exactly the samplers {LATENTS}; "
                             f"missing {sorted(missing)}, unexpected {sorted(extra)}")
        return cls(**{k: mapping[k] for k in LATENTS})


@dataclass(frozen=True)
class DSpritesLaws:
    """One :class:`ShapeLaw` per shape, or ``None`` for a shape that is never drawn.

    ``weights`` are the relative shape probabilities (square, ellipse, heart); a shape whose law is
    ``None`` gets probability 0 whatever its weight.
    """

    square: ShapeLaw | None
    ellipse: ShapeLaw | None
    heart: ShapeLaw | None
    weights: tuple[float, float, float] = (1.0, 1.0, 1.0)

    def __post_init__(self) -> None:
        if len(self.weights) != 3 or any(w < 0 for w in self.weights):
            raise ValueError(f"weights must be 3 non-negative numbers (square, ellipse, heart), got {self.weights}")
        if sum(self.probs()) <= 0:
            raise ValueError("DSpritesLaws needs at least one shape with a law and a positive weight")

    def probs(self) -> list[float]:
        """Unnormalised shape probabilities (0 where the law is ``None``)."""
        return [w if law is not None else 0.0 for w, law in zip(self.weights, self.per_shape())]

    def per_shape(self) -> list[ShapeLaw | None]:
        return [getattr(self, f.name) for f in fields(self)[:3]]

    @classmethod
    def from_mapping(cls, mapping: Mapping[str, ShapeLaw | Mapping[str, Sampler]]) -> DSpritesLaws:
        """Build from ``{"square": ShapeLaw | {latent: sampler}, ...}``; absent shapes are never drawn."""
        unknown = set(mapping) - set(SHAPES)
        if unknown:
            raise ValueError(f"unknown shape names {sorted(unknown)}; expected a subset of {SHAPES}")
        laws = {s: (v if isinstance(v, ShapeLaw) else ShapeLaw.from_mapping(v)) for s, v in mapping.items()}
        return cls(**{s: laws.get(s) for s in SHAPES})


def paper_laws() -> DSpritesLaws:
    """The per-shape latent laws of the SGM paper's dSprites stream (SPEC section 7)."""
    square = ShapeLaw(
        scale=trunc_normal(0.75, 0.2, 0.55, 1.0),
        orientation=uniform(0.0, 2 * math.pi),
        pos_x=uniform(0.5, 0.95),
        pos_y=uniform(0.5, 0.95),
    )
    ellipse = ShapeLaw(
        scale=trunc_normal(0.65, 0.15, 0.5, 0.85),
        orientation=uniform(0.0, math.pi / 2),
        pos_x=trunc_normal(0.5, 0.25, 0.1, 0.9),
        pos_y=trunc_normal(0.5, 0.15, 0.35, 0.65),
    )
    heart = ShapeLaw(
        scale=uniform(0.9, 1.0),
        orientation=constant(0.0),
        pos_x=uniform(0.1, 0.5),
        pos_y=mixture([uniform(0.1, 0.3), uniform(0.7, 0.9)]),
    )
    return DSpritesLaws(square, ellipse, heart)


def uniform_laws() -> DSpritesLaws:
    """Every shape uniform over the original dSprites grid (6 scales, 40 orientations, 32x32 positions)."""
    law = ShapeLaw(choice(SCALE_GRID), choice(ORIENTATION_GRID), choice(POSITION_GRID), choice(POSITION_GRID))
    return DSpritesLaws(law, law, law)


NAMED_LAWS: dict[str, Callable[[], DSpritesLaws]] = {"paper": paper_laws, "uniform": uniform_laws}


def resolve_laws(laws: str | DSpritesLaws | Mapping[str, ShapeLaw | Mapping[str, Sampler]]) -> DSpritesLaws:
    """Turn a law name, a :class:`DSpritesLaws` or a per-shape mapping into a :class:`DSpritesLaws`."""
    if isinstance(laws, DSpritesLaws):
        return laws
    if isinstance(laws, str):
        if laws not in NAMED_LAWS:
            raise ValueError(f"unknown laws {laws!r}; expected one of {sorted(NAMED_LAWS)}, "
                             "a DSpritesLaws, or a mapping shape -> ShapeLaw")
        return NAMED_LAWS[laws]()
    if isinstance(laws, Mapping):
        return DSpritesLaws.from_mapping(laws)
    raise ValueError(f"laws must be a name, a DSpritesLaws or a mapping, got {type(laws).__name__}")
