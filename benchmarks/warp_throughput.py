"""Warp throughput (images/s): single warp vs a chain of three, and the dSprites generator rate.

    python benchmarks/warp_throughput.py [--device cuda] [--batch 512]

A chain of three is realised as one composed matrix and one interpolation, so it should cost
about one warp. On a CPU it then times the stage-1 loss's warps (bilinear, zero padding, 28x28,
``--batch`` x 5 draws) with the compiled kernel of ``sgm_pyro.native`` and with ``F.grid_sample``
on a sampling-grid tensor, alternated twice: the forward; the forward and the backward to the
matrices (the reconstruction warp); and the backward to the images too (the invertibility term's
second warp). A warp's arithmetic is a few operations per pixel, so no GFLOP/s are given for it;
the sgemm line says how fast this machine is.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine, pick_device, time_call  # noqa: E402

from sgm_pyro import native  # noqa: E402
from sgm_pyro.host_memory import retain_for  # noqa: E402
from sgm_pyro.groups import AffineGroup  # noqa: E402


def loss_warps(batch: int, device: torch.device) -> None:
    """The stage-1 loss's warps, compiled kernel against grid_sample, with their backward."""
    from stage_throughput import MNIST_BOX, sgemm_gflops

    print(f"sgemm (4096x4096 float32 into a preallocated output, this process): {sgemm_gflops(device):.1f} GFLOP/s")
    n = 5 * batch
    g = AffineGroup(bounds=MNIST_BOX).to(device)
    x = torch.rand(n, 1, 28, 28, device=device) * 2 - 1
    element = g.element(g.sample_uniform(n)).requires_grad_()
    image = x.clone().requires_grad_()
    cases = {"forward": lambda: g.act(x, element.detach(), background=-1.0),
             "+ matrix gradient": lambda: g.act(x, element, background=-1.0).square().sum().backward(),
             "+ image gradient": lambda: g.act(image, element, background=-1.0).square().sum().backward()}
    print(f"stage-1 loss warps, {n} images 28x28 (bilinear, zero padding), ms and images/s:")
    for rnd in range(2):
        for on in (True, False):
            native.set_enabled(on)
            if on and not native.available():
                print(f"  the compiled kernel is not built here: {native.error()}")
                continue
            ms = {name: time_call(fn, device, min_time=1.0) for name, fn in cases.items()}
            print(f"  round {rnd + 1}, {'compiled kernel' if on else 'grid_sample':>15}: "
                  + ", ".join(f"{k} {1e3 * v:.2f} ({n / v:.0f}/s)" for k, v in ms.items()))
    native.set_enabled(True)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default=None)
    p.add_argument("--batch", type=int, default=512)
    args = p.parse_args(argv)
    device = pick_device(args.device)
    retain_for(device)  # as the training loops do
    torch.manual_seed(0)
    print(f"machine: {machine(device)}")
    print(f"{'size':>6} {'interp':>9} {'warps':>6} {'ms/batch':>9} {'images/s':>10}")
    for size in (28, 64):
        x = torch.rand(args.batch, 1, size, size, device=device) * 2 - 1
        for interp in ("bilinear", "bicubic"):
            g = AffineGroup(bounds=(0.25, 0.25, math.pi, 0.25, 0.25), interpolation=interp).to(device)
            etas = [g.sample_uniform(args.batch) for _ in range(3)]
            for label, fn in (("1", lambda: g.apply(x, etas[0])), ("chain3", lambda: g.apply_chain(x, etas))):
                with torch.no_grad():
                    t = time_call(fn, device)
                print(f"{size:>6} {interp:>9} {label:>6} {1e3 * t:>9.2f} {args.batch / t:>10.0f}")
    if device.type == "cpu":
        loss_warps(args.batch, device)
    try:
        from sgm_pyro.data import dsprites
    except ImportError:  # the data subpackage is optional for this script
        return
    n = 4096
    t = time_call(lambda: dsprites(n, seed=1, device=device), device)
    print(f"dSprites generator (paper laws, 64x64): {n / t:.0f} images/s")


if __name__ == "__main__":
    main()
