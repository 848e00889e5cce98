"""How well the moment rotation head reads dSprites orientations, before any training.

    python benchmarks/moment_angle_accuracy.py [--n 3000] [--seed 0]

Per shape, on procedural dSprites at 64x64: the spread of the angle's residual against the true
orientation (paper laws, modulo the shape's symmetry: 90° squares, 180° ellipses, 360° hearts),
how far a stretch of ±0.375 in each log-scale moves the angle (stage 1's views stretch the shapes),
how far it is from turning with the image under a turn (uniform laws: every size and orientation),
and the time per 512 images. docs/results.md §3 quotes its output.
"""

from __future__ import annotations

import argparse
import math
import time

import torch

from sgm_pyro.data import dsprites
from sgm_pyro.groups import AffineGroup
from sgm_pyro.models.moment_angle import MomentAngle

SHAPES = ("square", "ellipse", "heart")
FOLD = {"square": 4, "ellipse": 2, "heart": 1}


def wrapped(a: torch.Tensor, k: int) -> torch.Tensor:
    return torch.remainder(a + math.pi / k, 2 * math.pi / k) - math.pi / k


def circular_std_deg(a: torch.Tensor, k: int) -> float:
    r = torch.exp(1j * k * a.double()).mean().abs().item()
    return math.degrees(math.sqrt(-2 * math.log(r)) / k)


def quantiles_deg(d: torch.Tensor) -> str:
    q = torch.quantile(d.abs().double(), torch.tensor([0.5, 0.99], dtype=torch.float64))
    return f"{math.degrees(q[0]):.2f}° / {math.degrees(q[1]):.1f}°"


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=3000)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    gen = torch.Generator().manual_seed(args.seed)
    head = MomentAngle()
    group = AffineGroup(bounds=(0.75, 0.75, math.pi, 0.75, 0.75))
    x, lat = dsprites(args.n, seed=args.seed + 5)
    angle = head.angle(x)
    stretch = torch.zeros(args.n, 5)
    stretch[:, 3:] = 0.375 * (2 * torch.rand(args.n, 2, generator=gen) - 1)
    stretched = head.angle(group.apply(x, stretch))
    xu, latu = dsprites(args.n, seed=args.seed + 7, laws="uniform")
    turn = math.pi * (2 * torch.rand(args.n, generator=gen) - 1)
    turned = head.angle(AffineGroup(bounds=(math.pi,), generators=("rot",)).apply(xu, turn[:, None]))
    angle_u = head.angle(xu)
    print(f"{args.n} images per check, 64x64, seed {args.seed}")
    print("| shape | residual spread vs the orientation | change under a stretch (median / 99%) "
          "| error under a turn (median / 99%) |")
    print("| --- | --- | --- | --- |")
    for s, name in enumerate(SHAPES):
        k, sel, sel_u = FOLD[name], lat["shape"] == s, latu["shape"] == s
        resid = wrapped(angle[sel] - lat["orientation"][sel], k)
        change = wrapped(stretched[sel] - angle[sel], k)
        error = wrapped(turned[sel_u] - angle_u[sel_u] - turn[sel_u], k)
        print(f"| {name} (modulo {360 // k}°) | {circular_std_deg(resid, k):.2f}° | {quantiles_deg(change)} "
              f"| {quantiles_deg(error)} |")
    head.angle(x[:512])
    start = time.perf_counter()
    for _ in range(5):
        head.angle(x[:512])
    print(f"time: {(time.perf_counter() - start) / 5 * 1000:.1f} ms per 512 images "
          f"({torch.get_num_threads()} threads)")


if __name__ == "__main__":
    main()
