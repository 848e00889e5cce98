"""Rotated MNIST data efficiency (SPEC 7, the paper's figure 11): VAE, AugVAE, InvVAE, StdAugVAE.

For every rotation range θ, training size and seed: rotate every image once by a fixed random
angle in U(−θ, θ); fit one SGM on the training subset; fit the four VAEs on the same subset (each
keeps the parameters of its best validation ELBO); score the held-out test set with the IWLB
(``num_samples`` particles, 300 in the paper) and the reconstruction MSE. ``run_rotated_mnist``
writes ``results.json`` (one row per model and run), ``table.md`` (mean ± standard error over
seeds) and one IWLB-against-size figure per θ.
"""

from __future__ import annotations

import json
import math
import statistics
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
from ..validation import check_images

MODELS = ("VAE", "AugVAE", "InvVAE", "StdAugVAE")
GROUPS = ("rotation", "affine")
MNIST_AFFINE_BOUNDS = (0.25, 0.25, math.pi, 0.25, 0.25)  # SPEC 2.4, unsquashed


@dataclass
class RotatedMnistConfig:
    """Everything that defines a run. Defaults follow the paper's protocol scaled to a 10k-digit pool.

    ``sizes`` are training-set sizes drawn from the pool left after the test and validation sets
    (the paper's 12.5k/25k/37.5k/50k of 50k become quarters of 7k). Step counts are per model.
    """

    thetas: tuple[float, ...] = (15.0, 90.0, 180.0)
    sizes: tuple[int, ...] = (1750, 3500, 5250, 7000)
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
    # VAEs (reference architecture: latent 20, convs (64, 128), MLP 256)
    vae_steps: int = 2000
    batch_size: int = 128
    lr: float = 1e-3
    latent_dim: int = 20
    channels: tuple[int, ...] = (64, 128)
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
        for name in ("n_test", "n_val", "num_samples", "chunk_size", "vae_steps", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not self.sizes or min(self.sizes) < self.batch_size or not self.seeds:
            raise ValueError(f"need seeds and sizes >= batch_size ({self.batch_size}), got {self.sizes}")

    def make_group(self) -> AffineGroup:
        if self.group == "rotation":
            return AffineGroup(bounds=(math.pi,), generators=("rot",))
        return AffineGroup(bounds=MNIST_AFFINE_BOUNDS)


def build_sgm(cfg: RotatedMnistConfig, image_shape) -> SGM:
    return SGM(cfg.make_group(), image_shape,
               inference_kwargs=dict(hidden=tuple(cfg.inference_hidden), input_size=cfg.inference_input_size),
               prior_kwargs=dict(feature_hidden=tuple(cfg.prior_feature_hidden), hidden=tuple(cfg.prior_hidden),
                                 transforms=cfg.prior_transforms))


def build_vae(name: str, cfg: RotatedMnistConfig, image_shape, sgm: SGM):
    """One of :data:`MODELS`, with the configured VAE architecture."""
    kw = dict(latent_dim=cfg.latent_dim, channels=tuple(cfg.channels), hidden=cfg.hidden)
    if name == "VAE":
        return VAE(image_shape, **kw)
    if name == "AugVAE":
        return AugVAE(image_shape, sgm, **kw)
    if name == "StdAugVAE":
        return StdAugVAE(image_shape, **kw)
    return InvVAE(sgm, **kw)


@torch.no_grad()
def evaluate(model, x: Tensor, cfg: RotatedMnistConfig, device: torch.device, seed: int) -> dict:
    """Mean test IWLB (and its standard error over images), reconstruction MSE, and for InvVAE the
    prototype-space bound. Batches of ``eval_batch`` images; ``seed`` fixes the particles."""
    bounds, protos, sq = [], [], 0.0
    for start in range(0, x.shape[0], cfg.eval_batch):
        xb = x[start: start + cfg.eval_batch].to(device)
        bounds.append(model.log_likelihood(xb, cfg.num_samples, chunk_size=cfg.chunk_size,
                                           seed=seed + start).cpu())
        sq += ((model.reconstruct(xb) - xb) ** 2).sum().item()
        if isinstance(model, InvVAE):
            torch.manual_seed(seed + start)
            protos.append(model.prototype_bound(xb, cfg.num_samples, chunk_size=cfg.chunk_size).cpu())
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


def run_rotated_mnist(images: Tensor, labels: Tensor | None, out_dir, config: RotatedMnistConfig | None = None, *,
                      test_images: Tensor | None = None, device: str | torch.device = "cpu",
                      progress: bool = False, log: Callable[[str], None] = print) -> dict:
    """Run the protocol and write ``results.json``, ``table.md`` and ``iwlb_theta<θ>.png`` to ``out_dir``.

    Args:
        images: ``(N, 1, H, W)`` in ``[-1, 1]``, un-rotated; shuffled before splitting.
        labels: ``(N,)`` or ``None``; only used to record the test set's class counts.
        test_images: an explicit test set (e.g. the MNIST test split); otherwise ``n_test`` images
            of ``images`` are held out.
    Returns ``{"config": ..., "rows": [...], "table": {...}}`` (also ``results.json``). Results are
    rewritten after every run, so an interrupted experiment keeps what it finished.
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
    record = {"config": asdict(cfg), "device": str(device), "n_images": images.shape[0], "rows": []}
    if labels is not None and test_images is None:
        record["test_class_counts"] = torch.bincount(labels[test_idx]).tolist()
    t_start = time.time()
    for theta in cfg.thetas:
        # One fixed rotation per image for this θ (the same angles for every seed and size).
        rotated, _ = rotate_fixed(images, theta, seed=cfg.data_seed + int(round(theta)))
        test = rotate_fixed(test_images, theta, seed=cfg.data_seed + 1000 + int(round(theta)))[0] \
            if test_images is not None else rotated[test_idx]
        test = test[: cfg.n_test]
        val = rotated[val_idx]
        for size in cfg.sizes:
            for seed in cfg.seeds:
                order = torch.randperm(len(pool_idx), generator=torch.Generator().manual_seed(seed))
                train = rotated[pool_idx[order[:size]]]
                log(f"[{time.time() - t_start:6.0f}s] θ={theta:g} size={size} seed={seed}: fitting SGM")
                t0 = time.time()
                sgm = build_sgm(cfg, shape)
                sgm.fit(train, inference_steps=cfg.inference_steps, prior_steps=cfg.prior_steps,
                        batch_size=min(cfg.sgm_batch_size, size), val_images=val, device=device, seed=seed,
                        progress=progress, inference_lr=cfg.inference_lr, inference_num_draws=cfg.num_draws,
                        prior_num_draws=cfg.num_draws, prior_augment_scale=1.0)
                sgm_time = time.time() - t0
                for name in cfg.models:
                    torch.manual_seed(seed)
                    model = build_vae(name, cfg, shape, sgm)
                    t0 = time.time()
                    hist = model.fit(train, steps=cfg.vae_steps, batch_size=cfg.batch_size, lr=cfg.lr,
                                     val_images=val, device=device, seed=seed, progress=progress)
                    fit_time = time.time() - t0
                    t0 = time.time()
                    scores = evaluate(model, test, cfg, device, seed)
                    row = {"theta": theta, "size": size, "seed": seed, "model": name, **scores,
                           "best_val_elbo": max(hist["val_elbo"]) if hist["val_elbo"] else None,
                           "best_step": hist["best_step"], "fit_s": fit_time, "eval_s": time.time() - t0,
                           "sgm_fit_s": sgm_time}
                    record["rows"].append(row)
                    log(f"[{time.time() - t_start:6.0f}s]   {name:9s} IWLB {row['iwlb']:8.1f}  MSE {row['mse']:.4f}"
                        + (f"  prototype bound {row['prototype_bound']:.1f}" if "prototype_bound" in row else ""))
                    _write(out, record)
    record["wall_s"] = time.time() - t_start
    _write(out, record, figures=True)
    return record


def merge_results(dirs, out_dir) -> dict:
    """Join the ``results.json`` of runs split over processes (e.g. one per θ) into ``out_dir``.

    Rows are concatenated (runs must not repeat a (θ, size, seed, model)); the config recorded is the
    first run's with the union of θs, sizes and seeds; table and figures are rewritten.
    """
    records = [json.loads((Path(d) / "results.json").read_text()) for d in dirs]
    if not records:
        raise ValueError("merge_results needs at least one run directory")
    rows = [r for rec in records for r in rec["rows"]]
    keys = [(r["theta"], r["size"], r["seed"], r["model"]) for r in rows]
    if len(set(keys)) != len(keys):
        raise ValueError("the runs overlap: some (theta, size, seed, model) appears twice")
    conf = dict(records[0]["config"])
    for key in ("thetas", "sizes", "seeds"):
        conf[key] = sorted({v for rec in records for v in rec["config"][key]})
    merged = {**records[0], "config": conf, "rows": rows, "merged_from": [str(d) for d in dirs],
              "wall_s": max(rec.get("wall_s", 0.0) for rec in records)}
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    _write(out, merged, figures=True)
    return merged


def summarise(rows: list[dict]) -> dict:
    """``{θ: {model: {size: {metric: (mean, stderr over seeds)}}}}``; stderr is 0 with one seed."""
    groups: dict = {}
    for r in rows:
        groups.setdefault((r["theta"], r["model"], r["size"]), []).append(r)
    table: dict = {}
    for (theta, model, size), rs in sorted(groups.items(), key=lambda kv: (kv[0][0], MODELS.index(kv[0][1]), kv[0][2])):
        cell = {}
        for key in ("iwlb", "mse", "prototype_bound"):
            vals = [r[key] for r in rs if key in r]
            if vals:
                se = statistics.stdev(vals) / math.sqrt(len(vals)) if len(vals) > 1 else 0.0
                cell[key] = (statistics.fmean(vals), se)
        cell["seeds"] = len(rs)
        table.setdefault(theta, {}).setdefault(model, {})[size] = cell
    return table


def markdown_table(table: dict) -> str:
    """Rows (model, training size), one IWLB column per θ, then MSE; ``mean ± s.e. (n seeds)``."""
    thetas = sorted(table)
    keys = sorted({(m, s) for t in thetas for m, row in table[t].items() for s in row},
                  key=lambda k: (MODELS.index(k[0]), k[1]))
    head = "| model | train size | " + " | ".join(f"IWLB θ={t:g}°" for t in thetas) + " | " + \
        " | ".join(f"MSE θ={t:g}°" for t in thetas) + " |"
    lines = [head, "|" + " --- |" * (2 + 2 * len(thetas))]

    def fmt(cell, key, digits):
        if cell is None or key not in cell:
            return "—"
        m, se = cell[key]
        return f"{m:.{digits}f} ± {se:.{digits}f} ({cell['seeds']})"

    for model, size in keys:
        cells = [table[t].get(model, {}).get(size) for t in thetas]
        lines.append(f"| {model} | {size} | " + " | ".join(fmt(c, "iwlb", 1) for c in cells) + " | "
                     + " | ".join(fmt(c, "mse", 4) for c in cells) + " |")
        if model == "InvVAE":
            lines.append(f"| InvVAE prototype-space bound (not a density of x) | {size} | "
                         + " | ".join(fmt(c, "prototype_bound", 1) for c in cells) + " |" + " |" * len(thetas))
    return "\n".join(lines) + "\n"


def _write(out: Path, record: dict, figures: bool = False) -> None:
    table = summarise(record["rows"])
    record["table"] = {str(t): v for t, v in table.items()}
    tmp = out / "results.json.tmp"
    tmp.write_text(json.dumps(record, indent=2))
    tmp.replace(out / "results.json")  # atomic: a crash never leaves half a file
    (out / "table.md").write_text(markdown_table(table))
    if figures:
        from ..analysis.plots import iwlb_plot  # figures sit above the models and experiments use them

        for theta, models in table.items():
            iwlb_plot({m: {s: c["iwlb"] for s, c in row.items()} for m, row in models.items()},
                      title=f"rotated MNIST, θ = {theta:g}°", path=out / f"iwlb_theta{theta:g}.png")
