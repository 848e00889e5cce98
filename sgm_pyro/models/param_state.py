"""Serialise free ``pyro.param`` state without pickled code (for ``weights_only`` checkpoints)."""

from __future__ import annotations

from pyro.distributions import constraints
from torch.distributions.constraints import Constraint

# Constraint singletons by name; parametrised constraints (e.g. interval(0, 3)) cannot be stored.
_BY_NAME = {name: c for name, c in vars(constraints).items() if isinstance(c, Constraint)}
_NAMES = {id(c): name for name, c in _BY_NAME.items()}


def encode_param_state(state: dict) -> dict:
    """``{"params": {name: tensor}, "constraints": {name: constraint name}}``."""
    names = {}
    for name, c in state.get("constraints", {}).items():
        if id(c) not in _NAMES:
            raise ValueError(f"pyro.param {name!r} uses constraint {c!r}, which cannot be saved; "
                             f"use one of the named constraints {sorted(_BY_NAME)}")
        names[name] = _NAMES[id(c)]
    return {"params": {k: v.detach() for k, v in state.get("params", {}).items()}, "constraints": names}


def decode_param_state(data: dict) -> dict:
    params = dict(data.get("params", {}))
    return {"params": params, "constraints": {k: _BY_NAME[data["constraints"].get(k, "real")] for k in params}}
