"""End to end on a tiny rotation-only dataset: the fitted SGM recovers a narrow vs a wide spread."""

import math

import pytest
import torch

import sgm_pyro


def shapes(size=16):
    """Two asymmetric prototypes (an "L" and a "T"), so every rotation is identifiable."""
    el = -torch.ones(1, size, size)
    el[:, 3:13, 4:7] = 1
    el[:, 10:13, 4:12] = 1
    tee = -torch.ones(1, size, size)
    tee[:, 3:6, 3:13] = 1
    tee[:, 3:13, 7:10] = 1
    return el, tee


def dataset(n_per_shape, narrow_deg, wide_deg, seed):
    g = torch.Generator().manual_seed(seed)
    rot = sgm_pyro.AffineGroup(bounds=(math.pi,), generators=("rot",))
    el, tee = shapes()
    a = math.radians(narrow_deg) * (2 * torch.rand(n_per_shape, 1, generator=g) - 1)
    b = math.radians(wide_deg) * (2 * torch.rand(n_per_shape, 1, generator=g) - 1)
    x = torch.cat([rot.apply(el.expand(n_per_shape, 1, 16, 16), a), rot.apply(tee.expand(n_per_shape, 1, 16, 16), b)])
    return x.clamp(-1, 1), torch.cat([torch.zeros(n_per_shape), torch.ones(n_per_shape)]).long()


def test_fit_recovers_a_narrow_and_a_wide_rotation_spread():
    torch.manual_seed(0)
    x, label = dataset(256, narrow_deg=10, wide_deg=60, seed=0)
    group = sgm_pyro.AffineGroup(bounds=(math.pi,), generators=("rot",))
    model = sgm_pyro.SGM(group, (1, 16, 16), inference_kwargs=dict(hidden=(128, 64)),
                         prior_kwargs=dict(feature_hidden=(32,), hidden=(32, 32), transforms=1, dropout=0.0))
    model.fit(x, inference_steps=500, prior_steps=300, batch_size=64, progress=False, seed=0,
              inference_lr=3e-3, inference_num_draws=2, inference_augment_scale=0.5, inference_blur_sigma=1.0,
              inference_blur_fraction=0.2, inference_inv_weight=0.0, prior_augment_scale=0.5, prior_num_draws=2)
    test, test_label = dataset(64, narrow_deg=10, wide_deg=60, seed=1)
    draws = model.sample_eta(model.prototype(test), 400)[..., 0]  # (S, N) radians
    narrow = draws[:, test_label == 0].std(0).median().item()
    wide = draws[:, test_label == 1].std(0).median().item()
    # Uniform ±10° has a standard deviation of 0.10 rad, uniform ±60° one of 0.60 rad.
    assert narrow < 0.25, narrow
    assert wide > 0.3, wide
    assert wide > 2.5 * narrow, (narrow, wide)


def fit_rotation_only(x, rotation_head="circle", seed=0):
    torch.manual_seed(seed)
    group = sgm_pyro.AffineGroup(bounds=(math.pi,), generators=("rot",))
    model = sgm_pyro.SGM(group, (1, 16, 16), inference_kwargs=dict(hidden=(128, 64), rotation_head=rotation_head),
                         prior_kwargs=dict(feature_hidden=(32,), hidden=(32, 32), transforms=2, dropout=0.0))
    model.fit(x, inference_steps=500, prior_steps=300, batch_size=64, progress=False, seed=seed,
              inference_lr=3e-3, inference_num_draws=2, inference_augment_scale=1.0, inference_blur_sigma=1.0,
              inference_blur_fraction=0.2, inference_inv_weight=0.0, prior_augment_scale=1.0, prior_num_draws=2)
    return model


@pytest.mark.parametrize("rotation_head", ["circle", "equivariant"])
def test_fully_rotated_data_gets_a_wide_density_and_unrotated_data_a_narrow_one(rotation_head):
    from sgm_pyro.analysis import circular_std_deg
    full, _ = dataset(256, narrow_deg=180, wide_deg=180, seed=0)
    upright, _ = dataset(256, narrow_deg=0, wide_deg=0, seed=0)
    stds = {}
    for name, x in (("full", full), ("upright", upright)):
        model = fit_rotation_only(x, rotation_head)
        test = x[torch.randperm(len(x), generator=torch.Generator().manual_seed(1))[:64]]
        draws = model.sample_eta(model.prototype(test), 400)[..., 0]  # (S, N)
        stds[name] = circular_std_deg(draws, dim=0).median().item()
    # U(-180°, 180°) has no finite circular std; a density that covers the circle has > 60°
    assert stds["full"] >= 60, stds
    assert stds["upright"] <= 10, stds
