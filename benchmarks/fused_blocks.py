"""The fused ``Linear → LayerNorm → GELU`` blocks of ``sgm_pyro.nn.fused`` against the eager modules.

    python benchmarks/fused_blocks.py [--batch 512] [--min-time 2]

On the reference pose MLP's shapes (``2 · 5 · batch`` rows: both views of 5 draws), beside the same
run's sgemm:

* per hidden layer, forward and backward: the eager ``Linear``, ``LayerNorm`` and ``GELU``; the fused
  block; the ``Linear`` alone (the block with LayerNorm and GELU free); and the kernel's own
  forward and backward on the layer's ``Linear`` output;
* the whole MLP (``PrototypeInference``'s head, as the stage-1 step runs it) fused and eager,
  alternated twice, with images/s, the products' GFLOP/s and their share of sgemm;
* with ``--profile``, the kernels' own time per call inside that MLP's forward and backward, by
  ``torch.profiler`` (inside the MLP their operands come from memory, not from the cache).

The eager modules and the fused blocks compute the same function (tests/models/test_fused_mlp.py).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine, pick_device, time_call  # noqa: E402
from stage_throughput import MNIST_BOX, sgemm_gflops  # noqa: E402

import sgm_pyro  # noqa: E402
from sgm_pyro.host_memory import retain_for  # noqa: E402
from sgm_pyro import native  # noqa: E402
from sgm_pyro.nn import fused  # noqa: E402


def layer_rows(rows: int, widths: list[int], timed) -> None:
    ops = native.ops()
    print(f"{'layer':>11} {'eager':>8} {'fused':>8} {'Linear':>8} {'kernel fwd':>11} {'kernel bwd':>11}  ms, forward and backward")
    for k, n in zip(widths[:-2], widths[1:-1]):  # the hidden blocks (the last Linear has none)
        lin, norm, act = nn.Linear(k, n), nn.LayerNorm(n), nn.GELU()
        x = torch.randn(rows, k, requires_grad=k != widths[0])  # the first layer's input is data
        g = torch.randn(rows, n)
        eager = timed(lambda: act(norm(lin(x))).backward(g))
        block = timed(lambda: fused.linear_layer_norm_gelu(x, lin, norm).backward(g))
        linear = timed(lambda: lin(x).backward(g))
        with torch.no_grad():
            h, b, w, s = x.mm(lin.weight.t()), lin.bias, norm.weight, norm.bias
            _, mean, rstd = ops.layer_norm_gelu(h, b, w, s, norm.eps)
            k_f = timed(lambda: ops.layer_norm_gelu(h, b, w, s, norm.eps))
            k_b = timed(lambda: ops.layer_norm_gelu_backward(g, h, b, w, s, mean, rstd))
        print(f"{f'{k}->{n}':>11} {1e3 * eager:>8.1f} {1e3 * block:>8.1f} {1e3 * linear:>8.1f} {1e3 * k_f:>11.2f} "
              f"{1e3 * k_b:>11.2f}  (LayerNorm + GELU: eager {1e3 * (eager - linear):.1f}, fused {1e3 * (block - linear):.1f})")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cpu")
    p.add_argument("--batch", type=int, default=512)
    p.add_argument("--size", type=int, default=28)
    p.add_argument("--min-time", type=float, default=2.0)
    p.add_argument("--profile", action="store_true", help="also profile the kernels inside the MLP")
    args = p.parse_args(argv)
    device = pick_device(args.device)
    if device.type != "cpu":
        print("the fused kernel is a CPU kernel: run this on the CPU")
        return 2
    retain_for(device)
    if not native.available():
        print(f"the compiled kernels are not available here: {native.error() or f'{native.ENV}=0'}")
        return 1
    torch.manual_seed(0)
    peak = sgemm_gflops(device, min_time=min(args.min_time, 2.0))
    rows = 2 * 5 * args.batch
    g = sgm_pyro.AffineGroup(bounds=MNIST_BOX)
    net = sgm_pyro.PrototypeInference(g, (1, args.size, args.size), rotation_head="real").head
    linears = [m for m in net if isinstance(m, nn.Linear)]
    widths = [linears[0].in_features, *(m.out_features for m in linears)]
    print(f"machine: {machine(device)}; batch {args.batch}, 5 draws, both views: {rows} rows")
    print(f"sgemm (4096x4096 float32 into a preallocated output, this process): {peak:.1f} GFLOP/s")

    def timed(fn) -> float:
        return time_call(fn, device, warmup=2, min_time=args.min_time, max_reps=10)
    layer_rows(rows, widths, timed)
    # forward, weight gradient, and the input gradient of every layer but the first
    flops = sum(2 * rows * k * n * (2 if i == 0 else 3) for i, (k, n) in enumerate(zip(widths[:-1], widths[1:])))
    h = torch.randn(rows, widths[0])
    for rnd in range(2):
        for on in (True, False):
            native.set_enabled(on)
            s = timed(lambda: net(h).square().sum().backward())
            rate = flops / s / 1e9
            if rate > peak:
                print(f"REFUSED: {rate:.1f} GFLOP/s exceeds the measured peak {peak:.1f} (a timing or FLOP-count error)")
                return 1
            print(f"pose MLP forward and backward, round {rnd + 1}, {'fused' if on else 'eager':>5}: {1e3 * s:.1f} ms, "
                  f"{args.batch / s:.1f} images/s, {rate:.1f} GFLOP/s = {100 * rate / peak:.1f}% of sgemm")
    native.set_enabled(True)
    if args.profile:
        in_mlp(lambda: net(h).square().sum().backward())
    return 0


def in_mlp(step, calls: int = 5) -> None:
    """The kernels' self time per call inside ``step`` (the whole MLP), by torch.profiler."""
    from torch.profiler import profile

    for _ in range(2):
        step()
    with profile(record_shapes=True) as prof:
        for _ in range(calls):
            step()
    print("inside the MLP's forward and backward (torch.profiler, ms per call):")
    for ev in prof.key_averages(group_by_input_shape=True):
        if ev.key.startswith("sgm_pyro_native::layer_norm_gelu"):
            width = ev.input_shapes[0][1] if ev.input_shapes and ev.input_shapes[0] else "?"
            print(f"  {ev.key.split('::')[1]:<26} width {width:>5}: {ev.self_cpu_time_total / ev.count / 1e3:.2f}")


if __name__ == "__main__":
    sys.exit(main())
