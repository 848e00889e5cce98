"""The main job: fit an SGM to procedural dSprites and measure how well it recovers the symmetries.

``sgm demo`` runs :func:`run_demo`; ``DemoConfig.demo()`` took 6 min 56 s for the whole job on a 2-core
Intel Xeon (seventh session, alone), and ``DemoConfig.long()`` is the longer budget reported in docs/results.md §3.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from ..data import DSpritesStream, dsprites
from ..groups import AffineGroup, narrowed_scale, widen_box
from ..models import SGM

SHAPE_NAMES = ("square", "ellipse", "heart")


@dataclass
class DemoConfig:
    """Everything that defines a dSprites run (SPEC 2.4 box, SPEC 7 laws)."""

    seed: int = 0
    batch_size: int = 64
    inference_steps: int = 6000
    prior_steps: int = 2000
    inference_lr: float = 3e-3
    prior_lr: float = 3e-3
    # Random views from half the box: with the full box a view composed with the data pose often
    # leaves the squashed box, and at short budgets the network then saturates its scale output to
    # reach far translations (the Lie-algebra coordinates couple the two) instead of centring.
    augment_scale: float = 0.5
    num_draws: int = 5
    inv_weight: float = 1.0
    blur_fraction: float = 0.3
    net: str = "mlp"
    net_input_size: int = 32
    # stage 1's invariance loss at 32x32: a quarter of the warps, and the pixels the pose net sees anyway
    loss_size: int | None = 32
    # stage 2 re-augments at full size: at 32x32 the prior told squares from hearts badly (docs/results.md §3)
    prior_image_size: int | None = None
    # The moment head (PrototypeInference(rotation_head="moments")): no continuous head can un-rotate a
    # square within its 90° cell (docs/results.md §3); with the circle head the squares' learned rotation
    # spread was 1.5°–2.1° on three seeds, with this one 25.8°–26.0° (their cell), and stage 1's held-out
    # x-MSE at step 6000 0.020 against the circle head's 0.026 in the reference box
    rotation_head: str = "moments"
    # orders of the equivariant head's points (PrototypeInference(rotation_harmonics=...))
    rotation_harmonics: tuple[int, ...] = (1,)
    net_hidden: tuple[int, ...] = (512, 256)
    prior_input_size: int = 32
    prior_feature_hidden: tuple[int, ...] = (256,)
    prior_hidden: tuple[int, ...] = (128, 128)
    prior_transforms: int = 4
    # 32 spline bins: in the wider box the hearts' two vertical bands are closer together in the flow's
    # coordinates, and with 6 bins 12.8% to 16.5% of resampled hearts fell between them (4.6% with 16);
    # with 16 seed 1 gave the upper band 44% of the mass, not 50% (heart com_y 5.6%; 4.8% with 32)
    prior_bins: int = 32
    bounds: tuple[float, ...] = (0.75, 0.75, math.pi, 0.75, 0.75)
    # The poses may reach this many times the box in tx, ty and the log-scales; the views (both
    # stages) and the invariance metric stay fractions of ``bounds``. A square's data pose composed
    # with a view often lies outside the dSprites box: with 1.0 its horizontal position and size
    # missed their goals on every seed (13% and 8% of the range, seed 0; 2.7% and 2.5% with 2.0).
    pose_box: float = 2.0
    # the canonicalisation prior towards isotropic scales (InferenceConfig.isotropy_weight); in the
    # wider box the prototypes come out stretched without it, but at 0.05 the heart rotation spread
    # rose from 1.3° to 7.4° (seed 0), so the demo leaves it off
    isotropy_weight: float = 0.0
    n_val: int = 512
    n_test: int = 1536
    num_resamples: int = 4
    checkpoint_every: int = 250

    @classmethod
    def demo(cls, **overrides) -> DemoConfig:
        return cls(**overrides)

    @classmethod
    def long(cls, **overrides) -> DemoConfig:
        # the settings its documented result was measured with (docs/results.md §3): full-size loss, real head
        base = dict(inference_steps=12000, prior_steps=4000, loss_size=None, rotation_head="real", pose_box=1.0,
                    prior_bins=6)
        return cls(**{**base, **overrides})


WIDENED = ("tx", "ty", "log_sx", "log_sy")


def build_model(cfg: DemoConfig) -> SGM:
    group = widen_box(AffineGroup(bounds=cfg.bounds, squash=True), {c: cfg.pose_box for c in WIDENED})
    return SGM(group, (1, 64, 64),
               inference_kwargs=dict(net=cfg.net, input_size=cfg.net_input_size, hidden=list(cfg.net_hidden),
                                     rotation_head=cfg.rotation_head, rotation_harmonics=list(cfg.rotation_harmonics)),
               prior_kwargs=dict(input_size=cfg.prior_input_size, feature_hidden=list(cfg.prior_feature_hidden),
                                 hidden=list(cfg.prior_hidden), transforms=cfg.prior_transforms,
                                 bins=cfg.prior_bins))


def view_scale(cfg: DemoConfig, scale: float) -> dict:
    """``scale`` of the dSprites box per coordinate, as a fraction of the model's (widened) box."""
    return narrowed_scale(AffineGroup(bounds=cfg.bounds), scale, {c: cfg.pose_box for c in WIDENED})


def run_demo(out: str | Path, cfg: DemoConfig | None = None, *, device: str | torch.device | None = None,
             progress: bool = True, resume: bool = False, log=print) -> dict:
    """Fit, evaluate and plot; writes figures, ``metrics.json``, ``report.md`` and a checkpoint to ``out``."""
    from .dsprites_report import dsprites_report

    cfg = cfg or DemoConfig.demo()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    (out / "config.json").write_text(json.dumps(asdict(cfg), indent=2))
    torch.manual_seed(cfg.seed)
    val, _ = dsprites(cfg.n_val, seed=cfg.seed + 10_000)
    test, test_latents = dsprites(cfg.n_test, seed=cfg.seed + 20_000)
    stream = DSpritesStream(cfg.batch_size, seed=cfg.seed + 1, device=device)
    model = build_model(cfg)
    log(f"sgm demo: dSprites 64x64, {cfg.inference_steps} + {cfg.prior_steps} steps of batch {cfg.batch_size} "
        f"on {device} -> {out}")
    start = time.perf_counter()
    model.fit(iter(stream), inference_steps=cfg.inference_steps, prior_steps=cfg.prior_steps,
              batch_size=cfg.batch_size, val_images=val, device=device, seed=cfg.seed, progress=progress,
              checkpoint_dir=out, checkpoint_every=cfg.checkpoint_every, resume=resume,
              inference_lr=cfg.inference_lr, inference_num_draws=cfg.num_draws,
              inference_inv_weight=cfg.inv_weight, inference_blur_fraction=cfg.blur_fraction,
              inference_isotropy_weight=cfg.isotropy_weight,
              inference_augment_scale=view_scale(cfg, cfg.augment_scale),
              prior_augment_scale=view_scale(cfg, cfg.augment_scale),
              inference_image_size=cfg.loss_size, prior_image_size=cfg.prior_image_size,
              prior_lr=cfg.prior_lr, prior_num_draws=cfg.num_draws)
    fit_seconds = time.perf_counter() - start
    model.save(out / "model.pt")
    metrics = dsprites_report(model, test.to(device), {k: v.to(device) for k, v in test_latents.items()}, out,
                              num_resamples=cfg.num_resamples, seed=cfg.seed, view_scale=view_scale(cfg, 0.5))
    timing = model.history.get("timing", {})
    metrics["seconds"] = {"fit": fit_seconds, **timing}
    # steps and seconds both count every process of a resumed run (the checkpoints carry them)
    metrics["images_per_second"] = {
        name: timing.get(f"{stage}_steps", 0) * cfg.batch_size / timing[stage] if timing.get(stage) else None
        for name, stage in (("stage1", "inference"), ("stage2", "prior"))}
    metrics["device"] = str(device)
    metrics["config"] = asdict(cfg)
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
    log(f"done in {fit_seconds / 60:.1f} min of fitting; report: {out / 'report.md'}")
    return metrics
