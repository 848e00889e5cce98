"""dSprites metrics against stub models whose answers are known."""

import json
import math

import pytest
import torch

from sgm_pyro.analysis import (band_fraction, heart_metrics, image_statistics, invariance_metrics, middle_band,
                               recovery_metrics, rotation_samples_deg)
from sgm_pyro.data.dsprites import dsprites
from sgm_pyro.data.laws import resolve_laws
from sgm_pyro.groups import AffineGroup
from analysis_stubs import StubModel


@pytest.fixture(scope="module")
def data():
    return dsprites(60, seed=1)


@pytest.fixture(scope="module")
def hearts():
    return dsprites(40, laws={"heart": resolve_laws("paper").heart}, seed=2)[0]


# ---------------------------------------------------------------- invariance
def test_constant_prototype_is_perfectly_invariant(data):
    x, lat = data
    template = x[:1].clone()
    model = StubModel(prototype=lambda imgs: template.expand(imgs.shape[0], -1, -1, -1).clone())
    out = invariance_metrics(model, x, lat["shape"], generator=torch.Generator().manual_seed(0))
    assert out["invariance_error"] == 0.0
    assert out["within_class_spread"] == 0.0 and out["between_class_spread"] == 0.0
    assert out["spread_ratio"] is None  # no separation to compare against
    json.dumps(out, allow_nan=False)


def test_identity_prototype_is_not_invariant(data):
    x, lat = data
    out = invariance_metrics(StubModel(), x, lat["shape"], generator=torch.Generator().manual_seed(0))
    # Moved shapes barely overlap their originals: the error is of the order of the data variance.
    assert out["invariance_error"] > 0.5
    assert out["data_variance"] == pytest.approx(x.var(0, unbiased=False).mean().item(), rel=1e-5)
    assert out["invariance_mse"] == pytest.approx(out["invariance_error"] * out["data_variance"])
    # Raw images of one shape are spread all over the frame: no tighter than between shapes.
    assert out["spread_ratio"] > 1.0
    assert set(out["per_class_spread"]) == {"square", "ellipse", "heart"}


def test_spreads_of_perfect_per_shape_prototypes():
    x = -torch.ones(6, 1, 16, 16)
    x[:3, :, 2:6, 2:6] = 1.0  # shape 0: three identical images
    x[3:, :, 8:14, 8:14] = 1.0  # shape 1: three identical images
    out = invariance_metrics(StubModel(), x, torch.tensor([0, 0, 0, 1, 1, 1]), scale=0.0)
    assert out["invariance_error"] == pytest.approx(0.0, abs=1e-10)  # g = identity at scale 0
    assert out["within_class_spread"] == 0.0
    assert out["between_class_spread"] == pytest.approx(x[0].sub(x[3]).pow(2).mean().item() / 4)
    assert out["spread_ratio"] == 0.0


def test_spreads_are_keyed_by_class_names_or_labels():
    x = -torch.ones(4, 1, 8, 8)
    x[:2, :, 1:4, 1:4] = 1.0
    x[2:, :, 4:7, 4:7] = 1.0
    digits = torch.tensor([7, 7, 1, 1])  # MNIST-style labels: no shape names apply
    out = invariance_metrics(StubModel(), x, digits, scale=0.0, class_names=())
    assert set(out["per_class_spread"]) == {"1", "7"}
    assert not any("shape" in key for key in out)
    named = invariance_metrics(StubModel(), x, torch.tensor([0, 0, 1, 1]), scale=0.0, shape_names=("a", "b"))
    assert set(named["per_class_spread"]) == {"a", "b"}  # the former keyword still works


def test_invariance_validates_inputs(data):
    x, lat = data
    with pytest.raises(ValueError, match="shape"):
        invariance_metrics(StubModel(), x, lat["shape"][:-1])
    with pytest.raises(ValueError, match="identical"):
        invariance_metrics(StubModel(), x[:1].expand(4, -1, -1, -1), torch.zeros(4))


# ---------------------------------------------------------------- recovery
def test_recovery_of_the_data_itself_is_exact(data):
    x, lat = data
    out = recovery_metrics(x, x.expand(3, *x.shape), lat["shape"])
    assert set(out["per_shape"]) == {"square", "ellipse", "heart"}
    assert out["max_relative"] == pytest.approx(0.0, abs=1e-12)
    assert out["within_5_percent"] is True
    assert out["num_blank_resampled"] == 0
    json.dumps(out, allow_nan=False)
    assert recovery_metrics(x, x, lat["shape"])["max_relative"] == pytest.approx(0.0, abs=1e-12)


def test_recovery_detects_a_shift(data):
    x, lat = data
    shifted = torch.roll(x, shifts=10, dims=-1)  # every shape 10 px to the right (margins wrap blank)
    out = recovery_metrics(x, shifted[None], lat["shape"])
    for name in ("square", "ellipse", "heart"):
        com_x = out["per_shape"][name]["com_x"]
        assert com_x["w1"] == pytest.approx(10 / 63, abs=0.02)
        assert com_x["relative"] == pytest.approx(com_x["w1"] / out["ranges"]["com_x"])
        assert out["per_shape"][name]["area"]["w1"] == pytest.approx(0.0, abs=1e-4)
    assert out["max_relative"] > 0.15
    assert out["within_5_percent"] is False


def test_recovery_validates_inputs(data):
    x, lat = data
    with pytest.raises(ValueError, match="resampled must have shape"):
        recovery_metrics(x, x[:5][None], lat["shape"])
    with pytest.raises(ValueError, match="labels in"):
        recovery_metrics(x, x, torch.full((x.shape[0],), 3))


# ---------------------------------------------------------------- hearts
def test_middle_band_and_fraction_on_synthetic_values():
    low = torch.linspace(0.2, 0.35, 50)
    high = torch.linspace(0.6, 0.75, 50)
    band = middle_band(torch.cat([high, low])[torch.randperm(100)])
    assert band == pytest.approx((0.35, 0.6))
    assert band_fraction(torch.tensor([0.5, 0.5, 0.5, 0.3, 0.3, 0.7, 0.7, 0.35, 0.6, 0.1]), band) == pytest.approx(0.3)
    assert band_fraction(torch.cat([low, high]), band) == 0.0
    with pytest.raises(ValueError, match="at least 2"):
        middle_band([0.5])


def _centred(x):
    """Each image rolled vertically so its centre of mass sits on the middle row."""
    rows = image_statistics(x)["com_y"] * (x.shape[-2] - 1)
    return torch.stack([torch.roll(img, int(round(31.5 - r.item())), dims=-2) for img, r in zip(x, rows)])


def test_heart_metrics_of_a_faithful_model(hearts):
    out = heart_metrics(StubModel(), hearts, num_samples=8, num_resamples=2)
    assert out["rotation_std_deg_mean"] == 0.0 and out["rotation_std_deg_median"] == 0.0
    assert out["resampled_middle_fraction"] == 0.0 and out["real_middle_fraction"] == 0.0
    low, high = out["middle_band"]
    # Bands U(0.1, 0.3) and U(0.7, 0.9) put the mass at rows 15 + 34·pos - 0.5 of 63.
    assert 0.25 < low < 0.4 < 0.6 < high < 0.72
    json.dumps(out, allow_nan=False)


def test_heart_metrics_flag_rotation_and_filled_band(hearts):
    def spin(x_hat, s):
        eta = torch.zeros(s, x_hat.shape[0], 5)
        eta[..., 2] = (torch.rand(s, x_hat.shape[0]) * 2 - 1) * math.pi
        return eta

    model = StubModel(sample_eta=spin, resample=lambda x, s: _centred(x).expand(s, *x.shape).clone())
    reference = image_statistics(dsprites(40, laws={"heart": resolve_laws("paper").heart}, seed=9)[0])
    out = heart_metrics(model, hearts, reference, num_samples=200, num_resamples=1)
    assert out["rotation_std_deg_mean"] > 100.0  # uniform on the circle: R ≈ 0
    assert out["resampled_middle_fraction"] == 1.0
    assert out["real_middle_fraction"] <= 0.05  # an independent real set stays out of the band


def test_rotation_samples_are_degrees_and_need_a_rot_coordinate(hearts):
    def fixed(x_hat, s):
        eta = torch.zeros(s, x_hat.shape[0], 5)
        eta[..., 2] = math.radians(200.0)
        return eta

    rot = rotation_samples_deg(StubModel(sample_eta=fixed), hearts[:3], 4)
    assert rot.shape == (4, 3)
    assert torch.allclose(rot, torch.full((4, 3), -160.0, dtype=rot.dtype))
    no_rot = StubModel(group=AffineGroup(generators=("tx", "ty")))
    with pytest.raises(ValueError, match="'rot'"):
        heart_metrics(no_rot, hearts, num_samples=2)


def test_blank_resamples_are_counted_not_compared(data):
    x, lat = data
    resampled = x.clone()
    resampled[0] = -1.0  # content warped out of the frame
    out = recovery_metrics(x, resampled, lat["shape"])
    assert out["num_blank_resampled"] == 1
    assert out["per_shape"]["square" if lat["shape"][0] == 0 else "ellipse" if lat["shape"][0] == 1 else "heart"][
        "area"]["w1"] > 0


# ---------------------------------------------------------------- a real (untrained) SGM
def test_metrics_run_on_an_sgm(data):
    from sgm_pyro import SGM

    x, lat = data
    x, shapes = x[:12], lat["shape"][:12]
    group = AffineGroup((0.75, 0.75, math.pi, 0.75, 0.75), squash=True)
    model = SGM(group, (1, 64, 64), "box", inference_kwargs={"hidden": (8,), "rotation_head": "real"}).eval()
    # The reference head starts at the identity, so its prototypes are the images themselves.
    seed = 5
    ours = invariance_metrics(model, x, shapes, generator=torch.Generator().manual_seed(seed))
    stub = invariance_metrics(StubModel(group=group), x, shapes, generator=torch.Generator().manual_seed(seed))
    assert ours["invariance_error"] == pytest.approx(stub["invariance_error"], rel=1e-4)
    rec = recovery_metrics(x, model.resample(x, 2), shapes)
    hearts = heart_metrics(model, x, num_samples=16, num_resamples=2)
    assert hearts["rotation_std_deg_mean"] > 30.0  # the box prior rotates uniformly
    json.dumps({"invariance": ours, "recovery": rec, "hearts": hearts}, allow_nan=False)
