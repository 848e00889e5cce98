"""Both stages of SGM training with checkpoints that survive a crash (SPEC sections 3 and 4)."""

from __future__ import annotations

import time
from dataclasses import asdict, fields, replace
from pathlib import Path

import torch
from torch import Tensor

from ..devices import resolve_device
from ..models.trainers import register
from ..validation import check_images, check_positive_int
from .checkpoint import CheckpointError, load_checkpoint, save_atomic
from .distributed import is_main_process
from .stage1 import InferenceConfig, fit_inference
from .stage2 import PriorConfig, fit_prior

CHECKPOINT = "checkpoint.pt"


def _split_kwargs(kwargs: dict) -> tuple[dict, dict]:
    """Route ``inference_<field>`` / ``prior_<field>`` keyword arguments to the two configs."""
    inf_names = {f.name for f in fields(InferenceConfig)}
    pri_names = {f.name for f in fields(PriorConfig)}
    inf, pri = {}, {}
    for key, value in kwargs.items():
        if key.startswith("inference_") and key[10:] in inf_names:
            inf[key[10:]] = value
        elif key.startswith("prior_") and key[6:] in pri_names:
            pri[key[6:]] = value
        else:
            raise ValueError(f"unknown option {key!r}; stage options are inference_<name> for "
                             f"{sorted(inf_names)} and prior_<name> for {sorted(pri_names)}")
    return inf, pri


@register("sgm")
def fit_sgm(model, images, *, inference_steps: int, prior_steps: int, batch_size: int = 512,
            val_images: Tensor | None = None, device: str | torch.device = "cpu", seed: int = 0,
            progress: bool = True, inference_config: InferenceConfig | None = None,
            prior_config: PriorConfig | None = None, checkpoint_dir: str | Path | None = None,
            checkpoint_every: int = 500, resume: bool = False, log_every: int | None = None, **kwargs) -> dict:
    """Fit ``model`` (an :class:`~sgm_pyro.models.SGM`): stage 1 (invariance), then stage 2 (prior).

    Args:
        images: training images ``(N, C, H, W)`` in ``[-1, 1]``, a callable ``fn(batch_size)``, or an
            iterator of batches (e.g. :class:`sgm_pyro.data.DSpritesStream`).
        inference_steps, prior_steps: steps of each stage (0 skips a stage).
        val_images: held-out images for validation and the choice of the best prior parameters.
        inference_config, prior_config: full stage settings; ``inference_<name>=`` and
            ``prior_<name>=`` keyword arguments override single fields (e.g. ``inference_lr=1e-3``).
        checkpoint_dir: where ``checkpoint.pt`` is written atomically every ``checkpoint_every`` steps
            and at the end of each stage.
        log_every: steps between reads of the losses into the history (both stages; default: the
            configs' ``log_every``, 50). Each read waits for the device; a NaN loss is caught at a read.
        resume: continue from ``checkpoint_dir/checkpoint.pt`` (same seed and data give the same result
            as an uninterrupted run; checkpoints hold CPU tensors, so a run may resume on another device).

    Inside a ``torch.distributed`` process group of several ranks (``torchrun``, see
    docs/distributed.md) both stages train data-parallel with ``batch_size`` images per rank; only
    rank 0 writes the checkpoint, which holds every rank's RNG state, and every rank resumes from it
    (``checkpoint_dir`` must be on a file system all ranks share).
    Returns the history ``{"inference": {...}, "prior": {...}}`` (also stored as ``model.history``).
    """
    check_positive_int(batch_size, "batch_size")
    for name, v in (("inference_steps", inference_steps), ("prior_steps", prior_steps)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 0:
            raise ValueError(f"{name} must be a non-negative integer, got {v!r}")
    inf_over, pri_over = _split_kwargs(kwargs)
    if log_every is not None:
        inf_over.setdefault("log_every", log_every)
        pri_over.setdefault("log_every", log_every)
    inf_cfg = replace(inference_config or InferenceConfig(), batch_size=batch_size, **inf_over,
                      **({"steps": inference_steps} if inference_steps else {}))
    pri_cfg = replace(prior_config or PriorConfig(), batch_size=batch_size, **pri_over,
                      **({"steps": prior_steps} if prior_steps else {}))
    if val_images is not None:
        check_images(val_images, model.image_shape, "val_images")
    device = resolve_device(device)  # the CLI's clear error when CUDA is missing
    model.to(device)
    ckpt_path = Path(checkpoint_dir) / CHECKPOINT if checkpoint_dir is not None else None
    history = {"inference": {}, "prior": {}}
    state1 = state2 = None
    if resume:
        if ckpt_path is None:
            raise ValueError("resume=True needs checkpoint_dir")
        if ckpt_path.exists():
            # On the CPU: RNG states must stay there, and load_state_dict copies onto the model's device.
            ckpt = load_checkpoint(ckpt_path)
            if ckpt.get("model_config") != model.config():
                raise CheckpointError(f"{ckpt_path} was written by a different model configuration")
            model.load_state_dict(ckpt["model"])
            history = ckpt["history"]
            if ckpt["stage"]["stage"] == "inference":
                state1 = ckpt["stage"]
            else:
                state2 = ckpt["stage"]

    timing = history.setdefault("timing", {})
    clock = {"start": time.perf_counter(), "base": 0.0}

    def tick(stage: str, step: int) -> None:
        """Seconds spent on ``stage`` so far, across resumes: a checkpoint carries what was spent before it."""
        timing[stage] = clock["base"] + time.perf_counter() - clock["start"]
        timing[f"{stage}_steps"] = int(step)

    def start_clock(stage: str) -> None:
        clock["start"], clock["base"] = time.perf_counter(), float(timing.get(stage, 0.0))

    def writer(stage: str):
        def write(state: dict) -> None:
            history[stage] = state["history"]
            tick(stage, state["step"])
            if is_main_process():  # one writer; every rank's RNG state is already in ``state``
                save_atomic({"model": model.state_dict(), "model_config": model.config(), "stage": state,
                             "history": history, "seed": seed}, ckpt_path)
        return write if ckpt_path is not None else None

    if inference_steps and state2 is None:
        start_clock("inference")
        history["inference"] = fit_inference(
            model.inference, images, inf_cfg, val_images=val_images, device=device, seed=seed, progress=progress,
            state=state1, on_checkpoint=writer("inference"), checkpoint_every=checkpoint_every)
        tick("inference", inf_cfg.steps)
    if prior_steps:
        start_clock("prior")
        history["prior"] = fit_prior(
            model.prior, model.inference, images, pri_cfg, val_images=val_images, device=device, seed=seed,
            progress=progress, state=state2, on_checkpoint=writer("prior"), checkpoint_every=checkpoint_every,
            param_scope=model.param_scope)
        tick("prior", pri_cfg.steps)
    history["config"] = {"inference": asdict(inf_cfg), "prior": asdict(pri_cfg)}
    model.history = history
    model.eval()
    return history
