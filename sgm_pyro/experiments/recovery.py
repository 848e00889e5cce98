"""The symmetry-recovery benchmark: fit an SGM per task and score it against the known truth.

``run_benchmark(out, tasks, seed)`` writes ``recovery.md`` (the table), ``recovery.json`` (every
number) and one figure per task; ``score_model(model, generator)`` scores any fitted SGM (for
instance one from ``sgm fit``) on a generator of images with known poses. docs/recovery.md
documents the tasks, the laws, the alignment and the metrics.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path

import torch

from ..analysis.symmetry_recovery import coordinate_w1, recovery_scores
from ..data.recovery import TASKS, RecoveryData, RecoveryTask, get_task
from ..groups import narrowed_scale, widen_box
from ..models import SGM
from ..models.prototype import ROTATION_HEADS

# Seeds of the three data sets, added to the run's seed (train, validation, test).
TRAIN_SEED, VAL_SEED, TEST_SEED = 1, 10_000, 20_000


@dataclass
class RecoverySettings:
    """How one task's SGM is built and fitted (small settings chosen for a 2-core CPU)."""

    n_train: int = 8192
    n_val: int = 256
    # 2048 test images: at 512 the truth's own sampling noise (``truth_floor``) is 4.0° of rotation
    # W1 on the C4 law (2.9° at 2048), too close to the 5° goal to tell a good density from a lucky one.
    n_test: int = 2048
    num_samples: int = 8
    batch_size: int = 64
    # Stage 2 may use larger batches (``None``: ``batch_size``): the masses of a C4 glyph's four
    # modes are learned from the batch's proportions, and with 64 or 256 images they come out a
    # few percent off.
    prior_batch_size: int | None = None
    inference_steps: int = 1500
    prior_steps: int = 600
    inference_lr: float = 3e-3
    prior_lr: float = 3e-3
    augment_scale: float | dict = 1.0  # views of stage 1: a fraction of the task's box, or {coordinate: fraction}
    prior_augment_scale: float | dict = 0.75
    num_draws: int = 2
    # draws per image whose stage-2 prototype is x̂ itself rather than re-derived from a random view
    # (PriorConfig.plain_draws)
    prior_plain_draws: int = 0
    inv_weight: float = 0.0
    # A strong blur warm-up over the first 30% of stage 1: with 1.0 over 10% the pose network of
    # the C4 glyph settles on poses 60° to 150° wrong for one or two of the four orientations.
    blur_sigma: float = 2.0
    blur_fraction: float = 0.3
    net: str = "mlp"
    # The equivariant pose head (the library default): with it stage 1 of mixed-glyphs converges
    # (pose W1 0.03° and 0.12°; with the circle head 40.6° and 33.6°). With the reference's
    # single-number head, stage 1 of c4-glyph misplaces two of the four modes (pose W1 44°, seed 0).
    # partial-affine and color-affine keep the circle head they were measured with (docs/recovery.md).
    rotation_head: str = "equivariant"
    # orders of the equivariant head's points (PrototypeInference(rotation_harmonics=...))
    rotation_harmonics: tuple[int, ...] = (1,)
    # the hue's head where its box is the whole colour circle (PrototypeInference(hue_head=...))
    hue_head: str = "equivariant"
    # who reads log-saturation and log-value (PrototypeInference(colour_head=...)): "set" or "mlp"
    colour_head: str = "set"
    # the canonicalisation prior of stage 1 (InferenceConfig.upright_weight; None: the library default)
    upright_weight: float | None = None
    # the canonicalisation prior towards isotropic scales (InferenceConfig.isotropy_weight)
    isotropy_weight: float = 0.0
    # Widen the model's box beyond the task's by these factors per coordinate ({name: factor}), with
    # the views of both stages still drawn from (fractions of) the task's box, so that a view composed
    # with the data's own pose stays reachable; the scores stay fractions of the task's box.
    pose_box: dict = field(default_factory=dict)
    net_input_size: int | None = 16
    # Stage 1 computes its warps at this size (the pose network sees it anyway): a quarter of the cost.
    loss_image_size: int | None = 16
    net_hidden: tuple[int, ...] = (256, 128)
    prior: str = "flow"
    # The default prior with 16 spline bins instead of 6: with 6 it merges two of the C4 glyph's
    # four modes even when fitted to the true poses (docs/recovery.md).
    prior_kwargs: dict = field(default_factory=lambda: dict(input_size=16, feature_hidden=(64,), hidden=(64, 64),
                                                            transforms=4, bins=16, dropout=0.0))


# Per-task settings (docs/recovery.md): views from the whole box, except partial-affine, which
# follows the dSprites demo (half-box views, invertibility weight 1); colour data get no
# invertibility term (SPEC 3).
SETTINGS: dict[str, RecoverySettings] = {
    "c4-glyph": RecoverySettings(prior_batch_size=512, prior_steps=300),
    "mixed-glyphs": RecoverySettings(prior_batch_size=512, prior_steps=300),
    "partial-affine": RecoverySettings(augment_scale=0.5, prior_augment_scale=0.5, inv_weight=1.0,
                                       inference_steps=500, prior_steps=400, num_draws=1, blur_sigma=1.0,
                                       blur_fraction=0.1, rotation_head="circle"),
    # Stage 2 re-augments within a quarter of the box: from 0.75 of it, views with saturation up to
    # e^1.7 times the data's clip, the re-derived prototypes of hearts stop looking like hearts, and
    # p(η | x̂) of hearts spread over every shape's translations (tx W1 16% to 20% of the range; 3.4% here).
    # Poses may reach twice the GalaxyMNIST box in tx, ty and the log-scales (views still from it):
    # a view composed with a data pose often lies outside it, and the squashed box then distorted the
    # prior's translations (squares' tx 7.8%, hearts' ty 12.5% of the range; 1% to 4% here). The
    # isotropy prior stops the ellipses' orientation leaking into the axes' stretch in the wider box.
    # One of the two stage-2 draws pairs the pose with x̂ itself: the ellipses' pose network is not
    # equivariant in scale (slope 0.65), so prototypes re-derived from views are not the x̂ the prior is
    # asked about, and p(log-scale | x̂) of the ellipses came out shifted by +0.019 (W1 5.4% and 6.0% of
    # the range; 4.5% here).
    "color-affine": RecoverySettings(rotation_head="circle", prior_steps=3000, prior_batch_size=256,
                                     prior_augment_scale=0.25, isotropy_weight=0.05, prior_plain_draws=1,
                                     pose_box={"tx": 2.0, "ty": 2.0, "log_sx": 2.0, "log_sy": 2.0}),
}

# The goals of issue 12: rotation W1 (degrees) and other coordinates (fraction of the box width).
GOALS: dict[str, dict] = {
    "c4-glyph": {"rot_deg": 5.0, "modes": {"F": 4}},
    "mixed-glyphs": {"rot_deg": 5.0, "modes": {"F": 4, "L": 1}},
    "partial-affine": {"rot_deg": 2.0, "fraction": {"tx": 0.05, "ty": 0.05}},
    "color-affine": {"hue": 0.03, "fraction": {"tx": 0.05, "ty": 0.05, "log_sx": 0.05, "log_sy": 0.05}},
}


def model_group(task: RecoveryTask, s: RecoverySettings):
    """The task's group, its box widened by ``s.pose_box``."""
    group = task.make_group()
    return widen_box(group, s.pose_box) if s.pose_box else group


def view_scale(task: RecoveryTask, s: RecoverySettings, scale: float | dict):
    """The views' ``augment_scale`` on the model's box: ``scale`` (a number or ``{coordinate: number}``,
    the others 1) of the task's box per coordinate."""
    return narrowed_scale(task.make_group(), scale, s.pose_box) if s.pose_box else scale


def stage_kwargs(task: RecoveryTask, s: RecoverySettings) -> tuple[dict, dict]:
    """The ``SGM.fit`` keyword arguments of stage 1 and of stage 2 for the settings ``s``."""
    stage1 = dict(inference_lr=s.inference_lr, inference_num_draws=s.num_draws, inference_inv_weight=s.inv_weight,
                  inference_blur_sigma=s.blur_sigma, inference_image_size=s.loss_image_size,
                  inference_blur_fraction=s.blur_fraction,
                  inference_augment_scale=view_scale(task, s, s.augment_scale),
                  inference_upright_weight=s.upright_weight, inference_isotropy_weight=s.isotropy_weight)
    stage2 = dict(prior_augment_scale=view_scale(task, s, s.prior_augment_scale), prior_lr=s.prior_lr,
                  prior_num_draws=s.num_draws, prior_plain_draws=s.prior_plain_draws)
    return stage1, stage2


def build_model(task: RecoveryTask, s: RecoverySettings) -> SGM:
    """A fresh SGM with the task's group and box (widened by ``s.pose_box``) and the settings' networks."""
    return SGM(model_group(task, s), task.image_shape, s.prior,
               inference_kwargs=dict(net=s.net, input_size=s.net_input_size, hidden=list(s.net_hidden),
                                     rotation_head=s.rotation_head, hue_head=s.hue_head, colour_head=s.colour_head,
                                     rotation_harmonics=list(s.rotation_harmonics)),
               prior_kwargs={k: list(v) if isinstance(v, tuple) else v for k, v in s.prior_kwargs.items()})


@torch.no_grad()
def score_model(model: SGM, generator: Callable[[int, int], RecoveryData] | RecoveryTask | RecoveryData, *,
                n: int = 1024, seed: int = TEST_SEED, num_samples: int = 16, batch_size: int = 256) -> tuple[dict, dict]:
    """Score a fitted SGM on images with known poses (see :func:`~sgm_pyro.analysis.recovery_scores`).

    Args:
        model: a fitted :class:`~sgm_pyro.models.SGM` (e.g. ``SGM.load("run/model.pt")``).
        generator: a :class:`RecoveryTask`, ready :class:`RecoveryData`, or any callable
            ``(n, seed) -> RecoveryData`` whose ``eta`` is in the model group's convention
            (``x = group.apply(prototype, eta)``).
        n, seed: how many test images to draw and from which seed (ignored for ``RecoveryData``).
        num_samples: draws of ``p(η | x̂)`` per image.

    Returns ``(scores, aligned)`` as :func:`~sgm_pyro.analysis.recovery_scores` does. Fractions are
    of the task's box where ``generator`` is a :class:`RecoveryTask` (a model may be fitted on a
    wider one, ``RecoverySettings.pose_box``), else of the model's.
    """
    bounds = None  # fractions of the model's box, or of the task's where the generator is a task
    if isinstance(generator, RecoveryData):
        data = generator
    elif isinstance(generator, RecoveryTask):
        data = generator.generate(n, seed)
        bounds = generator.make_group().bounds
    elif callable(generator):
        data = generator(n, seed)
    else:
        raise ValueError(f"generator must be a RecoveryTask, RecoveryData or callable (n, seed), got {type(generator).__name__}")
    if not isinstance(data, RecoveryData):
        raise ValueError(f"the generator must return RecoveryData, got {type(data).__name__}")
    if data.eta.shape[1] != model.group.dim:
        raise ValueError(f"the generator's eta has {data.eta.shape[1]} coordinates; the model's group has "
                         f"{model.group.dim} {model.group.names}")
    model.eval()
    poses, samples = [], []
    for x in data.images.split(batch_size):
        poses.append(model.infer_eta(x).cpu())
        samples.append(model.sample_eta(model.prototype(x), num_samples).cpu())
    return recovery_scores(model.group, data.eta, torch.cat(poses), data.labels, data.class_names,
                           data.symmetry, prior_samples=torch.cat(samples, dim=1), bounds=bounds)


def truth_floor(task: RecoveryTask, n: int, seed: int) -> dict:
    """The W1s between two independent test sets of the truth (seeds ``seed`` and ``seed + 1``), per class.

    A learned distribution scored against ``n`` true poses cannot be expected to come closer than
    this: it is the metric's sampling noise (a C4 law's four mode masses fluctuate by about
    ``sqrt(3/16 n)`` each, and every percent of mass out of place costs 0.9° of rotation W1).
    """
    a, b = task.generate(n, seed), task.generate(n, seed + 1)
    group = task.make_group()
    out = {}
    for k, cname in enumerate(task.class_names):
        ea, eb = a.eta[a.labels == k], b.eta[b.labels == k]
        out[cname] = {c: coordinate_w1(group, c, ea[:, i], eb[:, i], a.symmetry[k]) for i, c in enumerate(group.names)}
    return out


def goals_met(task: str, scores: dict) -> dict:
    """Which goals of :data:`GOALS` the scores meet: ``{goal: {"value", "limit", "met"}}``."""
    goal, out = GOALS.get(task, {}), {}
    for cname, res in scores.items():
        for kind in ("pose", "prior"):
            if "rot_deg" in goal and "rot" in res[kind]:
                out[f"{cname} {kind} rot W1 (deg)"] = _check(res[kind]["rot"]["w1"], goal["rot_deg"])
            if "hue" in goal:
                out[f"{cname} {kind} hue W1"] = _check(res[kind]["hue"]["w1"], goal["hue"])
            for c, limit in goal.get("fraction", {}).items():
                out[f"{cname} {kind} {c} W1 / range"] = _check(res[kind][c]["fraction"], limit)
        if cname in goal.get("modes", {}):
            found = len(res["modes"]["prior"])
            out[f"{cname} prior modes"] = {"value": found, "limit": goal["modes"][cname],
                                           "met": found == goal["modes"][cname]}
    return out


def _check(value: float, limit: float) -> dict:
    return {"value": value, "limit": limit, "met": bool(value <= limit)}


def run_task(name: str, out: str | Path, *, seed: int = 0, settings: RecoverySettings | None = None,
             device: str | torch.device = "cpu", progress: bool = False, log=print) -> dict:
    """Fit the task's SGM, score it, draw its figure; returns the task's results (plain data)."""
    from ..analysis.recovery_figures import recovery_figure

    task = get_task(name)
    s = settings or SETTINGS[name]
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    train = task.generate(s.n_train, seed + TRAIN_SEED)
    val = task.generate(s.n_val, seed + VAL_SEED)
    model = build_model(task, s)
    log(f"recovery {name}: {s.inference_steps} + {s.prior_steps} steps of batch {s.batch_size}")
    start = time.perf_counter()
    stage1, stage2 = stage_kwargs(task, s)
    common = dict(val_images=val.images, device=device, seed=seed, progress=progress)
    if s.prior_batch_size is None:
        model.fit(train.images, inference_steps=s.inference_steps, prior_steps=s.prior_steps,
                  batch_size=s.batch_size, **common, **stage1, **stage2)
    else:  # one stage at a time, each with its own batch size
        model.fit(train.images, inference_steps=s.inference_steps, prior_steps=0, batch_size=s.batch_size,
                  **common, **stage1)
        model.fit(train.images, inference_steps=0, prior_steps=s.prior_steps, batch_size=s.prior_batch_size,
                  **common, **stage2)
    fit_seconds = time.perf_counter() - start
    model.save(out / f"{name}.pt")
    scores, aligned = score_model(model.cpu(), task, n=s.n_test, seed=seed + TEST_SEED, num_samples=s.num_samples)
    floor = truth_floor(task, s.n_test, seed + TEST_SEED)
    recovery_figure(task.make_group(), aligned, scores, title=f"{name}: true vs learned",
                    path=out / f"{name}.png")
    result = {"task": name, "description": task.description, "seed": seed, "fit_seconds": fit_seconds,
              "settings": asdict(s), "scores": scores, "floor": floor, "goals": goals_met(name, scores)}
    met = sum(g["met"] for g in result["goals"].values())
    log(f"recovery {name}: fitted in {fit_seconds / 60:.1f} min; {met}/{len(result['goals'])} goals met")
    return result


def run_benchmark(out: str | Path, tasks: list[str] | None = None, *, seed: int = 0,
                  device: str | torch.device = "cpu", progress: bool = False, rotation_head: str | None = None,
                  overrides: dict | None = None, log=print) -> dict:
    """Run ``tasks`` (default: all); writes ``recovery.json``, ``recovery.md`` and the figures to ``out``.

    ``rotation_head`` replaces every task's pose head (``PrototypeInference(rotation_head=...)``);
    ``overrides`` replaces any :class:`RecoverySettings` fields of every task.
    """
    from ..analysis.recovery_figures import recovery_table

    names = list(tasks) if tasks else list(TASKS)
    for n in names:
        get_task(n)  # fail on a bad name before any fitting
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    overrides = dict(overrides or {})
    if rotation_head is not None:
        overrides["rotation_head"] = rotation_head
    unknown = sorted(set(overrides) - {f.name for f in fields(RecoverySettings)})
    if unknown:
        raise ValueError(f"unknown RecoverySettings fields {unknown}; "
                         f"allowed: {', '.join(f.name for f in fields(RecoverySettings))}")
    tuples = {f.name for f in fields(RecoverySettings) if "tuple" in str(f.type)}
    overrides = {k: tuple(v) if k in tuples and isinstance(v, list) else v for k, v in overrides.items()}
    settings = {n: replace(SETTINGS[n], **overrides) for n in names}
    results = {n: run_task(n, out, seed=seed, settings=settings[n], device=device, progress=progress, log=log)
               for n in names}
    (out / "recovery.json").write_text(json.dumps(results, indent=2))
    (out / "recovery.md").write_text(recovery_table(results))
    return results


def add_recovery_parser(subparsers) -> argparse.ArgumentParser:
    """Add ``recovery`` to an ``argparse`` sub-command set (``sgm benchmark recovery``)."""
    p = subparsers.add_parser("recovery", help="the symmetry-recovery benchmark (docs/recovery.md)",
                              description="Fit an SGM per task and score its recovered pose distributions.")
    p.add_argument("--task", action="append", choices=sorted(TASKS), help="run only this task (repeatable)")
    p.add_argument("--out", default="runs/recovery", help="output folder (default: runs/recovery)")
    p.add_argument("--seed", type=int, default=0, help="seed of the data and the fits (default 0)")
    p.add_argument("--device", default="cpu", help="torch device (default cpu)")
    p.add_argument("--progress", action="store_true", help="show progress bars")
    p.add_argument("--rotation-head", choices=ROTATION_HEADS, default=None,
                   help="pose head of every task (default: each task's own setting)")
    p.add_argument("--settings", metavar="JSON", default=None, type=_json_object,
                   help='RecoverySettings fields to replace in every task, e.g. \'{"colour_head": "mlp", '
                        '"pose_box": {}}\' (docs/recovery.md)')
    p.set_defaults(func=run_from_args)
    return p


def _json_object(text: str) -> dict:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as e:
        raise argparse.ArgumentTypeError(f"--settings must be a JSON object: {e}") from e
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f"--settings must be a JSON object, got {text!r}")
    return value


def run_from_args(args: argparse.Namespace) -> int:
    """Run the benchmark from parsed ``add_recovery_parser`` arguments; returns the exit status."""
    results = run_benchmark(args.out, args.task, seed=args.seed, device=args.device, progress=args.progress,
                            rotation_head=getattr(args, "rotation_head", None),
                            overrides=getattr(args, "settings", None))
    print((Path(args.out) / "recovery.md").read_text())
    return 0 if all(g["met"] for r in results.values() for g in r["goals"].values()) else 1


__all__ = ["GOALS", "SETTINGS", "RecoverySettings", "add_recovery_parser", "build_model", "goals_met", "stage_kwargs",
           "run_benchmark", "run_from_args", "run_task", "score_model", "truth_floor"]
