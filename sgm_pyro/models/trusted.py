"""A block without value checks, for programs whose inputs were checked at the public boundary.

Used by the training loops after their first step and by the models' bound methods
(``VAE.log_likelihood``, ...), so no step or particle chunk waits on a host read of a device value.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import pyro
from pyro.infer.util import is_validation_enabled
from torch.distributions import Distribution

from ..groups import value_checks


@contextmanager
def trusted_inputs() -> Iterator[None]:
    """No value checks inside the block: Pyro and torch distribution validation, group NaN checks.

    Both flags are restored as they were. (``pyro.validation_enabled`` would restore torch's
    from Pyro's, switching torch's argument checks on for good: zuko turns them off at import.)
    """
    pyro_before, torch_before = is_validation_enabled(), Distribution._validate_args
    pyro.enable_validation(False)
    try:
        with value_checks(False):
            yield
    finally:
        pyro.enable_validation(pyro_before)
        Distribution.set_default_validate_args(torch_before)
