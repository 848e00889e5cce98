"""Where a stage-1 step's time goes: matrix products, the rest of the pose MLP, the warps, the optimiser.

    python benchmarks/stage1_breakdown.py [--size 28] [--batch 512] [--min-time 3]

At the reference settings (pose MLP (2048, 1024, 512, 256) on raw pixels, 5 draws, both views,
invertibility term) the step's FLOPs are almost all the MLP's matrix products on ``2 · 5 · batch``
rows. This script times, in one process and beside a 4096x4096 sgemm into a preallocated output:

* ``matmuls``: the step's own matrix products alone (each layer's forward, weight gradient and,
  but for the first layer, input gradient) on random operands of the step's shapes;
* ``mlp``: the MLP's forward and backward on that many rows (adds LayerNorm, GELU, biases), as the
  library runs it: its ``Linear → LayerNorm → GELU`` blocks fused where the kernel of
  ``sgm_pyro.nn.fused`` is built;
* ``mlp eager``: the same with the eager modules;
* ``- GELU``, ``- LN``, ``- both``: the eager MLP with GELU, LayerNorm or both replaced by the
  identity (not the reference network: what each costs where it runs, between the products);
* ``loss``: the invariance loss and its backward with a one-unit MLP in place of the reference
  one, i.e. everything but the network: random views, poses, the chained warps, the terms;
* ``optimiser``: the global-norm clip and the library's AdamW step on the reference parameters;
* ``step``: all of it, as :func:`benchmarks.stage_throughput.stage1_step` runs it.

``ceiling`` is the share of sgemm the step would reach if everything but the matrix products
took no time at the products' own rate. A step at 75% of sgemm needs the non-matmul parts to fit
in ``matmuls · (ratio / 0.75 − 1)`` where ratio is the products' share of sgemm.
"""

from __future__ import annotations

import argparse
import copy
import sys
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine, pick_device, time_call  # noqa: E402
from stage_throughput import MNIST_BOX, flops_of, sgemm_gflops, stage1_step  # noqa: E402

import sgm_pyro  # noqa: E402
from sgm_pyro.host_memory import retain_for  # noqa: E402
from sgm_pyro.inference import InvarianceLoss  # noqa: E402
from sgm_pyro.inference.optimizers import adamw  # noqa: E402
from sgm_pyro import native  # noqa: E402

def matmul_seconds(rows: int, widths: list[int], device: torch.device, min_time: float) -> tuple[float, int]:
    """Seconds and FLOPs of the MLP's products alone: forward, weight gradient, input gradient (not layer 1's)."""
    total, flops = 0.0, 0
    for i, (k, n) in enumerate(zip(widths[:-1], widths[1:])):
        a, w, g = (torch.randn(*s, device=device) for s in ((rows, k), (n, k), (rows, n)))
        products = [lambda: a @ w.t(), lambda: g.t() @ a] + ([lambda: g @ w] if i > 0 else [])
        for product in products:
            total += time_call(product, device, warmup=1, min_time=min_time / 8)
            flops += 2 * rows * k * n
    return total, flops


def without(net: nn.Sequential, kinds: tuple[type, ...]) -> nn.Sequential:
    """A copy of ``net`` whose modules of ``kinds`` are the identity."""
    return nn.Sequential(*(nn.Identity() if isinstance(m, kinds) else copy.deepcopy(m) for m in net))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default=None)
    p.add_argument("--size", type=int, default=28)
    p.add_argument("--batch", type=int, default=512)
    p.add_argument("--min-time", type=float, default=3.0)
    args = p.parse_args(argv)
    device = pick_device(args.device)
    retain_for(device)
    torch.manual_seed(0)
    peak = sgemm_gflops(device, min_time=min(args.min_time, 2.0))
    rows = 2 * 5 * args.batch
    g = sgm_pyro.AffineGroup(bounds=MNIST_BOX).to(device)
    # the pose MLP of the step itself (the reference widths are PrototypeInference's defaults)
    net = sgm_pyro.PrototypeInference(g, (1, args.size, args.size), rotation_head="real").head.to(device)
    linears = [m for m in net if isinstance(m, nn.Linear)]
    widths = [linears[0].in_features, *(m.out_features for m in linears)]

    def timed(fn) -> float:
        return time_call(fn, device, warmup=1, min_time=args.min_time, max_reps=10)

    mm_s, mm_flops = matmul_seconds(rows, widths, device, args.min_time)
    h = torch.randn(rows, widths[0], device=device)
    blocks = "fused blocks" if native.available() else "eager modules: the fused kernel is not built here"
    mlp_s = timed(lambda: net(h).square().sum().backward())
    native.set_enabled(False)
    eager_s = timed(lambda: net(h).square().sum().backward())
    native.set_enabled(True)
    ablated = {name: timed(lambda n=without(net, kinds): n(h).square().sum().backward())
               for name, kinds in (("- GELU", (nn.GELU,)), ("- LN", (nn.LayerNorm,)),
                                   ("- both", (nn.GELU, nn.LayerNorm)))}
    tiny = sgm_pyro.PrototypeInference(g, (1, args.size, args.size), hidden=(1,), rotation_head="real").to(device)
    x = torch.rand(args.batch, 1, args.size, args.size, device=device) * 2 - 1
    loss = InvarianceLoss(num_draws=5, inv_weight=0.1)
    loss_s = timed(lambda: loss(tiny, x)["loss"].backward())
    params = list(net.parameters())
    net(h).square().sum().backward()
    opt = adamw(params, lr=3e-4, weight_decay=1e-4)

    def optimiser() -> None:
        torch.nn.utils.clip_grad_norm_(params, 3.0)
        opt.step()
    opt_s = timed(optimiser)
    step = stage1_step(args.size, args.batch, device)
    step_s, step_flops = timed(step), flops_of(step)

    mm_rate, step_rate = mm_flops / mm_s / 1e9, step_flops / step_s / 1e9
    print(f"machine: {machine(device)}; {args.size}x{args.size}, batch {args.batch}, 5 draws ({rows} MLP rows)")
    print(f"sgemm (4096x4096 float32 into a preallocated output, this process): {peak:.1f} GFLOP/s")
    if max(mm_rate, step_rate) > peak:
        print(f"REFUSED: {max(mm_rate, step_rate):.1f} GFLOP/s exceeds the measured peak (a timing or FLOP-count error)")
        return 1
    print(f"{'part':<10} {'ms':>8} {'of step':>8}  note")
    for name, s, note in (
            ("matmuls", mm_s, f"{mm_rate:.0f} GFLOP/s = {100 * mm_rate / peak:.1f}% of sgemm"),
            ("mlp", mlp_s, f"+{1e3 * (mlp_s - mm_s):.1f} ms over its products: LayerNorm, GELU, biases ({blocks})"),
            ("mlp eager", eager_s, f"+{1e3 * (eager_s - mm_s):.1f} ms over its products, as eager modules"),
            *((name, s, f"the eager MLP with {name[2:]} as the identity: {1e3 * (eager_s - s):.1f} ms less")
              for name, s in ablated.items()),
            ("loss", loss_s, "views, poses, chained warps, loss terms (a one-unit MLP)"),
            ("optimiser", opt_s, "global-norm clip and fused AdamW, 4.4M parameters"),
            ("step", step_s, f"{step_rate:.1f} GFLOP/s = {100 * step_rate / peak:.1f}% of sgemm")):
        print(f"{name:<10} {1e3 * s:>8.1f} {100 * s / step_s:>7.1f}%  {note}")
    budget = mm_s * (mm_rate / peak / 0.75 - 1)
    print(f"ceiling with nothing but the products: {100 * mm_rate / peak:.1f}% of sgemm; at 75% the rest must fit in "
          f"{1e3 * budget:.1f} ms, it takes {1e3 * (step_s - mm_s):.1f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
