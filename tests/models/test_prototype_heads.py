"""The pose heads of PrototypeInference: the reference real-valued angle and the point on the circle."""

import math

import pytest
import torch

import sgm_pyro
from sgm_pyro.models.prototype import circular_index


def inference(squash, head="circle", bounds=(0.5, 0.5, math.pi, 0.5, 0.5)):
    group = sgm_pyro.AffineGroup(bounds=bounds, squash=squash)
    return sgm_pyro.PrototypeInference(group, (1, 8, 8), hidden=(16,), rotation_head=head)


def set_point(net, phi):
    """Make the circle head output the point (cos φ, sin φ) for every input (last layer: bias only)."""
    last = net.head[-1]
    with torch.no_grad():
        last.weight.zero_()
        last.bias.zero_()
        last.bias[net.circle] = math.cos(phi) - 1.0  # the head adds 1 to this output
        last.bias[-1] = math.sin(phi)


@pytest.mark.parametrize("squash", [False, True])
@pytest.mark.parametrize("head", ["circle", "real"])
def test_training_starts_at_the_identity(squash, head):
    net = inference(squash, head)
    x = torch.rand(4, 1, 8, 8) * 2 - 1
    assert torch.equal(net.mode(x), torch.zeros(4, 5))


@pytest.mark.parametrize("squash", [False, True])
def test_the_circle_head_reaches_every_angle_continuously_through_the_seam(squash):
    net = inference(squash)
    x = torch.rand(3, 1, 8, 8) * 2 - 1
    rot = net.group.names.index("rot")
    for phi in [0.3, -2.0, math.pi - 1e-3, -math.pi + 1e-3, 3.0, -3.0]:
        set_point(net, phi)
        got = net.mode(x)[:, rot]
        # squashed: atanh of a value this close to ±1 loses digits in float32, so allow a little more
        torch.testing.assert_close(got, torch.full((3,), phi), atol=2e-3 if squash else 1e-5, rtol=0)
    # across the seam the rotation itself changes continuously: the warp matrices agree
    set_point(net, math.pi - 1e-3)
    a = net.group.matrix(net.mode(x))
    set_point(net, -math.pi + 1e-3)
    b = net.group.matrix(net.mode(x))
    assert (a - b).abs().max() < 5e-3


def test_the_circle_head_has_one_extra_output_and_a_finite_density():
    net = inference(True)
    assert net.head[-1].out_features == 6 and inference(True, "real").head[-1].out_features == 5
    set_point(net, math.pi - 1e-3)
    x = torch.rand(3, 1, 8, 8) * 2 - 1
    q = net.distribution(x)
    assert torch.isfinite(q.log_prob(q.rsample())).all()


def test_the_circle_head_is_used_only_when_the_box_covers_the_circle():
    assert circular_index(sgm_pyro.AffineGroup(bounds=(0.5, 0.5, math.pi, 0.5, 0.5))) == 2
    assert circular_index(sgm_pyro.AffineGroup(bounds=(0.5, 0.5, 1.0, 0.5, 0.5))) is None
    assert circular_index(sgm_pyro.AffineGroup(bounds=(0.5, 0.5), generators=("tx", "ty"))) is None
    assert inference(False, bounds=(0.5, 0.5, 1.0, 0.5, 0.5)).circle is None


def test_an_unknown_head_is_refused():
    with pytest.raises(ValueError, match="rotation_head must be one of"):
        inference(False, "quaternion")


def smooth_images(n, size=28, seed=0):
    """Sums of Gaussian blobs inside the disc, so rotations by any angle barely change them."""
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, size), torch.linspace(-1, 1, size), indexing="ij")
    c = torch.rand(n, 3, 2, generator=g) - 0.5
    blobs = sum(torch.exp(-((xx - c[:, j, 0, None, None]) ** 2 + (yy - c[:, j, 1, None, None]) ** 2) / 0.05)
                for j in range(3))
    return (blobs[:, None] * 2 - 1).clamp(-1, 1)


def wrapped(a):
    return torch.remainder(a + math.pi, 2 * math.pi) - math.pi


@pytest.mark.parametrize("squash", [False, True])
@pytest.mark.parametrize("copies", [4, 8])
def test_the_equivariant_head_turns_with_the_image_by_construction(squash, copies):
    torch.manual_seed(0)
    group = sgm_pyro.AffineGroup(bounds=(0.25, 0.25, math.pi, 0.25, 0.25), squash=squash)
    net = sgm_pyro.PrototypeInference(group, (1, 28, 28), hidden=(16,), rotation_head="equivariant",
                                      rotation_copies=copies, rotation_hidden=(32,))
    rot = group.names.index("rot")
    noise = torch.rand(6, 1, 28, 28) * 2 - 1  # any image: quarter turns of the pixel grid are exact
    f0 = net.mode(noise)[:, rot]
    tol = 3e-3 if squash else 1e-4
    for quarter in (1, 2, -1):
        turned = torch.rot90(noise, quarter, dims=(-2, -1))
        eta = group.identity(6)
        eta[:, rot] = quarter * math.pi / 2
        # the group's rotation and the grid's quarter turn agree, so the convention is pinned too
        torch.testing.assert_close(group.apply(noise, eta), turned, atol=1e-4, rtol=0)
        step = wrapped(net.mode(turned)[:, rot] - f0)
        assert wrapped(step - quarter * math.pi / 2).abs().max() < tol, (quarter, step)
    # a digit and its half-turn are told apart from the first step: their poses are 180° apart
    x = smooth_images(6)
    half = wrapped(net.mode(torch.rot90(x, 2, dims=(-2, -1)))[:, rot] - net.mode(x)[:, rot])
    assert (half.abs() - math.pi).abs().max() < tol
    # between the cyclic group's angles it is only approximately equivariant (before any training: a
    # random φ); with 8 copies, smooth images stay close
    if copies == 8:
        eta = group.identity(6)
        eta[:, rot] = 0.3
        off = wrapped(net.mode(group.apply(x, eta))[:, rot] - net.mode(x)[:, rot] - 0.3)
        assert off.abs().max() < 0.5
    q = net.distribution(x)
    assert torch.isfinite(q.log_prob(q.rsample())).all()


def test_the_equivariant_head_falls_back_to_the_real_head_on_a_partial_box():
    group = sgm_pyro.AffineGroup(bounds=(0.5, 0.5, 1.0, 0.5, 0.5))
    net = sgm_pyro.PrototypeInference(group, (1, 8, 8), hidden=(16,), rotation_head="equivariant")
    assert net.rotation_head == "real" and net.equivariant is None
    assert torch.equal(net.mode(torch.zeros(2, 1, 8, 8)), torch.zeros(2, 5))


@pytest.mark.parametrize("copies,size", [(4, 12), (8, 12), (12, 12), (6, 12), (8, (10, 14))])
def test_the_rotated_copies_equal_one_warp_each(copies, size):
    from sgm_pyro.models.equivariant_angle import EquivariantPoint
    h, w = (size, size) if isinstance(size, int) else size
    group = sgm_pyro.AffineGroup(bounds=(0.25, 0.25, math.pi, 0.25, 0.25))
    point = EquivariantPoint((1, h, w), copies=copies)
    x = torch.rand(3, 1, h, w) * 2 - 1
    got = point.rotated_copies(x, group, 2)  # quarter turns by rot90 where the grid allows it
    eta = torch.zeros(copies, 3, 5)
    eta[..., 2] = -2 * math.pi * torch.arange(copies)[:, None] / copies
    eta[..., 2] = wrapped(eta[..., 2])
    want = group.apply(x.expand(copies, *x.shape).reshape(-1, 1, h, w), eta.reshape(-1, 5))
    torch.testing.assert_close(got.reshape(-1, 1, h, w), want, atol=1e-5, rtol=0)
