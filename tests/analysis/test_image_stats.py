"""Image statistics and the exact 1-D Wasserstein distance."""

import math

import numpy as np
import pytest
import torch

from sgm_pyro.analysis import circular_std_deg, image_statistics, wasserstein_1d, wrap_degrees
from sgm_pyro.data.dsprites import dsprites


def test_w1_of_shifted_sample_is_the_shift():
    a = torch.randn(257)
    assert wasserstein_1d(a, a + 0.3) == pytest.approx(0.3, abs=1e-6)
    assert wasserstein_1d(a + 0.3, a) == pytest.approx(0.3, abs=1e-6)


def test_w1_of_identical_samples_is_zero():
    a = np.random.default_rng(0).normal(size=100)
    assert wasserstein_1d(a, a) == 0.0
    assert wasserstein_1d(a, np.random.default_rng(1).permutation(a)) == 0.0
    # The same distribution repeated: the empirical CDFs coincide even though the sizes differ.
    assert wasserstein_1d(a, np.tile(a, 3)) == pytest.approx(0.0, abs=1e-12)


def test_w1_hand_computed_different_sizes():
    assert wasserstein_1d([0.0], [0.0, 1.0]) == pytest.approx(0.5)
    # Quantile form: mean over thirds of |{0, 1, 2} - 1.5| = (1.5 + 0.5 + 0.5) / 3.
    assert wasserstein_1d([0.0, 1.0, 2.0], [1.5]) == pytest.approx(5 / 6)
    # Equal sizes: the mean absolute difference of sorted values.
    rng = np.random.default_rng(2)
    a, b = rng.normal(size=50), rng.exponential(size=50)
    assert wasserstein_1d(a, b) == pytest.approx(np.abs(np.sort(a) - np.sort(b)).mean())


def test_w1_rejects_empty_and_non_finite():
    with pytest.raises(ValueError, match="empty"):
        wasserstein_1d([], [1.0])
    with pytest.raises(ValueError, match="NaN"):
        wasserstein_1d([1.0, float("nan")], [1.0])


def _square(size: int, top: int, left: int, side: int) -> torch.Tensor:
    img = -torch.ones(1, 1, size, size)
    img[..., top:top + side, left:left + side] = 1.0
    return img


def test_statistics_of_a_square_at_a_known_position():
    x = torch.cat([_square(64, 10, 30, 10), _square(64, 40, 0, 4)])
    stats = image_statistics(x)
    assert set(stats) == {"com_x", "com_y", "area"}
    assert torch.allclose(stats["com_x"], torch.tensor([34.5 / 63, 1.5 / 63]))
    assert torch.allclose(stats["com_y"], torch.tensor([14.5 / 63, 41.5 / 63]))
    assert torch.allclose(stats["area"], torch.tensor([100 / 4096, 16 / 4096]))


def test_statistics_of_non_square_images_use_their_own_width_and_height():
    img = -torch.ones(1, 1, 11, 21)
    img[..., 10, 20] = 1.0  # the bottom-right pixel
    stats = image_statistics(img)
    assert stats["com_x"].item() == pytest.approx(1.0)
    assert stats["com_y"].item() == pytest.approx(1.0)


def test_blank_image_has_no_centre_and_zero_area():
    stats = image_statistics(-torch.ones(2, 1, 8, 8))
    assert torch.isnan(stats["com_x"]).all() and torch.isnan(stats["com_y"]).all()
    assert (stats["area"] == 0).all()


def test_statistics_follow_dsprites_positions():
    x, latents = dsprites(24, seed=3)
    stats = image_statistics(x)
    # The renderer centres a shape's mass at pixel coordinate 15 + 34·pos (pixel j spans [j, j+1)).
    assert torch.allclose(stats["com_x"] * 63, 14.5 + 34 * latents["pos_x"], atol=0.6)
    assert torch.allclose(stats["com_y"] * 63, 14.5 + 34 * latents["pos_y"], atol=0.6)


@pytest.mark.parametrize("bad, match", [(torch.zeros(3, 3, 8, 8), "one channel"),
                                        (torch.zeros(3, 8, 8), r"\(N, 1, H, W\)"),
                                        (torch.zeros(0, 1, 8, 8), "empty"),
                                        (torch.full((1, 1, 8, 8), 255.0), "range")])
def test_statistics_validate_their_input(bad, match):
    with pytest.raises(ValueError, match=match):
        image_statistics(bad)


def test_circular_std_ignores_the_seam():
    angles = torch.deg2rad(torch.tensor([179.0, -179.0, 180.0, -180.0]))
    # Deviations from 180° are 1, 1, 0, 0 degrees: std sqrt(2 / 4).
    assert circular_std_deg(angles).item() == pytest.approx(math.sqrt(0.5), rel=1e-3)
    assert circular_std_deg(torch.zeros(5)).item() == 0.0
    small = torch.randn(20000) * math.radians(5.0)
    assert circular_std_deg(small).item() == pytest.approx(5.0, rel=0.03)
    assert torch.equal(wrap_degrees(torch.tensor([190.0, -190.0, 0.0])), torch.tensor([-170.0, 170.0, 0.0]))
