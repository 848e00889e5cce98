"""Rotated MNIST data efficiency (SPEC 7, the paper's figure 11): VAE, AugVAE, InvVAE, StdAugVAE.

For every rotation range θ, training size and seed: rotate every image once by a fixed random
angle in U(−θ, θ); fit one SGM on the training subset; fit the four VAEs on the same subset, all
under one budget rule (``max_epochs`` with early stopping after ``patience`` epochs without a
better validation score, best-validation parameters restored); score the held-out test set with
the IWLB (``num_samples`` particles, 300 in the paper) and the reconstruction MSE.

``run_rotated_mnist`` writes ``results.json`` (one row per cell: θ, size, seed, model; with the
training history and the chosen epoch), ``table.md`` (mean ± standard error over seeds) and
``iwlb_vs_size.png``. It is resumable: rows already in ``out_dir/results.json`` are kept and their
cells skipped, and each fitted SGM is cached in ``out_dir/sgm/``, so an interrupted run continues
where it stopped.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import Tensor

from ..data import rotate_fixed, split_indices
from ..groups import AffineGroup
from ..models import SGM, VAE, StdAugVAE
from ..models.aug_vae import AugVAE
from ..models.inv_vae import InvVAE
from ..models.vae import SIGMA_MODES
from ..validation import check_images
from .rotated_mnist_report import MODELS, markdown_table, merge_results, summarise, write_results

__all__ = ["BUDGETS", "MODELS", "RotatedMnistConfig", "budget_config", "markdown_table", "merge_results",
           "run_rotated_mnist", "summarise"]

GROUPS = ("rotation", "affine")
MNIST_AFFINE_BOUNDS = (0.25, 0.25, math.pi, 0.25, 0.25)  # SPEC 2.4, unsquashed
# Fields that may differ between a cached run and its continuation (they only add or drop cells).
_CELL_FIELDS = ("thetas", "sizes", "seeds", "models")


@dataclass
class RotatedMnistConfig:
    """Everything that defines a run. Defaults: the paper's protocol scaled to the 10k-digit pool.

    ``sizes`` are training-set sizes drawn from the pool left after the test and validation sets
    (the paper's 12.5k/25k/50k of 50k become 1,750/3,500/7,000 of 7k).

    VAE budget rule (the same for every model): ``max_epochs`` epochs, validation every epoch,
    stop after ``patience`` validations without a better ``val_metric``, best state restored.
    ``vae_steps`` set instead makes the budget that many steps (validated every tenth).
    """

    thetas: tuple[float, ...] = (15.0, 90.0, 180.0)
    sizes: tuple[int, ...] = (1750, 3500, 7000)
    seeds: tuple[int, ...] = (0, 1, 2)
    n_test: int = 2000
    n_val: int = 1000
    data_seed: int = 0
    models: tuple[str, ...] = MODELS
    group: str = "affine"  # "rotation" (rot only, bound π) or "affine" (SPEC 2.4 MNIST box)
    # SGM (both stages see the training subset only)
    inference_steps: int = 2000
    prior_steps: int = 1000
    sgm_batch_size: int = 128
    inference_lr: float = 1e-3
    num_draws: int = 5
    inference_hidden: tuple[int, ...] = (512, 256)
    inference_input_size: int | None = None
    prior_feature_hidden: tuple[int, ...] = (256,)
    prior_hidden: tuple[int, ...] = (128, 128)
    prior_transforms: int = 4
    # VAEs (reference architecture: latent 20, convs (64, 128, 256), MLP 256; SPEC 6 has the third conv as
    # an option). With it, lr 2e-3 and patience 8, the VAE at θ = 15° and 7,000 digits reaches a test
    # IWLB of +943 nats; with convs (64, 128) +891 (docs/results.md §5).
    sigma: str = "calibrated"  # "reference" = the paper's 0.01 + softplus(raw), init 1
    max_epochs: int = 100
    patience: int = 8
    val_metric: str = "elbo"
    vae_steps: int | None = None
    batch_size: int = 128
    lr: float = 2e-3
    latent_dim: int = 20
    channels: tuple[int, ...] = (64, 128, 256)
    hidden: int = 256
    # evaluation
    num_samples: int = 300
    chunk_size: int = 100
    eval_batch: int = 250

    def __post_init__(self) -> None:
        if self.group not in GROUPS:
            raise ValueError(f"group must be one of {GROUPS}, got {self.group!r}")
        unknown = set(self.models) - set(MODELS)
        if unknown or not self.models:
            raise ValueError(f"models must be a non-empty subset of {MODELS}, got {self.models}")
        if not self.thetas or any(not 0 <= t <= 180 for t in self.thetas):
            raise ValueError(f"thetas must be non-empty, each in [0, 180] degrees, got {self.thetas}")
        if self.sigma not in SIGMA_MODES:
            raise ValueError(f"sigma must be one of {SIGMA_MODES}, got {self.sigma!r}")
        for name in ("n_test", "n_val", "num_samples", "chunk_size", "max_epochs", "patience", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.vae_steps is not None and self.vae_steps < 1:
            raise ValueError(f"vae_steps must be None or >= 1, got {self.vae_steps}")
        if not self.sizes or min(self.sizes) < self.batch_size or not self.seeds:
            raise ValueError(f"need seeds and sizes >= batch_size ({self.batch_size}), got {self.sizes}")

    def make_group(self) -> AffineGroup:
        if self.group == "rotation":
            return AffineGroup(bounds=(math.pi,), generators=("rot",))
        return AffineGroup(bounds=MNIST_AFFINE_BOUNDS)


# Named budgets. "full" is the protocol of issue 10 on the 10k pool (days on a 2-core CPU, hours on
# a GPU); "quick" is sized to finish within 30 minutes on a shared 2-core CPU: two θs, two sizes,
# one seed, small networks, 500 test images, K = 100. "paper" is the paper's protocol for the full
# 60k/10k MNIST IDX files (test = the official test split, 10k validation images).
BUDGETS: dict[str, dict] = {
    "full": {},
    "quick": dict(thetas=(15.0, 180.0), sizes=(1750, 7000), seeds=(0,), n_test=500, n_val=500, group="rotation",
                  inference_steps=400, prior_steps=150, num_draws=3, sgm_batch_size=64,
                  inference_hidden=(256, 128), prior_transforms=2, max_epochs=20, patience=4, channels=(16, 32),
                  hidden=128, num_samples=100, chunk_size=100),
    "paper": dict(sizes=(12500, 25000, 37500, 50000), n_test=10000, n_val=10000, inference_steps=60000,
                  prior_steps=7500, sgm_batch_size=512, inference_hidden=(2048, 1024, 512, 256),
                  prior_feature_hidden=(1024, 512, 256), prior_transforms=6, max_epochs=1000, patience=20),
}


def budget_config(name: str = "full", **overrides) -> RotatedMnistConfig:
    """A :class:`RotatedMnistConfig` of the named budget (:data:`BUDGETS`) with ``overrides`` on top."""
    if name not in BUDGETS:
        raise ValueError(f"budget must be one of {sorted(BUDGETS)}, got {name!r}")
    return RotatedMnistConfig(**{**BUDGETS[name], **overrides})


def build_sgm(cfg: RotatedMnistConfig, image_shape) -> SGM:
    return SGM(cfg.make_group(), image_shape,
               inference_kwargs=dict(hidden=tuple(cfg.inference_hidden), input_size=cfg.inference_input_size),
               prior_kwargs=dict(feature_hidden=tuple(cfg.prior_feature_hidden), hidden=tuple(cfg.prior_hidden),
                                 transforms=cfg.prior_transforms))


def build_vae(name: str, cfg: RotatedMnistConfig, image_shape, sgm: SGM | None):
    """One of :data:`MODELS`, with the configured VAE architecture and σ parametrisation."""
    kw = dict(latent_dim=cfg.latent_dim, channels=tuple(cfg.channels), hidden=cfg.hidden, sigma=cfg.sigma)
    if name == "VAE":
        return VAE(image_shape, **kw)
    if name == "StdAugVAE":
        return StdAugVAE(image_shape, **kw)
    return AugVAE(image_shape, sgm, **kw) if name == "AugVAE" else InvVAE(sgm, **kw)


def _budget(cfg: RotatedMnistConfig) -> dict:
    """fit_vae's budget keywords: the one rule every model of the comparison gets."""
    budget = {"steps": cfg.vae_steps} if cfg.vae_steps is not None else {"max_epochs": cfg.max_epochs}
    return {**budget, "patience": cfg.patience, "val_metric": cfg.val_metric}


@torch.no_grad()
def evaluate(model, x: Tensor, cfg: RotatedMnistConfig, device: torch.device, seed: int) -> dict:
    """Mean test IWLB (and its standard error over images), reconstruction MSE, and for InvVAE the
    prototype-space bound. Batches of ``eval_batch`` images; ``seed`` fixes the particles (for this
    ``chunk_size``: particles come from the forked global RNG, all of a chunk in one pass)."""
    bounds, protos, sq = [], [], 0.0
    forked = [device] if device.type == "cuda" else []
    for start in range(0, x.shape[0], cfg.eval_batch):
        xb = x[start: start + cfg.eval_batch].to(device)
        with torch.random.fork_rng(devices=forked):
            torch.manual_seed(seed + start)
            bounds.append(model.log_likelihood(xb, cfg.num_samples, chunk_size=cfg.chunk_size).cpu())
            if isinstance(model, InvVAE):
                protos.append(model.prototype_bound(xb, cfg.num_samples, chunk_size=cfg.chunk_size).cpu())
        sq += ((model.reconstruct(xb) - xb) ** 2).sum().item()
    b = torch.cat(bounds)
    out = {"iwlb": b.mean().item(), "iwlb_se_images": (b.std() / math.sqrt(len(b))).item() if len(b) > 1 else 0.0,
           "mse": sq / x.numel()}
    if protos:
        out["prototype_bound"] = torch.cat(protos).mean().item()
    return out


def _splits(images: Tensor, cfg: RotatedMnistConfig, test_images: Tensor | None) -> tuple[Tensor, Tensor, Tensor]:
    """Shuffled (label-sorted files!) disjoint test / validation / training pool indices."""
    n = images.shape[0]
    n_test = 0 if test_images is not None else cfg.n_test
    need = n_test + cfg.n_val + max(cfg.sizes)
    if need > n:
        raise ValueError(f"{n} images cannot hold test {n_test} + validation {cfg.n_val} + the largest "
                         f"training size {max(cfg.sizes)} = {need}")
    test, val, pool = split_indices(n, (n_test, cfg.n_val, n - n_test - cfg.n_val), seed=cfg.data_seed)
    return test, val, pool


def _load_record(out: Path, cfg: RotatedMnistConfig) -> dict | None:
    """The cached record of ``out`` if its settings match ``cfg`` (cell lists may differ), else an error."""
    path = out / "results.json"
    if not path.is_file():
        return None
    record = json.loads(path.read_text())
    mine = json.loads(json.dumps(asdict(cfg)))
    theirs = record.get("config", {})
    differ = sorted(k for k in mine if k not in _CELL_FIELDS and theirs.get(k) != mine[k])
    if differ:
        raise ValueError(f"{path} was written with other settings ({', '.join(differ)} differ); resume with the "
                         "same settings, or write to another --out")
    return record


def _history_summary(hist: dict) -> dict:
    """What a row keeps of fit_vae's history: validation curve, chosen epoch, loss per epoch."""
    per = max(1, hist["steps_per_epoch"])
    losses = hist["loss"]
    by_epoch = [sum(losses[i: i + per]) / len(losses[i: i + per]) for i in range(0, len(losses), per)]
    key = f"val_{hist['val_metric']}"
    return {"val_metric": hist["val_metric"], "val_epoch": hist["val_epoch"], "val_value": hist[key],
            "loss_per_epoch": by_epoch, "best_epoch": hist["best_epoch"], "best_step": hist["best_step"],
            "stopped_step": hist["stopped_step"], "stopped_early": hist["stopped_early"],
            "steps_per_epoch": hist["steps_per_epoch"]}


def run_rotated_mnist(images: Tensor, labels: Tensor | None, out_dir, config: RotatedMnistConfig | None = None, *,
                      test_images: Tensor | None = None, device: str | torch.device = "cpu",
                      progress: bool = False, log: Callable[[str], None] = print) -> dict:
    """Run the protocol and write ``results.json``, ``table.md`` and ``iwlb_vs_size.png`` to ``out_dir``.

    Args:
        images: ``(N, 1, H, W)`` in ``[-1, 1]``, un-rotated; shuffled before splitting.
        labels: ``(N,)`` or ``None``; only used to record the test set's class counts.
        test_images: an explicit test set (e.g. the MNIST test split); otherwise ``n_test`` images
            of ``images`` are held out.
    Returns ``{"config": ..., "rows": [...], "table": {...}}`` (also ``results.json``). Results are
    rewritten after every cell; cells already in ``out_dir/results.json`` (same settings) are skipped.
    """
    cfg = config or RotatedMnistConfig()
    check_images(images, name="images")
    if labels is not None and labels.shape != (images.shape[0],):
        raise ValueError(f"labels must have shape ({images.shape[0]},), got {tuple(labels.shape)}")
    if test_images is not None:
        check_images(test_images, tuple(images.shape[1:]), "test_images")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    device = torch.device(device)
    shape = tuple(images.shape[1:])
    test_idx, val_idx, pool_idx = _splits(images, cfg, test_images)
    record = _load_record(out, cfg) or {"rows": [], "sessions": []}
    record.update(config=asdict(cfg), device=str(device), n_images=images.shape[0])
    done = {(r["theta"], r["size"], r["seed"], r["model"]) for r in record["rows"]}
    if labels is not None and test_images is None:
        record["test_class_counts"] = torch.bincount(labels[test_idx]).tolist()
    t_start = time.time()
    session = {"started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "cells": 0}
    record.setdefault("sessions", []).append(session)
    for theta in cfg.thetas:
        # One fixed rotation per image for this θ (the same angles for every seed and size).
        rotated, _ = rotate_fixed(images, theta, seed=cfg.data_seed + int(round(theta)))
        test = rotate_fixed(test_images, theta, seed=cfg.data_seed + 1000 + int(round(theta)))[0] \
            if test_images is not None else rotated[test_idx]
        test = test[: cfg.n_test]
        val = rotated[val_idx]
        for size in cfg.sizes:
            for seed in cfg.seeds:
                todo = [m for m in cfg.models if (theta, size, seed, m) not in done]
                if not todo:
                    continue
                order = torch.randperm(len(pool_idx), generator=torch.Generator().manual_seed(seed))
                train = rotated[pool_idx[order[:size]]]
                sgm, sgm_time = None, 0.0
                if any(m in ("AugVAE", "InvVAE") for m in todo):
                    sgm, sgm_time = _cached_sgm(out, cfg, shape, theta, size, seed, train, val, device, progress, log,
                                                t_start)
                for name in todo:
                    torch.manual_seed(seed)
                    model = build_vae(name, cfg, shape, sgm)
                    t0 = time.time()
                    hist = model.fit(train, batch_size=cfg.batch_size, lr=cfg.lr, val_images=val, device=device,
                                     seed=seed, progress=progress, **_budget(cfg))
                    fit_time = time.time() - t0
                    t0 = time.time()
                    scores = evaluate(model, test, cfg, device, seed)
                    summary = _history_summary(hist)
                    row = {"theta": theta, "size": size, "seed": seed, "model": name, **scores,
                           "best_val": hist["best_value"], "best_epoch": summary["best_epoch"],
                           "best_step": hist["best_step"], "fit_s": fit_time, "eval_s": time.time() - t0,
                           "sgm_fit_s": sgm_time, "history": summary}
                    record["rows"].append(row)
                    session["cells"] += 1
                    session["wall_s"] = time.time() - t_start
                    log(f"[{time.time() - t_start:6.0f}s]   {name:9s} IWLB {row['iwlb']:8.1f}  MSE {row['mse']:.4f}  "
                        f"best epoch {row['best_epoch']:.0f}"
                        + (f"  prototype bound {row['prototype_bound']:.1f}" if "prototype_bound" in row else ""))
                    write_results(out, record)
    session["wall_s"] = time.time() - t_start
    record["wall_s"] = sum(s.get("wall_s", 0.0) for s in record["sessions"])
    write_results(out, record, figures=True)
    return record


def _cached_sgm(out: Path, cfg: RotatedMnistConfig, shape, theta, size, seed, train, val, device, progress, log,
                t_start) -> tuple[SGM, float]:
    """The SGM of one (θ, size, seed): loaded from ``out/sgm/`` when a previous session fitted it."""
    path = out / "sgm" / f"theta{theta:g}_n{size}_seed{seed}.pt"
    if path.is_file():
        log(f"[{time.time() - t_start:6.0f}s] θ={theta:g} size={size} seed={seed}: SGM from {path}")
        return SGM.load(path, map_location="cpu").to(device), 0.0
    log(f"[{time.time() - t_start:6.0f}s] θ={theta:g} size={size} seed={seed}: fitting SGM")
    t0 = time.time()
    sgm = build_sgm(cfg, shape)
    sgm.fit(train, inference_steps=cfg.inference_steps, prior_steps=cfg.prior_steps,
            batch_size=min(cfg.sgm_batch_size, size), val_images=val, device=device, seed=seed,
            progress=progress, inference_lr=cfg.inference_lr, inference_num_draws=cfg.num_draws,
            prior_num_draws=cfg.num_draws, prior_augment_scale=1.0)
    path.parent.mkdir(parents=True, exist_ok=True)
    sgm.save(path)
    return sgm, time.time() - t0

