"""The pixel-set colour head: blind to where pixels are, so geometry cannot leak into the colour pose."""

import math

import pytest
import torch

import sgm_pyro
from sgm_pyro.models.pixel_set_colour import PixelSetColour


def product_group():
    return sgm_pyro.ProductGroup(sgm_pyro.ColorGroup(bounds=(0.5, 2.31, 0.51), offset=(0.5, 0, 0), squash=True),
                                 sgm_pyro.AffineGroup(bounds=(0.25, 0.25, math.pi, 0.25, 0.25), squash=True))


def randomised(module):
    """Leave the zero-initialised start: random weights in every layer."""
    torch.manual_seed(0)
    for p in module.parameters():
        torch.nn.init.normal_(p, std=0.5)
    return module


def shapes(n=3, size=16):
    torch.manual_seed(1)
    x = -torch.ones(n, 3, size, size)
    x[:, :, 3:9, 2:12] = torch.rand(n, 3, 1, 1) * 1.6 - 0.8
    return x


def test_it_starts_at_the_identity_and_refuses_bad_sizes():
    head = PixelSetColour(3, 2)
    assert torch.equal(head(shapes()), torch.zeros(3, 2))
    with pytest.raises(ValueError, match="positive"):
        PixelSetColour(3, 0)


@pytest.mark.parametrize("move", ["roll", "rot90", "flip", "transpose"])
def test_a_permutation_of_the_pixels_leaves_it_unchanged(move):
    """A shift, quarter turn or flip only moves pixels: the set head's output is the same, the pose net's is not."""
    x = shapes()
    moved = {"roll": lambda t: torch.roll(t, (4, -3), (2, 3)), "rot90": lambda t: torch.rot90(t, 1, (2, 3)),
             "flip": lambda t: torch.flip(t, (3,)), "transpose": lambda t: t.transpose(2, 3)}[move](x)
    head = randomised(PixelSetColour(3, 2, input_size=None))
    torch.testing.assert_close(head(moved), head(x), rtol=1e-5, atol=1e-5)
    pose = randomised(sgm_pyro.nn.MLP(3 * 16 * 16, (16,), 2))
    assert (pose(moved) - pose(x)).abs().max() > 1e-3


def test_it_sees_a_change_of_colour():
    x = shapes()
    brighter = sgm_pyro.ColorGroup(offset=(0.0, 0, 0)).apply(x, torch.tensor([[0.0, 0.0, 0.2]]).expand(3, -1))
    head = randomised(PixelSetColour(3, 2, input_size=None))
    assert (head(brighter) - head(x)).abs().max() > 1e-3


def test_prototype_inference_reads_saturation_and_value_off_the_set_head():
    group = product_group()
    net = sgm_pyro.PrototypeInference(group, (3, 16, 16), hidden=(16,))
    assert net.colour_head == "set"
    assert [group.names[i] for i in net.colour_indices] == ["log_sat", "log_val"]
    real_hue = sgm_pyro.PrototypeInference(group, (3, 16, 16), hidden=(16,), hue_head="real")
    assert [group.names[i] for i in real_hue.colour_indices] == ["hue", "log_sat", "log_val"]
    reference = sgm_pyro.PrototypeInference(group, (3, 16, 16), hidden=(16,), colour_head="mlp")
    assert reference.colour is None and reference.colour_head == "mlp"
    affine = sgm_pyro.PrototypeInference(sgm_pyro.AffineGroup(), (1, 16, 16), hidden=(16,))
    assert affine.colour is None and affine.colour_head == "mlp"  # nothing to read without a colour group
    with pytest.raises(ValueError, match="colour_head"):
        sgm_pyro.PrototypeInference(group, (3, 16, 16), colour_head="hsv")

    x = shapes(4)
    randomised(net.colour)
    eta = net.mode(x)
    sat, val = group.names.index("log_sat"), group.names.index("log_val")
    expected = group.to_box(torch.cat([torch.zeros(4, sat), net.colour(x), torch.zeros(4, group.dim - val - 1)], 1))
    torch.testing.assert_close(eta[:, [sat, val]], expected[:, [sat, val]])
    eta[:, [sat, val]].sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in net.colour.parameters())
