"""One AdamW over named Pyro parameters, with global-norm clipping and a step-indexed schedule (SPEC 4).

Pyro's ``pyro.optim`` wrappers keep one torch optimiser per parameter and clip each parameter's
gradient on its own (``clip_args``): a few small kernel launches per parameter and step, dozens
in all for a flow prior. This optimiser holds every parameter an SVI step touches in a single
``torch.optim.AdamW`` (fused or foreach kernels over all of them), clips by the global norm as stage 1
does, and sets the learning rate from ``lr_lambda(step)`` itself, so parameters a user's program
creates lazily can join at any step. Its state is keyed by the Pyro parameter names, so a
resumed run finds each parameter's moments whatever order the parameters appear in.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import torch
from torch import Tensor

from .checkpoint import CheckpointError
from .optimizers import adamw, step_counter

STATE_FORMAT = "sgm-pyro/ClippedAdamW/1"


class ClippedAdamW:
    """AdamW with ``clip_grad_norm_(all parameters, clip_norm)`` before each step.

    Args:
        lr: base learning rate; step ``t`` uses ``lr · lr_lambda(t)``.
        weight_decay: AdamW's decoupled weight decay.
        clip_norm: the bound on the global gradient norm.
        lr_lambda: multiplier of the learning rate per step (e.g. :func:`~sgm_pyro.inference.schedules.warmup_cosine`).
    """

    def __init__(self, lr: float, weight_decay: float, clip_norm: float,
                 lr_lambda: Callable[[int], float] = lambda step: 1.0) -> None:
        self.lr, self.weight_decay, self.clip_norm, self.lr_lambda = lr, weight_decay, clip_norm, lr_lambda
        self.steps = 0
        self.names: list[str] = []
        self._optimizer: torch.optim.AdamW | None = None
        self._saved: dict[str, dict] = {}  # loaded per-parameter states of parameters not seen yet

    def _add(self, named: Mapping[str, Tensor]) -> None:
        """Give parameters not seen before a place (sorted by name) and their saved state, if any."""
        new = sorted(n for n in named if n not in set(self.names))
        if not new:
            return
        params = [named[n] for n in new]
        if self._optimizer is None:
            self._optimizer = adamw(params, lr=self.lr, weight_decay=self.weight_decay)
        else:
            self._optimizer.add_param_group({"params": params})
        fused = bool(self._optimizer.defaults.get("fused"))
        for name, p in zip(new, params):
            if name in self._saved:  # the moments follow the parameter, the step counter the kernel
                self._optimizer.state[p] = {k: step_counter(v, p, fused) if k == "step" else v.to(p.device, p.dtype)
                                            for k, v in self._saved.pop(name).items()}
        self.names += new

    def step(self, named: Mapping[str, Tensor]) -> None:
        """Clip the gradients of ``named`` parameters by their global norm and take one AdamW step."""
        self._add(named)
        params = [p for p in named.values() if p.grad is not None]
        if params:
            torch.nn.utils.clip_grad_norm_(params, self.clip_norm)
            lr = self.lr * self.lr_lambda(self.steps)
            for group in self._optimizer.param_groups:
                group["lr"] = lr
            self._optimizer.step()
        self.steps += 1

    def state_dict(self) -> dict:
        """``{"format", "steps", "params": {name: AdamW state of that parameter}}`` (tensors on their devices)."""
        per_param = dict(self._saved)
        if self._optimizer is not None:
            flat = [p for group in self._optimizer.param_groups for p in group["params"]]
            for name, p in zip(self.names, flat):
                if p in self._optimizer.state:
                    per_param[name] = dict(self._optimizer.state[p])
        return {"format": STATE_FORMAT, "steps": self.steps, "params": per_param}

    def load_state_dict(self, state: dict) -> None:
        """Restore :meth:`state_dict`; each parameter gets its state when a step first meets it."""
        if not isinstance(state, dict) or state.get("format") != STATE_FORMAT:
            raise CheckpointError("the stage-2 optimiser state in this checkpoint is of an older format "
                                  f"(expected {STATE_FORMAT}); start the run again without resume")
        self.steps = int(state["steps"])
        self._saved = {name: dict(s) for name, s in state["params"].items()}
        self._optimizer, self.names = None, []
