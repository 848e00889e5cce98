"""Properties every group must have (parametrised over all group classes)."""

import math

import pytest
import torch

from sgm_pyro.groups import AffineGroup, ColorGroup, ProductGroup, make_group

GROUPS = {
    "affine": lambda: AffineGroup(),
    "affine-squashed": lambda: AffineGroup(bounds=(0.75, 0.75, math.pi, 0.75, 0.75), squash=True),
    "rotation": lambda: AffineGroup(bounds=(math.pi,), generators=("rot",)),
    "color": lambda: ColorGroup(offset=(0.5, 0, 0)),
    "product": lambda: ProductGroup(ColorGroup(offset=(0.5, 0, 0), squash=True), AffineGroup(squash=True)),
}


def smooth_rgb(n, size=24, channels=3):
    r = torch.linspace(-1, 1, size)
    base = torch.stack([torch.exp(-((r[:, None] - 0.2 * k) ** 2 + r[None, :] ** 2) * 3) for k in range(channels)])
    return (0.1 + 0.8 * base)[None].expand(n, -1, -1, -1).double() * 2 - 1


@pytest.fixture(params=list(GROUPS))
def group(request):
    return GROUPS[request.param]().double()


def images_for(group, n):
    return smooth_rgb(n, channels=1 if isinstance(group, AffineGroup) else 3)


def test_shapes_and_names(group):
    assert len(group.names) == group.dim == group.bounds.shape[0] == group.offset.shape[0]
    x = images_for(group, 3)
    e = group.sample_uniform(3, scale=0.3)
    assert group.apply(x, e).shape == x.shape
    assert group.identity(3).shape == (3, group.dim)


def test_identity_is_exact(group):
    x = images_for(group, 2)
    assert torch.allclose(group.apply(x, group.identity(2)), x, atol=1e-9)


def test_inverse_chain_is_identity(group):
    x = images_for(group, 4)
    e = group.sample_uniform(4, scale=0.2, generator=torch.Generator().manual_seed(0)).double()
    e = e - group.offset  # stay near the identity so no colour clips
    assert torch.allclose(group.apply_chain(x, [e, group.inverse(e)]), x, atol=1e-8)


def test_elements_compose_invert_and_act_as_chains_of_coordinates(group):
    x = images_for(group, 4)
    gen = torch.Generator().manual_seed(1)
    a, b = (group.offset + 0.3 * (group.sample_uniform(4, generator=gen).double() - group.offset) for _ in range(2))
    ea, eb = group.element(a), group.element(b)
    assert torch.allclose(group.act(x, ea), group.apply(x, a), atol=1e-10)
    assert torch.allclose(group.act(x, group.compose(ea, eb)), group.apply_chain(x, [a, b]), atol=1e-10)
    assert torch.allclose(group.act(x, group.invert(ea)), group.apply(x, group.inverse(a)), atol=1e-10)
    assert torch.allclose(group.act(x, group.compose(ea, group.invert(ea), eb)), group.apply(x, b), atol=1e-8)
    assert torch.allclose(group.act(x[1:3], ea[1:3]), group.act(x, ea)[1:3], atol=1e-12)
    for bg in (group.background, 0.25):
        assert torch.allclose(group.act(x - bg, eb, background=bg) + bg, group.act(x, eb), atol=1e-10)
    with pytest.raises(ValueError):
        group.compose()


def test_sample_uniform_covers_box(group):
    e = group.sample_uniform(4000, generator=torch.Generator().manual_seed(0))
    assert group.in_box(e).all()
    lo, hi = e.min(0).values, e.max(0).values
    assert torch.allclose(lo, group.offset - group.bounds, atol=0.01 * group.bounds.max().item())
    assert torch.allclose(hi, group.offset + group.bounds, atol=0.01 * group.bounds.max().item())
    half = group.sample_uniform(1000, scale=0.5)
    assert ((half - group.offset).abs() <= 0.5 * group.bounds + 1e-9).all()


def test_to_box_round_trip(group):
    u = torch.randn(50, group.dim, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    e = group.to_box(u)
    assert group.in_box(e).all() or not group.squash
    assert torch.allclose(group.from_box(e), u, atol=1e-6)


def test_gradients_reach_x_and_eta(group):
    x = images_for(group, 2).clone().requires_grad_()
    e = (group.identity(2) + 0.05).requires_grad_()
    group.apply(x, e).square().sum().backward()
    assert x.grad.abs().sum() > 0 and e.grad.abs().sum() > 0 and torch.isfinite(e.grad).all()


def test_registry():
    assert isinstance(make_group("affine", squash=True), AffineGroup)
    assert isinstance(make_group("affine+color", affine={"squash": True}, color={"squash": True}), ProductGroup)
    with pytest.raises(ValueError, match="unknown group"):
        make_group("spherical")


def test_config_round_trip(group):
    rebuilt = make_group(**group.config()).double()
    assert rebuilt.names == group.names and rebuilt.squash == group.squash
    assert torch.equal(rebuilt.bounds, group.bounds) and torch.equal(rebuilt.offset, group.offset)
    x = images_for(group, 2)
    e = group.sample_uniform(2, scale=0.3, generator=torch.Generator().manual_seed(0))
    assert torch.equal(rebuilt.apply(x, e), group.apply(x, e))


def test_per_coordinate_scale_of_the_views(group):
    """A mapping scales the named coordinates and leaves the others at 1; a sequence gives each its own."""
    first = group.names[0]
    e = group.sample_uniform(4000, scale={first: 0.25}, generator=torch.Generator().manual_seed(1))
    spread = (e - group.offset).abs().max(0).values / group.bounds
    assert 0.24 < spread[0] <= 0.25 + 1e-9
    assert (spread[1:] > 0.98).all() and (spread[1:] <= 1 + 1e-9).all()
    factors = torch.linspace(0.2, 0.9, group.dim).tolist()
    e = group.sample_uniform(4000, scale=factors, generator=torch.Generator().manual_seed(2))
    spread = (e - group.offset).abs().max(0).values / group.bounds
    assert torch.allclose(spread, torch.tensor(factors, dtype=spread.dtype), rtol=0.02)
    assert torch.equal(group.per_coordinate(0.5), torch.full((group.dim,), 0.5, dtype=group.bounds.dtype))


@pytest.mark.parametrize("bad, match", [({"nope": 0.5}, "unknown coordinates"), ([0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5], "entries"),
                                        ({"tx": 0.0}, "positive"), ("half", "a number")])
def test_per_coordinate_scale_refuses_bad_input(group, bad, match):
    if isinstance(bad, dict) and "tx" in bad and "tx" not in group.names:
        bad = {group.names[0]: 0.0}
    with pytest.raises(ValueError, match=match):
        group.sample_uniform(3, scale=bad)


def test_widen_box_keeps_everything_else(group):
    from sgm_pyro.groups import widen_box

    names = [c for c in group.names if c not in ("rot", "hue")]
    wide = widen_box(group, {c: 2.0 for c in names})
    assert type(wide) is type(group) and wide.names == group.names and wide.squash == group.squash
    assert torch.equal(wide.offset, group.offset.to(wide.offset))
    for i, c in enumerate(group.names):
        assert float(wide.bounds[i]) == pytest.approx(float(group.bounds[i]) * (2.0 if c in names else 1.0))
    x = images_for(group, 2)
    e = group.sample_uniform(2, scale=0.3, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(wide.double().apply(x, e), group.apply(x, e), atol=1e-12)  # the same action
    circular = [c for c in ("rot", "hue") if c in group.names and
                float(group.bounds[group.names.index(c)]) >= (math.pi if c == "rot" else 0.5) - 1e-6]
    for c in circular:
        with pytest.raises(ValueError, match="whole circle"):
            widen_box(group, {c: 1.5})
