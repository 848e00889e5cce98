"""``sgm plot``: re-draw the figures of a run folder from what it holds."""

from __future__ import annotations

import argparse
from pathlib import Path

from .common import CHECKPOINT, MODEL, add_out_device, load_run, load_test_images, run_folder


def run(args: argparse.Namespace) -> int:
    import torch

    from ..analysis import prototype_grid, resample_grid, training_curves
    from ..inference.checkpoint import load_checkpoint

    run_ = run_folder(args.run)
    out = Path(args.out) if args.out else run_
    written = []
    source = run_ / MODEL if (run_ / MODEL).is_file() else run_ / CHECKPOINT
    if not source.is_file():
        raise FileNotFoundError(f"no {MODEL} or {CHECKPOINT} in {str(run_)!r}: nothing to plot")
    out.mkdir(parents=True, exist_ok=True)
    history = load_checkpoint(source, "cpu").get("history", {})
    training_curves(history, title=f"training of {run_}", path=out / "training.png")
    written.append("training.png")
    if (run_ / "samples.pt").is_file():
        s = torch.load(run_ / "samples.pt", weights_only=True)
        resample_grid(s["images"], s["resamples"], max_images=s["images"].shape[0],
                      title="images (left) and resamples", path=out / "samples.png")
        written.append("samples.png")
    if (run_ / MODEL).is_file() and not args.no_data:
        args.run, args.data, args.n_test = str(run_), None, None
        _, cfg, model, dev = load_run(args)
        data = load_test_images(cfg, dev)
        x = data.test[:16].to(dev)
        labels = None if data.test_labels is None else data.test_labels[:16]
        prototype_grid(x.cpu(), model.prototype(x).cpu(), labels,
                       title="test images (top) and their prototypes (bottom)", path=out / "prototypes.png")
        written.append("prototypes.png")
    print(f"sgm plot: wrote {', '.join(written)} to {out}")
    return 0


def register(sub) -> None:
    pl = sub.add_parser("plot", help="re-draw the figures of a run folder",
                        description="Re-draw training.png from the saved history (model.pt, else checkpoint.pt), "
                                    "samples.png from samples.pt when present, and prototypes.png from model.pt "
                                    "and the run's test images.")
    pl.add_argument("run", metavar="DIR", help="run folder written by sgm fit")
    add_out_device(pl, "where to write the figures (default: the run folder)")
    pl.add_argument("--no-data", action="store_true", help="skip figures that need the data set (prototypes.png)")
    pl.set_defaults(func=run)
