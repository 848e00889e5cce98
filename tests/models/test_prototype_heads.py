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
