"""Run Pyro programs in a private parameter store.

``PyroModule`` parameters are registered in Pyro's global parameter store by name, so two models
with the same attribute names would silently share parameters. Every fit and evaluation in
sgm-pyro runs inside a fresh scope, where each module registers its own tensors.
"""

from __future__ import annotations

from contextlib import contextmanager

import pyro


@contextmanager
def private_param_store():
    with pyro.get_param_store().scope():
        yield
