"""``sgm fit``: fit both SGM stages and write a run folder (or continue one with ``--resume``)."""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

from .common import (CHECKPOINT, CONFIG, DATA_HELP, METRICS, MODEL, UsageError, add_out_device, device, merge,
                     parse_set, run_dir, set_path, update_metrics)

# flag attribute -> config key it sets
_FLAGS = (("data", "data.name"), ("seed", "seed"), ("inference_steps", "inference.steps"),
          ("prior_steps", "prior.steps"), ("checkpoint_every", "checkpoint_every"), ("n_train", "data.n_train"),
          ("rotation", "data.rotation_degrees"), ("group", "group.name"), ("prior", "model.prior"))


def _overrides(args: argparse.Namespace) -> dict:
    """The settings of the flags and ``--set`` as a nested dict (``--set`` wins)."""
    flags: dict = {}
    for flag, key in _FLAGS:
        if getattr(args, flag) is not None:
            set_path(flags, key, getattr(args, flag))
    if args.batch_size is not None:
        merge(flags, {"inference": {"batch_size": args.batch_size}, "prior": {"batch_size": args.batch_size}})
    if args.device is not None:
        flags["device"] = args.device
    return merge(flags, parse_set(args.set or []))


def _resume_folder(args: argparse.Namespace, overrides: dict) -> Path | None:
    """The run folder to continue, or ``None`` when it is already complete (nothing to do)."""
    changed = sorted(k for k in overrides if k != "device") or (["--config"] if args.config else [])
    if changed or args.out:
        raise UsageError(f"--resume continues the run with the config saved in {args.resume}; "
                         f"do not pass --config, --out or settings ({', '.join(changed) or '--out'})")
    out = run_dir(args.resume, CONFIG)
    if (out / MODEL).is_file():  # model.pt is written only once both stages have finished
        print(f"sgm fit: {out} is already complete ({MODEL} exists); nothing to resume. Score it with "
              f"'sgm evaluate {out}', or train longer in a new folder: 'sgm fit --config {out / CONFIG} "
              f"--out NEW_DIR --inference-steps N --prior-steps M'")
        return None
    if not (out / CHECKPOINT).is_file():
        raise FileNotFoundError(f"no {CHECKPOINT} in {str(out)!r}: nothing to resume (start again with "
                                f"sgm fit --config {out / CONFIG} --out {out})")
    return out


def run(args: argparse.Namespace) -> int:
    import torch

    from ..analysis import training_curves
    from ..config import RunConfig, absolute_data_paths, from_dict, load_config, save_config, to_dict
    from ..config import build_model as build_sgm
    from ..experiments.run_data import load_run_data
    from ..inference.distributed import get_rank, get_world_size, init_distributed, is_main_process

    overrides = _overrides(args)
    if args.resume:
        out = _resume_folder(args, overrides)
        if out is None:
            return 0
        cfg = load_config(out / CONFIG)
    else:
        cfg = load_config(args.config) if args.config else RunConfig()
        out = Path(args.out or "runs/fit")
        for name in (CHECKPOINT, MODEL):
            if (out / name).exists():
                raise UsageError(f"{out} already holds a run ({name}); continue it with sgm fit --resume {out} "
                                 "or pick another --out")
    # Absolute data paths: the saved config.toml then repeats the run from any working directory.
    cfg = absolute_data_paths(from_dict(RunConfig, merge(to_dict(cfg), overrides)))
    dev = device(cfg.device, None)
    if args.distributed or int(os.environ.get("WORLD_SIZE") or 1) > 1:  # torchrun with several processes
        dev = init_distributed(dev)  # rank r trains on cuda:LOCAL_RANK, or on the CPU with gloo
    main, world = is_main_process(), get_world_size()
    data = load_run_data(cfg, cfg.inference.batch_size, dev, rank=get_rank())
    if not args.resume and main:
        save_config(cfg, out / CONFIG)
    torch.manual_seed(cfg.seed)  # every rank builds the same initial model
    model = build_sgm(cfg, data.image_shape)
    steps = f"{cfg.inference.steps} + {cfg.prior.steps} steps of batch {cfg.inference.batch_size}"
    procs = f" x {world} processes" if world > 1 else ""
    if main:
        print(f"sgm fit: {cfg.data.name} {data.image_shape}, {steps}{procs} on {dev} -> {out}"
              + (" (resumed from its checkpoint)" if args.resume else ""))
    start = time.perf_counter()
    history = model.fit(data.train, inference_steps=cfg.inference.steps, prior_steps=cfg.prior.steps,
                        batch_size=cfg.inference.batch_size, val_images=data.val, device=dev, seed=cfg.seed,
                        progress=not args.no_progress, inference_config=cfg.inference, prior_config=cfg.prior,
                        checkpoint_dir=out, checkpoint_every=cfg.checkpoint_every, resume=bool(args.resume))
    if not main:  # rank 0 writes the run folder
        return 0
    model.save(out / MODEL)
    inf, pri = history.get("inference", {}), history.get("prior", {})

    def last(d, k):
        return d[k][-1] if d.get(k) else None
    update_metrics(out, "fit", {
        "seconds": time.perf_counter() - start, "timing": history.get("timing", {}), "device": str(dev),
        "processes": world,
        "inference": {"steps": cfg.inference.steps, "loss": last(inf, "loss"), "val_mse": last(inf, "val_mse")},
        "prior": {"steps": cfg.prior.steps, "loss": last(pri, "loss"), "val_log_prob": last(pri, "val_log_prob"),
                  "best_step": pri.get("best_step")}})
    training_curves(history, title=f"sgm fit: {cfg.data.name}", path=out / "training.png")
    print(f"sgm fit: wrote {out / MODEL}, {out / METRICS} and {out / 'training.png'}")
    return 0


def register(sub) -> None:
    fit = sub.add_parser(
        "fit", help="fit an SGM (both stages) and write a run folder",
        description="Fit stage 1 (prototype inference) and stage 2 (the prior p(η|x̂)) on a data set. The run "
                    "folder --out gets config.toml, checkpoint.pt (every checkpoint_every steps), model.pt, "
                    "metrics.json and training.png; 'sgm fit --config DIR/config.toml' repeats the run (from any "
                    "directory: data paths are stored absolute) and 'sgm fit --resume DIR' continues it after a "
                    "crash. Settings come from --config, then the flags below, then --set.")
    fit.add_argument("--config", default=None, metavar="FILE.toml", help="run configuration (default: all defaults)")
    fit.add_argument("--resume", default=None, metavar="DIR",
                     help="continue the run in DIR (or DIR/config.toml) from DIR/checkpoint.pt with the config "
                          "saved there; a finished run (DIR/model.pt) is left as it is")
    add_out_device(fit, "run folder to create (default runs/fit)")
    fit.add_argument("--data", default=None, help=DATA_HELP)
    fit.add_argument("--seed", type=int, default=None, help="random seed of the model and training (config: seed)")
    fit.add_argument("--inference-steps", type=int, default=None, help="stage-1 steps (config: inference.steps)")
    fit.add_argument("--prior-steps", type=int, default=None, help="stage-2 steps (config: prior.steps)")
    fit.add_argument("--batch-size", type=int, default=None,
                     help="batch size of both stages (config: inference.batch_size and prior.batch_size)")
    fit.add_argument("--checkpoint-every", type=int, default=None,
                     help="steps between checkpoints (config: checkpoint_every)")
    fit.add_argument("--n-train", type=int, default=None, help="training images, 0 = all (config: data.n_train)")
    fit.add_argument("--rotation", type=float, default=None,
                     help="rotate every image once by U(-θ, θ) degrees (config: data.rotation_degrees)")
    fit.add_argument("--group", default=None, help="transformation group: affine, color or affine+color (config: group.name)")
    fit.add_argument("--prior", default=None, help="prior program: flow, box, circular or discrete-rotation (config: model.prior)")
    fit.add_argument("--set", action="append", metavar="SECTION.KEY=VALUE",
                     help="set any config value, e.g. --set inference.lr=1e-3 --set group.bounds=[3.1416]; repeatable")
    fit.add_argument("--distributed", action="store_true",
                     help="train data-parallel in the process group started by torchrun (automatic when torchrun "
                          "starts several processes); --batch-size is then per process. See docs/distributed.md")
    fit.set_defaults(func=run)
