"""Prior programs by name, so configs and the command line say ``prior = "flow"``."""

from __future__ import annotations

from collections.abc import Sequence

from .base import PriorProgram
from .box import BoxPrior
from .circular import CircularFlowPrior
from .discrete_rotation import DiscreteRotationPrior
from .flow import FlowPrior

PRIORS: dict[str, type[PriorProgram]] = {
    "flow": FlowPrior,
    "box": BoxPrior,
    "circular": CircularFlowPrior,
    "discrete-rotation": DiscreteRotationPrior,
}


def make_prior(name: str, group, image_shape: Sequence[int] | None = None, **kwargs) -> PriorProgram:
    """Build the prior program registered as ``name`` for ``group`` and prototypes of ``image_shape``.

    ``kwargs`` go to the class (e.g. ``transforms=6`` for ``"flow"``, ``n=4`` for
    ``"discrete-rotation"``).
    """
    if name not in PRIORS:
        raise ValueError(f"unknown prior {name!r}; expected one of {sorted(PRIORS)}")
    cls = PRIORS[name]
    if image_shape is None and cls is not BoxPrior:
        raise ValueError(f"prior {name!r} needs image_shape=(C, H, W) for its feature network")
    return cls(group, image_shape, **kwargs)
