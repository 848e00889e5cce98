"""AugVAE (SPEC section 6): a plain VAE trained on images resampled by a fitted, frozen SGM.

Every training step draws a fresh ``η'`` per image (SGM "natural augmentation", SPEC 5), so the
VAE sees each digit in the poses the SGM has learned are plausible for it. Evaluation is the plain
VAE bound on raw (un-augmented) images, exactly as for :class:`~sgm_pyro.models.vae.VAE` and
:class:`~sgm_pyro.models.vae.StdAugVAE`, so all three numbers are in the same units.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from .sgm import SGM
from .vae import VAE, check_program_input

__all__ = ["AugVAE", "SGMAugmentation"]


class SGMAugmentation:
    """``x -> sgm.resample(x, 1)[0]``: one natural augmentation per image, ``(N, C, H, W) -> (N, C, H, W)``.

    A plain callable rather than an ``nn.Module`` on purpose: the SGM must stay out of the VAE's
    module tree, or ``vae.train()`` would switch the SGM's prior to training mode (its dropout would
    then perturb the resampled poses), ``vae.state_dict()`` would copy the SGM at every validation,
    and the VAE's Pyro context could register the frozen SGM parameters as trainable ``pyro.param``s.

    Args:
        sgm: a fitted :class:`~sgm_pyro.models.SGM`; it is put in ``eval`` mode and never updated.
    """

    def __init__(self, sgm: SGM) -> None:
        if not isinstance(sgm, SGM):
            raise ValueError(f"sgm must be a fitted sgm_pyro SGM, got {type(sgm).__name__}")
        self.sgm = sgm.eval()

    @torch.no_grad()
    def __call__(self, x: Tensor) -> Tensor:
        check_program_input(x, self.sgm.image_shape)
        self.sgm.eval()  # cheap, and guards against a caller that switched it back to train mode
        # AugVAE.to(device) moves the SGM with the VAE; a bare SGMAugmentation may still be elsewhere.
        device, dtype = x.device, x.dtype
        x = x.to(self.sgm.device)
        # SPEC 5 from the SGM's public pieces rather than sgm.resample, whose input check reads the
        # batch back to the host: this runs every training step, on inputs fit_vae checked once.
        g = self.sgm.group
        eta = self.sgm.inference.rsample(x)
        new = self.sgm.sample_eta(g.apply(x, g.inverse(eta)), 1)[0]
        out = g.apply_chain(x, [g.inverse(eta), new])  # x warped once by η⁻¹ then η'
        # One bilinear warp stays in range; a bicubic one can overshoot slightly.
        return out.clamp_(-1.0, 1.0).to(device=device, dtype=dtype)

    def __repr__(self) -> str:
        return f"SGMAugmentation(group={type(self.sgm.group).__name__}, image_shape={self.sgm.image_shape})"


class AugVAE(VAE):
    """A :class:`VAE` whose training batches are SGM resamples; ``fit`` uses :attr:`augment` by default.

    Same program, same bound as the plain VAE: ``log_likelihood(x)`` scores raw images ``x``.

    Args:
        image_shape: ``(C, H, W)``; must equal ``sgm.image_shape``.
        sgm: the fitted SGM that produces the augmentations (frozen).
        latent_dim, **kwargs: as for :class:`VAE` (``channels``, ``hidden``, ``sigma_init``, ...).

    Example::

        sgm = SGM(AffineGroup(bounds=(math.pi,), generators=("rot",)), (1, 28, 28))
        sgm.fit(train, inference_steps=..., prior_steps=...)
        aug = AugVAE((1, 28, 28), sgm)
        aug.fit(train, steps=2000, val_images=val)     # fit_vae with augment=aug.augment
        aug.log_likelihood(test, num_samples=300)      # (N,) nats, raw test images
    """

    def __init__(self, image_shape: Sequence[int], sgm: SGM, latent_dim: int = 20, **kwargs: Any) -> None:
        super().__init__(image_shape, latent_dim, **kwargs)
        if not isinstance(sgm, SGM):
            raise ValueError(f"sgm must be a fitted sgm_pyro SGM, got {type(sgm).__name__}")
        if tuple(sgm.image_shape) != self.image_shape:
            raise ValueError(f"the SGM models images of shape {tuple(sgm.image_shape)} but the VAE "
                             f"{self.image_shape}")
        # Not a submodule (see SGMAugmentation): plain attribute, found by fit_vae as `vae.augment`.
        self.augment = SGMAugmentation(sgm)

    @property
    def sgm(self) -> SGM:
        """The frozen SGM behind :attr:`augment`."""
        return self.augment.sgm

    def _apply(self, fn, recurse: bool = True):
        # .to(device) (and so fit_vae's vae.to(device)) must move the unregistered SGM with the VAE,
        # or every training step would resample on the SGM's device and copy the batch both ways.
        self.sgm._apply(fn)
        return super()._apply(fn, recurse)
