"""Seconds per step of the real training loops ``fit_inference`` and ``fit_prior`` (setup excluded).

    python benchmarks/loop_step_time.py [--batch 128] [--steps 8] [--small] [--device cpu]

Unlike ``stage_throughput.py`` (one hand-built step), this times the loops a user runs, with
their bookkeeping: batching, logging, NaN checks, validation switches, the stage-2 optimiser.
Per step = (time of a fit of ``steps + 1`` steps - time of a fit of 1 step) / steps, median of
``--repeats``, as process CPU time (robust on a shared machine; run with OMP_NUM_THREADS=1) and
as wall time. It uses only the public loop API, so it runs unchanged against an older checkout
(``PYTHONPATH=/path/to/old python benchmarks/loop_step_time.py``) for before/after figures.
``--small`` uses a small pose MLP (256, 128) and flow (feature MLP (128,), conditioners (64, 64)),
where per-step overheads weigh more than at the reference sizes.
"""

from __future__ import annotations

import argparse
import math
import statistics
import time

import torch

import sgm_pyro
from sgm_pyro.inference import InferenceConfig, PriorConfig, fit_inference, fit_prior


def seconds(fn) -> tuple[float, float]:
    """(wall seconds, this process's CPU seconds) of ``fn()``.

    On a CPU shared with other jobs the CPU time (with one torch thread) varies much less than
    the wall time, which includes the time other processes held the core.
    """
    w0, c0 = time.perf_counter(), time.process_time()
    fn()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return time.perf_counter() - w0, time.process_time() - c0


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--size", type=int, default=28)
    p.add_argument("--steps", type=int, default=8)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--small", action="store_true")
    p.add_argument("--device", default="cpu")
    args = p.parse_args(argv)
    device = torch.device(args.device)
    torch.manual_seed(0)
    g = sgm_pyro.AffineGroup(bounds=(0.25, 0.25, math.pi, 0.25, 0.25))
    kw = dict(inference_kwargs={"hidden": [256, 128]}, prior_kwargs={"feature_hidden": [128], "hidden": [64, 64]}) \
        if args.small else {}
    model = sgm_pyro.SGM(g, (1, args.size, args.size), **kw).to(device)
    x = torch.rand(4 * args.batch, 1, args.size, args.size) * 2 - 1

    def stage1(steps):
        fit_inference(model.inference, x, InferenceConfig(steps=steps, batch_size=args.batch, val_every=10**6),
                      device=device, progress=False)

    def stage2(steps):
        fit_prior(model.prior, model.inference, x, PriorConfig(steps=steps, batch_size=args.batch, val_every=10**6),
                  device=device, progress=False, param_scope=model.param_scope)
    print(f"sgm_pyro from {sgm_pyro.__file__}; torch {torch.__version__}, {torch.get_num_threads()} threads; "
          f"{args.size}x{args.size}, batch {args.batch}, {'small' if args.small else 'reference'} networks")
    for name, fit in (("stage 1", stage1), ("stage 2", stage2)):
        fit(2)  # warm-up
        wall, cpu = [], []
        for _ in range(args.repeats):
            (w_long, c_long), (w_short, c_short) = seconds(lambda: fit(args.steps + 1)), seconds(lambda: fit(1))
            wall.append((w_long - w_short) / args.steps)
            cpu.append((c_long - c_short) / args.steps)
        print(f"{name}: {1e3 * statistics.median(cpu):8.1f} ms CPU/step, {1e3 * statistics.median(wall):8.1f} ms "
              f"wall/step (medians of {args.repeats}; CPU {', '.join(f'{1e3 * s:.1f}' for s in cpu)})", flush=True)


if __name__ == "__main__":
    main()
