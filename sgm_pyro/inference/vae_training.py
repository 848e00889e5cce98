"""Fit a VAE program by SVI (``Trace_ELBO``), as for the VAE, AugVAE and StdAugVAE baselines."""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from typing import Any

import pyro
import torch
from pyro.infer import SVI, Trace_ELBO
from torch import Tensor, nn

from ..validation import check_images, check_positive_int
from .batches import TensorBatches
from .distributed import AllReduceLossAndGrads, get_rank, get_world_size, is_distributed, is_main_process, rank_seed
from .iwlb import iwlb
from .param_scope import private_param_store
from .progress import check_finite, progress_bar
from .schedules import warmup_cosine

__all__ = ["fit_vae", "validation_elbo"]


def fit_vae(
    vae: nn.Module,
    images: Tensor,
    *,
    steps: int,
    batch_size: int = 128,
    lr: float = 1e-3,
    weight_decay: float = 1e-4,
    clip_norm: float = 10.0,
    warmup_fraction: float = 0.02,
    augment: Callable[[Tensor], Tensor] | None = None,
    val_images: Tensor | None = None,
    val_every: int | None = None,
    restore_best: bool = True,
    device: torch.device | str = "cpu",
    seed: int = 0,
    progress: bool = True,
) -> dict[str, Any]:
    """Maximise the ELBO of ``vae.model``/``vae.guide`` on ``images`` with SVI.

    The optimiser is AdamW with per-parameter gradient-norm clipping (Pyro's ``clip_args``) and
    a learning rate that warms up linearly over ``warmup_fraction · steps`` then decays on a
    cosine (the reference schedule, SPEC 3 and 4).

    Args:
        vae: a :class:`~sgm_pyro.models.vae.VAE` (any module with ``model(x)``, ``guide(x)`` and
            ``image_shape`` works).
        images: ``(N, C, H, W)`` training images in ``[-1, 1]``; batches are drawn without
            replacement and reshuffled every epoch.
        augment: ``x -> x`` applied to every training batch (e.g. SGM resampling for AugVAE).
            ``None`` uses ``vae.augment`` when the model defines one (``StdAugVAE``), else nothing.
        val_images: held-out images; every ``val_every`` steps (default ``steps // 10``) their
            mean single-sample ELBO is recorded with fixed particles, and with ``restore_best``
            the parameters of the best validation ELBO are restored at the end.
        device: where to train (``"cpu"``, ``"cuda"``, ...); batches are moved there one by one.
        seed: seeds batch order, particles and augmentation.

    Returns:
        history: ``step``, ``loss`` (negative ELBO per image, nats), ``lr``, ``val_step``,
        ``val_elbo`` (nats per image) and ``best_step``.

    In a process group of several ranks each rank draws ``batch_size`` images of its own (and its
    own particles and augmentations), and the ELBO gradients are summed across ranks before the
    clipped optimiser step: the ELBO sums over the data plate, so that is the gradient of the
    union of the ranks' batches.
    """
    check_positive_int(steps, "steps")
    check_positive_int(batch_size, "batch_size")
    shape = tuple(vae.image_shape)
    check_images(images, shape, "images")
    if batch_size > images.shape[0]:
        raise ValueError(f"batch_size ({batch_size}) is larger than the dataset ({images.shape[0]} images)")
    if val_images is not None:
        check_images(val_images, shape, "val_images")
    if not lr > 0 or not 0 <= warmup_fraction < 1:
        raise ValueError(f"need lr > 0 and 0 <= warmup_fraction < 1, got {lr} and {warmup_fraction}")
    if augment is None:
        augment = getattr(vae, "augment", None)
    if augment is not None and not callable(augment):
        raise ValueError(f"augment must be a callable x -> x, got {type(augment).__name__}")
    val_every = val_every or max(1, steps // 10)
    device = torch.device(device)

    vae.to(device).train()
    world = get_world_size()
    batches = TensorBatches(images, batch_size, seed, rank=get_rank(), world_size=world)
    pyro.set_rng_seed(rank_seed(seed))  # each rank its own particles and augmentations (rank 0: seed)
    optim = pyro.optim.LambdaLR(
        {
            "optimizer": torch.optim.AdamW,
            "optim_args": {"lr": lr, "weight_decay": weight_decay},
            "lr_lambda": warmup_cosine(steps, int(warmup_fraction * steps)),
        },
        clip_args={"clip_norm": clip_norm},
    )
    schedule = warmup_cosine(steps, int(warmup_fraction * steps))
    history: dict[str, Any] = {k: [] for k in ("step", "loss", "lr", "val_step", "val_elbo")}
    best: dict = {"value": -math.inf, "state": None, "step": 0}

    # A private parameter store: PyroModule parameters are registered by name, and a stale entry
    # of the same name (another VAE) would otherwise be optimised in place of this model's.
    with private_param_store():
        svi = SVI(vae.model, vae.guide, optim, loss=Trace_ELBO())
        if is_distributed():
            svi.loss_and_grads = AllReduceLossAndGrads(svi.loss_and_grads, op="sum")
        bar = progress_bar(steps, 0, "vae", progress and is_main_process())
        for step in range(steps):
            x = next(batches).to(device, non_blocking=True)
            if augment is not None:
                with torch.no_grad():
                    x = augment(x)
            loss = svi.step(x) / (x.shape[0] * world)  # the loss is summed over the ranks' images
            check_finite(loss, step, "vae")
            history["step"].append(step)
            history["loss"].append(loss)
            history["lr"].append(lr * schedule(step))
            optim.step()  # advance the learning-rate schedules
            if val_images is not None and ((step + 1) % val_every == 0 or step + 1 == steps):
                value = validation_elbo(vae, val_images, batch_size=batch_size, device=device, seed=seed)
                history["val_step"].append(step + 1)
                history["val_elbo"].append(value)
                if value > best["value"]:
                    best = {"value": value, "state": copy.deepcopy(vae.state_dict()), "step": step + 1}
            bar.set_postfix(loss=f"{loss:.1f}")
            bar.update()
        bar.close()
    if restore_best and best["state"] is not None:
        vae.load_state_dict(best["state"])
    history["best_step"] = best["step"] if best["state"] is not None else steps
    vae.eval()
    return history


@torch.no_grad()
def validation_elbo(
    vae: nn.Module, images: Tensor, *, batch_size: int = 256, device: torch.device | str = "cpu",
    seed: int = 0,
) -> float:
    """Mean single-sample ELBO per image (nats) with particles fixed by ``seed``.

    Fixed particles make successive validation numbers comparable; the training RNG is untouched.
    """
    device = torch.device(device)
    total = 0.0
    with private_param_store():
        for start in range(0, images.shape[0], batch_size):
            x = images[start: start + batch_size].to(device)
            # Offset the seed per batch so batches do not share particles.
            bound = iwlb(vae.model, vae.guide, x, num_samples=1, seed=seed + start)
            total += bound.sum().item()
    return total / images.shape[0]
