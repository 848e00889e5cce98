"""Data-parallel throughput: images/s of stage 1 and stage 2 with 1 and with N processes.

    python benchmarks/distributed_throughput.py [--procs 1 2] [--size 28] [--batch 64] [--steps 8]
    torchrun --nproc-per-node N benchmarks/distributed_throughput.py [--device cuda]

Run plainly, it starts each process count in ``--procs`` itself (127.0.0.1, gloo on CPU, nccl on
CUDA) and prints one table; under torchrun it measures the launched group and rank 0 prints a row.
Each rank trains on ``--batch`` images per step (the global batch grows with the process count),
through the real loops ``fit_inference`` and ``fit_prior`` (gradient all-reduce included), after a
short warm-up fit. The rate is global: steps x batch x processes / wall time of the slowest rank.
On a CPU the cores are split between the processes (``torch threads = cores // processes``
unless ``--threads`` is given), so on a small machine data parallelism can only win where one
process leaves cores idle.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine, pick_device, sync  # noqa: E402

from sgm_pyro.groups import AffineGroup  # noqa: E402
from sgm_pyro.inference import InferenceConfig, PriorConfig, fit_inference, fit_prior  # noqa: E402
from sgm_pyro.inference.distributed import (close_distributed, get_world_size, init_distributed,  # noqa: E402
                                            is_distributed, is_main_process)
from sgm_pyro.models import SGM  # noqa: E402


def barrier(device: torch.device) -> None:
    sync(device)
    if is_distributed():
        torch.distributed.barrier()


def measure(args: argparse.Namespace, device: torch.device) -> dict:
    """Global images/s of both stages on this process group (or this single process)."""
    torch.manual_seed(0)
    group = AffineGroup(bounds=(0.25, 0.25, math.pi, 0.25, 0.25))
    model = SGM(group, (1, args.size, args.size), inference_kwargs={"hidden": [512, 256]},
                prior_kwargs={"feature_hidden": [256], "hidden": [128, 128]}).to(device)
    data = torch.rand(4096, 1, args.size, args.size) * 2 - 1
    rates = {}
    for stage in ("stage 1", "stage 2"):
        seconds = None
        for steps in (2, args.steps):  # a warm-up fit, then the timed one
            barrier(device)
            start = time.perf_counter()
            if stage == "stage 1":
                fit_inference(model.inference, data, InferenceConfig(steps=steps, batch_size=args.batch),
                              device=device, progress=False)
            else:
                fit_prior(model.prior, model.inference, data, PriorConfig(steps=steps, batch_size=args.batch),
                          device=device, progress=False, param_scope=model.param_scope)
            barrier(device)
            seconds = time.perf_counter() - start
        rates[stage] = args.steps * args.batch * get_world_size() / seconds
    return {"processes": get_world_size(), "threads": torch.get_num_threads(), "rates": rates,
            "machine": machine(device)}


def launch(procs: int, argv: list[str], threads: int | None = None) -> dict:
    """Run this script on ``procs`` local processes, as torchrun would, and return rank 0's result."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "result.json"
        threads = str(threads or max(1, (os.cpu_count() or 1) // procs))
        env = {**os.environ, "WORLD_SIZE": str(procs), "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port),
               "OMP_NUM_THREADS": threads, "SGM_BENCH_OUT": str(out)}
        workers = [subprocess.Popen([sys.executable, __file__, *argv],
                                    env={**env, "RANK": str(r), "LOCAL_RANK": str(r)}) for r in range(procs)]
        if any(w.wait() != 0 for w in workers):
            raise SystemExit(f"a worker of the {procs}-process run failed")
        return json.loads(out.read_text())


def usable_process_counts(procs: list[int], device: torch.device) -> list[int]:
    """The counts of ``procs`` this machine can run: on CUDA one GPU per process, so at most the GPU count.

    Skipped counts are named on stderr (a second process on a one-GPU machine would fail in
    ``torch.cuda.set_device(1)``).
    """
    if device.type != "cuda":
        return list(procs)
    gpus = torch.cuda.device_count()
    skipped = [n for n in procs if n > gpus]
    if skipped:
        print(f"skipping {skipped} process(es): this machine has {gpus} GPU(s), one per process", file=sys.stderr)
    return [n for n in procs if n <= gpus]


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--procs", type=int, nargs="+", default=[1, 2], help="process counts to compare (plain run)")
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    p.add_argument("--size", type=int, default=28, help="image side")
    p.add_argument("--batch", type=int, default=64, help="images per process per step")
    p.add_argument("--steps", type=int, default=8, help="timed steps per stage")
    p.add_argument("--threads", type=int, default=None,
                   help="CPU threads per process in a plain run (default: cores // processes)")
    args = p.parse_args(argv)
    if "WORLD_SIZE" in os.environ:  # a rank: under torchrun, or started by launch()
        device = init_distributed(pick_device(args.device))
        result = measure(args, device)
        close_distributed()
        if is_main_process():
            if "SGM_BENCH_OUT" in os.environ:
                Path(os.environ["SGM_BENCH_OUT"]).write_text(json.dumps(result))
            else:
                report([result], args)
        return
    counts = usable_process_counts(args.procs, pick_device(args.device))
    if not counts:
        raise SystemExit("no process count of --procs fits this machine")
    report([launch(n, argv, args.threads) for n in counts], args)


def report(results: list[dict], args: argparse.Namespace) -> None:
    print(f"machine: {results[0]['machine']}; {args.size}x{args.size} images, batch {args.batch} per process, "
          f"{args.steps} timed steps; reference-style MLP (512, 256), default flow prior")
    print(f"{'procs':>5} {'threads':>7} {'stage':>8} {'images/s':>10} {'vs 1 proc':>9}")
    base = {r["processes"]: r for r in results}.get(1)
    for r in results:
        for stage, rate in r["rates"].items():
            ratio = f"{rate / base['rates'][stage]:.2f}x" if base else "-"
            print(f"{r['processes']:>5} {r['threads']:>7} {stage:>8} {rate:>10.1f} {ratio:>9}")


if __name__ == "__main__":
    main()
