"""Colour group: HSV round trips, hue wrapping, straight-through clip (SPEC 2.2)."""

import pytest
import torch

from sgm_pyro.groups import ColorGroup, hsv_to_rgb, rgb_to_hsv


def rgb_images(n=4, size=6, seed=0, lo=0.2, hi=0.8):
    g = torch.Generator().manual_seed(seed)
    rgb = lo + (hi - lo) * torch.rand(n, 3, size, size, generator=g, dtype=torch.float64)
    return rgb * 2 - 1


def test_hsv_round_trip():
    rgb = (rgb_images(lo=0.0, hi=1.0) + 1) / 2
    assert torch.allclose(hsv_to_rgb(rgb_to_hsv(rgb)), rgb, atol=1e-10)


def test_known_colours():
    pure = torch.tensor([[1.0, 0, 0], [0, 1.0, 0], [0, 0, 1.0]]).view(3, 3, 1, 1)
    hsv = rgb_to_hsv(pure).view(3, 3)
    assert torch.allclose(hsv[:, 0], torch.tensor([0.0, 1 / 3, 2 / 3]), atol=1e-6)
    assert torch.allclose(hsv[:, 1:], torch.ones(3, 2))


def test_hue_shift_maps_red_to_green_and_wraps_modulo_one():
    g = ColorGroup()
    red = torch.tensor([1.0, -1.0, -1.0]).view(1, 3, 1, 1)
    green = torch.tensor([-1.0, 1.0, -1.0]).view(1, 3, 1, 1)
    assert torch.allclose(g.apply(red, torch.tensor([[1 / 3, 0.0, 0.0]])), green, atol=1e-5)
    assert torch.allclose(g.apply(red, torch.tensor([[1 / 3 + 1.0, 0.0, 0.0]])), green, atol=1e-5)
    assert torch.allclose(g.apply(red, torch.tensor([[-2 / 3, 0.0, 0.0]])), green, atol=1e-5)


def test_inverse_round_trip_when_nothing_clips():
    g = ColorGroup()
    x = rgb_images()
    e = torch.tensor([[0.3, -0.2, -0.1]], dtype=torch.float64).expand(4, 3)
    assert torch.allclose(g.apply(g.apply(x, e), g.inverse(e)), x, atol=1e-9)
    assert torch.allclose(g.apply_chain(x, [e, g.inverse(e)]), x, atol=1e-9)


def test_chain_adds_parameters():
    g = ColorGroup()
    x = rgb_images()
    a = torch.tensor([[0.1, 0.1, -0.05]], dtype=torch.float64).expand(4, 3)
    b = torch.tensor([[0.2, -0.3, -0.1]], dtype=torch.float64).expand(4, 3)
    assert torch.allclose(g.apply_chain(x, [a, b]), g.apply(x, a + b), atol=1e-12)
    assert torch.allclose(g.apply_chain(x, [a, b]), g.apply(g.apply(x, a), b), atol=1e-9)


def test_clip_is_forward_clip_with_identity_gradient():
    g = ColorGroup()
    x = rgb_images().requires_grad_()
    e = torch.tensor([[0.0, 0.0, 2.0]], dtype=torch.float64).expand(4, 3).clone().requires_grad_()
    y = g.apply(x, e)
    assert y.max() <= 1.0 + 1e-12 and torch.isclose(y.max(), torch.tensor(1.0, dtype=torch.float64))
    y.sum().backward()
    # A hard clip would zero the gradient of every saturated pixel; straight-through keeps it positive.
    assert (e.grad[:, 2] > 0).all() and x.grad.abs().sum() > 0


def test_needs_three_channels():
    with pytest.raises(ValueError, match="3 \\(RGB\\) channels"):
        ColorGroup().apply(torch.zeros(1, 1, 4, 4), torch.zeros(1, 3))
