"""The symmetry-recovery benchmark (docs/recovery.md): fit an SGM per task, score it against the truth.

    python examples/recovery_benchmark.py [--task NAME] [--out DIR] [--seed S]

Writes DIR/recovery.md (the table), DIR/recovery.json (every number), DIR/<task>.png (true against
learned poses, per class) and DIR/<task>.pt (the fitted model). Exits with status 1 when a goal
of the benchmark is not met.
"""

import argparse
import sys

from sgm_pyro.experiments.recovery import add_recovery_parser, run_from_args


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command")
    add_recovery_parser(sub)
    return run_from_args(parser.parse_args(["recovery", *(sys.argv[1:] if argv is None else argv)]))


if __name__ == "__main__":
    sys.exit(main())
