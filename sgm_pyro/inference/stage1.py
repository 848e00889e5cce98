"""Stage 1: fit the prototype inference network f_ω by the invariance loss (SPEC section 3)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass

import torch
from torch import Tensor

from ..models.prototype import PrototypeInference
from ..nn import gaussian_blur
from ..groups.base import CoordinateScale
from ..host_memory import retain_for
from ..validation import check_config_fields, check_coordinate_scale
from .batches import make_batches
from .distributed import (all_reduce_grads, broadcast_module, get_rank, get_world_size, is_distributed,
                          is_main_process, rank_seed, restore_rank_rng, rng_snapshot)
from .hot_path import checks_on_first_step
from .invariance import InvarianceLoss
from .optimizers import adamw, load_adamw_state
from .progress import progress_bar
from .step_log import StepLog
from .schedules import warmup_cosine


@dataclass
class InferenceConfig:
    """Settings of stage 1 (reference values in SPEC 3; dSprites uses ``inv_weight=1.0``)."""

    steps: int = 60_000
    batch_size: int = 512
    lr: float = 3e-4
    weight_decay: float = 1e-4
    clip_norm: float = 3.0
    sigma_lr: float = 1e-3
    warmup_fraction: float = 0.05
    blur_sigma: float = 3.0
    blur_fraction: float = 0.01
    num_draws: int = 5
    inv_weight: float = 0.1
    symmetric: bool = True
    augment_scale: CoordinateScale = 1.0
    image_size: int | None = None
    upright_weight: float | None = None  # canonicalisation prior; None: 0.2 for an equivariant head (InvarianceLoss)
    upright_concentrated_weight: float | None = None  # its weight for concentrated poses (InvarianceLoss)
    isotropy_weight: float = 0.0  # canonicalisation prior towards isotropic scales (InvarianceLoss)
    val_every: int = 500
    val_size: int = 512
    log_every: int = 50  # steps between reads of the loss (each read waits on the GPU); NaNs are caught then

    def __post_init__(self) -> None:
        check_config_fields(self, integers=("steps", "batch_size", "num_draws", "val_every", "log_every"),
                            positive=("lr", "sigma_lr", "clip_norm"),
                            non_negative=("inv_weight", "blur_sigma", "blur_fraction", "upright_weight",
                                          "upright_concentrated_weight", "isotropy_weight"),
                            optional=("upright_weight", "upright_concentrated_weight"))
        check_coordinate_scale(self.augment_scale, "InferenceConfig.augment_scale")

    def loss(self) -> InvarianceLoss:
        return InvarianceLoss(num_draws=self.num_draws, inv_weight=self.inv_weight, symmetric=self.symmetric,
                              augment_scale=self.augment_scale, image_size=self.image_size,
                              upright_weight=self.upright_weight,
                              upright_concentrated_weight=self.upright_concentrated_weight,
                              isotropy_weight=self.isotropy_weight)


def check_pooled_inputs(image_size: int | None, sizes: dict[str, int | None]) -> None:
    """With images pooled to ``image_size``, every network named in ``sizes`` must take that size as input.

    ``sizes`` maps a name ("the pose network") to the input size the network was built for.
    """
    if image_size is None:
        return
    for who, size in sizes.items():
        if size != image_size:
            raise ValueError(f"image_size={image_size} pools the images, so {who} must be built with "
                             f"input_size={image_size} (it has {size})")


def blur_sigma_at(step: int, cfg: InferenceConfig) -> float:
    """Blur warm-up: sigma decays linearly from ``blur_sigma`` to 0 over ``blur_fraction`` of the steps."""
    horizon = cfg.blur_fraction * cfg.steps
    return cfg.blur_sigma * max(0.0, 1.0 - step / horizon) if horizon > 0 else 0.0


@torch.no_grad()
def validation_mse(inference: PrototypeInference, images: Tensor, loss: InvarianceLoss, seed: int = 0) -> float:
    """Invariance MSE on held-out images with fixed random views (does not disturb the training RNG)."""
    with torch.random.fork_rng(devices=[images.device] if images.device.type == "cuda" else []):
        torch.manual_seed(seed)
        return loss(inference, images)["mse"].item()


def fit_inference(inference: PrototypeInference, data, config: InferenceConfig, *, val_images: Tensor | None = None,
                  device: torch.device | str = "cpu", seed: int = 0, progress: bool = True,
                  state: dict | None = None, on_checkpoint: Callable[[dict], None] | None = None,
                  checkpoint_every: int = 0) -> dict:
    """Train ``inference`` on ``data`` (images, ``fn(batch_size)`` or an iterator of batches).

    AdamW with global-norm clipping and warm-up + cosine decay for the network; σ has its own Adam.
    ``state`` resumes from a dictionary produced by an earlier ``on_checkpoint`` call. Returns the
    history: ``{"step": [...], "loss": [...], "mse": [...], "inv": [...], "upright_weight": [...], "val_step": [...],
    "val_mse": [...]}`` (``upright_weight``: the canonicalisation prior's weight at each step, 0 when it is off).

    In a process group of several ranks (:mod:`~sgm_pyro.inference.distributed`) each rank draws
    ``batch_size`` images of its own and its own random views, and the gradients (and logged
    terms) are averaged across ranks before clipping; ``on_checkpoint`` gets every rank's RNG state.
    """
    device = torch.device(device)
    retain_for(device)  # a CPU step would otherwise fault its activations' pages in anew
    cfg = config
    loss_fn = cfg.loss()
    check_pooled_inputs(cfg.image_size, {"the pose network": inference.input_size or inference.image_shape[-1]})
    inference.to(device).train()
    net_params = [p for n, p in inference.named_parameters() if n != "log_sigma"]
    opt = adamw(net_params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    sigma_opt = torch.optim.Adam([inference.log_sigma], lr=cfg.sigma_lr)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, warmup_cosine(cfg.steps, int(cfg.warmup_fraction * cfg.steps)))
    distributed = is_distributed()
    batches = make_batches(data, cfg.batch_size, seed=seed, image_shape=inference.image_shape, rank=get_rank(),
                           world_size=get_world_size(), device=device)
    history: dict[str, list] = {k: [] for k in ("step", "loss", "mse", "inv", "upright_weight",
                                                        "val_step", "val_mse")}
    start = 0
    if state is not None:
        load_adamw_state(opt, state["optimizer"])
        sigma_opt.load_state_dict(state["sigma_optimizer"])
        sched.load_state_dict(state["scheduler"])
        batches.load_state_dict(state["batches"])
        history, start = state["history"], int(state["step"])
        restore_rank_rng(state, seed, device)
    else:
        torch.manual_seed(rank_seed(seed))  # each rank its own random views (rank 0: seed)
    broadcast_module(inference)  # replicas start equal (a no-op in a single process)
    if val_images is not None:
        val_images = val_images[: cfg.val_size].to(device)
    # Loss terms stay on the device and are read every log_every steps (one host sync each time).
    log = StepLog(history, ("loss", "mse", "inv", "upright_weight"), "stage 1", cfg.log_every, display=("sigma",))
    zero = torch.zeros((), device=device)

    def snapshot(step: int) -> dict:
        log.flush()  # a checkpoint holds the whole history, and never a step past a NaN loss
        return {"stage": "inference", "step": step, "config": asdict(cfg), "optimizer": opt.state_dict(),
                "sigma_optimizer": sigma_opt.state_dict(), "scheduler": sched.state_dict(),
                "batches": batches.state_dict(), "history": history, **rng_snapshot(device)}

    bar = progress_bar(cfg.steps, start, "stage 1 (invariance)", progress and is_main_process())
    with checks_on_first_step() as step_done:
        for step in range(start, cfg.steps):
            x = next(batches).to(device, non_blocking=True)
            x = gaussian_blur(x, blur_sigma_at(step, cfg))
            terms = loss_fn(inference, x, sync_ranks=True) if distributed else loss_fn(inference, x)
            opt.zero_grad(set_to_none=True)
            sigma_opt.zero_grad(set_to_none=True)
            terms["loss"].backward()
            logged = torch.stack([terms["loss"], terms["mse"], terms.get("inv", zero),
                                  terms.get("upright_weight", zero)]).detach()
            if distributed:  # the step of the union of the ranks' batches: average before clipping
                logged = all_reduce_grads(net_params + [inference.log_sigma], list(logged), as_tensor=True)
            torch.nn.utils.clip_grad_norm_(net_params, cfg.clip_norm)
            opt.step()
            sigma_opt.step()
            sched.step()
            log.append(step, torch.cat([logged, inference.sigma.detach().mean().reshape(1)]))
            step_done()
            validate = val_images is not None and ((step + 1) % cfg.val_every == 0 or step + 1 == cfg.steps)
            if log.due(step) or validate or step + 1 == cfg.steps:
                last = log.flush()
                if progress:
                    bar.set_postfix(loss=f"{last['loss']:.4f}", sigma=f"{last['sigma']:.3g}")
            if validate:
                inference.eval()
                history["val_step"].append(step + 1)
                history["val_mse"].append(validation_mse(inference, val_images, loss_fn))
                inference.train()
            bar.update()
            if on_checkpoint is not None and checkpoint_every and (step + 1) % checkpoint_every == 0:
                on_checkpoint(snapshot(step + 1))
    bar.close()
    log.flush()
    inference.eval()
    if on_checkpoint is not None:
        on_checkpoint(snapshot(cfg.steps))
    return history
