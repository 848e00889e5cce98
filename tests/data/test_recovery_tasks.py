"""Recovery-benchmark generators: reproducible from a seed, true η matching the stated laws (KS)."""

import math

import pytest
import torch

from sgm_pyro.data.recovery import TASKS, dsprite_prototype, get_task, glyph
from sgm_pyro.groups import AffineGroup

N = 3000
# Kolmogorov's critical value at level 0.001 (1.95 / sqrt(n)); the draws are fixed by the seed.
KS_LEVEL = 1.95


def ks_statistic(sample: torch.Tensor, cdf) -> float:
    """sup_x |F_n(x) - F(x)| for a 1-D sample and a CDF (both sides of each jump)."""
    x, _ = sample.double().sort()
    n = x.numel()
    f = cdf(x)
    upper = torch.arange(1, n + 1, dtype=torch.float64) / n
    return float(torch.maximum((upper - f).abs(), (f - upper + 1.0 / n).abs()).max())


def uniform_cdf(lo, hi):
    return lambda x: ((x - lo) / (hi - lo)).clamp(0, 1)


def trunc_normal_cdf(mean, std, lo, hi):
    phi = lambda z: 0.5 * (1 + torch.erf(torch.as_tensor(z, dtype=torch.float64) / math.sqrt(2)))
    a, b = phi((lo - mean) / std), phi((hi - mean) / std)
    return lambda x: ((phi((x - mean) / std) - a) / (b - a)).clamp(0, 1)


def mixture_cdf(*cdfs):
    return lambda x: sum(c(x) for c in cdfs) / len(cdfs)


def assert_law(sample, cdf, what):
    d = ks_statistic(sample, cdf)
    assert d * math.sqrt(sample.numel()) < KS_LEVEL, f"{what}: KS statistic {d:.4f} with n={sample.numel()}"


def coordinate(task, data, cls, name):
    group = task.make_group()
    return data.eta[data.labels == task.class_names.index(cls), group.names.index(name)]


def c4_shifted(rot, noise_deg=3.0):
    """``(rot + noise) mod 2π``: the C4 law becomes four disjoint arcs [k·90°, k·90° + 2·noise]."""
    return torch.remainder(rot.double() + math.radians(noise_deg), 2 * math.pi)


C4_CDF = mixture_cdf(*(uniform_cdf(k * math.pi / 2, k * math.pi / 2 + math.radians(6)) for k in range(4)))


@pytest.mark.parametrize("name", list(TASKS))
def test_generators_are_reproducible_from_their_seed(name):
    task = get_task(name)
    a, b, c = task.generate(64, seed=3), task.generate(64, seed=3), task.generate(64, seed=4)
    assert torch.equal(a.images, b.images) and torch.equal(a.eta, b.eta) and torch.equal(a.labels, b.labels)
    assert not torch.equal(a.eta, c.eta)
    assert a.images.shape == (64, *task.image_shape) and a.eta.shape == (64, task.make_group().dim)
    assert a.images.min() >= -1 and a.images.max() <= 1


@pytest.mark.parametrize("name", list(TASKS))
def test_images_are_the_group_acting_on_the_prototype_with_the_true_eta(name):
    """The convention of the benchmark: x = group.apply(x̂_class, η), in the group's own coordinates."""
    task = get_task(name)
    data = task.generate(32, seed=5)
    group = task.make_group()
    for k, law in enumerate(task.classes):
        idx = data.labels == k
        proto = law.prototype()
        expected = group.apply(proto.expand(int(idx.sum()), *proto.shape[1:]), data.eta[idx]).clamp(-1, 1)
        torch.testing.assert_close(data.images[idx], expected)
    # Content never touches the border (the warp-based model needs it inside the frame).
    border = torch.cat([data.images[..., 0, :], data.images[..., -1, :], data.images[..., 0], data.images[..., -1]], -1)
    assert border.max() <= -0.99


def test_c4_glyph_law():
    task = get_task("c4-glyph")
    data = task.generate(N, seed=0)
    assert_law(c4_shifted(coordinate(task, data, "F", "rot")), C4_CDF, "c4 rotation")


def test_mixed_glyphs_laws():
    task = get_task("mixed-glyphs")
    data = task.generate(N, seed=0)
    assert_law(c4_shifted(coordinate(task, data, "F", "rot")), C4_CDF, "F rotation")
    assert_law(coordinate(task, data, "L", "rot"), uniform_cdf(-math.pi / 3, math.pi / 3), "L rotation")
    counts = data.labels.bincount()
    assert abs(counts[0] - counts[1]) < 4 * math.sqrt(N)


def test_partial_affine_laws():
    task = get_task("partial-affine")
    data = task.generate(N, seed=0)
    for name in ("tx", "ty"):
        assert_law(coordinate(task, data, "heart", name), uniform_cdf(-0.4, 0.4), name)
    assert_law(coordinate(task, data, "heart", "log_sx"), trunc_normal_cdf(0, 0.03, -0.06, 0.06), "log-scale")
    assert torch.equal(coordinate(task, data, "heart", "rot"), torch.zeros(N))
    assert torch.equal(coordinate(task, data, "heart", "log_sx"), coordinate(task, data, "heart", "log_sy"))


def test_color_affine_laws():
    task = get_task("color-affine")
    data = task.generate(1500, seed=0)  # 500 per shape: RGB images cost more to make
    c = lambda cls, name: coordinate(task, data, cls, name)
    assert_law(c("heart", "ty"), mixture_cdf(uniform_cdf(-0.2, -0.12), uniform_cdf(0.12, 0.2)), "heart ty")
    assert_law(c("heart", "tx"), uniform_cdf(-0.2, 0.0), "heart tx")
    hue = torch.remainder(c("heart", "hue") + 0.5, 1.0) - 0.5  # red: hue near 0, wrapped to [0, 1)
    assert_law(hue, trunc_normal_cdf(0.0, 0.02, -0.06, 0.06), "heart hue")
    assert torch.equal(c("heart", "rot"), torch.zeros_like(c("heart", "rot")))
    assert_law(c("square", "hue"), uniform_cdf(0.0, 1.0), "square hue")
    assert_law(c("square", "rot"), uniform_cdf(-math.pi / 4, math.pi / 4), "square rotation")
    assert_law(c("ellipse", "hue"), trunc_normal_cdf(0.6, 0.05, 0.45, 0.75), "ellipse hue")
    assert_law(c("ellipse", "ty"), trunc_normal_cdf(0.0, 0.06, -0.075, 0.075), "ellipse ty")
    for cls in ("square", "ellipse", "heart"):
        assert_law(c(cls, "log_val"), uniform_cdf(-0.3, 0.3), f"{cls} log_val")


def test_the_ks_check_rejects_a_wrong_law():
    task = get_task("partial-affine")
    data = task.generate(N, seed=0)
    with pytest.raises(AssertionError):
        assert_law(coordinate(task, data, "heart", "tx"), uniform_cdf(-0.35, 0.4), "tx against a wrong law")


def test_declared_symmetries_are_the_prototypes_own():
    rot = AffineGroup(bounds=(math.pi,), generators=("rot",))
    quarter = torch.full((1, 1), math.pi / 2)
    half = torch.full((1, 1), math.pi)
    square, ellipse, heart = (dsprite_prototype(k) for k in range(3))
    diff = lambda x, eta: float((rot.apply(x, eta) - x).abs().mean())
    assert diff(square, quarter) < 1e-3 and diff(ellipse, half) < 1e-3
    assert diff(ellipse, quarter) > 0.02
    for asym in (heart, glyph("F"), glyph("L")):
        assert diff(asym, quarter) > 0.02 and diff(asym, half) > 0.02
    assert dict(zip(get_task("color-affine").class_names, (c.symmetry for c in get_task("color-affine").classes))) \
        == {"square": 4, "ellipse": 2, "heart": 1}


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="unknown recovery task"):
        get_task("nope")
    with pytest.raises(ValueError, match="n must be a positive int"):
        get_task("c4-glyph").generate(0)
    with pytest.raises(ValueError, match="unknown glyph"):
        glyph("Q")
