"""Stage 2: fit the prior program p_ψ(η | x̂) by maximum likelihood with Pyro SVI (SPEC section 4)."""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import asdict, dataclass

import torch
from pyro import poutine
from torch import Tensor, nn

from ..models.priors.conditioned import eta_log_prob, prior_program
from ..models.prototype import PrototypeInference
from ..nn import downsample_to
from ..groups.base import CoordinateScale
from ..host_memory import retain_for
from ..validation import check_config_fields, check_coordinate_scale
from .batches import make_batches
from .clipped_adamw import ClippedAdamW
from .distributed import (AllReduceLossAndGrads, backward_loss_and_grads, get_rank, get_world_size, is_distributed,
                          is_main_process, rank_seed, restore_rank_rng, rng_snapshot)
from .hot_path import checks_on_first_step
from .param_scope import private_param_store
from .progress import progress_bar
from .schedules import warmup_cosine
from .stage1 import check_pooled_inputs
from .step_log import StepLog


@dataclass
class PriorConfig:
    """Settings of stage 2 (reference values in SPEC 4; ``augment_scale`` is 1.0 for MNIST)."""

    steps: int = 10_000
    batch_size: int = 512
    lr: float = 3e-3
    weight_decay: float = 1e-4
    clip_norm: float = 10.0
    warmup_fraction: float = 0.05
    num_draws: int = 5
    augment_scale: CoordinateScale = 0.75
    consistency: float = 0.0
    val_every: int = 250
    val_size: int = 1024
    log_every: int = 50  # steps between reads of the loss (each read waits on the GPU); NaNs are caught then
    reaugment_pose: str = "mode"  # pose of the random view in x̂': "mode" f(x_rnd) (SPEC 4) or "sample" of q
    plain_draws: int = 0  # draws per image whose x̂' is x̂ itself, not re-derived from a random view
    # pool images to image_size x image_size before re-augmenting (None: full size); for 64x64 data whose
    # pose network and prior features see 32x32 anyway, this spends a quarter of the warps on the same pixels
    image_size: int | None = None

    def __post_init__(self) -> None:
        check_config_fields(self, integers=("steps", "batch_size", "num_draws", "val_every", "log_every"),
                            positive=("lr", "clip_norm"), non_negative=("consistency",))
        if not (isinstance(self.plain_draws, int) and 0 <= self.plain_draws <= self.num_draws):
            raise ValueError(f"PriorConfig.plain_draws must be an integer between 0 and num_draws={self.num_draws}, "
                             f"got {self.plain_draws!r}")
        check_coordinate_scale(self.augment_scale, "PriorConfig.augment_scale")
        if self.reaugment_pose not in REAUGMENT_POSES:
            raise ValueError(f"PriorConfig.reaugment_pose must be one of {REAUGMENT_POSES}, got {self.reaugment_pose!r}")


REAUGMENT_POSES = ("mode", "sample")


@torch.no_grad()
def reaugmented_pairs(inference: PrototypeInference, x: Tensor, num_draws: int, scale: CoordinateScale,
                      pose: str = "mode", plain_draws: int = 0) -> tuple[Tensor, Tensor]:
    """Training pairs ``(x̂', η_x)`` of SPEC 4, ``num_draws`` per image stacked along the batch.

    ``η_x ~ q_ω(· | x)``; ``x̂'`` is ``x`` warped once by the chain ``η_rnd, f(x_rnd)⁻¹`` with
    ``η_rnd`` uniform on ``offset ± scale · bounds`` and ``x_rnd = T_{η_rnd}(x)``: a prototype
    re-derived from a random view, which makes the density robust to an imperfectly invariant
    ``f_ω``. ``pose="mode"`` uses the pose ``f(x_rnd)`` as SPEC 4 does; ``"sample"`` a draw of
    ``q_ω(· | x_rnd)`` instead (the earlier behaviour; docs/results.md compares the two). The first
    ``plain_draws`` draws take ``η_rnd`` as the identity, so their ``x̂'`` is the prototype ``x̂`` that
    ``p(η | x̂)`` is asked about once fitted.
    """
    if pose not in REAUGMENT_POSES:
        raise ValueError(f"pose must be one of {REAUGMENT_POSES}, got {pose!r}")
    if not 0 <= plain_draws <= num_draws:
        raise ValueError(f"plain_draws must be between 0 and num_draws={num_draws}, got {plain_draws}")
    g = inference.group
    xs = x.repeat(num_draws, 1, 1, 1)
    eta_x = inference.rsample(xs)
    r = g.sample_uniform(xs.shape[0], scale=scale).to(x.dtype)
    if plain_draws:
        r[: plain_draws * x.shape[0]] = 0.0  # the identity
    x_rnd = g.apply(xs, r)
    eta_rnd = inference.mode(x_rnd) if pose == "mode" else inference.rsample(x_rnd)
    return g.apply_chain(xs, [r, g.inverse(eta_rnd)]), eta_x


def empty_guide(*args, **kwargs) -> None:
    """Maximum likelihood: nothing latent to infer."""


class PriorLikelihoodLoss:
    """Negative mean log-likelihood over the draws, plus ``λ_c · mean_{i,j} |log p_i − log p_j|``.

    A callable Pyro loss ``loss(model, guide, prior, x_hat, eta) -> Tensor`` for :class:`pyro.infer.SVI`.
    """

    def __init__(self, num_draws: int, consistency: float = 0.0) -> None:
        self.num_draws, self.consistency = num_draws, consistency

    def __call__(self, model, guide, prior, x_hat: Tensor, eta: Tensor) -> Tensor:
        lp = eta_log_prob(prior, x_hat, eta).view(self.num_draws, -1)
        loss = -lp.mean()
        if self.consistency > 0 and self.num_draws > 1:
            loss = loss + self.consistency * (lp[:, None] - lp[None]).abs().mean()
        return loss


@torch.no_grad()
def validation_log_prob(prior, inference: PrototypeInference, images: Tensor, cfg: PriorConfig, seed: int = 0) -> float:
    """Mean held-out ``log p(η_x | x̂')`` with fixed random draws (the training RNG is untouched)."""
    with torch.random.fork_rng(devices=[images.device] if images.device.type == "cuda" else []):
        torch.manual_seed(seed)
        x_hat, eta = reaugmented_pairs(inference, downsample_to(images, cfg.image_size), 1, cfg.augment_scale,
                                       cfg.reaugment_pose)
        return eta_log_prob(prior, x_hat, eta).mean().item()


def make_optimizer(cfg: PriorConfig) -> ClippedAdamW:
    """AdamW clipped by the global gradient norm, with linear warm-up and cosine decay."""
    return ClippedAdamW(cfg.lr, cfg.weight_decay, cfg.clip_norm,
                        warmup_cosine(cfg.steps, int(cfg.warmup_fraction * cfg.steps)))


def svi_step(loss_and_grads: Callable[..., Tensor], optim: ClippedAdamW, *args) -> Tensor:
    """One SVI step of :func:`prior_program` with the empty guide, as ``pyro.infer.SVI.step`` takes it.

    The parameters the step touches are found by a param-only trace, ``loss_and_grads`` computes
    the loss and its gradients, ``optim`` steps them; the loss comes back as a device tensor, so
    unlike ``SVI.step`` (which returns a float) nothing waits on the device here.
    """
    with poutine.trace(param_only=True) as capture:
        loss = loss_and_grads(prior_program, empty_guide, *args)
    params = {name: site["value"].unconstrained() for name, site in capture.trace.nodes.items()}
    optim.step(params)
    for p in params.values():
        p.grad = None
    return loss.detach()


def fit_prior(prior, inference: PrototypeInference, data, config: PriorConfig, *, val_images: Tensor | None = None,
              device: torch.device | str = "cpu", seed: int = 0, progress: bool = True, state: dict | None = None,
              on_checkpoint: Callable[[dict], None] | None = None, checkpoint_every: int = 0,
              param_scope: Callable | None = None) -> dict:
    """Maximum likelihood of the prior program's parameters with ``f_ω`` frozen.

    SVI on :func:`prior_program` with an empty guide and :class:`PriorLikelihoodLoss`. With
    ``val_images`` the held-out log-likelihood is tracked and the best parameters are restored at the
    end (the flow overfits, SPEC 4). ``param_scope`` is the context manager whose parameter store
    the fit uses (default: a throw-away private store; :meth:`SGM.param_scope` keeps free
    ``pyro.param``s of user programs with the model). Returns the history.

    In a process group of several ranks each rank draws its own batch and re-augmentations, and
    the gradients of the parameters in the SVI trace are averaged across ranks before the
    clipped optimiser steps (:class:`~sgm_pyro.inference.distributed.AllReduceLossAndGrads`).

    Each step is :func:`svi_step` with :class:`~sgm_pyro.inference.clipped_adamw.ClippedAdamW`
    (one AdamW over every parameter, clipped by the global norm ``clip_norm``). The loss is read
    from the device every ``log_every`` steps (a NaN loss is caught then, naming its step).
    """
    device = torch.device(device)
    retain_for(device)  # see sgm_pyro.host_memory
    cfg = config
    inference.to(device).eval()  # frozen: it is only evaluated under no_grad in reaugmented_pairs
    check_pooled_inputs(cfg.image_size, {
        "the pose network": inference.input_size,
        "the prior's features": getattr(getattr(prior, "features", None), "input_size", cfg.image_size)})
    if isinstance(prior, nn.Module):
        prior.to(device).train()
    distributed = is_distributed()
    batches = make_batches(data, cfg.batch_size, seed=seed + 1, image_shape=inference.image_shape, rank=get_rank(),
                           world_size=get_world_size(), device=device)
    history: dict[str, list] = {k: [] for k in ("step", "loss", "val_step", "val_log_prob")}
    best: dict = {"value": -float("inf"), "state": None, "step": 0}
    start = 0
    optim = make_optimizer(cfg)
    if state is not None:
        optim.load_state_dict(state["optimizer"])
        batches.load_state_dict(state["batches"])
        history, start, best = state["history"], int(state["step"]), state["best"]
        restore_rank_rng(state, seed + 1, device)
    else:
        torch.manual_seed(rank_seed(seed + 1))  # each rank its own re-augmentations (rank 0: seed + 1)
    if val_images is not None:
        val_images = val_images[: cfg.val_size].to(device)
    loss = PriorLikelihoodLoss(cfg.num_draws, cfg.consistency)

    with (param_scope or private_param_store)():
        inner = backward_loss_and_grads(loss)
        loss_and_grads = AllReduceLossAndGrads(inner) if distributed else inner
        log = StepLog(history, ("loss",), "stage 2", cfg.log_every)

        def snapshot(step: int) -> dict:
            log.flush()  # a checkpoint holds the whole history, and never a step past a NaN loss
            return {"stage": "prior", "step": step, "config": asdict(cfg), "optimizer": optim.state_dict(),
                    "batches": batches.state_dict(), "history": history, "best": best, **rng_snapshot(device)}

        bar = progress_bar(cfg.steps, start, "stage 2 (prior)", progress and is_main_process())
        with checks_on_first_step() as step_done:
            for step in range(start, cfg.steps):
                x = downsample_to(next(batches).to(device, non_blocking=True), cfg.image_size)
                x_hat, eta = reaugmented_pairs(inference, x, cfg.num_draws, cfg.augment_scale, cfg.reaugment_pose,
                                               cfg.plain_draws)
                log.append(step, svi_step(loss_and_grads, optim, prior, x_hat, eta).reshape(1))
                step_done()
                validate = val_images is not None and isinstance(prior, nn.Module) and \
                    ((step + 1) % cfg.val_every == 0 or step + 1 == cfg.steps)
                if log.due(step) or validate or step + 1 == cfg.steps:
                    last = log.flush()
                    if progress:
                        bar.set_postfix(nll=f"{last['loss']:.3f}")
                if validate:
                    prior.eval()
                    v = validation_log_prob(prior, inference, val_images, cfg)
                    prior.train()
                    history["val_step"].append(step + 1)
                    history["val_log_prob"].append(v)
                    if v > best["value"]:
                        best = {"value": v, "state": copy.deepcopy(prior.state_dict()), "step": step + 1}
                bar.update()
                if on_checkpoint is not None and checkpoint_every and (step + 1) % checkpoint_every == 0:
                    on_checkpoint(snapshot(step + 1))
        bar.close()
        log.flush()
        if isinstance(prior, nn.Module):
            if best["state"] is not None:
                prior.load_state_dict(best["state"])
            prior.eval()
        history["best_step"] = best["step"]
        if on_checkpoint is not None:
            on_checkpoint(snapshot(cfg.steps))
    return history
