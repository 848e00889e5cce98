"""Product group: colour then affine, per-factor composition (SPEC 2.3)."""

import pytest
import torch

from sgm_pyro.groups import AffineGroup, ColorGroup, ProductGroup


def test_product_equals_colour_then_affine_and_chains_in_one_warp():
    c, a = ColorGroup(), AffineGroup()
    p = ProductGroup(c, a).double()
    assert p.names == a.names + c.names and p.dim == 8
    gen = torch.Generator().manual_seed(0)
    x = (0.2 + 0.6 * torch.rand(2, 3, 16, 16, generator=gen, dtype=torch.float64)) * 2 - 1
    ea = 0.1 * torch.randn(2, 5, generator=gen, dtype=torch.float64)
    ec = 0.1 * torch.randn(2, 3, generator=gen, dtype=torch.float64)
    e = torch.cat([ea, ec], 1)
    assert torch.allclose(p.apply(x, e), a.double().apply(c.double().apply(x, ec), ea), atol=1e-10)
    e2 = 0.1 * torch.randn(2, 8, generator=gen, dtype=torch.float64)
    chain = p.apply_chain(x, [e, e2])
    ea2, ec2 = p.split(e2)
    one = a.warp(c.apply(x, ec + ec2), a.chain_matrix([ea, ea2]))
    assert torch.allclose(chain, one, atol=1e-10)


def test_factors_must_agree_on_squash():
    with pytest.raises(ValueError, match="same squash"):
        ProductGroup(ColorGroup(squash=False), AffineGroup(squash=True))
    p = ProductGroup(ColorGroup(squash=True), AffineGroup(squash=True))
    assert torch.allclose(p.to_box(torch.full((1, 8), 10.0)), p.offset + p.bounds, atol=1e-4)
