"""The ``sgm`` command line: ``sgm fit | evaluate | sample | plot | demo | experiment`` (see ``sgm --help``).

A run folder holds everything needed to repeat or continue it:

    config.toml      the full RunConfig (``sgm fit --config DIR/config.toml`` repeats the run)
    checkpoint.pt    written atomically during training (``sgm fit --resume DIR`` continues it)
    model.pt         the fitted SGM (``SGM.load``)
    metrics.json     {"fit": ..., "evaluate": ...}
    *.png, *.pt      figures and samples

Errors caused by bad input print ``sgm <command>: error: ...`` and exit with status 2.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import tomllib
from collections.abc import Sequence
from pathlib import Path

from .experiments.run_data import load_pool, load_run_data

CONFIG, CHECKPOINT, MODEL, METRICS = "config.toml", "checkpoint.pt", "model.pt", "metrics.json"
DATA_HELP = ("data set: dsprites, mnist, fashion-mnist (IDX files in data/<name> or data.root), npz:PATH "
             "(an .npz with an 'images' array) or idx:DIR (a folder with the four MNIST-style IDX files)")


class UsageError(ValueError):
    """Bad input to a command; printed as ``sgm <command>: error: ...`` with exit status 2."""


# ---------------------------------------------------------------------------------------- helpers
def _device(cfg_device: str, override: str | None):
    import torch
    name = override or cfg_device or ("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as e:
        raise UsageError(f"unknown device {name!r} ({e})") from e
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UsageError(f"device {name!r} was asked for but CUDA is not available here")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise UsageError(f"device {name!r} was asked for but only {torch.cuda.device_count()} CUDA device(s) exist")
    return device


def _parse_set(items: Sequence[str]) -> dict:
    """``["inference.lr=1e-3", "data.name=mnist"]`` -> nested dict; values are TOML, else strings."""
    out: dict = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise UsageError(f"--set expects SECTION.KEY=VALUE, got {item!r}")
        try:
            value = tomllib.loads(f"v = {raw.strip()}")["v"]
        except tomllib.TOMLDecodeError:
            value = raw.strip()
        *path, last = key.strip().split(".")
        node = out
        for part in path:
            node = node.setdefault(part, {})
        node[last] = value
    return out


def _merge(base: dict, over: dict) -> dict:
    for k, v in over.items():
        # a table merges into a table (--set model.prior_kwargs={} empties it)
        base[k] = _merge(dict(base[k]), v) if isinstance(v, dict) and v and isinstance(base.get(k), dict) else v
    return base


def _run_dir(path: str, need: str) -> Path:
    run = Path(path)
    if not run.is_dir():
        raise FileNotFoundError(f"run folder {str(run)!r} does not exist")
    if not (run / need).is_file():
        hint = f" (finish training first: sgm fit --resume {run})" if need == MODEL else ""
        raise FileNotFoundError(f"no {need} in {str(run)!r}{hint}")
    return run


def _update_metrics(out: Path, key: str, value: dict) -> None:
    path = out / METRICS
    metrics = json.loads(path.read_text()) if path.is_file() else {}
    metrics[key] = value
    path.write_text(json.dumps(metrics, indent=2))


def _load_run(args: argparse.Namespace):
    """The run's config (with ``--data``/``--n-test`` overrides), model and device, for evaluate/sample/plot."""
    from .config import RunConfig, from_dict, load_config, to_dict
    from .models import SGM

    run = _run_dir(args.run, MODEL)
    cfg = load_config(run / CONFIG) if (run / CONFIG).is_file() else RunConfig()
    data: dict = {}
    if getattr(args, "data", None):
        data["name"] = args.data
    if getattr(args, "n_test", None) is not None:
        data["n_test"] = args.n_test
    cfg = from_dict(RunConfig, _merge(to_dict(cfg), {"data": data} if data else {}))
    device = _device(cfg.device, args.device)
    model = SGM.load(run / MODEL, map_location=device)
    return run, cfg, model, device


def _test_images(cfg, device):
    data = load_run_data(cfg, cfg.inference.batch_size, device)
    if data.test is None:
        raise UsageError("data.n_test is 0: there are no test images (pass --n-test)")
    return data


# ---------------------------------------------------------------------------------------- commands
def _cmd_fit(args: argparse.Namespace) -> int:
    import torch

    from .analysis import training_curves
    from .config import RunConfig, from_dict, load_config, save_config, to_dict
    from .config import build_model as build_sgm
    from .inference.distributed import get_rank, get_world_size, init_distributed, is_main_process

    overrides = _parse_set(args.set or [])
    for flag, path in (("data", "data.name"), ("seed", "seed"), ("inference_steps", "inference.steps"),
                       ("prior_steps", "prior.steps"), ("checkpoint_every", "checkpoint_every"),
                       ("n_train", "data.n_train"), ("rotation", "data.rotation_degrees"),
                       ("group", "group.name"), ("prior", "model.prior")):
        if getattr(args, flag) is not None:
            *parents, last = path.split(".")
            node = overrides
            for part in parents:
                node = node.setdefault(part, {})
            node[last] = getattr(args, flag)
    if args.batch_size is not None:
        _merge(overrides, {"inference": {"batch_size": args.batch_size}, "prior": {"batch_size": args.batch_size}})
    if args.device is not None:
        overrides["device"] = args.device
    if args.resume:
        changed = sorted(k for k in overrides if k != "device") or (["--config"] if args.config else [])
        if changed or args.out:
            raise UsageError(f"--resume continues the run with the config saved in {args.resume}; "
                             f"do not pass --config, --out or settings ({', '.join(changed) or '--out'})")
        out = _run_dir(args.resume, CONFIG)
        if not (out / CHECKPOINT).is_file():
            raise FileNotFoundError(f"no {CHECKPOINT} in {str(out)!r}: nothing to resume (start again with "
                                    f"sgm fit --config {out / CONFIG} --out {out})")
        cfg = load_config(out / CONFIG)
    else:
        cfg = load_config(args.config) if args.config else RunConfig()
        out = Path(args.out or "runs/fit")
        for name in (CHECKPOINT, MODEL):
            if (out / name).exists():
                raise UsageError(f"{out} already holds a run ({name}); continue it with sgm fit --resume {out} "
                                 "or pick another --out")
    cfg = from_dict(RunConfig, _merge(to_dict(cfg), overrides))
    device = _device(cfg.device, None)
    if args.distributed or int(os.environ.get("WORLD_SIZE") or 1) > 1:  # torchrun with several processes
        device = init_distributed(device)  # rank r trains on cuda:LOCAL_RANK, or on the CPU with gloo
    main, world = is_main_process(), get_world_size()
    data = load_run_data(cfg, cfg.inference.batch_size, device, rank=get_rank())
    if not args.resume and main:
        save_config(cfg, out / CONFIG)
    torch.manual_seed(cfg.seed)  # every rank builds the same initial model
    model = build_sgm(cfg, data.image_shape)
    steps = f"{cfg.inference.steps} + {cfg.prior.steps} steps of batch {cfg.inference.batch_size}"
    procs = f" x {world} processes" if world > 1 else ""
    if main:
        print(f"sgm fit: {cfg.data.name} {data.image_shape}, {steps}{procs} on {device} -> {out}"
              + (" (resumed)" if args.resume else ""))
    start = time.perf_counter()
    history = model.fit(data.train, inference_steps=cfg.inference.steps, prior_steps=cfg.prior.steps,
                        batch_size=cfg.inference.batch_size, val_images=data.val, device=device, seed=cfg.seed,
                        progress=not args.no_progress, inference_config=cfg.inference, prior_config=cfg.prior,
                        checkpoint_dir=out, checkpoint_every=cfg.checkpoint_every, resume=bool(args.resume))
    if not main:  # rank 0 writes the run folder
        return 0
    model.save(out / MODEL)
    inf, pri = history.get("inference", {}), history.get("prior", {})

    def last(d, k):
        return d[k][-1] if d.get(k) else None
    _update_metrics(out, "fit", {
        "seconds": time.perf_counter() - start, "timing": history.get("timing", {}), "device": str(device),
        "processes": world,
        "inference": {"steps": cfg.inference.steps, "loss": last(inf, "loss"), "val_mse": last(inf, "val_mse")},
        "prior": {"steps": cfg.prior.steps, "loss": last(pri, "loss"), "val_log_prob": last(pri, "val_log_prob"),
                  "best_step": pri.get("best_step")}})
    training_curves(history, title=f"sgm fit: {cfg.data.name}", path=out / "training.png")
    print(f"sgm fit: wrote {out / MODEL}, {out / METRICS} and {out / 'training.png'}")
    return 0


def _cmd_evaluate(args: argparse.Namespace) -> int:
    import torch

    from .analysis import invariance_metrics, prototype_grid, resample_grid
    from .inference.stage2 import validation_log_prob

    run, cfg, model, device = _load_run(args)
    out = Path(args.out) if args.out else run
    data = _test_images(cfg, device)
    x = data.test.to(device)
    torch.manual_seed(cfg.seed)
    if cfg.data.name == "dsprites":
        from .experiments.dsprites_report import dsprites_report
        metrics = dsprites_report(model, x, {k: v.to(device) for k, v in data.test_latents.items()}, out,
                                  num_resamples=args.num_resamples, seed=cfg.seed, title=f"sgm evaluate {run}")
    else:
        with torch.no_grad():
            eta = torch.cat([model.infer_eta(c) for c in x.split(args.batch_size)])
            x_hat = torch.cat([model.prototype(c) for c in x.split(args.batch_size)])
            lp_pose = model.log_prob_eta(eta, x_hat)
            with model.param_scope(), torch.random.fork_rng():
                held_out = validation_log_prob(model.prior, model.inference, x, cfg.prior, seed=cfg.seed)
        labels = data.test_labels if data.test_labels is not None else torch.zeros(x.shape[0], dtype=torch.long)
        gen = torch.Generator(device=device).manual_seed(cfg.seed)
        inv = invariance_metrics(model, x, labels, scale=0.5, generator=gen, batch_size=args.batch_size,
                                 shape_names=())
        metrics = {"n_test": x.shape[0], "heldout_log_prob_eta": held_out,
                   "log_prob_eta_at_pose": lp_pose.mean().item(), "invariance": inv}
        pick = slice(0, 16)
        prototype_grid(x[pick].cpu(), x_hat[pick].cpu(), None if data.test_labels is None else labels[pick],
                       title="test images (top) and their prototypes (bottom)", path=out / "prototypes.png")
        resample_grid(x[:8].cpu(), model.resample(x[:8], args.num_resamples).cpu(),
                      title="test images (left) and resamples", path=out / "resamples.png")
    metrics["data"] = cfg.data.name
    out.mkdir(parents=True, exist_ok=True)
    _update_metrics(out, "evaluate", metrics)
    inv_err = metrics["invariance"]["invariance_error"]
    extra = f", held-out log p(η|x̂) {metrics['heldout_log_prob_eta']:.3f}" if "heldout_log_prob_eta" in metrics else ""
    print(f"sgm evaluate: invariance error {inv_err:.4f}{extra}; wrote {out / METRICS}")
    return 0


def _cmd_sample(args: argparse.Namespace) -> int:
    import torch

    from .analysis import resample_grid
    from .validation import check_positive_int

    check_positive_int(args.num_images, "--num-images")
    check_positive_int(args.num_samples, "--num-samples")
    run, cfg, model, device = _load_run(args)
    out = Path(args.out) if args.out else run
    x = _test_images(cfg, device).test[: args.num_images].to(device)
    torch.manual_seed(args.seed if args.seed is not None else cfg.seed)
    resamples = model.resample(x, args.num_samples)
    out.mkdir(parents=True, exist_ok=True)
    torch.save({"images": x.cpu(), "prototypes": model.prototype(x).cpu(), "resamples": resamples.cpu()},
               out / "samples.pt")
    resample_grid(x.cpu(), resamples.cpu(), max_images=args.num_images, title="images (left) and resamples",
                  path=out / "samples.png")
    print(f"sgm sample: {tuple(resamples.shape)} resamples -> {out / 'samples.pt'}, {out / 'samples.png'}")
    return 0


def _cmd_plot(args: argparse.Namespace) -> int:
    import torch

    from .analysis import prototype_grid, resample_grid, training_curves
    from .inference.checkpoint import load_checkpoint

    run = Path(args.run)
    if not run.is_dir():
        raise FileNotFoundError(f"run folder {str(run)!r} does not exist")
    out = Path(args.out) if args.out else run
    out.mkdir(parents=True, exist_ok=True)
    written = []
    source = run / MODEL if (run / MODEL).is_file() else run / CHECKPOINT
    if not source.is_file():
        raise FileNotFoundError(f"no {MODEL} or {CHECKPOINT} in {str(run)!r}: nothing to plot")
    history = load_checkpoint(source, "cpu").get("history", {})
    training_curves(history, title=f"training of {run}", path=out / "training.png")
    written.append("training.png")
    if (run / "samples.pt").is_file():
        s = torch.load(run / "samples.pt", weights_only=True)
        resample_grid(s["images"], s["resamples"], max_images=s["images"].shape[0],
                      title="images (left) and resamples", path=out / "samples.png")
        written.append("samples.png")
    if (run / MODEL).is_file() and not args.no_data:
        args.data, args.n_test = None, None
        _, cfg, model, device = _load_run(args)
        data = _test_images(cfg, device)
        x = data.test[:16].to(device)
        labels = None if data.test_labels is None else data.test_labels[:16]
        prototype_grid(x.cpu(), model.prototype(x).cpu(), labels,
                       title="test images (top) and their prototypes (bottom)", path=out / "prototypes.png")
        written.append("prototypes.png")
    print(f"sgm plot: wrote {', '.join(written)} to {out}")
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from .experiments.dsprites_demo import DemoConfig, run_demo
    overrides = {"seed": args.seed}
    if args.inference_steps is not None:
        overrides["inference_steps"] = args.inference_steps
    if args.prior_steps is not None:
        overrides["prior_steps"] = args.prior_steps
    cfg = (DemoConfig.long if args.budget == "long" else DemoConfig.demo)(**overrides)
    run_demo(args.out or "runs/demo", cfg, device=args.device, progress=not args.no_progress, resume=args.resume)
    return 0


def _cmd_experiment(args: argparse.Namespace) -> int:
    from dataclasses import fields

    from .config import DataConfig

    try:
        from .experiments.rotated_mnist import RotatedMnistConfig, run_rotated_mnist
    except ImportError as e:
        raise UsageError(f"the rotated-MNIST experiment is not available in this installation ({e})") from e
    names = {f.name for f in fields(RotatedMnistConfig)}
    over = {}
    for name in ("thetas", "sizes", "seeds", "models", "group", "n_test", "n_val", "inference_steps",
                 "prior_steps", "vae_steps", "num_samples", "batch_size", "sgm_batch_size"):
        value = getattr(args, name, None)
        if value is not None and name in names:
            over[name] = tuple(value) if isinstance(value, list) else value
    cfg = RotatedMnistConfig(**over)
    images, labels = load_pool(DataConfig(name=args.data))
    device = _device("", args.device)
    out = Path(args.out or "runs/rotated-mnist")
    run_rotated_mnist(images, labels, out, cfg, device=device, progress=not args.no_progress)
    print(f"sgm experiment rotated-mnist: wrote results.json and table.md to {out}")
    return 0


# ---------------------------------------------------------------------------------------- parser
def _add_out_device(p: argparse.ArgumentParser, out_help: str) -> None:
    p.add_argument("--out", default=None, metavar="DIR", help=out_help)
    p.add_argument("--device", default=None,
                   help="torch device, e.g. cpu or cuda:0 (default: the config's device, else cuda if available)")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")


def _add_run_reader(sub, name: str, help_: str, description: str) -> argparse.ArgumentParser:
    p = sub.add_parser(name, help=help_, description=description)
    p.add_argument("run", metavar="DIR", help="run folder written by sgm fit (holds config.toml and model.pt)")
    _add_out_device(p, "where to write the outputs (default: the run folder)")
    p.add_argument("--data", default=None, help=DATA_HELP + " (default: the run's own data set)")
    p.add_argument("--n-test", type=int, default=None, help="number of test images (default: data.n_test of the run)")
    return p


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sgm", description="Symmetry-aware Generative Models in Pyro: learn the symmetries of image data. "
                                "Run 'sgm <command> --help' for the options of a command; docs/cli.md has examples.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    fit = sub.add_parser(
        "fit", help="fit an SGM (both stages) and write a run folder",
        description="Fit stage 1 (prototype inference) and stage 2 (the prior p(η|x̂)) on a data set. The run "
                    "folder --out gets config.toml, checkpoint.pt (every checkpoint_every steps), model.pt, "
                    "metrics.json and training.png; 'sgm fit --config DIR/config.toml' repeats the run and "
                    "'sgm fit --resume DIR' continues it after a crash. Settings come from --config, then the "
                    "flags below, then --set.")
    fit.add_argument("--config", default=None, metavar="FILE.toml", help="run configuration (default: all defaults)")
    fit.add_argument("--resume", default=None, metavar="DIR",
                     help="continue the run in DIR from DIR/checkpoint.pt with the config saved there")
    _add_out_device(fit, "run folder to create (default runs/fit)")
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
    fit.set_defaults(func=_cmd_fit)

    ev = _add_run_reader(sub, "evaluate", "score a fitted run on held-out images; writes metrics.json and figures",
                         "Load DIR/model.pt and measure on the test images: the invariance error of the prototypes "
                         "(‖x̂(x) − x̂(T_g x)‖² / Var(x), g uniform on half the box), the held-out log p(η|x̂') of "
                         "stage 2 and log p(f(x)|x̂(x)); dSprites runs get the full symmetry-recovery report. "
                         "Results go under 'evaluate' in metrics.json.")
    ev.add_argument("--num-resamples", type=int, default=4, help="resamples per test image for figures and metrics")
    ev.add_argument("--batch-size", type=int, default=256, help="images per forward pass (memory only)")
    ev.set_defaults(func=_cmd_evaluate)

    sa = _add_run_reader(sub, "sample", "draw natural augmentations (resamples) of test images",
                         "Resample the first --num-images test images (η ~ q(η|x), η' ~ p(η|x̂), one warp each) and "
                         "write samples.pt ({'images', 'prototypes', 'resamples' (S, N, C, H, W)}) and samples.png.")
    sa.add_argument("--num-images", type=int, default=8, help="test images to resample (default 8)")
    sa.add_argument("--num-samples", type=int, default=8, help="resamples per image (default 8)")
    sa.add_argument("--seed", type=int, default=None, help="random seed of the draws (default: the run's seed)")
    sa.set_defaults(func=_cmd_sample)

    pl = sub.add_parser("plot", help="re-draw the figures of a run folder",
                        description="Re-draw training.png from the saved history (model.pt, else checkpoint.pt), "
                                    "samples.png from samples.pt when present, and prototypes.png from model.pt "
                                    "and the run's test images.")
    pl.add_argument("run", metavar="DIR", help="run folder written by sgm fit")
    _add_out_device(pl, "where to write the figures (default: the run folder)")
    pl.add_argument("--no-data", action="store_true", help="skip figures that need the data set (prototypes.png)")
    pl.set_defaults(func=_cmd_plot)

    demo = sub.add_parser(
        "demo", help="fit an SGM to procedural dSprites and write figures, metrics.json and report.md",
        description="The main job: generate dSprites with the paper's laws, fit both SGM stages, measure "
                    "invariance and symmetry recovery, and write figures and a report to --out.")
    _add_out_device(demo, "output folder (figures, metrics.json, checkpoints; default runs/demo)")
    demo.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    demo.add_argument("--budget", choices=("demo", "long"), default="demo",
                      help="'demo' fits about 15 minutes on 2 CPU cores; 'long' is the longer reported budget")
    demo.add_argument("--inference-steps", type=int, default=None, help="override the stage-1 step count")
    demo.add_argument("--prior-steps", type=int, default=None, help="override the stage-2 step count")
    demo.add_argument("--resume", action="store_true", help="continue from the checkpoint in --out")
    demo.set_defaults(func=_cmd_demo)

    ex = sub.add_parser("experiment", help="run a paper experiment (rotated-mnist)",
                        description="Run a protocol of the paper. rotated-mnist: data efficiency of VAE, AugVAE, "
                                    "InvVAE and StdAugVAE on rotated MNIST (SPEC 7); writes results.json, table.md "
                                    "and IWLB figures. Unset options keep RotatedMnistConfig's defaults.")
    ex.add_argument("name", choices=("rotated-mnist",), help="which experiment")
    _add_out_device(ex, "output folder (default runs/rotated-mnist)")
    ex.add_argument("--data", default="mnist", help=DATA_HELP + " (default mnist, i.e. data/mnist)")
    ex.add_argument("--thetas", type=float, nargs="+", default=None, help="rotation ranges θ in degrees, e.g. 15 90 180")
    ex.add_argument("--sizes", type=int, nargs="+", default=None, help="training-set sizes")
    ex.add_argument("--seeds", type=int, nargs="+", default=None, help="seeds, one run each")
    ex.add_argument("--models", nargs="+", default=None, help="subset of VAE AugVAE InvVAE StdAugVAE")
    ex.add_argument("--group", choices=("rotation", "affine"), default=None, help="the SGM's group")
    ex.add_argument("--n-test", type=int, default=None, help="test images held out of the pool")
    ex.add_argument("--n-val", type=int, default=None, help="validation images held out of the pool")
    ex.add_argument("--inference-steps", type=int, default=None, help="SGM stage-1 steps")
    ex.add_argument("--prior-steps", type=int, default=None, help="SGM stage-2 steps")
    ex.add_argument("--vae-steps", type=int, default=None, help="steps of each VAE")
    ex.add_argument("--batch-size", type=int, default=None, help="VAE batch size")
    ex.add_argument("--sgm-batch-size", type=int, default=None, help="SGM batch size")
    ex.add_argument("--num-samples", type=int, default=None, help="IWLB particles K (300 in the paper)")
    ex.set_defaults(func=_cmd_experiment)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    from .inference.distributed import close_distributed
    from .inference.progress import NonFiniteLossError

    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except NonFiniteLossError as e:
        print(f"sgm {args.command}: error: {e}", file=sys.stderr)
        return 1
    except (ValueError, OSError) as e:
        print(f"sgm {args.command}: error: {e}", file=sys.stderr)
        return 2
    finally:
        close_distributed()  # leave a process group joined by sgm fit --distributed


if __name__ == "__main__":
    sys.exit(main())
