"""Stage 2: fit the prior program p_ψ(η | x̂) by maximum likelihood with Pyro SVI (SPEC section 4)."""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import asdict, dataclass

import pyro
import torch
from pyro import poutine
from pyro.infer import SVI
from pyro.nn import PyroModule
from pyro.poutine.util import site_is_subsample
from torch import Tensor, nn

from ..models.prototype import PrototypeInference
from ..validation import check_config_fields
from .batches import make_batches
from .distributed import (AllReduceLossAndGrads, backward_loss_and_grads, get_rank, get_world_size, is_distributed,
                          is_main_process, rank_rng_states, rank_seed, restore_rank_rng)
from .param_scope import private_param_store
from .progress import check_finite, progress_bar
from .schedules import warmup_cosine


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
    augment_scale: float = 0.75
    consistency: float = 0.0
    val_every: int = 250
    val_size: int = 1024

    def __post_init__(self) -> None:
        check_config_fields(self, integers=("steps", "batch_size", "num_draws", "val_every"),
                            positive=("lr", "clip_norm", "augment_scale"), non_negative=("consistency",))


@torch.no_grad()
def reaugmented_pairs(inference: PrototypeInference, x: Tensor, num_draws: int, scale: float) -> tuple[Tensor, Tensor]:
    """Training pairs ``(x̂', η_x)`` of SPEC 4, ``num_draws`` per image stacked along the batch.

    ``η_x ~ q_ω(· | x)``; ``x̂'`` is ``x`` warped once by the chain ``η_rnd, f(T_{η_rnd} x)⁻¹`` with
    ``η_rnd`` uniform on ``offset ± scale · bounds``: a prototype re-derived from a random view,
    which makes the density robust to an imperfectly invariant ``f_ω``.
    """
    g = inference.group
    xs = x.repeat(num_draws, 1, 1, 1)
    eta_x = inference.rsample(xs)
    r = g.sample_uniform(xs.shape[0], scale=scale).to(x.dtype)
    eta_rnd = inference.rsample(g.apply(xs, r))
    return g.apply_chain(xs, [r, g.inverse(eta_rnd)]), eta_x


def prior_program(prior: Callable, x_hat: Tensor, eta: Tensor) -> None:
    """The prior program conditioned on observed poses: ``eta ~ p(η | x̂)`` inside the data plate."""
    if isinstance(prior, nn.Module) and not isinstance(prior, PyroModule):
        pyro.module("prior", prior)  # plain nn.Modules register their parameters explicitly
    with pyro.plate("data", x_hat.shape[0]):
        poutine.condition(prior, data={"eta": eta})(x_hat)


def empty_guide(*args, **kwargs) -> None:
    """Maximum likelihood: nothing latent to infer."""


def eta_log_prob(prior: Callable, x_hat: Tensor, eta: Tensor) -> Tensor:
    """``log p(η | x̂)`` per example, ``(N,)``, by tracing the conditioned prior program."""
    trace = poutine.trace(prior_program).get_trace(prior, x_hat, eta)
    latent = [n for n, s in trace.nodes.items()
              if s["type"] == "sample" and not s["is_observed"] and not site_is_subsample(s)]
    if latent:
        raise ValueError(f"the prior program has latent sample sites {latent} besides 'eta'; stage 2 fits by "
                         "maximum likelihood, so a prior must give the density of 'eta' directly "
                         "(marginalise discrete choices inside its distribution)")
    if "eta" not in trace.nodes:
        raise ValueError("the prior program never samples the site 'eta'")
    site = trace.nodes["eta"]
    lp = site["fn"].log_prob(site["value"])
    if lp.shape != (x_hat.shape[0],):
        raise ValueError(f"the prior's 'eta' site must have batch shape ({x_hat.shape[0]},) and event shape "
                         f"(dim,); its log_prob has shape {tuple(lp.shape)}")
    return lp


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
        x_hat, eta = reaugmented_pairs(inference, images, 1, cfg.augment_scale)
        return eta_log_prob(prior, x_hat, eta).mean().item()


def make_optimizer(cfg: PriorConfig):
    """Clipped AdamW with linear warm-up and cosine decay, as a Pyro optimiser."""
    return pyro.optim.LambdaLR({
        "optimizer": torch.optim.AdamW,
        "optim_args": {"lr": cfg.lr, "weight_decay": cfg.weight_decay},
        "lr_lambda": warmup_cosine(cfg.steps, int(cfg.warmup_fraction * cfg.steps)),
    }, clip_args={"clip_norm": cfg.clip_norm})


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
    the gradients of the parameters in the SVI trace are averaged across ranks before Pyro's
    clipped optimiser steps (:class:`~sgm_pyro.inference.distributed.AllReduceLossAndGrads`).
    """
    device = torch.device(device)
    cfg = config
    inference.to(device).eval()  # frozen: it is only evaluated under no_grad in reaugmented_pairs
    if isinstance(prior, nn.Module):
        prior.to(device).train()
    distributed = is_distributed()
    batches = make_batches(data, cfg.batch_size, seed=seed + 1, image_shape=inference.image_shape, rank=get_rank(),
                           world_size=get_world_size())
    history: dict[str, list] = {k: [] for k in ("step", "loss", "val_step", "val_log_prob")}
    best: dict = {"value": -float("inf"), "state": None, "step": 0}
    start = 0
    optim = make_optimizer(cfg)
    if state is not None:
        optim.set_state(state["optimizer"])
        batches.load_state_dict(state["batches"])
        history, start, best = state["history"], int(state["step"]), state["best"]
        restore_rank_rng(state, seed + 1)
    else:
        torch.manual_seed(rank_seed(seed + 1))  # each rank its own re-augmentations (rank 0: seed + 1)
    if val_images is not None:
        val_images = val_images[: cfg.val_size].to(device)
    loss = PriorLikelihoodLoss(cfg.num_draws, cfg.consistency)

    with (param_scope or private_param_store)():
        reduce = {"loss_and_grads": AllReduceLossAndGrads(backward_loss_and_grads(loss))} if distributed else {}
        svi = SVI(prior_program, empty_guide, optim, loss=loss, **reduce)

        def snapshot(step: int) -> dict:
            return {"stage": "prior", "step": step, "config": asdict(cfg), "optimizer": optim.get_state(),
                    "batches": batches.state_dict(), "history": history, "best": best, "rng": torch.get_rng_state(),
                    **({"rank_rng": rank_rng_states()} if distributed else {})}

        bar = progress_bar(cfg.steps, start, "stage 2 (prior)", progress and is_main_process())
        for step in range(start, cfg.steps):
            x = next(batches).to(device, non_blocking=True)
            x_hat, eta = reaugmented_pairs(inference, x, cfg.num_draws, cfg.augment_scale)
            value = svi.step(prior, x_hat, eta)
            optim.step()  # advance the learning-rate schedules
            check_finite(value, step, "stage 2")
            history["step"].append(step)
            history["loss"].append(value)
            if val_images is not None and isinstance(prior, nn.Module) and \
                    ((step + 1) % cfg.val_every == 0 or step + 1 == cfg.steps):
                prior.eval()
                v = validation_log_prob(prior, inference, val_images, cfg)
                prior.train()
                history["val_step"].append(step + 1)
                history["val_log_prob"].append(v)
                if v > best["value"]:
                    best = {"value": v, "state": copy.deepcopy(prior.state_dict()), "step": step + 1}
            bar.set_postfix(nll=f"{value:.3f}")
            bar.update()
            if on_checkpoint is not None and checkpoint_every and (step + 1) % checkpoint_every == 0:
                on_checkpoint(snapshot(step + 1))
        bar.close()
        if isinstance(prior, nn.Module):
            if best["state"] is not None:
                prior.load_state_dict(best["state"])
            prior.eval()
        history["best_step"] = best["step"]
        if on_checkpoint is not None:
            on_checkpoint(snapshot(cfg.steps))
    return history
