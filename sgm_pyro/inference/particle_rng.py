"""Per-particle random streams inside one vectorised program pass (for seeded :func:`~sgm_pyro.inference.iwlb`).

A seeded IWLB makes particle ``k`` a function of ``(seed, k)`` only, so its result does not depend
on the chunk size. Running the guide once per particle gives that, at one guide pass per particle
(300 passes per batch at K = 300). :class:`ParticleStreams` gives it in one vectorised pass: every
random kernel whose output has the particles along its leading dim is run slice by slice, slice
``k`` with particle ``k``'s own generator. A slice draws the same numbers as a pass over particle
``k`` alone (the same generator state, the same element count), so both paths give the same draws.

Random kernels it does not know, or whose output does not lead with the particle dim, raise
:class:`UnsupportedDraw`; the caller then falls back to one pass per particle.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor
from torch.utils._python_dispatch import TorchDispatchMode

aten = torch.ops.aten


class UnsupportedDraw(RuntimeError):
    """A random kernel that cannot be split by particle; draw one particle at a time instead."""


_IN_PLACE = {aten.normal_.default, aten.uniform_.default, aten.exponential_.default, aten.bernoulli_.float,
             aten.geometric_.default, aten.log_normal_.default, aten.cauchy_.default}
_FACTORIES = {aten.rand.default, aten.randn.default, aten.rand.generator, aten.randn.generator}
_LIKE = {aten.randn_like.default: aten.normal_.default, aten.rand_like.default: aten.uniform_.default}


def _is_random(func) -> bool:
    """Whether ``func`` draws random numbers (aten tags every such kernel ``nondeterministic_seeded``)."""
    return torch.Tag.nondeterministic_seeded in func.tags


class ParticleStreams(TorchDispatchMode):
    """Inside this mode, random draws with a leading particle dim use one generator per particle.

    Args:
        seeds: one seed per particle of the pass, ``len(seeds)`` being the particle dim's size.
    """

    def __init__(self, seeds: Sequence[int]) -> None:
        super().__init__()
        self.seeds, self.size = list(seeds), len(seeds)
        self._generators: dict[torch.device, list[torch.Generator]] = {}

    def generators(self, device: torch.device) -> list[torch.Generator]:
        """Particle ``k``'s generator on ``device`` (made on first use, seeded like ``torch.manual_seed``)."""
        device = torch.device(device)
        if device not in self._generators:
            self._generators[device] = [torch.Generator(device=device).manual_seed(s) for s in self.seeds]
        return self._generators[device]

    def _check_leading(self, shape: Sequence[int], func) -> None:
        if len(shape) == 0 or shape[0] != self.size:
            raise UnsupportedDraw(f"{func} draws shape {tuple(shape)}, without a leading particle dim of {self.size}")

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = dict(kwargs or {})
        if func in _IN_PLACE:
            out: Tensor = args[0]
            self._check_leading(out.shape, func)
            for k, g in enumerate(self.generators(out.device)):
                func(out[k], *args[1:], **{**kwargs, "generator": g})
            return out
        if func in _FACTORIES:
            shape = list(args[0])
            self._check_leading(shape, func)
            kwargs.pop("generator", None)
            gens = self.generators(kwargs.get("device") or torch.device("cpu"))
            return torch.stack([func.overloadpacket(shape[1:], generator=g, **kwargs) for g in gens])
        if func in _LIKE:  # randn_like(x) is empty_like(x).normal_(): the same numbers per slice
            out = torch.empty_like(args[0], **{k: v for k, v in kwargs.items() if k != "memory_format"})
            self._check_leading(out.shape, func)
            for k, g in enumerate(self.generators(out.device)):
                _LIKE[func](out[k], generator=g)
            return out
        if func is aten.normal.Tensor_Tensor:
            mean, std = args[:2]
            shape = torch.broadcast_shapes(mean.shape, std.shape)
            self._check_leading(shape, func)
            mean, std = mean.expand(shape), std.expand(shape)
            gens = self.generators(mean.device)
            return torch.stack([torch.normal(mean[k], std[k], generator=g) for k, g in enumerate(gens)])
        if _is_random(func):
            raise UnsupportedDraw(f"{func} cannot be drawn per particle")
        return func(*args, **kwargs)
