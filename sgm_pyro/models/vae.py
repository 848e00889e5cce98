"""The plain VAE of the reference code (SPEC section 6) and its standard-augmentation baseline.

    z ~ N(m, diag(s²))                 learnable Gaussian prior, latent size 20
    x ~ N(decoder(z), diag(σ²))        continuous Gaussian likelihood on [-1, 1] pixels

with one learned σ per pixel (initialised at 1, floored at 0.01). Because this is a *density* on
continuous pixels and σ can shrink to 0.01 on the always-black background, log-likelihoods are
large and positive (about +1100 to +1300 nats on 28x28 MNIST) and are not comparable with
binarized-MNIST numbers.
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
from torch import Tensor, nn

from ..groups import AffineGroup
from ..nn.conv import ConvDecoder, ConvEncoder, default_channels
from ..validation import check_images, check_positive_int

__all__ = ["StandardAugmentation", "StdAugVAE", "VAE"]


class VAE(PyroModule):
    """Conv VAE as a Pyro program: ``model(x)`` and ``guide(x)`` share the plate ``"data"``.

    Args:
        image_shape: ``(C, H, W)`` of the images it models.
        latent_dim: size of ``z`` (20 in the reference code).
        channels: conv widths; default ``(64, 128)`` up to 32x32 and ``(64, 128, 256)`` above.
        hidden: width of the encoder/decoder MLPs.
        sigma_init, sigma_floor: per-pixel likelihood scale ``σ = floor + softplus(raw)``,
            initialised at ``sigma_init``; the floor stops σ collapsing on constant pixels.
    """

    def __init__(
        self,
        image_shape: Sequence[int],
        latent_dim: int = 20,
        channels: Sequence[int] | None = None,
        hidden: int = 256,
        sigma_init: float = 1.0,
        sigma_floor: float = 0.01,
    ) -> None:
        super().__init__()
        if not 0 < sigma_floor < sigma_init:
            raise ValueError(f"need 0 < sigma_floor < sigma_init, got {sigma_floor} and {sigma_init}")
        self.image_shape = tuple(int(s) for s in image_shape)
        channels = tuple(channels) if channels is not None else default_channels(self.image_shape)
        self.latent_dim, self.sigma_floor = latent_dim, float(sigma_floor)
        self.encoder = ConvEncoder(self.image_shape, latent_dim, channels, hidden)
        self.decoder = ConvDecoder(self.image_shape, latent_dim, channels, hidden)
        # Plain nn.Parameters (not PyroParams): the module's own tensors are always the ones used,
        # whatever stale entries Pyro's global parameter store may hold under the same names.
        self.prior_loc = nn.Parameter(torch.zeros(latent_dim))
        self.prior_log_scale = nn.Parameter(torch.zeros(latent_dim))
        raw = math.log(math.expm1(sigma_init - sigma_floor))  # inverse softplus
        self.sigma_raw = nn.Parameter(torch.full(self.image_shape, raw))

    # ----------------------------------------------------------------- distributions
    @property
    def sigma(self) -> Tensor:
        """Per-pixel likelihood scale ``(C, H, W)``, never below ``sigma_floor``."""
        return self.sigma_floor + F.softplus(self.sigma_raw)

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
        check_images(x, self.image_shape)
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", self.prior())
            pyro.sample("x", self.likelihood(z), obs=x)

    @pyro_method
    def guide(self, x: Tensor) -> None:
        """``z ~ q(z | x)`` in the plate ``"data"``. ``x: (N, C, H, W)``."""
        check_images(x, self.image_shape)
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", self.posterior(x))

    # ----------------------------------------------------------------- conveniences
    @torch.no_grad()
    def reconstruct(self, x: Tensor) -> Tensor:
        """Decoder mean at the posterior mean: ``(N, C, H, W) → (N, C, H, W)``."""
        check_images(x, self.image_shape)
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
        from ..inference.iwlb import iwlb  # local: a program does not import inference at load

        check_images(x, self.image_shape)
        with pyro.get_param_store().scope():  # leave no parameters behind in the global store
            return iwlb(self.model, self.guide, x, num_samples=num_samples,
                        chunk_size=chunk_size, seed=seed)

    def elbo(self, x: Tensor, num_samples: int = 1, *, seed: int | None = None) -> Tensor:
        """Monte Carlo ELBO per image, ``(N,)``: the mean of ``num_samples`` log weights."""
        from ..inference.iwlb import iwlb

        check_images(x, self.image_shape)
        with pyro.get_param_store().scope():
            _, log_w = iwlb(self.model, self.guide, x, num_samples=num_samples, seed=seed,
                            return_log_weights=True)
        return log_w.mean(0)

    def fit(self, images: Tensor, **kwargs: Any) -> dict:
        """Train with :func:`sgm_pyro.inference.vae_training.fit_vae`; returns its history."""
        from ..inference.vae_training import fit_vae  # the program never imports its loop at load

        return fit_vae(self, images, **kwargs)


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
        check_images(x, self.image_shape)
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
