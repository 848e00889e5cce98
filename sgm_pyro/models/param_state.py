"""Free ``pyro.param`` state of a model: saving it without pickled code, reading it constrained, moving it."""

from __future__ import annotations

from collections.abc import Callable

import torch
from pyro.distributions import constraints
from pyro.poutine.messenger import Messenger
from torch import Tensor
from torch.distributions import transform_to
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


def constrained_params(state: dict) -> dict[str, Tensor]:
    """``{name: constrained value}`` of a parameter-store state (detached copies)."""
    out = {}
    for name, unconstrained in state.get("params", {}).items():
        constraint = state.get("constraints", {}).get(name, constraints.real)
        with torch.no_grad():
            out[name] = transform_to(constraint)(unconstrained).detach().clone()
    return out


def move_params(state: dict, fn: Callable[[Tensor], Tensor]) -> None:
    """Apply ``fn`` (as ``nn.Module._apply`` does: ``.to``, ``.double``, ...) to every stored parameter, in place."""
    params = state.get("params", {})
    for name, t in list(params.items()):
        with torch.no_grad():
            moved = fn(t.detach())
        if moved is not t:
            params[name] = moved.detach().requires_grad_(t.requires_grad)


class ParamsOnDevice(Messenger):
    """Create ``pyro.param`` initial values on ``device``.

    A user's prior program writes ``pyro.param("rot_scale", torch.ones(1))``: the initial tensor is
    made on the CPU, and would meet ``eta`` on the GPU. Inside this messenger an initial value (a
    tensor, or a callable returning one) is moved to ``device`` before the store keeps it.
    """

    def __init__(self, device: torch.device) -> None:
        super().__init__()
        self.device = torch.device(device)

    def _pyro_param(self, msg) -> None:
        args = msg["args"]
        if len(args) < 2:
            return
        init = args[1]
        if isinstance(init, Tensor) and init.device != self.device:
            init = init.to(self.device)
        elif callable(init) and not isinstance(init, Tensor):
            init = _on_device(init, self.device)
        msg["args"] = (args[0], init, *args[2:])


def _on_device(fn: Callable[[], Tensor], device: torch.device) -> Callable[[], Tensor]:
    return lambda: fn().to(device)
