"""``Linear → LayerNorm → GELU`` as one autograd function on the CPU, with a compiled row kernel.

Eager PyTorch runs a block's bias add, LayerNorm and GELU, and their backward, as five or six
separate kernels, each one pass over an activation much larger than the cache, and GELU's backward
evaluates ``erf`` and ``exp`` again. On a 2-core CPU those passes took 47 ms of the reference
stage-1 step's 536 ms (docs/results.md §2). The kernel ``layer_norm_gelu`` (``sgm_pyro/csrc``,
built by :mod:`sgm_pyro.native`) does the bias, LayerNorm and GELU in one pass per row each way,
with one shared branch-free exponential; :class:`~sgm_pyro.nn.MLP` uses it for each block when it
is built, and the eager modules otherwise.

Differences from the eager modules, within float32 rounding: ``Φ`` by Abramowitz & Stegun 7.1.26
(absolute error below 1.5e-7 in ``erf``), LayerNorm's statistics in two passes over each row.
Module hooks on the fused ``Linear``, ``LayerNorm`` and ``GELU`` do not run, and the function is
differentiable once (no double backward).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .. import native


def fusable(x: Tensor, linear: nn.Module, norm: nn.Module, act: nn.Module) -> bool:
    """Whether ``act(norm(linear(x)))`` can run as one fused block here."""
    return (x.dim() == 2 and x.shape[0] > 0
            and isinstance(linear, nn.Linear) and linear.bias is not None
            and linear.weight.device.type == "cpu" and linear.weight.dtype == torch.float32
            and isinstance(norm, nn.LayerNorm) and norm.normalized_shape == (linear.out_features,)
            and norm.weight is not None and norm.bias is not None and norm.weight.dtype == torch.float32
            and isinstance(act, nn.GELU) and act.approximate == "none"
            and native.usable(x))


class _LinearLayerNormGELU(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor, bias: Tensor, gamma: Tensor, beta: Tensor, eps: float) -> Tensor:
        h = x.mm(weight.t())
        y, mean, rstd = native.ops().layer_norm_gelu(h, bias, gamma, beta, eps)
        ctx.save_for_backward(x, weight, bias, gamma, beta, h, mean, rstd)
        return y

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad: Tensor):
        x, weight, bias, gamma, beta, h, mean, rstd = ctx.saved_tensors
        dh, dbias, dgamma, dbeta = native.ops().layer_norm_gelu_backward(
            grad.contiguous(), h, bias, gamma, beta, mean, rstd)
        dx = dh.mm(weight) if ctx.needs_input_grad[0] else None
        dweight = dh.t().mm(x) if ctx.needs_input_grad[1] else None
        return dx, dweight, dbias, dgamma, dbeta, None


def linear_layer_norm_gelu(x: Tensor, linear: nn.Linear, norm: nn.LayerNorm) -> Tensor:
    """``GELU(norm(linear(x)))`` through the fused kernel (check :func:`fusable` first)."""
    return _LinearLayerNormGELU.apply(x.contiguous(), linear.weight, linear.bias, norm.weight, norm.bias, norm.eps)
