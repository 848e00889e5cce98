"""Procedural dSprites: determinism, values, geometry conventions, the frame margin, the stream."""

import itertools
import math

import pytest
import torch

from sgm_pyro.data import DSpritesStream, dsprites, render_dsprites, sample_latents
from sgm_pyro.data.dsprites import MARGIN, SIZE

KEYS = ("shape", "scale", "orientation", "pos_x", "pos_y")


def latents(shape, scale=1.0, orientation=0.0, pos_x=0.5, pos_y=0.5):
    """Latents for explicit renders; scalars broadcast against the longest list."""
    values = [shape, scale, orientation, pos_x, pos_y]
    n = max(len(v) if isinstance(v, (list, tuple)) else 1 for v in values)
    out = {k: torch.as_tensor(v if isinstance(v, (list, tuple)) else [v] * n) for k, v in zip(KEYS, values)}
    out["shape"] = out["shape"].long()
    return {k: v.float() if k != "shape" else v for k, v in out.items()}


def centre_of_mass(images):
    """(row, col) centre of mass of the lit pixels of each image (N, 1, H, W)."""
    mask = (images[:, 0] > 0).float()
    idx = torch.arange(SIZE, dtype=torch.float32)
    total = mask.sum(dim=(1, 2))
    return (mask.sum(2) @ idx) / total, (mask.sum(1) @ idx) / total


def test_same_seed_same_images_and_other_seed_differs():
    a, la = dsprites(64, seed=3)
    b, lb = dsprites(64, seed=3)
    c, _ = dsprites(64, seed=4)
    g, lg = dsprites(64, generator=torch.Generator().manual_seed(3))
    assert torch.equal(a, b) and torch.equal(a, g)
    assert all(torch.equal(la[k], lb[k]) and torch.equal(la[k], lg[k]) for k in KEYS)
    assert not torch.equal(a, c)


@pytest.mark.parametrize("laws", ["paper", "uniform"])
def test_shapes_dtypes_and_exact_values(laws):
    images, lat = dsprites(200, laws=laws, seed=0)
    assert images.shape == (200, 1, 64, 64) and images.dtype == torch.float32
    assert set(images.unique().tolist()) == {-1.0, 1.0}
    assert set(lat) == set(KEYS)
    assert lat["shape"].dtype == torch.int64 and set(lat["shape"].tolist()) == {0, 1, 2}
    assert all(lat[k].shape == (200,) and lat[k].dtype == torch.float32 for k in KEYS[1:])
    # Every image shows its shape: the smallest (an ellipse at scale 0.5) still covers > 40 pixels.
    assert ((images > 0).sum(dim=(1, 2, 3)) > 40).all()


def test_no_shape_touches_the_border_even_in_the_worst_case():
    # Largest scale, every corner and edge midpoint, orientations every 7.5 degrees (incl. 45°).
    corners = [(0.0, 0.0), (0.0, 1.0), (1.0, 0.0), (1.0, 1.0), (0.5, 0.0), (0.0, 0.5), (1.0, 0.5), (0.5, 1.0)]
    angles = torch.arange(48) * (2 * math.pi / 48)
    rows = [(s, a, x, y) for s in range(3) for a in angles.tolist() for x, y in corners]
    s, a, x, y = zip(*rows)
    images = render_dsprites(latents(list(s), 1.0, list(a), list(x), list(y)))
    ring = torch.ones(SIZE, SIZE, dtype=torch.bool)
    ring[2:-2, 2:-2] = False  # the two outermost rows and columns on every side
    assert (images[:, 0][:, ring] == -1).all()
    # ...and the margin is not wasteful: worst-case shapes reach row / column 3 on every side.
    lit = images[:, 0] > 0
    assert lit[:, 3].any() and lit[:, -4].any() and lit[:, :, 3].any() and lit[:, :, -4].any()
    # The random laws stay clear too.
    for laws in ("paper", "uniform"):
        random_images, _ = dsprites(500, laws=laws, seed=1)
        assert (random_images[:, 0][:, ring] == -1).all()


def test_square_size_and_scale():
    # A scale-1 square is 18 px wide and a scale-0.5 one 9 px, up to one pixel of sampling.
    pos = torch.linspace(0.0, 1.0, 50).tolist()
    for scale, size in ((1.0, 18), (0.5, 9)):
        images = render_dsprites(latents(0, scale, 0.0, pos, pos))
        widths = (images[:, 0] > 0).any(dim=1).sum(dim=1).float()
        heights = (images[:, 0] > 0).any(dim=2).sum(dim=1).float()
        for extent in (widths, heights):
            assert ((extent - size).abs() <= 1).all() and abs(extent.mean() - size) < 0.5


@pytest.mark.parametrize("shape", [0, 1, 2])
def test_centre_of_mass_follows_position(shape):
    pos = [0.0, 0.2, 0.5, 0.8, 1.0]
    rows, cols = centre_of_mass(render_dsprites(latents(shape, 0.8, 0.3 if shape != 2 else 0.0, pos, 0.5)))
    assert (cols.diff() > 0).all() and (rows - rows[0]).abs().max() < 0.25
    rows, cols = centre_of_mass(render_dsprites(latents(shape, 0.8, 0.0, 0.5, pos)))
    assert (rows.diff() > 0).all()  # pos_y grows downwards (row index)
    # pos is the centre of mass: pixel j's centre is at j + 0.5 in the renderer's coordinates.
    expected = torch.tensor(pos) * (SIZE - 2 * MARGIN) + MARGIN - 0.5
    assert (rows - expected).abs().max() < 0.5


def farthest_lit_pixel(image):
    """Offset (d_row, d_col) of the lit pixel farthest from the centre of mass."""
    row, col = centre_of_mass(image[None])
    r, c = torch.nonzero(image[0] > 0, as_tuple=True)
    k = ((r - row) ** 2 + (c - col) ** 2).argmax()
    return (r[k] - row).item(), (c[k] - col).item()


def test_heart_upright_and_rotation_is_counter_clockwise_as_displayed():
    up, ccw, cw = render_dsprites(latents(2, 1.0, [0.0, math.pi / 2, -math.pi / 2]))
    mid = SIZE // 2
    # Orientation 0: point at the bottom, the wide lobes in the top half.
    d_row, d_col = farthest_lit_pixel(up)
    assert d_row > 8 and abs(d_col) < 2
    assert (up[0, :mid] > 0).sum() > (up[0, mid:] > 0).sum()
    # +π/2 (counter-clockwise as displayed): the point goes right, the lobes left.
    d_row, d_col = farthest_lit_pixel(ccw)
    assert d_col > 8 and abs(d_row) < 2
    assert (ccw[0, :, :mid] > 0).sum() > (ccw[0, :, mid:] > 0).sum()
    # -π/2: the point goes left.
    d_row, d_col = farthest_lit_pixel(cw)
    assert d_col < -8 and abs(d_row) < 2


def test_ellipse_long_axis_turns_counter_clockwise():
    flat, turned = render_dsprites(latents(1, 1.0, [0.0, math.pi / 4]))
    assert (flat[0] > 0).any(dim=0).sum() == 24 and (flat[0] > 0).any(dim=1).sum() == 12
    r, c = torch.nonzero(turned[0] > 0, as_tuple=True)
    cov = ((r - r.float().mean()) * (c - c.float().mean())).mean()
    assert cov < -10  # long axis from lower left to upper right: column up while row down


def test_latents_alone_reproduce_the_images():
    images, lat = dsprites(100, seed=11)
    again = sample_latents(100, "paper", torch.Generator().manual_seed(11))
    assert all(torch.equal(again[k], lat[k]) for k in KEYS)
    assert torch.equal(render_dsprites(again), images)


def test_stream_batches_repeat_and_match_dsprites():
    stream = DSpritesStream(32, seed=7)
    first = list(itertools.islice(stream, 3))
    again = list(itertools.islice(stream, 3))
    assert all(b.shape == (32, 1, 64, 64) for b in first)
    assert all(torch.equal(a, b) for a, b in zip(first, again))
    assert not torch.equal(first[0], first[1])
    images, lat = dsprites(32, seed=7)
    assert torch.equal(first[0], images)
    batch, lat_stream = next(iter(DSpritesStream(32, seed=7, with_latents=True)))
    assert torch.equal(batch, images) and torch.equal(lat_stream["pos_x"], lat["pos_x"])


def test_invalid_arguments():
    with pytest.raises(ValueError, match="positive int"):
        dsprites(0)
    with pytest.raises(ValueError, match="unknown laws 'papr'"):
        dsprites(4, laws="papr")
    with pytest.raises(ValueError, match="seed must be an int"):
        dsprites(4, seed=1.5)
    with pytest.raises(ValueError, match="batch_size"):
        DSpritesStream(-1)
    with pytest.raises(ValueError, match="missing"):
        render_dsprites({"shape": torch.tensor([0])})
    with pytest.raises(ValueError, match="integer tensor"):
        render_dsprites({**latents(0), "shape": torch.tensor([0.0])})
    bad = latents(3)
    with pytest.raises(ValueError, match="0 \\(square\\)"):
        render_dsprites(bad)
    with pytest.raises(ValueError, match="scale must be in"):
        render_dsprites(latents(0, 1.5))
