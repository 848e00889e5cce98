"""The ``sgm`` command line: ``sgm fit | evaluate | sample | plot | demo | experiment | benchmark`` (``sgm --help``).

One module per command (``fit.py``, ``evaluate.py``, ...), each with ``register(subparsers)`` and
``run(args)``; ``common.py`` holds what they share. The library never imports this package.

A run folder holds everything needed to repeat or continue it:

    config.toml      the full RunConfig with absolute data paths (``sgm fit --config DIR/config.toml``
                     repeats the run from any directory)
    checkpoint.pt    written atomically during training (``sgm fit --resume DIR`` continues it)
    model.pt         the fitted SGM (``SGM.load("DIR/model.pt")``); its presence marks the run complete
    metrics.json     {"fit": ..., "evaluate": ...}
    *.png, *.pt      figures and samples

Errors caused by bad input print ``sgm <command>: error: ...`` and exit with status 2.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from . import benchmark, demo, evaluate, experiment, fit, plot, sample
from .common import UsageError

COMMANDS = (fit, evaluate, sample, plot, demo, experiment, benchmark)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sgm", description="Symmetry-aware Generative Models in Pyro: learn the symmetries of image data. "
                                "Run 'sgm <command> --help' for the options of a command; docs/cli.md has examples.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command in COMMANDS:
        command.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    from ..inference.distributed import close_distributed
    from ..inference.progress import NonFiniteLossError

    parser = build_parser()
    args = parser.parse_args(argv)
    finished = False
    try:
        status = args.func(args)
        finished = True
        return status
    except NonFiniteLossError as e:
        print(f"sgm {args.command}: error: {e}", file=sys.stderr)
        return 1
    except (ValueError, OSError) as e:
        print(f"sgm {args.command}: error: {e}", file=sys.stderr)
        return 2
    finally:
        close_distributed(wait=finished)  # leave a process group joined by sgm fit --distributed


__all__ = ["UsageError", "build_parser", "main"]
