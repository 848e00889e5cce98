"""fit_vae: epochs, early selection by validation, patience, one budget rule, and host syncs per step."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import pytest
import torch

from sgm_pyro.groups import AffineGroup
from sgm_pyro.inference.vae_training import fit_vae, validation_score
from sgm_pyro.models import SGM, VAE, StdAugVAE
from sgm_pyro.models.aug_vae import AugVAE
from sgm_pyro.models.inv_vae import InvVAE

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from sync_counter import SyncCounter  # noqa: E402

SHAPE = (1, 16, 16)
SMALL = {"channels": (4, 8), "hidden": 16}


def blobs(n: int, seed: int = 0) -> torch.Tensor:
    """Gaussian blobs of random position and width on a -1 background, ``(n, 1, 16, 16)``."""
    g = torch.Generator().manual_seed(seed)
    centre = 4 + torch.rand(n, 2, generator=g) * 8
    width = 1.5 + 2 * torch.rand(n, generator=g)
    grid = torch.arange(16, dtype=torch.float32)
    d2 = (grid[None, :, None] - centre[:, None, None, 0]) ** 2 + (grid[None, None, :] - centre[:, None, None, 1]) ** 2
    return (2 * torch.exp(-d2 / (2 * width[:, None, None] ** 2)) - 1).unsqueeze(1)


def rotation_sgm() -> SGM:
    torch.manual_seed(0)
    group = AffineGroup(bounds=(math.pi,), generators=("rot",))
    return SGM(group, SHAPE, inference_kwargs={"hidden": (16,)},
               prior_kwargs={"feature_hidden": (16,), "hidden": (8, 8), "transforms": 1})


MODELS = {
    "VAE reference": lambda: VAE(SHAPE, **SMALL),
    "VAE calibrated": lambda: VAE(SHAPE, sigma="calibrated", **SMALL),
    "StdAugVAE": lambda: StdAugVAE(SHAPE, sigma="calibrated", **SMALL),
    "AugVAE": lambda: AugVAE(SHAPE, rotation_sgm(), sigma="calibrated", **SMALL),
    "InvVAE": lambda: InvVAE(rotation_sgm(), sigma="calibrated", **SMALL),
}


@pytest.mark.parametrize("name", sorted(MODELS))
def test_at_most_two_host_syncs_per_training_step(name):
    """Counted as the difference between a 2-step and an 8-step fit: the boundary checks cancel."""
    x = blobs(32)
    counts = []
    for steps in (2, 8):
        model = MODELS[name]()
        with SyncCounter() as counter:
            fit_vae(model, x, steps=steps, batch_size=8, log_every=100, progress=False)
        counts.append(counter)
    per_step = (counts[1].count - counts[0].count) / 6
    assert per_step <= 2, counts[1].report()


@pytest.mark.slow
def test_early_selection_restores_the_best_validation_state_of_an_overfitting_run():
    # 8 training images, a calibrated σ: the decoder memorises them, σ shrinks to their residuals
    # and the validation ELBO first rises, then falls as the model overfits.
    train, val = blobs(8, seed=0), blobs(32, seed=1)
    torch.manual_seed(0)
    vae = VAE(SHAPE, sigma="calibrated", **SMALL)
    hist = fit_vae(vae, train, max_epochs=60, batch_size=8, lr=1e-2, weight_decay=0.0, val_images=val,
                   progress=False, seed=0)
    values = hist["val_elbo"]
    assert hist["steps_per_epoch"] == 1 and len(values) == 60 and hist["val_epoch"][:2] == [1.0, 2.0]
    best = max(range(len(values)), key=values.__getitem__)
    assert 0 < best < len(values) - 10, "the run must peak then overfit for the test to mean anything"
    assert values[-1] < values[best] - 5  # it did overfit
    assert hist["best_step"] == best + 1 and hist["best_epoch"] == best + 1 and hist["best_value"] == values[best]
    # The restored model scores the best validation value again (same fixed particles), not the last one.
    restored = validation_score(vae, val, batch_size=256, seed=0)
    assert restored == pytest.approx(values[best], abs=1e-3)
    assert not vae.training and hist["stopped_step"] == 60 and not hist["stopped_early"]


@pytest.mark.slow
def test_patience_stops_after_that_many_validations_without_improvement():
    train, val = blobs(8, seed=0), blobs(32, seed=1)
    torch.manual_seed(0)
    full = fit_vae(VAE(SHAPE, sigma="calibrated", **SMALL), train, max_epochs=60, batch_size=8, lr=1e-2,
                   weight_decay=0.0, val_images=val, progress=False, seed=0)
    torch.manual_seed(0)
    vae = VAE(SHAPE, sigma="calibrated", **SMALL)
    early = fit_vae(vae, train, max_epochs=60, patience=5, batch_size=8, lr=1e-2, weight_decay=0.0,
                    val_images=val, progress=False, seed=0)
    # The same trajectory until it stops, 5 validations after the first best that is never beaten
    # within the next 5.
    n = len(early["val_elbo"])
    assert early["val_elbo"] == full["val_elbo"][:n]
    assert early["stopped_early"] and early["stopped_step"] == n == early["best_step"] + 5
    assert max(early["val_elbo"][-5:]) <= early["best_value"]
    assert validation_score(vae, val, batch_size=256, seed=0) == pytest.approx(early["best_value"], abs=1e-3)


def test_budget_in_steps_or_epochs_and_its_errors():
    x = blobs(20)
    hist = fit_vae(VAE(SHAPE, **SMALL), x, max_epochs=3, batch_size=8, val_images=x[:4], progress=False)
    assert hist["steps_per_epoch"] == 2 and len(hist["loss"]) == 6 and hist["val_step"] == [2, 4, 6]
    with pytest.raises(ValueError, match="exactly one budget"):
        fit_vae(VAE(SHAPE, **SMALL), x, batch_size=8, progress=False)
    with pytest.raises(ValueError, match="exactly one budget"):
        fit_vae(VAE(SHAPE, **SMALL), x, steps=2, max_epochs=2, batch_size=8, progress=False)
    with pytest.raises(ValueError, match="patience needs val_images"):
        fit_vae(VAE(SHAPE, **SMALL), x, steps=2, patience=2, batch_size=8, progress=False)
    with pytest.raises(ValueError, match="val_metric"):
        fit_vae(VAE(SHAPE, **SMALL), x, steps=2, val_metric="mse", batch_size=8, progress=False)


def test_iwlb_validation_metric_is_recorded_and_at_least_the_elbo():
    x = blobs(24)
    torch.manual_seed(0)
    vae = VAE(SHAPE, sigma="calibrated", **SMALL)
    hist = fit_vae(vae, x[:16], steps=4, batch_size=8, val_images=x[16:], val_every=2, val_metric="iwlb",
                   val_num_samples=20, progress=False)
    assert hist["val_metric"] == "iwlb" and len(hist["val_iwlb"]) == 2 and "val_elbo" not in hist
    elbo = validation_score(vae, x[16:], metric="elbo", seed=0)
    assert validation_score(vae, x[16:], metric="iwlb", num_samples=20, seed=0) >= elbo


@pytest.mark.parametrize("name", ["VAE calibrated", "InvVAE"])
def test_at_most_two_host_syncs_per_iwlb_chunk_of_log_likelihood(name):
    model, x = MODELS[name]().eval(), blobs(4)
    counts = []
    for k in (5, 20):
        with SyncCounter() as counter:
            model.log_likelihood(x, k, chunk_size=5)
        counts.append(counter)
    assert (counts[1].count - counts[0].count) / 3 <= 2, counts[1].report()
