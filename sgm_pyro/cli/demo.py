"""``sgm demo``: the main job, an SGM fitted to procedural dSprites with figures and a report."""

from __future__ import annotations

import argparse

from .common import add_out_device, device


def run(args: argparse.Namespace) -> int:
    from ..experiments.dsprites_demo import DemoConfig, run_demo
    overrides = {"seed": args.seed}
    if args.inference_steps is not None:
        overrides["inference_steps"] = args.inference_steps
    if args.prior_steps is not None:
        overrides["prior_steps"] = args.prior_steps
    for name in ("pose_box", "isotropy_weight", "rotation_head"):
        if getattr(args, name) is not None:
            overrides[name] = getattr(args, name)
    cfg = (DemoConfig.long if args.budget == "long" else DemoConfig.demo)(**overrides)
    run_demo(args.out or "runs/demo", cfg, device=device("", args.device), progress=not args.no_progress,
             resume=args.resume)
    return 0


def register(sub) -> None:
    demo = sub.add_parser(
        "demo", help="fit an SGM to procedural dSprites and write figures, metrics.json and report.md",
        description="The main job: generate dSprites with the paper's laws, fit both SGM stages, measure "
                    "invariance and symmetry recovery, and write figures and a report to --out.")
    add_out_device(demo, "output folder (figures, metrics.json, checkpoints; default runs/demo)")
    demo.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    demo.add_argument("--budget", choices=("demo", "long"), default="demo",
                      help="'demo' takes about 7 minutes on 2 CPU cores; 'long' is the longer reported budget")
    demo.add_argument("--inference-steps", type=int, default=None, help="override the stage-1 step count")
    demo.add_argument("--prior-steps", type=int, default=None, help="override the stage-2 step count")
    demo.add_argument("--pose-box", type=float, default=None,
                      help="poses may reach this many times the dSprites box in tx, ty and the log-scales "
                           "(default 2; 1 is the reference box); the views stay fractions of the dSprites box")
    demo.add_argument("--isotropy-weight", type=float, default=None,
                      help="weight of the stage-1 prior towards isotropic scales (default 0: off)")
    demo.add_argument("--rotation-head", choices=("moments", "circle", "equivariant", "real"), default=None,
                      help="how the pose network reads the rotation (default 'moments': un-rotates squares "
                           "within their 90° cell; 'circle' was the default until the seventh session)")
    demo.add_argument("--resume", action="store_true", help="continue from the checkpoint in --out")
    demo.set_defaults(func=run)
