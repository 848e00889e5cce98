"""dSprites latent laws: the paper's per-shape laws, the original grid, samplers, user laws."""

import math

import pytest
import torch

from sgm_pyro.data import DSpritesLaws, ShapeLaw, constant, mixture, sample_latents, trunc_normal, uniform
from sgm_pyro.data.laws import ORIENTATION_GRID, POSITION_GRID, SCALE_GRID, choice


def draw(n, laws, seed=0, **kwargs):
    """Latents only: the laws are about numbers, rendering is tested elsewhere."""
    return sample_latents(n, laws, torch.Generator().manual_seed(seed), **kwargs)


@pytest.fixture(scope="module")
def paper():
    return draw(6000, "paper")


def of_shape(lat, k):
    mask = lat["shape"] == k
    return {name: v[mask] for name, v in lat.items()}


def within(x, low, high):
    return bool(((x >= low) & (x <= high)).all())


def test_shapes_equally_likely(paper):
    counts = torch.bincount(paper["shape"], minlength=3).float() / 6000
    assert (counts - 1 / 3).abs().max() < 0.03


def test_square_law(paper):
    sq = of_shape(paper, 0)
    assert within(sq["scale"], 0.55, 1.0) and within(sq["pos_x"], 0.5, 0.95) and within(sq["pos_y"], 0.5, 0.95)
    assert within(sq["orientation"], 0.0, 2 * math.pi) and sq["orientation"].std() > 1.6  # U(0, 2π): std 1.81
    assert abs(sq["scale"].mean() - truncnorm_mean(0.75, 0.2, 0.55, 1.0)) < 0.01


def test_ellipse_law(paper):
    el = of_shape(paper, 1)
    assert within(el["scale"], 0.5, 0.85) and within(el["orientation"], 0.0, math.pi / 2)
    assert within(el["pos_x"], 0.1, 0.9) and within(el["pos_y"], 0.35, 0.65)
    assert abs(el["pos_x"].mean() - 0.5) < 0.02 and abs(el["pos_y"].mean() - 0.5) < 0.01
    assert abs(el["scale"].mean() - truncnorm_mean(0.65, 0.15, 0.5, 0.85)) < 0.01


def test_hearts_are_never_rotated_and_y_is_bimodal(paper):
    he = of_shape(paper, 2)
    assert (he["orientation"] == 0).all()
    assert within(he["scale"], 0.9, 1.0) and within(he["pos_x"], 0.1, 0.5)
    y = he["pos_y"]
    low, high = within(y[y < 0.5], 0.1, 0.3), within(y[y >= 0.5], 0.7, 0.9)
    assert low and high and not ((y > 0.3) & (y < 0.7)).any()
    assert abs((y < 0.5).float().mean() - 0.5) < 0.05


def truncnorm_mean(mean, std, low, high):
    pdf = lambda z: math.exp(-z * z / 2) / math.sqrt(2 * math.pi)  # noqa: E731
    cdf = lambda z: 0.5 * (1 + math.erf(z / math.sqrt(2)))  # noqa: E731
    a, b = (low - mean) / std, (high - mean) / std
    return mean + std * (pdf(a) - pdf(b)) / (cdf(b) - cdf(a))


def test_trunc_normal_matches_its_analytic_mean_and_bounds():
    g = torch.Generator().manual_seed(0)
    x = trunc_normal(0.5, 0.25, 0.1, 0.9)(40000, g)
    assert x.shape == (40000,) and within(x, 0.1, 0.9)
    assert abs(x.mean() - truncnorm_mean(0.5, 0.25, 0.1, 0.9)) < 0.005
    # A one-sided truncation, where the mean moves: TruncNorm(0, 1, [0, 3]) has mean ≈ 0.7936.
    y = trunc_normal(0.0, 1.0, 0.0, 3.0)(40000, g)
    assert abs(y.mean() - truncnorm_mean(0.0, 1.0, 0.0, 3.0)) < 0.01 and within(y, 0.0, 3.0)


def test_uniform_laws_are_the_original_grid():
    lat = draw(3000, "uniform", seed=2)
    assert set(lat["shape"].tolist()) == {0, 1, 2}
    assert torch.isin(lat["scale"], SCALE_GRID).all() and len(lat["scale"].unique()) == 6
    assert torch.isin(lat["orientation"], ORIENTATION_GRID).all() and len(lat["orientation"].unique()) == 40
    for k in ("pos_x", "pos_y"):
        assert torch.isin(lat[k], POSITION_GRID).all() and len(lat[k].unique()) == 32


def test_grid_option_snaps_paper_latents():
    lat = draw(500, "paper", grid=True)
    assert torch.isin(lat["scale"], SCALE_GRID).all()
    assert torch.isin(lat["pos_x"], POSITION_GRID).all() and torch.isin(lat["pos_y"], POSITION_GRID).all()
    step = 2 * math.pi / 40
    k = lat["orientation"] / step
    assert (k - k.round()).abs().max() < 1e-4 and within(lat["orientation"], 0.0, 2 * math.pi - step + 1e-5)


def test_user_laws_as_mapping_and_dataclass():
    fixed = {"scale": constant(0.7), "orientation": constant(1.0), "pos_x": uniform(0.2, 0.3), "pos_y": constant(0.4)}
    lat = draw(50, {"heart": fixed})
    assert (lat["shape"] == 2).all() and (lat["scale"] == 0.7).all() and (lat["orientation"] == 1.0).all()
    assert within(lat["pos_x"], 0.2, 0.3)
    law = ShapeLaw(**fixed)
    lat = draw(300, DSpritesLaws(law, law, None, weights=(3.0, 1.0, 5.0)))
    frac_square = (lat["shape"] == 0).float().mean()
    assert not (lat["shape"] == 2).any() and abs(frac_square - 0.75) < 0.08


def test_mixture_and_choice_samplers():
    g = torch.Generator().manual_seed(1)
    x = mixture([constant(-1.0), constant(1.0)], weights=[1.0, 3.0])(4000, g)
    assert set(x.unique().tolist()) == {-1.0, 1.0} and abs((x > 0).float().mean() - 0.75) < 0.03
    y = choice([0.25, 0.5])(100, g)
    assert set(y.unique().tolist()) == {0.25, 0.5}


def test_bad_laws_are_rejected():
    fixed = {"scale": constant(0.7), "orientation": constant(0.0), "pos_x": constant(0.5), "pos_y": constant(0.5)}
    with pytest.raises(ValueError, match="unknown shape names"):
        draw(4, {"triangle": fixed})
    with pytest.raises(ValueError, match="missing \\['pos_y'\\]"):
        draw(4, {"square": {k: v for k, v in fixed.items() if k != "pos_y"}})
    with pytest.raises(ValueError, match="scale must be in"):
        draw(4, {"square": {**fixed, "scale": constant(2.0)}})
    with pytest.raises(ValueError, match="pos_x must be in"):
        draw(4, {"square": {**fixed, "pos_x": uniform(0.5, 1.5)}})
    with pytest.raises(ValueError, match="expected a tensor of shape"):
        draw(4, {"square": {**fixed, "pos_x": lambda n, g: torch.zeros(n + 1)}})
    with pytest.raises(ValueError, match="at least one shape"):
        DSpritesLaws(None, None, None)
    with pytest.raises(ValueError, match="std > 0"):
        trunc_normal(0.0, -1.0, 0.0, 1.0)
