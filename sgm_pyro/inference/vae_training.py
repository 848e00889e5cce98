"""Fit a VAE program by maximising its ELBO, as for the VAE, AugVAE, InvVAE and StdAugVAE baselines.

Training runs for a budget (``steps``, or ``max_epochs`` of the training set) with validation every
``val_every`` steps (default: every epoch with ``max_epochs``), early stopping after ``patience``
validations without improvement, and the parameters of the best validation score restored at the
end. One rule for every model of a comparison: same ``max_epochs``, ``patience`` and validation
metric, and each model stops where its own validation score stops improving.

The hot loop makes no host synchronisation of its own: the programs are traced with Pyro's
validation off (inputs are checked once, here), the optimiser is one fused (or foreach) AdamW over
all parameters with one global-norm clip, and the loss is read back every ``log_every`` steps.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from typing import Any

import pyro
import torch
from pyro import poutine
from torch import Tensor, nn

from ..devices import resolve_device
from ..host_memory import retain_for
from ..validation import check_images, check_positive_int
from ..models.trainers import register
from .batches import TensorBatches
from .distributed import all_reduce_grads, broadcast_module, get_rank, get_world_size, is_distributed, \
    is_main_process, rank_seed
from .hot_path import trusted_inputs
from .iwlb import iwlb
from .optimizers import adamw
from .param_scope import private_param_store
from .progress import check_finite, progress_bar
from .schedules import warmup_cosine

__all__ = ["VAL_METRICS", "elbo_sum", "fit_vae", "validation_score", "validation_elbo"]

VAL_METRICS = ("elbo", "iwlb")


def elbo_sum(model: Callable[[Tensor], None], guide: Callable[[Tensor], None], x: Tensor) -> Tensor:
    """Single-particle ELBO ``log p(x, h) − log q(h | x)`` summed over the batch ``x``: a scalar.

    What ``Trace_ELBO`` computes for reparameterised latents (every latent of the VAE family: ``z``
    is a reparameterised Normal and InvVAE's ``η`` comes from a frozen ``q_ω``, so no score term).
    """
    guide_trace = poutine.trace(guide).get_trace(x)
    model_trace = poutine.trace(poutine.replay(model, trace=guide_trace)).get_trace(x)
    return model_trace.log_prob_sum() - guide_trace.log_prob_sum()


@torch.no_grad()
def _average_buffers(module: nn.Module) -> None:
    """Average floating buffers over the ranks (a calibrated σ is updated from each rank's own batch:
    the average of the ranks' running estimates is the running estimate of the union's residuals)."""
    import torch.distributed as dist

    for b in module.buffers():
        if b.is_floating_point():
            dist.all_reduce(b)
            b.div_(get_world_size())


@register("vae")
def fit_vae(
    vae: nn.Module,
    images: Tensor,
    *,
    steps: int | None = None,
    max_epochs: int | None = None,
    patience: int | None = None,
    batch_size: int = 128,
    lr: float = 1e-3,
    weight_decay: float = 1e-4,
    clip_norm: float = 10.0,
    warmup_fraction: float = 0.02,
    augment: Callable[[Tensor], Tensor] | None = None,
    val_images: Tensor | None = None,
    val_every: int | None = None,
    val_metric: str = "elbo",
    val_num_samples: int = 100,
    restore_best: bool = True,
    device: torch.device | str = "cpu",
    seed: int = 0,
    log_every: int = 50,
    progress: bool = True,
) -> dict[str, Any]:
    """Maximise the ELBO of ``vae.model``/``vae.guide`` on ``images``.

    AdamW on all parameters, gradients clipped to a global norm of ``clip_norm``, and a learning
    rate that warms up linearly over ``warmup_fraction`` of the budget then decays on a cosine to
    zero at the end of the budget (SPEC 3, 4). The gradient is that of the mean negative ELBO per
    image of the batch.

    Args:
        vae: a :class:`~sgm_pyro.models.vae.VAE` (any module with ``model(x)``, ``guide(x)`` and
            ``image_shape`` works: AugVAE, InvVAE, StdAugVAE).
        images: ``(N, C, H, W)`` training images in ``[-1, 1]``; batches are drawn without
            replacement and reshuffled every epoch (an epoch is ``N // (batch_size · ranks)`` steps).
        steps, max_epochs: the budget, in steps or in epochs; give exactly one.
        patience: stop after this many validations in a row without a new best; ``None`` runs the
            whole budget. Needs ``val_images``.
        augment: ``x -> x`` applied to every training batch (e.g. SGM resampling for AugVAE).
            ``None`` uses ``vae.augment`` when the model defines one, else nothing.
        val_images: held-out images, scored every ``val_every`` steps (default: every epoch with
            ``max_epochs``, else ``steps // 10``) with particles fixed by ``seed``; with
            ``restore_best`` the parameters (and buffers: a calibrated σ) of the best score are
            restored at the end.
        val_metric: ``"elbo"`` (mean single-particle ELBO) or ``"iwlb"`` (mean IWLB with
            ``val_num_samples`` particles; tighter, ``val_num_samples`` times dearer).
        device: where to train; the model (an AugVAE's SGM with it) and each batch are moved there.
        seed: seeds batch order, particles and augmentation.
        log_every: the loss is read back from the device (and checked finite) every this many steps.

    Returns:
        history: per step ``step``, ``loss`` (negative ELBO per image, nats), ``lr``; per
        validation ``val_step``, ``val_epoch`` and ``val_elbo`` or ``val_iwlb``; ``best_step``,
        ``best_epoch``, ``best_value`` (``None`` without validation), ``stopped_step``,
        ``stopped_early``, ``steps_per_epoch``, ``val_metric``.

    Data-parallel (a process group of several ranks): each rank draws its own ``batch_size`` images,
    particles and augmentations; gradients are summed over the ranks (the loss of each rank is its
    share of the union's mean), so every replica takes the step of the union of the batches.
    """
    shape = tuple(vae.image_shape)
    check_images(images, shape, "images")
    check_positive_int(batch_size, "batch_size")
    check_positive_int(log_every, "log_every")
    if (steps is None) == (max_epochs is None):
        raise ValueError(f"give exactly one budget, steps or max_epochs; got steps={steps!r}, max_epochs={max_epochs!r}")
    world = get_world_size()
    if batch_size * world > images.shape[0]:
        raise ValueError(f"batch_size ({batch_size}) is larger than the dataset ({images.shape[0]} images)")
    steps_per_epoch = images.shape[0] // (batch_size * world)
    if steps is None:
        check_positive_int(max_epochs, "max_epochs")
        steps = max_epochs * steps_per_epoch
    check_positive_int(steps, "steps")
    if val_images is not None:
        check_images(val_images, shape, "val_images")
    if patience is not None:
        check_positive_int(patience, "patience")
        if val_images is None:
            raise ValueError("patience needs val_images: early stopping is decided on the validation score")
    if val_metric not in VAL_METRICS:
        raise ValueError(f"val_metric must be one of {VAL_METRICS}, got {val_metric!r}")
    check_positive_int(val_num_samples, "val_num_samples")
    if not lr > 0 or not 0 <= warmup_fraction < 1 or not clip_norm > 0:
        raise ValueError(f"need lr > 0, 0 <= warmup_fraction < 1 and clip_norm > 0, got {lr}, "
                         f"{warmup_fraction} and {clip_norm}")
    if augment is None:
        augment = getattr(vae, "augment", None)
    if augment is not None and not callable(augment):
        raise ValueError(f"augment must be a callable x -> x, got {type(augment).__name__}")
    if val_every is None:
        val_every = steps_per_epoch if max_epochs is not None else max(1, steps // 10)
    check_positive_int(val_every, "val_every")
    device = resolve_device(device)  # the CLI's clear error when CUDA is missing
    retain_for(device)  # see sgm_pyro.host_memory

    vae.to(device).train()
    broadcast_module(vae)  # replicas start equal (a no-op in one process)
    params = [p for p in vae.parameters() if p.requires_grad]
    batches = TensorBatches(images, batch_size, seed, rank=get_rank(), world_size=world)
    pyro.set_rng_seed(rank_seed(seed))  # each rank its own particles and augmentations (rank 0: seed)
    optimizer = adamw(params, lr=lr, weight_decay=weight_decay)
    schedule = warmup_cosine(steps, int(warmup_fraction * steps))
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
    key = f"val_{val_metric}"
    history: dict[str, Any] = {k: [] for k in ("step", "loss", "lr", "val_step", "val_epoch", key)}
    best: dict = {"value": -math.inf, "state": None, "step": None}
    pending: list[Tensor] = []  # per-step losses not yet read back from the device
    bad_validations, step = 0, 0

    def flush(upto: int) -> None:
        if not pending:
            return
        values = torch.stack(pending).tolist()  # one host sync for log_every steps
        first = upto - len(values)
        for i, v in enumerate(values):
            check_finite(v, first + i, "vae")
        history["loss"].extend(values)
        pending.clear()
        bar.set_postfix(loss=f"{values[-1]:.1f}")

    # A private parameter store: PyroModule parameters are registered by name, and a stale entry of
    # the same name (another VAE) must not be read in place of this model's tensors.
    with private_param_store():
        bar = progress_bar(steps, 0, "vae", progress and is_main_process())
        for step in range(steps):
            x = next(batches).to(device, non_blocking=True)
            # Inputs were checked above: no value checks (host reads) inside the step.
            with trusted_inputs():  # restores torch's flag too (pyro.validation_enabled would not)
                if augment is not None:
                    with torch.no_grad():
                        x = augment(x)
                loss = -elbo_sum(vae.model, vae.guide, x) / (x.shape[0] * world)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if is_distributed():  # gradient and logged loss of the union of the ranks' batches
                (union_loss,) = all_reduce_grads(params, [loss.detach()], op="sum")
                pending.append(torch.tensor(union_loss))
            else:
                pending.append(loss.detach())
            torch.nn.utils.clip_grad_norm_(params, clip_norm, foreach=True)
            optimizer.step()
            scheduler.step()
            if is_distributed():
                _average_buffers(vae)
            history["step"].append(step)
            history["lr"].append(lr * schedule(step))
            bar.update()
            if (step + 1) % log_every == 0:
                flush(step + 1)
            if val_images is not None and ((step + 1) % val_every == 0 or step + 1 == steps):
                flush(step + 1)
                value = validation_score(vae, val_images, metric=val_metric, num_samples=val_num_samples,
                                         batch_size=max(batch_size, 256), device=device, seed=seed)
                history["val_step"].append(step + 1)
                history["val_epoch"].append((step + 1) / max(1, steps_per_epoch))
                history[key].append(value)
                if value > best["value"]:
                    best = {"value": value, "state": copy.deepcopy(vae.state_dict()), "step": step + 1}
                    bad_validations = 0
                else:
                    bad_validations += 1
                    if patience is not None and bad_validations >= patience:
                        break
        flush(step + 1)
        bar.close()
    stopped = step + 1
    if restore_best and best["state"] is not None:
        vae.load_state_dict(best["state"])
    best_step = best["step"] if best["state"] is not None else stopped
    history.update(best_step=best_step, best_epoch=best_step / max(1, steps_per_epoch),
                   best_value=best["value"] if best["state"] is not None else None, stopped_step=stopped,
                   stopped_early=stopped < steps, steps_per_epoch=steps_per_epoch, val_metric=val_metric)
    vae.eval()
    return history


@torch.no_grad()
def validation_score(
    vae: nn.Module, images: Tensor, *, metric: str = "elbo", num_samples: int = 100, batch_size: int = 256,
    device: torch.device | str = "cpu", seed: int = 0,
) -> float:
    """Mean ELBO (one particle) or IWLB (``num_samples`` particles) per image, nats, particles fixed by ``seed``.

    Fixed particles make successive validation numbers comparable; the training RNG is untouched.
    Runs with the model's σ fixed (no gradients), so a calibrated σ is not fitted to these images.
    """
    if metric not in VAL_METRICS:
        raise ValueError(f"metric must be one of {VAL_METRICS}, got {metric!r}")
    k = 1 if metric == "elbo" else num_samples
    device = torch.device(device)
    total = torch.zeros((), device=device, dtype=torch.float64)
    with private_param_store(), trusted_inputs():
        for start in range(0, images.shape[0], batch_size):
            x = images[start: start + batch_size].to(device)
            # Offset the seed per batch so batches do not share particles.
            total += iwlb(vae.model, vae.guide, x, num_samples=k, chunk_size=min(k, 100), seed=seed + start).sum()
    return total.item() / images.shape[0]


def validation_elbo(vae: nn.Module, images: Tensor, *, batch_size: int = 256, device: torch.device | str = "cpu",
                    seed: int = 0) -> float:
    """Mean single-particle ELBO per image (nats) with particles fixed by ``seed`` (see :func:`validation_score`)."""
    return validation_score(vae, images, metric="elbo", batch_size=batch_size, device=device, seed=seed)
