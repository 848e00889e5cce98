"""The bilinear, zero-padded affine warp through the compiled CPU kernel ``affine_warp``.

``F.grid_sample`` needs the sampling grid as a tensor: in the stage-1 loss at batch 512 with 5
draws each warp writes and reads a grid of 16 to 32 MB, and its backward returns the grid's
gradient for another pass to reduce onto the matrices. The kernel (``sgm_pyro/csrc``, built by
:mod:`sgm_pyro.native`) computes each pixel's sampling point from the image's matrix as it goes,
and the matrices' gradient in the same pass as the image gradient. It computes what
``F.grid_sample(x, sampling_grid(inv), "bilinear", "zeros", align_corners=True)`` computes
(tests/groups/test_native_warp.py); other interpolations and paddings keep ``grid_sample``.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .. import native


def usable(x: Tensor, inv: Tensor) -> bool:
    """Whether the kernel can warp ``x`` by ``inv`` here (float32 CPU images and matrices)."""
    return x.dim() == 4 and x.shape[0] > 0 and inv.dtype == torch.float32 and native.usable(x)


class _AffineWarp(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, theta: Tensor) -> Tensor:
        ctx.save_for_backward(x, theta)
        return native.ops().affine_warp(x, theta)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad: Tensor):
        x, theta = ctx.saved_tensors
        dx, dtheta = native.ops().affine_warp_backward(grad.contiguous(), x, theta, ctx.needs_input_grad[0])
        return (dx if ctx.needs_input_grad[0] else None), (dtheta if ctx.needs_input_grad[1] else None)


def warp(x: Tensor, inv: Tensor) -> Tensor:
    """Sample ``x`` at ``inv @ q`` for every output pixel ``q``, bilinearly, zero outside (check :func:`usable`)."""
    return _AffineWarp.apply(x.contiguous(), inv[:, :2].contiguous())
