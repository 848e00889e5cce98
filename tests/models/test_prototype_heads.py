"""The pose heads of PrototypeInference: the reference real-valued angle and the point on the circle."""

import math

import pytest
import torch

import sgm_pyro
from sgm_pyro.models.prototype import circular_index, circular_indices


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


def test_harmonics_need_a_head_that_reads_them():
    group = sgm_pyro.AffineGroup(bounds=(0.5, 0.5, math.pi, 0.5, 0.5))
    for head in ("real", "circle"):  # before format 5 of the checkpoints these heads ignored them silently
        with pytest.raises(ValueError, match="rotation_harmonics"):
            sgm_pyro.PrototypeInference(group, (1, 8, 8), hidden=(16,), rotation_head=head, rotation_harmonics=(4, 1))
    with pytest.raises(ValueError, match="harmonics must be decreasing"):
        sgm_pyro.PrototypeInference(group, (1, 8, 8), hidden=(16,), rotation_head="equivariant",
                                    rotation_harmonics=(4, 3))
    net = sgm_pyro.PrototypeInference(group, (1, 8, 8), hidden=(16,), rotation_head="equivariant",
                                      rotation_harmonics=(4, 2, 1))
    assert net.rotation_harmonics == net.equivariant.harmonics == (4, 2, 1)


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


def galaxy(squash=True, hue_bound=0.5):
    return sgm_pyro.ProductGroup(sgm_pyro.ColorGroup(bounds=(hue_bound, 2.31, 0.51), offset=(0.5, 0, 0), squash=squash),
                                 sgm_pyro.AffineGroup(bounds=(0.25, 0.25, math.pi, 0.25, 0.25), squash=squash))


def hue_wrapped(d):
    return torch.remainder(d + 0.5, 1.0) - 0.5


def test_a_full_colour_circle_is_a_circular_coordinate():
    g = galaxy()
    assert circular_indices(g) == (g.names.index("rot"), g.names.index("hue"))
    assert circular_index(galaxy(hue_bound=0.4), "hue") is None
    assert circular_indices(sgm_pyro.AffineGroup(bounds=(0.5, 0.5, 1.0, 0.5, 0.5))) == ()


@pytest.mark.parametrize("squash", [False, True])
@pytest.mark.parametrize("rotation_head", ["real", "equivariant"])
def test_the_equivariant_hue_head_shifts_with_the_image_hue_by_construction(squash, rotation_head):
    torch.manual_seed(0)
    g = galaxy(squash)
    net = sgm_pyro.PrototypeInference(g, (3, 8, 8), hidden=(16,), rotation_head=rotation_head,
                                      hue_head="equivariant", rotation_hidden=(32,))
    hue = g.names.index("hue")
    x = torch.rand(5, 3, 8, 8) * 2 - 1  # any image: a hue shift is pointwise (and 8x8 is not pooled)
    f0 = net.mode(x)
    tol = 2e-3 if squash else 1e-5
    for k in (1, 3, 6):
        eta = torch.zeros(5, g.dim)
        eta[:, hue] = k / 8
        f = net.mode(g.apply(x, eta))
        assert hue_wrapped(f[:, hue] - f0[:, hue] - k / 8).abs().max() < tol, k
        assert (f[:, hue] - g.offset[hue]).abs().max() <= g.bounds[hue]  # written inside the box
    q = net.distribution(x)
    assert torch.isfinite(q.log_prob(q.rsample())).all()


@pytest.mark.parametrize("squash", [False, True])
def test_the_circle_hue_head_starts_at_the_box_centre_and_reaches_every_hue(squash):
    g = galaxy(squash)
    net = sgm_pyro.PrototypeInference(g, (3, 8, 8), hidden=(16,), rotation_head="circle", hue_head="circle")
    hue, rot = g.names.index("hue"), g.names.index("rot")
    # one extra output per coordinate read off a point: rotation's, then hue's
    assert net.head[-1].out_features == g.dim + 2
    x = torch.rand(3, 3, 8, 8) * 2 - 1
    torch.testing.assert_close(net.mode(x), g.offset.expand(3, -1))  # zero outputs: the box centre
    last = net.head[-1]
    for h in (0.1, 0.45, 0.9, 0.999):
        a = 2 * math.pi * (h - 0.5)  # the point's angle is 2π (hue − offset)
        with torch.no_grad():
            last.weight.zero_()
            last.bias.zero_()
            last.bias[hue] = math.cos(a) - 1.0
            last.bias[-1] = math.sin(a)
        got = net.mode(x)
        torch.testing.assert_close(got[:, hue], torch.full((3,), h), atol=3e-3 if squash else 1e-5, rtol=0)
        torch.testing.assert_close(got[:, rot], torch.zeros(3))


def test_an_unknown_hue_head_is_refused():
    with pytest.raises(ValueError, match="hue_head must be one of"):
        sgm_pyro.PrototypeInference(galaxy(), (3, 8, 8), hue_head="quaternion")


def test_harmonics_give_symmetric_shapes_a_pose_and_keep_quarter_turns_exact():
    from sgm_pyro.models.equivariant_angle import EquivariantPoint
    torch.manual_seed(1)
    group = sgm_pyro.AffineGroup(bounds=(math.pi,), generators=("rot",))
    point = EquivariantPoint((1, 16, 16), copies=8, hidden=(32,), harmonics=(4, 2, 1))
    noise = torch.rand(6, 1, 16, 16) * 2 - 1
    c2 = noise + torch.rot90(noise, 2, dims=(-2, -1))       # symmetric under a half-turn
    c4 = c2 + torch.rot90(c2, 1, dims=(-2, -1))             # ... and under a quarter turn
    size = lambda x: point(x, group, 0).norm(dim=-1)       # (N, harmonics) magnitudes of v_4, v_2, v_1
    assert (size(c4)[:, 1:] < 1e-4).all() and (size(c4)[:, 0] > 1e-3).all()
    assert (size(c2)[:, 2] < 1e-4).all() and (size(c2)[:, :2] > 1e-3).all()
    assert (size(noise) > 1e-3).all()
    # quarter turns of any image turn the unwrapped angle by exactly a quarter turn
    a0 = point.angle(noise, group, 0)
    for q in (1, 2, 3):
        step = wrapped(point.angle(torch.rot90(noise, q, dims=(-2, -1)), group, 0) - a0 - q * math.pi / 2)
        assert step.abs().max() < 1e-4, q
    # an image's half-turn is 180° away, a C2 shape's quarter turn 90° away (modulo its 180° cell)
    half = wrapped(point.angle(torch.rot90(c2, 1, dims=(-2, -1)), group, 0) - point.angle(c2, group, 0))
    torch.testing.assert_close(torch.remainder(half, math.pi), torch.full((6,), math.pi / 2), atol=1e-4, rtol=0)
    # gradients reach every harmonic's φ through the straight-through candidates
    point.angle(noise, group, 0).sum().backward()
    grad = point.phi[-1].weight.grad.abs().sum(1).view(3, 2).sum(1)
    assert (grad > 0).all()


def test_bad_harmonics_are_refused():
    from sgm_pyro.models.equivariant_angle import EquivariantPoint
    for bad in [(), (3, 2), (2, 4), (8, 1), (0,)]:
        with pytest.raises(ValueError, match="harmonics"):
            EquivariantPoint((1, 8, 8), copies=8, harmonics=bad)

