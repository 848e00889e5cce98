"""The rotated-MNIST protocol: one fixed, seeded rotation per image, counter-clockwise positive."""

import math

import pytest
import torch

from sgm_pyro.data import rotate_fixed


def bars(n, size=28):
    """Horizontal bars (rows 13-14, columns 4-23) on a -1 background."""
    x = torch.full((n, 1, size, size), -1.0)
    x[:, :, 13:15, 4:24] = 1.0
    return x


def principal_angle(image):
    """Angle of the main axis of the bright mass, counter-clockwise as displayed, in (-π/2, π/2]."""
    w = (image[0] + 1).clamp_min(0)
    idx = torch.arange(image.shape[-1], dtype=torch.float32)
    rows, cols = torch.meshgrid(idx, idx, indexing="ij")
    x, y = cols, -rows  # y up, so counter-clockwise as displayed is a positive angle
    total = w.sum()
    mx, my = (w * x).sum() / total, (w * y).sum() / total
    cxx = (w * (x - mx) ** 2).sum() / total
    cyy = (w * (y - my) ** 2).sum() / total
    cxy = (w * (x - mx) * (y - my)).sum() / total
    return 0.5 * math.atan2(2 * cxy, cxx - cyy)


def wrap_half_turn(a):
    return (a + math.pi / 2) % math.pi - math.pi / 2


def test_deterministic_by_seed():
    x = bars(16)
    r1, a1 = rotate_fixed(x, 90, seed=5)
    r2, a2 = rotate_fixed(x, 90, seed=5)
    r3, a3 = rotate_fixed(x, 90, seed=6)
    assert torch.equal(r1, r2) and torch.equal(a1, a2)
    assert not torch.equal(a1, a3) and not torch.equal(r1, r3)


def test_angles_cover_the_range():
    _, angles = rotate_fixed(bars(400), 15, seed=0)
    theta = math.radians(15)
    assert angles.shape == (400,) and angles.abs().max() <= theta
    assert angles.max() > 0.9 * theta and angles.min() < -0.9 * theta
    assert abs(angles.mean()) < 0.1 * theta


def test_bars_turn_by_their_angle_counter_clockwise():
    rotated, angles = rotate_fixed(bars(32), 80, seed=2)
    assert rotated.shape == (32, 1, 28, 28) and rotated.min() >= -1 and rotated.max() <= 1
    measured = torch.tensor([principal_angle(img) for img in rotated])
    assert principal_angle(bars(1)[0]) == pytest.approx(0.0, abs=1e-6)
    errors = torch.tensor([wrap_half_turn(m - a) for m, a in zip(measured.tolist(), angles.tolist())])
    assert errors.abs().max() < 0.05


def test_zero_range_is_the_identity():
    x = bars(3)
    rotated, angles = rotate_fixed(x, 0, seed=0)
    assert (angles == 0).all() and torch.allclose(rotated, x, atol=1e-5)


def test_validation():
    with pytest.raises(ValueError, match="max_degrees must be in \\[0, 180\\]"):
        rotate_fixed(bars(2), 200)
    with pytest.raises(ValueError, match="\\(N, C, H, W\\)"):
        rotate_fixed(torch.zeros(28, 28), 15)
    with pytest.raises(ValueError, match="floating point"):
        rotate_fixed(torch.zeros(2, 1, 28, 28, dtype=torch.uint8), 15)
