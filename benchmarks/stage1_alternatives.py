"""Alternatives to the stage-1 step's elementwise work that were measured and not kept (docs/results.md §2).

    python benchmarks/stage1_alternatives.py [--parts ops chunked compiled step mlp] [--min-time 2]

On a 2-core CPU, beside the same run's sgemm:

* ``ops``: LayerNorm, GELU and their backward at the widest layer (5,120 x 2,048), on the whole
  tensor and on a 128-row slice 40 times over (it stays in L2);
* ``chunked``: LayerNorm + GELU as one autograd function over 1 MiB row chunks (the backward
  recomputes the normalised values) against the plain pose MLP, forward and backward;
* ``compiled``: ``torch.compile`` of LayerNorm + GELU written out (forward; backward with and without
  the ``γ``, ``β`` gradients) against the eager kernels (needs a C++ compiler);
* ``step``: the whole stage-1 step with three small changes, alternated with the step as it is:
  Linear as ``mm`` + in-place bias with the weight gradient as ``(xᵀ g)ᵀ`` where a layer widens, the
  MSE terms as a subtraction and a BLAS ``dot``, and the views' zero padding as border padding of a
  zero-ringed image;
* ``mlp``: the pose MLP's forward and backward alone, to compare under ``THP_MEM_ALLOC_ENABLE=1``.

Every part runs the eager operations (the compiled kernels of ``sgm_pyro.native`` off): these are the
alternatives to them that were tried before those kernels; ``benchmarks/fused_blocks.py`` and
``benchmarks/warp_throughput.py`` measure the kernels.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine, pick_device, time_call  # noqa: E402
from stage_throughput import flops_of, sgemm_gflops, stage1_step  # noqa: E402

from sgm_pyro.host_memory import retain_for  # noqa: E402
from sgm_pyro import native  # noqa: E402
from sgm_pyro.nn import MLP  # noqa: E402

ROWS, WIDTH, CHUNK_BYTES = 5120, 2048, 1 << 20


class ChunkedLayerNormGELU(torch.autograd.Function):
    """``gelu(layer_norm(y))`` over row chunks; saves ``y`` and the row statistics only."""

    @staticmethod
    def forward(ctx, y: Tensor, weight: Tensor, bias: Tensor, eps: float) -> Tensor:
        n, step = y.shape[1], max(1, CHUNK_BYTES // (y.shape[1] * y.element_size()))
        out, mean, rstd = torch.empty_like(y), y.new_empty(y.shape[0], 1), y.new_empty(y.shape[0], 1)
        for s in range(0, y.shape[0], step):
            ln, mean[s:s + step], rstd[s:s + step] = torch.native_layer_norm(y[s:s + step], (n,), weight, bias, eps)
            torch.ops.aten.gelu.out(ln, out=out[s:s + step])
        ctx.save_for_backward(y, mean, rstd, weight, bias)
        ctx.eps, ctx.step = eps, step
        return out

    @staticmethod
    def backward(ctx, g: Tensor):
        y, mean, rstd, weight, bias = ctx.saved_tensors
        n, step = y.shape[1], ctx.step
        gy, gw, gb = torch.empty_like(y), torch.zeros_like(weight), torch.zeros_like(bias)
        for s in range(0, y.shape[0], step):
            rows = slice(s, s + step)
            ln = torch.native_layer_norm(y[rows], (n,), weight, bias, ctx.eps)[0]
            gln = torch.ops.aten.gelu_backward(g[rows], ln)
            gy[rows], gwc, gbc = torch.ops.aten.native_layer_norm_backward(
                gln, y[rows], (n,), mean[rows], rstd[rows], weight, bias, [True, True, True])
            gw += gwc
            gb += gbc
        return gy, gw, gb, None


def chunked_forward(net: MLP, x: Tensor) -> Tensor:
    mods, h, i = list(net), net[0](x), 1
    while i < len(mods):
        if isinstance(mods[i], nn.Linear) and i + 2 < len(mods) and isinstance(mods[i + 1], nn.LayerNorm):
            ln = mods[i + 1]
            h = ChunkedLayerNormGELU.apply(mods[i](h), ln.weight, ln.bias, ln.eps)
            i += 3
        else:
            h, i = mods[i](h), i + 1
    return h


class WidenedLinear(torch.autograd.Function):
    """``x Wᵀ + b`` as ``mm`` then an in-place add; the weight gradient as ``(xᵀ g)ᵀ`` where ``W`` widens."""

    @staticmethod
    def forward(ctx, x: Tensor, w: Tensor, b: Tensor) -> Tensor:
        ctx.save_for_backward(x, w)
        return torch.mm(x, w.t()).add_(b)

    @staticmethod
    def backward(ctx, g: Tensor):
        x, w = ctx.saved_tensors
        gw = (x.t() @ g).t().contiguous() if w.shape[0] > w.shape[1] else g.t() @ x
        return (g @ w if ctx.needs_input_grad[0] else None), gw, g.sum(0)


class DotMSE(torch.autograd.Function):
    @staticmethod
    def forward(ctx, a: Tensor, b: Tensor) -> Tensor:
        d = torch.sub(a, b)
        ctx.save_for_backward(d)
        return torch.dot(d.view(-1), d.view(-1)) / d.numel()

    @staticmethod
    def backward(ctx, g: Tensor):
        (d,) = ctx.saved_tensors
        return d.mul(g * (2.0 / d.numel())), None


_GRID_SAMPLE = F.grid_sample


def ringed_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=None):
    """``F.grid_sample``; without gradients, zero padding as border padding of a zero-ringed image.

    With ``align_corners``, pixel ``i`` of ``n`` sits at ``2i/(n − 1) − 1``; in the image with a
    ring of zeros it is pixel ``i + 1`` of ``n + 2``, at the old coordinate times ``(n − 1)/(n + 1)``.
    """
    if padding_mode == "zeros" and mode == "bilinear" and align_corners and not (x.requires_grad or grid.requires_grad):
        h, w = x.shape[-2:]
        k = torch.tensor([(w - 1) / (w + 1), (h - 1) / (h + 1)], dtype=grid.dtype, device=grid.device)
        return _GRID_SAMPLE(F.pad(x, (1, 1, 1, 1)), grid * k, mode=mode, padding_mode="border", align_corners=True)
    return _GRID_SAMPLE(x, grid, mode=mode, padding_mode=padding_mode, align_corners=align_corners)


def part_ops(timed, device) -> None:
    gamma, beta = torch.ones(WIDTH, device=device), torch.zeros(WIDTH, device=device)
    for rows in (ROWS, 128):
        y, g = torch.randn(rows, WIDTH, device=device), torch.randn(rows, WIDTH, device=device)
        ln, mean, rstd = torch.native_layer_norm(y, (WIDTH,), gamma, beta, 1e-5)
        out, repeats = torch.empty_like(y), ROWS // rows  # the slice, again and again: it stays in L2

        def over_rows(op):
            def run() -> None:
                for _ in range(repeats):
                    op()  # each result freed before the next, so its memory is reused hot
            return run
        ms = {"LayerNorm": timed(over_rows(lambda: F.layer_norm(y, (WIDTH,), gamma, beta))),
              "GELU": timed(over_rows(lambda: F.gelu(y))),
              "GELU into an output": timed(over_rows(lambda: torch.ops.aten.gelu.out(y, out=out))),
              "GELU backward": timed(over_rows(lambda: torch.ops.aten.gelu_backward(g, ln))),
              "LayerNorm backward": timed(over_rows(lambda: torch.ops.aten.native_layer_norm_backward(
                  g, y, (WIDTH,), mean, rstd, gamma, beta, [True, True, True])))}
        print(f"ops on {rows} x {WIDTH}, {repeats}x (ms for {ROWS} rows): "
              + ", ".join(f"{k} {1e3 * v:.2f}" for k, v in ms.items()))


def part_chunked(timed, device) -> None:
    net, h = MLP(784, (2048, 1024, 512, 256), 5).to(device), torch.randn(ROWS, 784, device=device)
    for _ in range(2):
        plain = timed(lambda: net(h).square().sum().backward())
        chunked = timed(lambda: chunked_forward(net, h).square().sum().backward())
        print(f"pose MLP forward and backward: plain {1e3 * plain:.1f} ms, LayerNorm + GELU chunked {1e3 * chunked:.1f} ms")


def part_compiled(timed, device) -> None:
    y, g = torch.randn(ROWS, WIDTH, device=device), torch.randn(ROWS, WIDTH, device=device)
    gamma, beta = torch.rand(WIDTH, device=device) + 0.5, torch.randn(WIDTH, device=device) * 0.1

    def forward(y, gamma, beta):
        m = y.mean(1, keepdim=True)
        r = torch.rsqrt((y - m).square().mean(1, keepdim=True) + 1e-5)
        return F.gelu((y - m) * r * gamma + beta), m, r

    def backward(g, y, m, r, gamma, beta, parameters: bool):
        xh = (y - m) * r
        ln = xh * gamma + beta
        gln = g * (0.5 * (1 + torch.erf(ln * 0.7071067811865476)) + ln * torch.exp(-0.5 * ln * ln) * 0.3989422804014327)
        gxh = gln * gamma
        gy = r * (gxh - gxh.mean(1, keepdim=True) - xh * (gxh * xh).mean(1, keepdim=True))
        return (gy, (gln * xh).sum(0), gln.sum(0)) if parameters else gy

    try:
        fwd, bwd = torch.compile(forward, dynamic=False), torch.compile(backward, dynamic=False)
        _, m, r = fwd(y, gamma, beta)
        bwd(g, y, m, r, gamma, beta, True), bwd(g, y, m, r, gamma, beta, False)
    except Exception as err:  # no C++ compiler, or inductor refuses this platform
        print(f"compiled: torch.compile failed here ({type(err).__name__}: {err})")
        return
    ln, mean, rstd = torch.native_layer_norm(y, (WIDTH,), gamma, beta, 1e-5)
    for _ in range(2):
        e_f = timed(lambda: F.gelu(F.layer_norm(y, (WIDTH,), gamma, beta)))
        e_b = timed(lambda: torch.ops.aten.native_layer_norm_backward(
            torch.ops.aten.gelu_backward(g, ln), y, (WIDTH,), mean, rstd, gamma, beta, [True, True, True]))
        c_f = timed(lambda: fwd(y, gamma, beta))
        c_b, c_gy = (timed(lambda p=p: bwd(g, y, m, r, gamma, beta, p)) for p in (True, False))
        print(f"LayerNorm + GELU at {ROWS} x {WIDTH}: eager forward {1e3 * e_f:.1f} ms, backward {1e3 * e_b:.1f}; "
              f"compiled forward {1e3 * c_f:.1f}, backward {1e3 * c_b:.1f} ({1e3 * c_gy:.1f} without the γ, β gradients)")


def part_step(timed, device, peak: float, batch: int) -> None:
    plain_forward, plain_mse = MLP.forward, F.mse_loss

    def linear_forward(self, x):
        x = x.flatten(1)
        for m in list(self)[1:]:
            x = WidenedLinear.apply(x, m.weight, m.bias) if isinstance(m, nn.Linear) else m(x)
        return x

    def patch(on: bool) -> None:
        MLP.forward = linear_forward if on else plain_forward
        # torch.nn.functional itself: the invariance loss and the affine group look these up per call
        F.mse_loss = DotMSE.apply if on else plain_mse
        F.grid_sample = ringed_sample if on else _GRID_SAMPLE

    step = stage1_step(28, batch, device)
    flops = flops_of(step)
    try:
        for rnd in range(3):
            for on in (False, True):
                patch(on)
                s = timed(step)
                print(f"step, round {rnd + 1}, {'with the three changes' if on else 'as it is':>22}: {1e3 * s:.1f} ms, "
                      f"{batch / s:.1f} images/s, {flops / s / 1e9:.1f} GFLOP/s = {100 * flops / s / 1e9 / peak:.1f}% of sgemm")
    finally:
        patch(False)


def part_mlp(timed, device) -> None:
    net, h = MLP(784, (2048, 1024, 512, 256), 5).to(device), torch.randn(ROWS, 784, device=device)
    print(f"pose MLP forward and backward: {1e3 * timed(lambda: net(h).square().sum().backward()):.1f} ms")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default=None)
    p.add_argument("--parts", nargs="+", default=["ops", "chunked", "compiled", "step", "mlp"],
                   choices=["ops", "chunked", "compiled", "step", "mlp"])
    p.add_argument("--batch", type=int, default=512)
    p.add_argument("--min-time", type=float, default=2.0)
    args = p.parse_args(argv)
    device = pick_device(args.device)
    retain_for(device)
    native.set_enabled(False)
    torch.manual_seed(0)
    peak = sgemm_gflops(device, min_time=min(args.min_time, 2.0))
    print(f"machine: {machine(device)}; the eager LayerNorm and GELU modules (compiled kernels off)")
    print(f"sgemm (4096x4096 float32 into a preallocated output, this process): {peak:.1f} GFLOP/s")

    def timed(fn) -> float:
        return time_call(fn, device, warmup=2, min_time=args.min_time, max_reps=10)
    for part in args.parts:
        if part == "step":
            part_step(timed, device, peak, args.batch)
        else:
            {"ops": part_ops, "chunked": part_chunked, "compiled": part_compiled, "mlp": part_mlp}[part](timed, device)
    return 0


if __name__ == "__main__":
    sys.exit(main())
