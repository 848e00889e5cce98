"""The moment rotation head: exact under quarter turns and shifts, a square's angle within its cell,
a heart's on the whole circle, and a network that places shapes by A(η)'s translation."""

import math

import pytest
import torch

import sgm_pyro
from sgm_pyro.data import dsprites
from sgm_pyro.groups import AffineGroup
from sgm_pyro.models.moment_angle import MomentAngle

SHAPES = {"square": 0, "ellipse": 1, "heart": 2}
CELL = {"square": math.pi / 2, "ellipse": math.pi, "heart": 2 * math.pi}


def wrapped(a, period):
    return torch.remainder(a + period / 2, period) - period / 2


def shapes(name, n=48, seed=0, orientation=None):
    # hearts at the paper's sizes: a small heart's branch is read off weaker moments (see MomentAngle)
    low = 0.9 if name == "heart" else 0.6
    law = {"scale": lambda k, g: low + (1 - low) * torch.rand(k, generator=g),
           "orientation": orientation or (lambda k, g: 2 * math.pi * torch.rand(k, generator=g)),
           "pos_x": lambda k, g: 0.2 + 0.6 * torch.rand(k, generator=g),
           "pos_y": lambda k, g: 0.2 + 0.6 * torch.rand(k, generator=g)}
    return dsprites(n, laws={name: law}, seed=seed)


@pytest.mark.parametrize("name", list(SHAPES))
def test_a_quarter_turn_turns_the_angle_by_a_quarter_turn_within_the_cell(name):
    x, _ = shapes(name)
    head = MomentAngle()
    a, b = head.angle(x), head.angle(torch.rot90(x, 1, dims=(-2, -1)))  # anticlockwise as displayed
    err = wrapped(b - a - math.pi / 2, CELL[name])
    assert err.abs().max() < 1e-4


def test_a_shift_leaves_the_angle_unchanged():
    x, _ = shapes("heart", seed=1)
    shifted = torch.roll(x, shifts=(3, -2), dims=(-2, -1))  # the shapes stay clear of the border
    torch.testing.assert_close(MomentAngle().angle(shifted), MomentAngle().angle(x), atol=1e-4, rtol=0)


@pytest.mark.parametrize("name", list(SHAPES))
def test_the_angle_follows_the_orientation_modulo_the_shapes_symmetry(name):
    """Squares modulo 90°, ellipses modulo 180°, hearts (not point-symmetric) on the whole circle."""
    x, lat = shapes(name, n=96, seed=2)
    resid = wrapped(MomentAngle().angle(x) - lat["orientation"], CELL[name])
    spread = wrapped(resid - resid[0], CELL[name])  # one fixed offset per shape: its canonical orientation
    assert spread.abs().max() < math.radians(5)


def test_the_moments_are_normalised_and_vanish_by_symmetry():
    """A square is read off its 4th moment and an ellipse, whose whitened image is a disk, off its 2nd;
    only the heart, which is not point-symmetric, has a 3rd moment above the threshold."""
    head = MomentAngle()
    for name, strong, weak in (("square", "w4", "w3"), ("ellipse", "nu2", "w4"), ("heart", "w3", "w4")):
        nu = head.moments(shapes(name, n=32, seed=3)[0])
        assert all((v.abs() <= 1 + 1e-6).all() for v in nu.values())
        assert nu[strong].abs().min() > head.threshold > nu[weak].abs().max(), name
        if name != "heart":
            assert nu["w3"].abs().max() < head.threshold


@pytest.mark.parametrize("name", ["square", "heart"])
def test_a_stretch_barely_moves_the_angle_of_a_shape_read_off_its_whitened_moments(name):
    """Stage 1's views stretch the shapes; a stretched square's 2nd moment would otherwise win."""
    x, _ = shapes(name, n=48, seed=5, orientation=lambda k, g: torch.zeros(k))
    group = AffineGroup(bounds=(0.75, 0.75, math.pi, 0.75, 0.75))
    eta = torch.zeros(48, 5)
    eta[:, 3:] = 0.3 * (2 * torch.rand(48, 2, generator=torch.Generator().manual_seed(6)) - 1)
    head = MomentAngle()
    change = wrapped(head.angle(group.apply(x, eta)) - head.angle(x), CELL[name])
    assert change.abs().max() < math.radians(2)


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="threshold"):
        MomentAngle(threshold=1.5)
    group = AffineGroup(bounds=(0.5, 0.5, math.pi, 0.5, 0.5))
    with pytest.raises(ValueError, match="hue_head"):
        sgm_pyro.PrototypeInference(group, (1, 8, 8), hue_head="moments")


def test_translation_coordinates_give_the_asked_translation():
    g = AffineGroup(bounds=(1.5, 1.5, math.pi, 1.0, 1.0))
    eta = g.sample_uniform(64, generator=torch.Generator().manual_seed(0)).double()
    t = 0.6 * (2 * torch.rand(64, 2, generator=torch.Generator().manual_seed(1), dtype=torch.float64) - 1)
    placed = eta.clone()
    placed[:, :2] = g.translation_coordinates(eta, t)
    a = g.matrix(placed)
    torch.testing.assert_close(a[:, :2, 2], t, atol=1e-12, rtol=0)
    torch.testing.assert_close(a[:, :2, :2], g.matrix(eta)[:, :2, :2])  # the linear part is kept
    with pytest.raises(ValueError, match="tx and ty"):
        AffineGroup(bounds=(math.pi,), generators=("rot",)).translation_coordinates(eta[:, 2:3], t)


@pytest.mark.parametrize("squash", [False, True])
def test_the_moment_head_un_rotates_squares_within_their_cell(squash):
    """Prototypes of squares at any orientation come out at one orientation modulo 90°, and the
    network's zero-initialised translation puts the prototype's centre at the image centre."""
    group = AffineGroup(bounds=(0.75, 0.75, math.pi, 0.75, 0.75), squash=squash)
    net = sgm_pyro.PrototypeInference(group, (1, 64, 64), hidden=(16,), rotation_head="moments")
    x, lat = shapes("square", n=32, seed=4)
    eta = net.mode(x)
    torch.testing.assert_close(group.matrix(eta)[:, :2, 2], torch.zeros(32, 2), atol=1e-5, rtol=0)
    protos = net.group.apply(x, net.group.inverse(eta))
    again = MomentAngle().angle(protos)
    assert wrapped(again - again[0], CELL["square"]).abs().max() < math.radians(3)
    # the poses spread over the cell as the orientations do
    rot = eta[:, group.names.index("rot")]
    assert rot.abs().max() <= math.pi / 4 + 1e-4 and rot.std() > math.radians(15)


def test_an_sgm_with_the_moment_head_trains_and_round_trips(tmp_path):
    """Both stages run through the moment head (no gradient reaches the angle, the placed translation
    passes one), and a saved model gives the same poses."""
    torch.manual_seed(0)
    group = AffineGroup(bounds=(0.75, 0.75, math.pi, 0.75, 0.75), squash=True)
    model = sgm_pyro.SGM(group, (1, 64, 64), inference_kwargs=dict(hidden=(16,), input_size=16,
                                                                    rotation_head="moments"),
                         prior_kwargs=dict(input_size=16, feature_hidden=(16,), hidden=(16,), transforms=1))
    x, _ = shapes("square", n=32, seed=7)
    model.fit(x, inference_steps=3, prior_steps=2, batch_size=16, progress=False)
    assert all(math.isfinite(v) for v in model.history["inference"]["loss"])
    model.save(tmp_path / "m.pt")
    again = sgm_pyro.SGM.load(tmp_path / "m.pt", map_location="cpu")
    assert again.inference.rotation_head == "moments"
    torch.testing.assert_close(again.infer_eta(x), model.infer_eta(x), rtol=0, atol=0)


def test_the_moment_head_follows_the_module_to_another_device():
    """On ``meta`` (standing for CUDA): every tensor of the angle and the placed translation is built
    on the images' device, with no host copy in between."""
    group = AffineGroup(bounds=(0.75, 0.75, math.pi, 0.75, 0.75), squash=True)
    net = sgm_pyro.PrototypeInference(group, (1, 64, 64), hidden=(16,), input_size=16,
                                      rotation_head="moments").to("meta")
    eta = net.mode(torch.empty(4, 1, 64, 64, device="meta"))
    assert eta.shape == (4, 5) and eta.device.type == "meta"


def test_blank_and_degenerate_images_get_a_finite_angle():
    """A view can push a shape out of the frame: a blank image, one pixel, or a sliver along the border
    (whose covariance is nearly singular) must not put a NaN into the pose."""
    x = -torch.ones(4, 1, 32, 32)
    x[1, 0, 10, 10] = 1.0
    x[2, 0, 0, :] = 1.0
    x[3, 0, 0, 3:9] = -0.4
    head = MomentAngle()
    assert torch.isfinite(head.angle(x)).all() and head.angle(x)[0] == 0
    assert all(torch.isfinite(v).all() for v in head.moments(x).values())
    group = AffineGroup(bounds=(0.75, 0.75, math.pi, 0.75, 0.75), squash=True)
    net = sgm_pyro.PrototypeInference(group, (1, 32, 32), hidden=(16,), rotation_head="moments")
    assert torch.isfinite(net.mode(x)).all()
