"""Affine group: group laws, closed forms, sign conventions (SPEC 2.1), one-warp chains."""

import math

import pytest
import torch

from sgm_pyro.groups import AffineGroup


def blob(n=32, row=None, col=None, sigma=1.5, dtype=torch.float32):
    """A smooth Gaussian blob in [-1, 1] centred at pixel (row, col)."""
    row = n // 2 if row is None else row
    col = n // 2 if col is None else col
    r = torch.arange(n, dtype=dtype)[:, None]
    c = torch.arange(n, dtype=dtype)[None, :]
    img = torch.exp(-((r - row) ** 2 + (c - col) ** 2) / (2 * sigma**2))
    return (2 * img - 1)[None, None]


def centre_of_mass(x):
    w = (x + 1).clamp_min(0)[:, 0]
    n = x.shape[-1]
    idx = torch.arange(n, dtype=x.dtype)
    tot = w.sum((-1, -2))
    return (w.sum(-1) * idx).sum(-1) / tot, (w.sum(-2) * idx).sum(-1) / tot  # (row, col)


def eta(**kw):
    names = ("tx", "ty", "rot", "log_sx", "log_sy")
    return torch.tensor([[float(kw.get(k, 0.0)) for k in names]])


def test_identity_and_inverse_laws():
    g = AffineGroup()
    e = g.sample_uniform(64, generator=torch.Generator().manual_seed(0)).double()
    eye = torch.eye(3, dtype=torch.float64).expand(64, 3, 3)
    assert torch.allclose(g.matrix(g.identity(64, dtype=torch.float64)), eye)
    assert torch.allclose(g.matrix(e) @ g.matrix(g.inverse(e)), eye, atol=1e-6)
    assert torch.allclose(g.matrix(g.inverse(e)) @ g.matrix(e), eye, atol=1e-6)


def test_chain_matrix_applies_the_first_element_first():
    g = AffineGroup()
    # A quarter turn and a shift to the right do not commute: shifting first and then turning moves
    # the content up (SPEC 2.1: positive rot is counter-clockwise as displayed, row 0 at the top).
    shift, turn = eta(tx=0.5).double(), eta(rot=math.pi / 2).double()
    centre = torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64)
    moved = g.chain_matrix([shift, turn])[0] @ centre
    torch.testing.assert_close(moved, torch.tensor([0.0, -0.5, 1.0], dtype=torch.float64))
    moved = g.chain_matrix([turn, shift])[0] @ centre  # turning the centre leaves it: then the shift
    torch.testing.assert_close(moved, torch.tensor([0.5, 0.0, 1.0], dtype=torch.float64))


def test_commuting_elements_compose_by_adding_coordinates():
    # Rotations and isotropic scalings commute, so exp(A) exp(B) = exp(A + B) for them: a closed form.
    g = AffineGroup()
    a, b = eta(rot=0.7, log_sx=0.2, log_sy=0.2).double(), eta(rot=-1.9, log_sx=-0.1, log_sy=-0.1).double()
    torch.testing.assert_close(g.chain_matrix([a, b]), g.matrix(a + b), atol=1e-12, rtol=0)


def test_closed_forms_rotation_and_translation():
    g = AffineGroup()
    th = 0.7
    r = g.matrix(eta(rot=th).double())[0]
    expected = torch.tensor([[math.cos(th), math.sin(th), 0], [-math.sin(th), math.cos(th), 0], [0, 0, 1]],
                            dtype=torch.float64)
    assert torch.allclose(r, expected, atol=1e-12)
    t = g.matrix(eta(tx=0.3, ty=-0.2).double())[0]
    assert torch.allclose(t, torch.tensor([[1, 0, 0.3], [0, 1, -0.2], [0, 0, 1]], dtype=torch.float64))


def test_translation_mixes_with_scale_as_specified():
    # SPEC 2.1: η = (0.25, 0, 0, 0.25, 0) gives a translation entry of about 0.284.
    m = AffineGroup().matrix(eta(tx=0.25, log_sx=0.25).double())[0]
    assert m[0, 2].item() == pytest.approx(math.e**0.25 - 1, abs=1e-9)
    assert m[0, 0].item() == pytest.approx(math.e**0.25)


def test_sign_conventions_on_a_blob():
    g = AffineGroup()
    x = blob(33, row=16, col=16)
    r0, c0 = centre_of_mass(x)
    r, c = centre_of_mass(g.apply(x, eta(tx=0.25)))
    assert c - c0 == pytest.approx(0.25 * 16, abs=0.1) and abs(r - r0) < 0.05  # right
    r, c = centre_of_mass(g.apply(x, eta(ty=0.25)))
    assert r - r0 == pytest.approx(0.25 * 16, abs=0.1) and abs(c - c0) < 0.05  # down
    # A blob to the right of centre turned +90° ends above the centre (counter-clockwise as displayed).
    xr = blob(33, row=16, col=24)
    r, c = centre_of_mass(g.apply(xr, eta(rot=math.pi / 2)))
    assert r == pytest.approx(8, abs=0.1) and c == pytest.approx(16, abs=0.1)
    # Positive log-scale enlarges: content further from the centre moves outwards.
    r, c = centre_of_mass(g.apply(xr, eta(log_sx=0.2)))
    assert c - 16 == pytest.approx(8 * math.exp(0.2), abs=0.1)
    r, c = centre_of_mass(g.apply(blob(33, row=24, col=16), eta(log_sy=0.2)))
    assert r - 16 == pytest.approx(8 * math.exp(0.2), abs=0.1)


def test_apply_chain_is_one_warp_and_matches_sequential_application():
    g = AffineGroup()
    x = blob(48, sigma=4.0, row=20, col=26).double()
    gen = torch.Generator().manual_seed(3)
    etas = [0.5 * g.sample_uniform(1, generator=gen).double() for _ in range(3)]
    seq = x
    for e in etas:
        seq = g.apply(seq, e)
    chained = g.apply_chain(x, etas)
    assert (chained - seq).abs().max() < 0.05  # interpolation error only, on a smooth image
    # Identical to one warp by the composed matrix.
    one = g.warp(x, g.chain_matrix(etas))
    assert torch.allclose(chained, one, atol=1e-10)
    # Inverse chain returns the image (up to interpolation) with a single warp.
    back = g.apply_chain(x, [etas[0], g.inverse(etas[0])])
    assert torch.allclose(back, x, atol=1e-10)


def test_fill_and_padding_modes():
    x = torch.ones(1, 1, 8, 8)
    shift = eta(tx=1.0)
    assert AffineGroup().apply(x, shift)[0, 0, :, 0].eq(-1).all()
    assert AffineGroup(fill=0.5).apply(x, shift)[0, 0, :, 0].eq(0.5).all()
    assert AffineGroup(padding_mode="border").apply(x, shift).eq(1).all()
    assert AffineGroup(padding_mode="reflection").apply(x, shift).eq(1).all()


def test_generator_subsets_and_shear():
    rot = AffineGroup(bounds=(math.pi,), generators=("rot",))
    assert rot.dim == 1 and rot.names == ("rot",)
    full = AffineGroup()
    th = torch.tensor([[0.4]], dtype=torch.float64)
    assert torch.allclose(rot.matrix(th), full.matrix(eta(rot=0.4).double()))
    sh = AffineGroup(shear=True)
    assert sh.names[-1] == "shear" and sh.dim == 6
    m = sh.matrix(torch.tensor([[0, 0, 0, 0, 0, 0.3]], dtype=torch.float64))[0]
    assert m[0, 1].item() == pytest.approx(0.3) and m[1, 0].item() == 0


@pytest.mark.parametrize("interpolation", ["bilinear", "bicubic"])
def test_gradcheck_in_x_and_eta(interpolation):
    g = AffineGroup(interpolation=interpolation)
    x = blob(9, sigma=2.0, dtype=torch.float64).requires_grad_()
    e = (0.1 * torch.randn(1, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(0))).requires_grad_()
    assert torch.autograd.gradcheck(lambda x, e: g.apply(x, e), (x, e))


def test_non_square_rotation_preserves_distances():
    g = AffineGroup()
    x = -torch.ones(1, 1, 21, 41, dtype=torch.float64)
    x[0, 0, 10, 28] = 1.0  # 8 px right of centre
    r, c = torch.nonzero(g.apply(x, eta(rot=math.pi / 2).double())[0, 0] > 0.5)[0].tolist()
    assert (r, c) == (2, 20)


def test_device_and_dtype_follow_module():
    g = AffineGroup().double()
    assert g.bounds.dtype == torch.float64 and g.sample_uniform(3).dtype == torch.float64


@pytest.mark.parametrize("bad, match", [
    (dict(bounds=(1.0, 1.0)), "5 entries"),
    (dict(bounds=(1.0, -1.0, 1.0, 1.0, 1.0)), "positive"),
    (dict(generators=("tx", "spin")), "generators"),
    (dict(interpolation="lanczos"), "interpolation"),
    (dict(padding_mode="wrap"), "padding_mode"),
])
def test_bad_construction(bad, match):
    with pytest.raises(ValueError, match=match):
        AffineGroup(**bad)


@pytest.mark.parametrize("x, e, match", [
    (torch.zeros(2, 28, 28), torch.zeros(2, 5), "rank 3"),
    (torch.zeros(2, 1, 8, 8), torch.zeros(2, 4), r"\(N, 5\)"),
    (torch.zeros(2, 1, 8, 8), torch.full((2, 5), float("nan")), "NaN"),
    (torch.zeros(2, 1, 8, 8), torch.zeros(3, 5), "batch size"),
    (torch.zeros(2, 1, 8, 8, dtype=torch.uint8), torch.zeros(2, 5), "floating-point"),
])
def test_bad_apply_inputs(x, e, match):
    with pytest.raises(ValueError, match=match):
        AffineGroup().apply(x, e)


@pytest.mark.parametrize("scale", [0.0, 1e-5, 0.3, 1.0, 4.0])
def test_closed_form_exponential_matches_matrix_exp(scale):
    g = AffineGroup(shear=True)
    e = scale * torch.randn(200, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(5))
    algebra = torch.einsum("nd,dij->nij", e, g.generators.double())
    ref = torch.linalg.matrix_exp(algebra)
    assert torch.allclose(g.matrix(e), ref, rtol=1e-12, atol=1e-12)


def test_exponential_gradient_at_identity_is_finite():
    e = torch.zeros(2, 5, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda e: AffineGroup().matrix(e), (e,))


@pytest.mark.filterwarnings("ignore:Since version 1.3.0")  # affine_grid on a one-row grid, as intended here
@pytest.mark.parametrize("h, w", [(5, 7), (1, 6), (8, 8)])
def test_sampling_grid_and_its_one_product_backward_match_affine_grid(h, w):
    import torch.nn.functional as F

    from sgm_pyro.groups.affine import sampling_grid
    inv = torch.randn(4, 3, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(h * w), requires_grad=True)
    ref = F.affine_grid(inv[:, :2], (4, 1, h, w), align_corners=True)
    grid = sampling_grid(inv, h, w)
    assert torch.allclose(grid, ref, atol=1e-14)
    upstream = torch.randn_like(grid)
    (mine,) = torch.autograd.grad(grid, inv, upstream)
    (theirs,) = torch.autograd.grad(ref, inv, upstream)
    assert torch.allclose(mine, theirs, atol=1e-12) and (mine[:, 2] == 0).all()


def test_closed_form_affine_inverse_matches_linalg_inv():
    from sgm_pyro.groups.expm import affine_inverse
    g = AffineGroup(shear=True)
    m = g.matrix(g.sample_uniform(50, generator=torch.Generator().manual_seed(2)).double())
    assert torch.allclose(affine_inverse(m), torch.linalg.inv(m), atol=1e-12)


def test_float32_exponential_on_its_eight_nodes_is_exact_to_round_off_at_the_box_edges():
    # full turns, log-scales up to the MNIST box's edge and beyond (±0.85), translations ±0.5
    g = AffineGroup(bounds=(0.5, 0.5, math.pi, 0.85, 0.85))
    e = g.sample_uniform(4000, generator=torch.Generator().manual_seed(3))
    e[:8, 2], e[8:16, 3:] = math.pi, 0.85  # the corners themselves
    algebra = torch.einsum("nd,dij->nij", e.double(), g.generators.double())
    ref = torch.linalg.matrix_exp(algebra)
    assert torch.allclose(g.matrix(e.float()).double(), ref, rtol=2e-6, atol=2e-6)


@pytest.mark.parametrize("padding_mode", ["constant", "border", "reflection"])
@pytest.mark.parametrize("interpolation", ["bilinear", "bicubic"])
def test_acting_on_images_minus_the_background_shifts_nothing_else(padding_mode, interpolation):
    g = AffineGroup(padding_mode=padding_mode, interpolation=interpolation, fill=-0.8).double()
    x = blob(12, row=3, col=8, dtype=torch.float64).expand(3, -1, -1, -1)
    el = g.element(g.sample_uniform(3, generator=torch.Generator().manual_seed(4)).double())
    assert g.background == (-0.8 if padding_mode == "constant" else 0.0)
    for b in (g.background, 0.3):
        assert torch.allclose(g.act(x - b, el, background=b) + b, g.act(x, el), atol=1e-12)
