"""Warp throughput (images/s): single warp vs a chain of three, and the dSprites generator rate.

    python benchmarks/warp_throughput.py [--device cuda] [--batch 512]

A chain of three is realised as one composed matrix and one interpolation, so it should cost
about one warp.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine, pick_device, time_call  # noqa: E402

from sgm_pyro.groups import AffineGroup  # noqa: E402


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default=None)
    p.add_argument("--batch", type=int, default=512)
    args = p.parse_args(argv)
    device = pick_device(args.device)
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
    try:
        from sgm_pyro.data import dsprites
    except ImportError:  # the data subpackage is optional for this script
        return
    n = 4096
    t = time_call(lambda: dsprites(n, seed=1, device=device), device)
    print(f"dSprites generator (paper laws, 64x64): {n / t:.0f} images/s")


if __name__ == "__main__":
    main()
