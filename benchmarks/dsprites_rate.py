"""How many procedural dSprites images per second this machine renders (paper laws, CPU by default).

    .venv/bin/python benchmarks/dsprites_rate.py [--batch 512 4096] [--seconds 3] [--device cpu] [--threads 2]

Prints images/s for ``dsprites(batch)`` calls and for the ``DSpritesStream`` (latents + render).
"""

from __future__ import annotations

import argparse
import itertools
import time

import torch

from sgm_pyro.data import DSpritesStream, dsprites


def rate(step, batch: int, seconds: float) -> tuple[float, float]:
    """(median, best) images/s over repeated calls of ``step`` for about ``seconds``."""
    step()  # warm-up: first-call allocations and thread start-up
    rates, start = [], time.perf_counter()
    while time.perf_counter() - start < seconds or len(rates) < 3:
        t = time.perf_counter()
        step()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        rates.append(batch / (time.perf_counter() - t))
    rates.sort()
    return rates[len(rates) // 2], rates[-1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, nargs="+", default=[512, 4096])
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--laws", default="paper")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, device {args.device}, laws {args.laws}")
    for batch in args.batch:
        seed = itertools.count()
        median, best = rate(lambda: dsprites(batch, laws=args.laws, seed=next(seed), device=args.device),
                            batch, args.seconds)
        print(f"dsprites(n={batch}):        {median:10,.0f} images/s median, {best:10,.0f} best")
        stream = iter(DSpritesStream(batch, laws=args.laws, device=args.device))
        median, best = rate(lambda: next(stream), batch, args.seconds)
        print(f"DSpritesStream(batch={batch}): {median:10,.0f} images/s median, {best:10,.0f} best")


if __name__ == "__main__":
    main()
