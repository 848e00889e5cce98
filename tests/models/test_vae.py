"""The plain VAE (SPEC 6): shapes, the σ floor, SVI training, its IWLB, input checks, StdAugVAE."""

from __future__ import annotations

import math

import pyro
import pytest
import torch
from pyro import poutine

from sgm_pyro.inference.iwlb import iwlb
from sgm_pyro.inference.vae_training import fit_vae
from sgm_pyro.models.vae import VAE, StandardAugmentation, StdAugVAE

SMALL = {"channels": (8, 16), "hidden": 32}  # the reference architecture, narrowed for speed
TINY = (1, 16, 16)  # image shape of the training tests: any size works, small is fast


def blobs(n: int, size: int = 28, seed: int = 0) -> torch.Tensor:
    """Gaussian blobs at random positions on a -1 background: ``(n, 1, size, size)`` in [-1, 1]."""
    g = torch.Generator().manual_seed(seed)
    centre = torch.rand(n, 2, generator=g) * size * 0.5 + size * 0.25
    grid = torch.arange(size, dtype=torch.float32)
    d2 = (grid[None, :, None] - centre[:, None, None, 0]) ** 2 + (
        grid[None, None, :] - centre[:, None, None, 1]
    ) ** 2
    return (2 * torch.exp(-d2 / (2 * (size / 8) ** 2)) - 1).unsqueeze(1)


@pytest.mark.parametrize("image_shape", [(1, 28, 28), (3, 64, 64)])
def test_shapes_with_reference_widths(image_shape):
    vae = VAE(image_shape)
    x = torch.rand(3, *image_shape) * 2 - 1
    trace = poutine.trace(poutine.replay(vae.model, trace=poutine.trace(vae.guide).get_trace(x)))
    tr = trace.get_trace(x)
    tr.compute_log_prob()
    assert tr.nodes["z"]["value"].shape == (3, 20)
    assert tr.nodes["x"]["log_prob"].shape == (3,)
    assert vae.reconstruct(x).shape == (3, *image_shape)
    assert vae.sample(5).shape == (5, *image_shape)
    assert vae.sample(2, noise=True).shape == (2, *image_shape)
    assert vae.log_likelihood(x, num_samples=4, chunk_size=2).shape == (3,)


def test_sigma_starts_at_one_and_respects_the_floor():
    vae = VAE((1, 28, 28), **SMALL)
    torch.testing.assert_close(vae.sigma, torch.ones(1, 28, 28))
    with torch.no_grad():
        vae.sigma_raw.fill_(-1e4)
    assert vae.sigma.min().item() >= torch.tensor(0.01).item()  # the floor in float32
    torch.testing.assert_close(vae.sigma, torch.full((1, 28, 28), 0.01))
    custom = VAE((1, 28, 28), sigma_init=0.5, sigma_floor=0.05, **SMALL)
    torch.testing.assert_close(custom.sigma, torch.full((1, 28, 28), 0.5))


def test_svi_steps_decrease_the_loss_and_track_validation():
    x = blobs(48, size=16)
    torch.manual_seed(0)
    vae = VAE(TINY, **SMALL)
    hist = fit_vae(vae, x[:32], steps=20, batch_size=16, lr=3e-3, val_images=x[32:], val_every=10,
                   progress=False)
    assert set(hist) >= {"step", "loss", "lr", "val_step", "val_elbo", "best_step"}
    assert len(hist["loss"]) == 20 and hist["val_step"] == [10, 20]
    first, last = sum(hist["loss"][:5]) / 5, sum(hist["loss"][-5:]) / 5
    assert last < first - 30, (first, last)  # nats per image
    assert all(math.isfinite(v) for v in hist["val_elbo"])


def test_fitting_two_models_updates_each_ones_own_parameters():
    """Same parameter names in Pyro's global store must not make the second fit a no-op."""
    x = blobs(16, size=16)
    for _ in range(2):
        vae = VAE(TINY, **SMALL)
        before = vae.prior_loc.detach().clone(), vae.decoder.head[0].weight.detach().clone()
        fit_vae(vae, x, steps=3, batch_size=8, lr=1e-2, warmup_fraction=0.0, progress=False)
        assert not torch.equal(vae.prior_loc, before[0])
        assert not torch.equal(vae.decoder.head[0].weight, before[1])


def test_iwlb_with_one_sample_matches_trace_elbo_and_grows_with_k():
    torch.manual_seed(0)
    vae = VAE(TINY, **SMALL)
    fit_vae(vae, blobs(32, size=16), steps=10, batch_size=16, lr=3e-3, progress=False)
    x = blobs(8, size=16, seed=1)
    reps = 32
    # K=1 is the ELBO: compare iwlb on repeated copies with Trace_ELBO's particle average.
    bound = iwlb(vae.model, vae.guide, x.repeat(reps, 1, 1, 1), num_samples=1, seed=0)
    pyro.set_rng_seed(1)
    with pyro.get_param_store().scope():
        trace_elbo = pyro.infer.Trace_ELBO(num_particles=reps, vectorize_particles=True)
        minus_loss = -trace_elbo.loss(vae.model, vae.guide, x) / x.shape[0]
    std_err = bound.std().item() / math.sqrt(bound.numel())
    assert abs(bound.mean().item() - minus_loss) < 5 * std_err + 1e-3 * abs(minus_loss)
    pyro.set_rng_seed(2)  # global-RNG particles: much faster than seed= for many particles
    means = [vae.log_likelihood(x, num_samples=k).mean().item() for k in (1, 10, 50)]
    assert means[0] < means[1] < means[2]
    # vae.elbo averages log weights: the same ELBO as the K=1 bound, and below the K=50 bound.
    elbo = vae.elbo(x.repeat(reps, 1, 1, 1), num_samples=1, seed=3)
    assert elbo.shape == (8 * reps,)
    assert abs(elbo.mean().item() - minus_loss) < 5 * std_err + 1e-3 * abs(minus_loss)
    assert elbo.mean().item() < means[2]


@pytest.mark.parametrize(
    "bad, match",
    [
        (torch.zeros(2, 1, 27, 28), r"image shape"),
        (torch.zeros(1, 28, 28), r"\(N, C, H, W\)"),
        (torch.full((2, 1, 28, 28), 3.0), r"\[-1, 1\]"),
        (torch.full((2, 1, 28, 28), float("nan")), r"NaN"),
        (torch.zeros(2, 1, 28, 28, dtype=torch.uint8), r"floating point"),
        (torch.zeros(0, 1, 28, 28), r"empty"),
    ],
)
def test_bad_inputs_raise_value_errors(bad, match):
    vae = VAE((1, 28, 28), **SMALL)
    for method in (vae.model, vae.guide, vae.reconstruct, vae.log_likelihood, vae.elbo):
        with pytest.raises(ValueError, match=match):
            method(bad)
    with pytest.raises(ValueError, match=match):
        fit_vae(vae, bad, steps=1, batch_size=1, progress=False)


def test_bad_settings_raise_value_errors():
    vae = VAE((1, 28, 28), **SMALL)
    x = blobs(4)
    with pytest.raises(ValueError, match="batch_size"):
        fit_vae(vae, x, steps=1, batch_size=5, progress=False)
    with pytest.raises(ValueError, match="steps"):
        fit_vae(vae, x, steps=0, batch_size=2, progress=False)
    with pytest.raises(ValueError, match="val_images"):
        fit_vae(vae, x, steps=1, batch_size=2, val_images=torch.zeros(2, 3, 28, 28), progress=False)
    with pytest.raises(ValueError, match="n must be"):
        vae.sample(0)
    with pytest.raises(ValueError, match="sigma_floor"):
        VAE((1, 28, 28), sigma_floor=0.0)
    with pytest.raises(ValueError, match="image_shape"):
        VAE((28, 28))


def test_standard_augmentation_uses_the_affine_group_with_the_baseline_ranges():
    aug = StandardAugmentation((1, 28, 28))
    b = aug.group.bounds
    torch.testing.assert_close(b, torch.tensor([4 / 27, 4 / 27, math.radians(15), math.log(1.1), math.log(1.1)]))
    x = blobs(16)
    torch.manual_seed(0)
    y = aug(x)
    assert y.shape == x.shape and y.min() >= -1 and y.max() <= 1
    assert not torch.allclose(y, x)
    # small moves of a centred blob: the image stays close to the original
    assert (y - x).abs().mean() < 0.2


def test_std_aug_vae_trains_on_augmented_batches():
    calls = []

    class Counting(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, x):
            calls.append(x.shape[0])
            return self.inner(x)

    vae = StdAugVAE(TINY, **SMALL)
    vae.augment = Counting(vae.augment)
    fit_vae(vae, blobs(16, size=16), steps=3, batch_size=8, progress=False)
    assert calls == [8, 8, 8]
    calls.clear()
    fit_vae(vae, blobs(16, size=16), steps=2, batch_size=8, augment=lambda x: x, progress=False)
    assert calls == []  # an explicit augment replaces the model's own
