"""The calibrated per-pixel σ of the VAE (σ-VAE closed form): its optimum, its speed, and the bound.

The PPCA check: with a linear decoder, a Gaussian prior and a calibrated σ, the VAE *is* probabilistic
PCA with per-pixel noise, x ~ N(W m + b, W diag(s²) Wᵀ + diag(σ²)), so log p(x) is known exactly and
the importance-weighted bound must stay below it and tighten with K.
"""

from __future__ import annotations

import math

import pyro
import pyro.distributions as dist
import pytest
import torch
from torch import nn

from sgm_pyro.inference.vae_training import fit_vae
from sgm_pyro.models.vae import VAE

SMALL = {"channels": (4, 8), "hidden": 16}
SHAPE = (1, 4, 4)  # 16 pixels: the PPCA density is a 16-dimensional Gaussian
D, L = 16, 2


class LinearDecoder(nn.Module):
    """``z: (..., L) → W z + b`` reshaped to ``(..., 1, 4, 4)``: the PPCA mean."""

    def __init__(self, w: torch.Tensor, b: torch.Tensor) -> None:
        super().__init__()
        self.linear = nn.Linear(L, D)
        with torch.no_grad():
            self.linear.weight.copy_(w)
            self.linear.bias.copy_(b)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.linear(z).reshape(*z.shape[:-1], *SHAPE)


def ppca_data(n: int, noise: torch.Tensor, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    w, b = 0.25 * torch.randn(D, L, generator=g), 0.2 * torch.randn(D, generator=g)
    g.manual_seed(seed)
    x = torch.randn(n, L, generator=g) @ w.T + b + noise * torch.randn(n, D, generator=g)
    return x.clamp(-1, 1).reshape(n, *SHAPE), w, b


def ppca_vae(w, b, momentum: float = 0.5) -> VAE:
    torch.manual_seed(0)
    vae = VAE(SHAPE, latent_dim=L, sigma="calibrated", sigma_momentum=momentum, **SMALL)
    vae.decoder = LinearDecoder(w, b)
    return vae


def exact_log_px(vae: VAE, x: torch.Tensor) -> torch.Tensor:
    """log p(x) of the VAE's own linear-Gaussian model with its current (fixed) σ: ``(N,)``."""
    with torch.no_grad():
        w, b = vae.decoder.linear.weight, vae.decoder.linear.bias
        m, s = vae.prior_loc, vae.prior_log_scale.exp()
        cov = w @ torch.diag(s**2) @ w.T + torch.diag(vae.sigma.flatten() ** 2)
        return dist.MultivariateNormal(w @ m + b, cov).log_prob(x.reshape(x.shape[0], D))


def closed_form_sigma(vae: VAE, x: torch.Tensor, draws: int = 4000) -> torch.Tensor:
    """argmax_σ of the ELBO given the networks: sqrt(E_q[(x − decoder(z))²]) per pixel, floored."""
    with torch.no_grad():
        loc, scale = vae.encoder(x)
        z = loc + scale * torch.randn(draws, *loc.shape)
        return (x - vae.decoder(z)).square().mean((0, 1)).clamp(min=vae.sigma_floor**2).sqrt()


def test_calibrated_sigma_reaches_the_closed_form_optimum_in_a_few_steps():
    noise = torch.linspace(0.02, 0.3, D)  # a different optimum for every pixel, some near the floor
    x, w, b = ppca_data(64, noise)
    vae = ppca_vae(w, b)
    # lr so small the networks do not move: σ alone has to find its optimum.
    hist = fit_vae(vae, x, steps=5, batch_size=64, lr=1e-12, weight_decay=0.0, warmup_fraction=0.0,
                   progress=False)
    target = closed_form_sigma(vae, x)
    torch.testing.assert_close(vae.sigma, target, rtol=0.05, atol=0)
    assert target.max() < 0.8 and target.max() > 2 * target.min()  # far from the init 1, and per pixel
    # ... and it is the maximiser: the ELBO at σ is above the ELBO at σ scaled either way.
    vae.eval()
    elbo = {}
    for factor in (0.8, 1.0, 1.25):
        vae.sigma_sq.mul_(factor**2)
        pyro.set_rng_seed(0)  # the same particles for every σ
        elbo[factor] = vae.elbo(x, num_samples=200).mean().item()
        vae.sigma_sq.div_(factor**2)
    assert elbo[1.0] > elbo[0.8] and elbo[1.0] > elbo[1.25], elbo
    assert len(hist["loss"]) == 5


def test_reference_sigma_is_still_far_from_its_optimum_after_the_same_steps():
    """Why the calibrated σ exists: the reference 0.01 + softplus(raw) moves by ~lr per step."""
    x, w, b = ppca_data(64, torch.full((D,), 0.05))
    torch.manual_seed(0)
    vae = VAE(SHAPE, latent_dim=L, sigma="reference", **SMALL)
    vae.decoder = LinearDecoder(w, b)
    fit_vae(vae, x, steps=5, batch_size=64, lr=1e-3, warmup_fraction=0.0, progress=False)
    assert vae.sigma.min() > 0.9  # started at 1, needs ~0.05
    assert "sigma_raw" in dict(vae.named_parameters())


def test_sigma_is_fixed_at_evaluation():
    x, w, b = ppca_data(32, torch.full((D,), 0.1))
    vae = ppca_vae(w, b)
    fit_vae(vae, x, steps=3, batch_size=32, progress=False)
    before = vae.sigma_sq.clone()
    vae.log_likelihood(x * 0.5, num_samples=4, seed=0)
    vae.elbo(x * 0.5, seed=0)
    vae.train()
    with torch.no_grad():  # train mode but no gradients: still no update
        vae.log_likelihood(x * 0.5, num_samples=4, seed=0)
    assert torch.equal(vae.sigma_sq, before)
    assert {"sigma_sq", "sigma_updates"} <= set(vae.state_dict())  # saved with the weights


def test_iwlb_with_a_calibrated_decoder_is_below_log_px_and_tightens_with_k():
    noise = torch.linspace(0.03, 0.2, D)
    train, w, b = ppca_data(256, noise)
    vae = ppca_vae(w, b, momentum=0.9)
    fit_vae(vae, train, steps=60, batch_size=64, lr=3e-3, progress=False, seed=0)
    # Test images with less noise than the training data: a σ refitted on them would be smaller and
    # lift the "bound" above the log-density of the model that was trained.
    x, _, _ = ppca_data(64, 0.3 * noise, seed=1)
    log_px = exact_log_px(vae, x).mean().item()
    pyro.set_rng_seed(0)
    means = [vae.log_likelihood(x, num_samples=k, chunk_size=100).mean().item() for k in (1, 10, 300)]
    assert exact_log_px(vae, x).mean().item() == pytest.approx(log_px)  # σ untouched by the evaluation
    assert means[0] < means[1] < means[2] <= log_px + 0.05, (means, log_px)
    assert log_px - means[2] < 0.5 * (log_px - means[0])  # K closes most of the gap
    assert math.isfinite(log_px)
