"""``sgm benchmark recovery``: the symmetry-recovery benchmark (docs/recovery.md)."""

from __future__ import annotations


def register(sub) -> None:
    from ..experiments.recovery import add_recovery_parser  # the benchmark defines its own options

    bench = sub.add_parser("benchmark", help="run a benchmark of the library (recovery)",
                           description="Run a benchmark. recovery: fit an SGM per synthetic task with known "
                                       "symmetries and score the recovered pose distributions against their "
                                       "goals (docs/recovery.md); exits 1 when a goal is missed.")
    add_recovery_parser(bench.add_subparsers(dest="benchmark", required=True, metavar="BENCHMARK",
                                             help="which benchmark: recovery"))
