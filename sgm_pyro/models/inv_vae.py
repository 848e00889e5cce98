"""InvVAE (SPEC section 6): a VAE of prototypes, with the pixel warp made an explicit observation.

Model and guide (both inside ``pyro.plate("data", N)``)::

    model:  z ~ p(z),  x̂ = decoder(z),  η ~ p_ψ(η | x̂),  x ~ N(T_η(x̂), diag(σ²))   (x observed)
    guide:  η ~ q_ω(η | x),  z ~ q_φ(z | T_η⁻¹(x))

The SGM (``q_ω`` and ``p_ψ``) is fitted beforehand and frozen; the VAE part (encoder, decoder,
latent prior, per-pixel σ) is what InvVAE trains. Because ``x`` itself is the observed site, with
``η`` and ``z`` both latent, ``iwlb(inv_vae.model, inv_vae.guide, x)`` is a true lower bound on
``log p(x)`` in the units of the plain VAE's bound.

:meth:`InvVAE.prototype_bound` is the reference code's figure instead: it scores the warped
prototype ``x̂ = T_η⁻¹(x)`` as if it were data. It is *not* a density of ``x`` (nothing pays for the
pixel warp: x ↦ (η, x̂) is not a change of variables of pixel space), so it is reported only as a
labelled secondary number.
"""

from __future__ import annotations

import math
from typing import Any

import pyro
import pyro.distributions as dist
import torch
from pyro.distributions.torch_distribution import TorchDistributionMixin
from pyro.nn import PyroModule, pyro_method
from torch import Size, Tensor
from torch.distributions import Distribution

from ..validation import check_images, check_positive_int
from .sgm import SGM
from .trainers import loop
from .trusted import trusted_inputs
from .vae import VAE, check_program_input

__all__ = ["InvVAE"]


class _Unflattened(dist.TorchDistribution):
    """A distribution with batch ``(M,)`` seen with batch ``batch_shape`` (``prod(batch_shape) == M``).

    The shipped prior programs take prototypes ``(M, C, H, W)``; with a particle plate the decoded
    prototypes are ``(K, N, C, H, W)``, so they are flattened for the prior and its draws and
    log-densities reshaped back here.
    """

    arg_constraints: dict = {}

    def __init__(self, base: Distribution, batch_shape: Size) -> None:
        self.base = base
        super().__init__(Size(batch_shape), base.event_shape, validate_args=False)

    @property
    def support(self):
        return self.base.support

    @property
    def has_rsample(self) -> bool:
        return self.base.has_rsample

    def _unflatten(self, value: Tensor, sample_shape: Size) -> Tensor:
        return value.reshape(*sample_shape, *self.batch_shape, *self.event_shape)

    def sample(self, sample_shape: Size = Size()) -> Tensor:
        return self._unflatten(self.base.sample(sample_shape), Size(sample_shape))

    def rsample(self, sample_shape: Size = Size()) -> Tensor:
        return self._unflatten(self.base.rsample(sample_shape), Size(sample_shape))

    def log_prob(self, value: Tensor) -> Tensor:
        ev = len(self.event_shape)
        shape = torch.broadcast_shapes(value.shape[: value.dim() - ev], self.batch_shape)
        extra = shape[: len(shape) - len(self.batch_shape)]
        flat = value.expand(*shape, *self.event_shape).reshape(*extra, -1, *self.event_shape)
        return self.base.log_prob(flat).reshape(*extra, *self.batch_shape)

    def expand(self, batch_shape, _instance=None):
        if Size(batch_shape) == self.batch_shape:
            return self
        return TorchDistributionMixin.expand(self, batch_shape)


class InvVAE(PyroModule):
    """A VAE of SGM prototypes whose bound is a true bound on ``log p(x)`` (see the module docstring).

    Args:
        sgm: a fitted :class:`~sgm_pyro.models.SGM` whose prior program exposes
            ``distribution(x_hat)`` (every shipped prior does). It is frozen: put in ``eval`` mode,
            its parameters stop requiring gradients, and it is kept out of this module's tree (so
            Pyro never registers it as trainable and ``state_dict()`` holds only the VAE).
        vae: the VAE of prototypes; ``None`` builds ``VAE(sgm.image_shape, **vae_kwargs)``.
    """

    def __init__(self, sgm: SGM, vae: VAE | None = None, **vae_kwargs: Any) -> None:
        super().__init__()
        if not isinstance(sgm, SGM):
            raise ValueError(f"sgm must be a fitted sgm_pyro SGM, got {type(sgm).__name__}")
        if not hasattr(sgm.prior, "distribution"):
            raise ValueError("InvVAE needs a prior program with distribution(x_hat) (any shipped prior); "
                             f"got {type(sgm.prior).__name__}")
        if vae is not None and vae_kwargs:
            raise ValueError(f"pass either a VAE or VAE keyword arguments, not both (got {sorted(vae_kwargs)})")
        self.vae = vae if vae is not None else VAE(sgm.image_shape, **vae_kwargs)
        if tuple(self.vae.image_shape) != tuple(sgm.image_shape):
            raise ValueError(f"the SGM models images of shape {tuple(sgm.image_shape)} but the VAE "
                             f"{tuple(self.vae.image_shape)}")
        sgm.eval().requires_grad_(False)
        self.__dict__["_sgm"] = sgm  # bypasses nn.Module registration on purpose (see Args)

    @property
    def sgm(self) -> SGM:
        return self.__dict__["_sgm"]

    @property
    def image_shape(self) -> tuple[int, ...]:
        return tuple(self.vae.image_shape)

    def _apply(self, fn, recurse: bool = True):
        self.sgm._apply(fn)  # .to(device) must move the (unregistered) SGM with the VAE
        return super()._apply(fn, recurse)

    def train(self, mode: bool = True) -> InvVAE:
        super().train(mode)
        self.sgm.eval()  # the frozen prior's dropout must stay off while the VAE trains
        return self

    # ----------------------------------------------------------------- pieces
    def _warp(self, images: Tensor, eta: Tensor) -> Tensor:
        """``T_η(images)`` with leading particle dims: ``(..., C, H, W)``, ``(..., dim)`` broadcast."""
        shape = images.shape[-3:]
        lead = torch.broadcast_shapes(images.shape[:-3], eta.shape[:-1])
        flat = images.expand(*lead, *shape).reshape(-1, *shape)
        etas = eta.expand(*lead, eta.shape[-1]).reshape(-1, eta.shape[-1])
        return self.sgm.group.apply(flat, etas).view(*lead, *shape)

    def _eta_prior(self, x_hat: Tensor) -> dist.TorchDistribution:
        """``p_ψ(η | x̂)`` for ``x_hat: (..., C, H, W)``: batch ``(...)``, event ``(dim,)``."""
        flat = x_hat.reshape(-1, *x_hat.shape[-3:])
        return _Unflattened(self.sgm.prior.distribution(flat), x_hat.shape[:-3])

    def _eta_guide(self, x: Tensor) -> Distribution:
        with torch.no_grad():  # frozen: no gradient into q_ω, and no graph kept for it
            return self.sgm.inference.distribution(x)

    # ----------------------------------------------------------------- Pyro programs
    @pyro_method
    def model(self, x: Tensor) -> None:
        """``z, η`` latent, ``x: (N, C, H, W)`` observed at site ``"x"`` with the VAE's per-pixel σ."""
        check_program_input(x, self.image_shape)
        vae = self.vae
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", vae.prior())
            x_hat = vae.decoder(z)
            eta = pyro.sample("eta", self._eta_prior(x_hat))
            mean = self._warp(x_hat, eta)
            # A calibrated σ is fitted to the residuals of x itself, after the warp (vae.pixel_scale).
            pyro.sample("x", dist.Normal(mean, vae.pixel_scale(mean, x)).to_event(3), obs=x)

    @pyro_method
    def guide(self, x: Tensor) -> None:
        """``η ~ q_ω(η | x)`` (frozen), then ``z ~ q_φ(z | T_η⁻¹(x))``."""
        check_program_input(x, self.image_shape)
        with pyro.plate("data", x.shape[0]):
            eta = pyro.sample("eta", self._eta_guide(x))
            pyro.sample("z", self.vae.posterior(self._warp(x, self.sgm.group.inverse(eta))))

    # ----------------------------------------------------------------- scores
    def log_likelihood(self, x: Tensor, num_samples: int = 1000, *, chunk_size: int | None = None,
                       seed: int | None = None) -> Tensor:
        """Honest IWLB on ``log p(x)`` per image, ``(N,)`` nats; ``K = num_samples`` draws of ``(η, z)``."""
        check_images(x, self.image_shape)
        x = x.to(self.sgm.device)
        with pyro.get_param_store().scope(), trusted_inputs():
            return loop("iwlb")(self.model, self.guide, x, num_samples=num_samples, chunk_size=chunk_size, seed=seed)

    def elbo(self, x: Tensor, num_samples: int = 1, *, seed: int | None = None) -> Tensor:
        """Monte Carlo ELBO per image, ``(N,)``: the mean of ``num_samples`` honest log weights."""
        check_images(x, self.image_shape)
        with pyro.get_param_store().scope(), trusted_inputs():
            _, log_w = loop("iwlb")(self.model, self.guide, x.to(self.sgm.device), num_samples=num_samples,
                            seed=seed, return_log_weights=True)
        return log_w.mean(0)

    @torch.no_grad()
    def prototype_bound(self, x: Tensor, num_samples: int = 1000, *, chunk_size: int | None = None) -> Tensor:
        """The reference code's prototype-space bound per image, ``(N,)`` (**not** a density of ``x``).

        ``log (1/K) Σ_k p_ψ(η_k | x̂_k) p(x̂_k | z_k) p(z_k) / (q_ω(η_k | x) q(z_k | x̂_k))`` with
        ``η_k ~ q_ω(η | x)``, ``x̂_k = T_{η_k}⁻¹(x)`` and ``z_k ~ q(z | x̂_k)``. The warped prototype is
        scored as if it were the data, so no term accounts for the warp that produced it; the
        number is not comparable with :meth:`log_likelihood` or a VAE's bound (SPEC 6).
        """
        check_images(x, self.image_shape)
        check_positive_int(num_samples, "num_samples")
        if chunk_size is not None:
            check_positive_int(chunk_size, "chunk_size")
        x = x.to(self.sgm.device)
        chunk = min(chunk_size or num_samples, num_samples)
        q_eta, vae = self.sgm.inference.distribution(x), self.vae
        running = None
        for start in range(0, num_samples, chunk):
            eta = q_eta.sample((min(chunk, num_samples - start),))  # (S, N, dim)
            x_hat = self._warp(x, self.sgm.group.inverse(eta))  # (S, N, C, H, W)
            q_z = vae.posterior(x_hat)
            z = q_z.sample()
            log_w = (self._eta_prior(x_hat).log_prob(eta) + vae.likelihood(z).log_prob(x_hat)
                     + vae.prior().log_prob(z) - q_eta.log_prob(eta) - q_z.log_prob(z))
            lse = torch.logsumexp(log_w, 0)
            running = lse if running is None else torch.logaddexp(running, lse)
        return running - math.log(num_samples)

    @torch.no_grad()
    def reconstruct(self, x: Tensor) -> Tensor:
        """``T_η(decoder(E[z | x̂]))`` with ``η = f_ω(x)`` and ``x̂ = T_η⁻¹(x)``: ``(N, C, H, W)``."""
        check_images(x, self.image_shape)
        x = x.to(self.sgm.device)
        eta = self.sgm.inference.mode(x)
        x_hat = self._warp(x, self.sgm.group.inverse(eta))
        return self._warp(self.vae.decoder(self.vae.encoder(x_hat)[0]), eta)

    def fit(self, images: Tensor, *, prototype_steps: int = 0, **kwargs: Any) -> dict:
        """Train the VAE part by SVI on :meth:`model`/:meth:`guide` (the SGM stays frozen).

        ``prototype_steps > 0`` first warm-starts the plain VAE on the prototypes ``T_{f(x)}⁻¹(x)``
        (cheaper steps, no warp in the likelihood). ``kwargs`` (the budget ``steps`` or ``max_epochs``
        among them) go to
        :func:`~sgm_pyro.inference.vae_training.fit_vae` (``batch_size``, ``lr``, ``val_images``, ...),
        whose validation ELBO is the honest one. Returns the history of the InvVAE stage.
        """
        if prototype_steps:
            protos = torch.cat([self.sgm.prototype(images[i: i + 1024]).cpu() for i in range(0, len(images), 1024)])
            warm = {k: v for k, v in kwargs.items()
                    if k not in ("val_images", "val_every", "steps", "max_epochs", "patience", "val_metric")}
            loop("vae")(self.vae, protos.clamp(-1, 1), steps=prototype_steps, **warm)
        return loop("vae")(self, images, **kwargs)
