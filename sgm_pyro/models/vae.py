"""The plain VAE of the reference code (SPEC section 6) and its standard-augmentation baseline.

    z ~ N(m, diag(s²))                 learnable Gaussian prior, latent size 20
    x ~ N(decoder(z), diag(σ²))        continuous Gaussian likelihood on [-1, 1] pixels

with one σ per pixel, floored at 0.01. Because this is a *density* on continuous pixels and σ can
shrink to 0.01 on the always-black background, log-likelihoods are large and positive (about +1100
to +1300 nats on 28x28 MNIST) and are not comparable with binarized-MNIST numbers.

Two parametrisations of σ, picked by name (``VAE(..., sigma="reference")``):

* ``"reference"`` (the paper's code): ``σ = 0.01 + softplus(raw)``, ``raw`` a parameter
  initialised so that ``σ = 1``. Adam moves ``raw`` by about the learning rate per step, so σ
  needs thousands of steps to reach the 0.01 to 0.1 of a converged decoder.
* ``"calibrated"`` (the σ-VAE of Rybkin, Daniilidis and Levine, ICML 2021, per pixel): σ is not a
  gradient parameter but the closed-form maximiser of the ELBO given the decoder,
  ``σ² = E_q[(x − mean)²]`` per pixel, floored at ``sigma_floor²``. Each training step (module in
  ``train`` mode with gradients on) folds the batch's squared residuals into a bias-corrected
  exponential moving average (``sigma_momentum``; the first step sets σ to the batch optimum) and
  the likelihood of that step uses the updated σ. σ is a buffer: it is saved and restored with the
  weights and is **fixed** at evaluation (``eval`` mode or ``torch.no_grad``), so a test image
  never fits its own σ and the importance-weighted bound stays a bound on ``log p(x)``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import pyro
import pyro.distributions as dist
import torch
import torch.nn.functional as F
from pyro.nn import PyroModule, pyro_method
from pyro.poutine.util import is_validation_enabled
from torch import Tensor, nn

from ..groups import AffineGroup
from ..nn.conv import ConvDecoder, ConvEncoder, default_channels
from ..validation import check_images, check_positive_int
from .trainers import loop
from .trusted import trusted_inputs

__all__ = ["SIGMA_MODES", "StandardAugmentation", "StdAugVAE", "VAE", "check_program_input"]

SIGMA_MODES = ("reference", "calibrated")


def check_program_input(x: Tensor, image_shape: Sequence[int]) -> None:
    """Input check of a Pyro program's ``x``: its shape always, its values only under Pyro validation.

    The value checks (finite, in ``[-1, 1]``) read the tensor back to the host; the training loops
    run them once at their public boundary and then trace the programs under
    ``pyro.validation_enabled(False)``, so no training step waits on them.
    """
    if is_validation_enabled():
        check_images(x, image_shape)
    elif not isinstance(x, Tensor) or tuple(x.shape[-3:]) != tuple(image_shape):
        raise ValueError(f"x must be images of shape (N, *{tuple(image_shape)}), got "
                         f"{tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__}")


class VAE(PyroModule):
    """Conv VAE as a Pyro program: ``model(x)`` and ``guide(x)`` share the plate ``"data"``.

    Args:
        image_shape: ``(C, H, W)`` of the images it models.
        latent_dim: size of ``z`` (20 in the reference code).
        channels: conv widths; default ``(64, 128)`` up to 32x32 and ``(64, 128, 256)`` above.
        hidden: width of the encoder/decoder MLPs.
        sigma: ``"reference"`` (``σ = floor + softplus(raw)``, a learned parameter) or
            ``"calibrated"`` (closed-form per-pixel σ, see the module docstring).
        sigma_init, sigma_floor: σ starts at ``sigma_init``; the floor stops σ collapsing on
            constant pixels (0.01 in the reference code).
        sigma_momentum: ``"calibrated"`` only: weight of the running estimate against a new batch.
    """

    def __init__(
        self,
        image_shape: Sequence[int],
        latent_dim: int = 20,
        channels: Sequence[int] | None = None,
        hidden: int = 256,
        sigma_init: float = 1.0,
        sigma_floor: float = 0.01,
        sigma: str = "reference",
        sigma_momentum: float = 0.9,
    ) -> None:
        super().__init__()
        if not 0 < sigma_floor < sigma_init:
            raise ValueError(f"need 0 < sigma_floor < sigma_init, got {sigma_floor} and {sigma_init}")
        if sigma not in SIGMA_MODES:
            raise ValueError(f"sigma must be one of {SIGMA_MODES}, got {sigma!r}")
        if not 0 <= sigma_momentum < 1:
            raise ValueError(f"sigma_momentum must be in [0, 1), got {sigma_momentum}")
        self.image_shape = tuple(int(s) for s in image_shape)
        channels = tuple(channels) if channels is not None else default_channels(self.image_shape)
        self.latent_dim, self.sigma_floor = latent_dim, float(sigma_floor)
        self.sigma_mode, self.sigma_momentum = sigma, float(sigma_momentum)
        self.encoder = ConvEncoder(self.image_shape, latent_dim, channels, hidden)
        self.decoder = ConvDecoder(self.image_shape, latent_dim, channels, hidden)
        # Plain nn.Parameters (not PyroParams): the module's own tensors are always the ones used,
        # whatever stale entries Pyro's global parameter store may hold under the same names.
        self.prior_loc = nn.Parameter(torch.zeros(latent_dim))
        self.prior_log_scale = nn.Parameter(torch.zeros(latent_dim))
        if sigma == "reference":
            raw = math.log(math.expm1(sigma_init - sigma_floor))  # inverse softplus
            self.sigma_raw = nn.Parameter(torch.full(self.image_shape, raw))
        else:
            # Buffers: moved, saved and restored with the weights, never touched by the optimiser.
            self.register_buffer("sigma_sq", torch.full(self.image_shape, float(sigma_init) ** 2))
            self.register_buffer("sigma_updates", torch.zeros(()))

    # ----------------------------------------------------------------- distributions
    @property
    def device(self) -> torch.device:
        return self.prior_loc.device

    @property
    def sigma(self) -> Tensor:
        """Per-pixel likelihood scale ``(C, H, W)``, never below ``sigma_floor``."""
        if self.sigma_mode == "reference":
            return self.sigma_floor + F.softplus(self.sigma_raw)
        return self.sigma_sq.clamp(min=self.sigma_floor ** 2).sqrt()

    def pixel_scale(self, mean: Tensor, x: Tensor) -> Tensor:
        """σ for observing ``x`` with decoder means ``mean`` (both ``(..., C, H, W)``): ``(C, H, W)``.

        In ``"calibrated"`` mode during training (``self.training`` and gradients enabled) this first
        folds ``mean((x − mean)²)`` over every leading dim (particles, images) into the running
        per-pixel estimate: the σ-VAE's closed-form optimum. Otherwise it only returns :attr:`sigma`.
        """
        if self.sigma_mode == "calibrated" and self.training and torch.is_grad_enabled():
            with torch.no_grad():
                residual = (x - mean).square().reshape(-1, *self.image_shape).mean(0)
                self.sigma_updates.add_(1.0)
                # Bias-corrected EMA (as Adam's moments): weight 1 on the first batch, then → 1 - m.
                m = self.sigma_momentum
                weight = (1 - m) / (1 - m ** self.sigma_updates)
                self.sigma_sq.lerp_(residual, weight)
        return self.sigma

    def prior(self) -> dist.Distribution:
        """``p(z)``: batch ``()``, event ``(latent_dim,)``."""
        return dist.Normal(self.prior_loc, self.prior_log_scale.exp()).to_event(1)

    def likelihood(self, z: Tensor) -> dist.Distribution:
        """``p(x | z)`` for ``z: (..., latent_dim)``: batch ``(...)``, event ``(C, H, W)``."""
        return dist.Normal(self.decoder(z), self.sigma).to_event(3)

    def posterior(self, x: Tensor) -> dist.Distribution:
        """``q(z | x)`` for ``x: (..., C, H, W)``: batch ``(...)``, event ``(latent_dim,)``."""
        loc, scale = self.encoder(x)
        return dist.Normal(loc, scale).to_event(1)

    # ----------------------------------------------------------------- Pyro programs
    # @pyro_method activates the module's Pyro context, so parameter reads become `pyro.param`
    # sites that SVI can see; without it SVI would find no parameters and silently do nothing.
    @pyro_method
    def model(self, x: Tensor) -> None:
        """``z ~ p(z)``, ``x ~ p(x | z)`` observed, per image in the plate ``"data"``. ``x: (N, C, H, W)``."""
        check_program_input(x, self.image_shape)
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", self.prior())
            mean = self.decoder(z)
            pyro.sample("x", dist.Normal(mean, self.pixel_scale(mean, x)).to_event(3), obs=x)

    @pyro_method
    def guide(self, x: Tensor) -> None:
        """``z ~ q(z | x)`` in the plate ``"data"``. ``x: (N, C, H, W)``."""
        check_program_input(x, self.image_shape)
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", self.posterior(x))

    # ----------------------------------------------------------------- conveniences
    @torch.no_grad()
    def reconstruct(self, x: Tensor) -> Tensor:
        """Decoder mean at the posterior mean: ``(N, C, H, W) → (N, C, H, W)``."""
        x = check_images(x, self.image_shape).to(self.device)
        return self.decoder(self.encoder(x)[0])

    @torch.no_grad()
    def sample(self, n: int, *, noise: bool = False) -> Tensor:
        """``n`` images from the model, ``(n, C, H, W)``: decoder means, plus pixel noise if ``noise``."""
        check_positive_int(n, "n")
        z = self.prior().sample((n,))
        return self.likelihood(z).sample() if noise else self.decoder(z)

    def log_likelihood(
        self, x: Tensor, num_samples: int = 1000, *, chunk_size: int | None = None,
        seed: int | None = None,
    ) -> Tensor:
        """Importance-weighted lower bound on ``log p(x)`` per image, ``(N,)`` nats (SPEC 6).

        ``num_samples`` is ``K`` (300 in the paper, 5000 in the IWAE protocol); see
        :func:`sgm_pyro.inference.iwlb.iwlb` for ``chunk_size`` and ``seed``.
        """
        x = check_images(x, self.image_shape).to(self.device)
        # x is checked above: the programs run without value checks (no host reads per chunk), and in
        # a private parameter store (nothing is left behind in the global one).
        with pyro.get_param_store().scope(), trusted_inputs():
            return loop("iwlb")(self.model, self.guide, x, num_samples=num_samples,
                        chunk_size=chunk_size, seed=seed)

    def elbo(self, x: Tensor, num_samples: int = 1, *, seed: int | None = None) -> Tensor:
        """Monte Carlo ELBO per image, ``(N,)``: the mean of ``num_samples`` log weights."""
        x = check_images(x, self.image_shape).to(self.device)
        with pyro.get_param_store().scope(), trusted_inputs():
            _, log_w = loop("iwlb")(self.model, self.guide, x, num_samples=num_samples, seed=seed,
                            return_log_weights=True)
        return log_w.mean(0)

    def fit(self, images: Tensor, **kwargs: Any) -> dict:
        """Train with :func:`sgm_pyro.inference.vae_training.fit_vae`; returns its history."""
        return loop("vae")(self, images, **kwargs)


class StandardAugmentation(nn.Module):
    """Fixed-range augmentation of the baseline "VAE with standard augmentation" (SPEC 8).

    Each call draws, per image, a rotation in ``±rotation_deg``, an isotropic zoom in
    ``×(1 ± zoom)`` (uniform in log-scale on ``±log(1 + zoom)``) and shifts in ``±shift_px`` pixels,
    and applies them with one warp of the project's :class:`~sgm_pyro.groups.AffineGroup`
    (Lie-algebra coordinates, so the shift mixes slightly with rotation and zoom).
    ``x: (N, C, H, W) in [-1, 1] → (N, C, H, W) in [-1, 1]``.
    """

    def __init__(
        self,
        image_shape: Sequence[int],
        rotation_deg: float = 15.0,
        zoom: float = 0.1,
        shift_px: float = 2.0,
        interpolation: str = "bilinear",
    ) -> None:
        super().__init__()
        if rotation_deg <= 0 or zoom <= 0 or shift_px <= 0:
            raise ValueError(
                f"rotation_deg, zoom and shift_px must be positive, got {rotation_deg}, {zoom}, {shift_px}"
            )
        self.image_shape = tuple(int(s) for s in image_shape)
        h, w = self.image_shape[-2:]
        # Normalised coordinates span [-1, 1] over the longer side: 2 px on 28 px is 2/13.5.
        shift = shift_px / (max(h, w, 2) - 1) * 2
        log_zoom = math.log1p(zoom)
        self.group = AffineGroup(
            bounds=(shift, shift, math.radians(rotation_deg), log_zoom, log_zoom),
            interpolation=interpolation,
        )

    @torch.no_grad()
    def forward(self, x: Tensor) -> Tensor:
        check_program_input(x, self.image_shape)
        eta = self.group.sample_uniform(x.shape[0]).to(x)
        eta[:, 4] = eta[:, 3]  # one zoom factor for both axes
        # Bicubic interpolation overshoots slightly; keep the images in the model's range.
        return self.group.apply(x, eta).clamp(-1.0, 1.0)


class StdAugVAE(VAE):
    """A :class:`VAE` trained on standard augmentation; ``fit_vae`` uses :attr:`augment` by default.

    Evaluation (``log_likelihood``) scores the raw images, as for every baseline (SPEC 6, 8).
    Extra args: ``rotation_deg=15``, ``zoom=0.1``, ``shift_px=2`` (see :class:`StandardAugmentation`).
    """

    def __init__(
        self,
        image_shape: Sequence[int],
        latent_dim: int = 20,
        *,
        rotation_deg: float = 15.0,
        zoom: float = 0.1,
        shift_px: float = 2.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(image_shape, latent_dim, **kwargs)
        self.augment = StandardAugmentation(self.image_shape, rotation_deg, zoom, shift_px)
