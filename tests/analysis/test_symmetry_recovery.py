"""Recovery metrics: exact on known answers; the alignment removes only the prototype's gauge."""

import math

import pytest
import torch

from sgm_pyro.analysis.pose_alignment import ClassAlignment, affine_log
from sgm_pyro.analysis.symmetry_recovery import circular_w1, circular_w1_deg, coordinate_w1, count_modes, recovery_scores
from sgm_pyro.data.recovery import get_task
from sgm_pyro.groups import AffineGroup

rad = lambda *deg: torch.tensor(deg, dtype=torch.float64) * math.pi / 180


def test_circular_w1_between_point_masses_is_the_shorter_arc():
    assert circular_w1_deg(rad(10), rad(350)) == pytest.approx(20.0, abs=1e-9)
    assert circular_w1_deg(rad(0), rad(180)) == pytest.approx(180.0, abs=1e-9)
    assert circular_w1_deg(rad(30), rad(100)) == pytest.approx(70.0, abs=1e-9)
    assert circular_w1([0.1], [0.9], period=1.0) == pytest.approx(0.2, abs=1e-12)


def test_circular_w1_of_a_sample_with_itself_and_a_full_turn_is_zero():
    a = torch.rand(500, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * 7 - 3
    assert circular_w1(a, a) == 0.0
    assert circular_w1(a, a + 2 * math.pi) == pytest.approx(0.0, abs=1e-9)
    assert circular_w1(a, a - 4 * math.pi) == pytest.approx(0.0, abs=1e-9)


def test_circular_w1_known_cases():
    g = torch.Generator().manual_seed(1)
    arc = rad(30) * torch.rand(2000, generator=g, dtype=torch.float64)
    # A concentrated sample turned by 5° moves by 5° (here across the seam at 0°).
    assert circular_w1_deg(arc - rad(15), arc - rad(10)) == pytest.approx(5.0, abs=1e-6)
    # Half the mass at 0° and half at 90° against all of it at 0°: half the mass moves 90°.
    assert circular_w1_deg(rad(0, 90), rad(0, 0)) == pytest.approx(45.0, abs=1e-9)
    # A uniform circle is invariant under rotation: W1 near 0 (not 180° as on a line).
    u = torch.arange(3600, dtype=torch.float64) / 3600 * 2 * math.pi
    assert circular_w1(u, u + 1.0) < 1e-3
    # Rotations modulo a symmetry: 0° and 90° are the same pose of a square.
    assert circular_w1_deg(rad(0), rad(90), symmetry=4) == pytest.approx(0.0, abs=1e-9)
    assert circular_w1_deg(rad(0), rad(100), symmetry=4) == pytest.approx(10.0, abs=1e-9)


def test_coordinate_w1_fraction_of_the_box():
    g = AffineGroup(bounds=(0.75, 0.75, math.pi, 0.75, 0.75))
    r = coordinate_w1(g, "tx", torch.zeros(4), torch.full((4,), 0.15))
    assert r["w1"] == pytest.approx(0.15) and r["fraction"] == pytest.approx(0.1)
    r = coordinate_w1(g, "tx", torch.zeros(4), torch.full((4,), 0.15), bound=0.25)
    assert r["w1"] == pytest.approx(0.15) and r["fraction"] == pytest.approx(0.3)


def test_fractions_of_another_box_than_the_models():
    """A model fitted on a wider box is scored in fractions of the task's box."""
    task = get_task("partial-affine")
    group, data = task.make_group(), task.generate(200, seed=0)
    learned = data.eta.clone()
    learned[:, 0] += torch.linspace(-0.1, 0.1, 200)  # a wrong tx spread
    own, _ = recovery_scores(group, data.eta, learned, data.labels, data.class_names)
    half = group.bounds / 2
    narrow, _ = recovery_scores(group, data.eta, learned, data.labels, data.class_names, bounds=half)
    w1 = own["heart"]["pose"]["tx"]
    assert w1["w1"] > 0.01 and narrow["heart"]["pose"]["tx"]["w1"] == pytest.approx(w1["w1"])
    assert narrow["heart"]["pose"]["tx"]["fraction"] == pytest.approx(2 * w1["fraction"])
    with pytest.raises(ValueError, match="positive half-widths"):
        recovery_scores(group, data.eta, learned, data.labels, data.class_names, bounds=half[:2])


def test_count_modes():
    g = torch.Generator().manual_seed(2)
    noise = lambda n, deg: rad(deg) * (2 * torch.rand(n, generator=g, dtype=torch.float64) - 1)
    four = torch.cat([rad(k * 90) + noise(500, 3) for k in range(4)]) + rad(20)
    modes = count_modes(four)
    assert len(modes) == 4
    assert [round(math.degrees(m["location"])) for m in modes] == pytest.approx([20, 110, 200, 290], abs=2)
    assert all(abs(m["mass"] - 0.25) < 0.02 for m in modes)
    assert len(count_modes(noise(3000, 60))) == 1                     # a plateau is one mode
    assert len(count_modes(torch.cat([noise(990, 3), rad(90) + noise(10, 3)]))) == 1   # 1% is noise
    assert len(count_modes(torch.cat([noise(500, 3), rad(180) + noise(500, 3)]))) == 2


def test_affine_log_inverts_the_matrix():
    g = AffineGroup(bounds=(0.75, 0.75, math.pi, 0.75, 0.75))
    eta = g.sample_uniform(100, scale=0.9, generator=torch.Generator().manual_seed(3)).double()
    torch.testing.assert_close(affine_log(g, g.matrix(eta)), eta, atol=1e-6, rtol=0)


def _composed(group, eta, constant):
    """Learned poses of a model whose prototype is T_constant(x̂_true): A(η) A(constant)⁻¹."""
    a = group.matrix(eta.double()) @ torch.linalg.inv(group.matrix(constant.double().expand(eta.shape[0], -1)))
    return affine_log(group, a)


def test_alignment_removes_the_prototype_pose_exactly():
    task = get_task("partial-affine")
    group, data = task.make_group(), task.generate(400, seed=0)
    learned = _composed(group, data.eta, torch.tensor([[0.1, -0.05, 2.0, 0.1, 0.1]]))
    scores, _ = recovery_scores(group, data.eta, learned, data.labels, data.class_names,
                                prior_samples=learned[None].repeat(2, 1, 1))
    heart = scores["heart"]
    assert heart["alignment"]["rotation_deg"] == pytest.approx(math.degrees(2.0), abs=1e-4)
    for kind in ("pose", "prior"):
        assert all(v["w1"] < 1e-5 for v in heart[kind].values()), heart[kind]


def test_alignment_cannot_hide_a_wrong_distribution():
    """A model that puts every C4 image on one mode is 67.5° away (3/4 of the mass moves 90° on average)."""
    task = get_task("c4-glyph")
    group, data = task.make_group(), task.generate(2000, seed=0)
    collapsed = torch.remainder(data.eta + math.pi / 4, math.pi / 2) - math.pi / 4 + 0.3
    scores, _ = recovery_scores(group, data.eta, collapsed, data.labels, data.class_names,
                                prior_samples=collapsed[None])
    assert scores["F"]["pose"]["rot"]["w1"] == pytest.approx(90.0, abs=3.0)
    assert len(scores["F"]["modes"]["prior"]) == 1 and len(scores["F"]["modes"]["true"]) == 4


def test_symmetric_prototypes_are_compared_modulo_their_symmetry():
    """Learned square poses off by random multiples of 90° (and a constant) are a perfect recovery."""
    task = get_task("color-affine")
    group, data = task.make_group(), task.generate(600, seed=1)
    g = torch.Generator().manual_seed(4)
    learned = data.eta.clone().double()
    square = data.labels == 0
    k = torch.randint(4, (int(square.sum()),), generator=g).double()
    learned[square, 2] = torch.remainder(learned[square, 2] + k * math.pi / 2 + 0.4 + math.pi, 2 * math.pi) - math.pi
    learned[:, 5] = torch.remainder(learned[:, 5] + 0.3, 1.0)      # a hue offset of the prototype
    scores, _ = recovery_scores(group, data.eta, learned, data.labels, data.class_names, data.symmetry)
    assert scores["square"]["pose"]["rot"]["w1"] < 1e-4
    assert scores["square"]["pose"]["hue"]["w1"] < 1e-6 and scores["heart"]["pose"]["hue"]["w1"] < 1e-6
    # The same offsets on an asymmetric prototype are a failure.
    learned[data.labels == 2, 2] += rad(90)[0] * (torch.arange(int((data.labels == 2).sum())) % 2)
    scores, _ = recovery_scores(group, data.eta, learned, data.labels, data.class_names, data.symmetry)
    assert scores["heart"]["pose"]["rot"]["w1"] > 20


def test_a_rotation_kept_in_the_prototype_does_not_bias_the_scale():
    # Squares whose learned prototype keeps each image's own rotation (x̂_learned = R_θ x̂_true, scaled by
    # a constant): A(η̂) = A(η) R(−θ) A(c)⁻¹. The pairs A(η̂)⁻¹ A(η) then spread over the 90° cell, and
    # the element-wise median of those matrices charged the isotropic scale an offset of
    # log cos 22.5° = −0.08 it does not have; the scale must come out exact.
    from sgm_pyro.analysis.pose_alignment import rotation_matrix

    task = get_task("color-affine")
    group, data = task.make_group(), task.generate(600, seed=2)
    affine = group.affine
    na = affine.dim
    rot = data.eta[:, affine.names.index("rot")].double()
    c = torch.zeros(1, na, dtype=torch.float64)
    c[0, affine.names.index("log_sx")] = c[0, affine.names.index("log_sy")] = -0.1
    a = affine.matrix(data.eta[:, :na].double()) @ rotation_matrix(affine, -rot) @ torch.linalg.inv(
        affine.matrix(c.expand(len(rot), -1)))
    learned = data.eta.clone().double()
    learned[:, :na] = affine_log(affine, a)
    scores, _ = recovery_scores(group, data.eta, learned, data.labels, data.class_names, data.symmetry)
    square = scores["square"]["pose"]
    assert square["log_sx"]["w1"] < 1e-3 and square["log_sy"]["w1"] < 1e-3, square
    assert square["rot"]["w1"] > 15  # a point mass against the uniform 90° cell: 22.5° away


def test_bad_shapes_are_named():
    g = AffineGroup(bounds=(math.pi,), generators=("rot",))
    with pytest.raises(ValueError, match="must be"):
        recovery_scores(g, torch.zeros(4, 1), torch.zeros(3, 1), torch.zeros(4).long(), ("a",))
    with pytest.raises(ValueError, match="empty"):
        circular_w1(torch.tensor([]), torch.tensor([1.0]))
    with pytest.raises(ValueError, match="supports"):
        ClassAlignment.fit(object(), torch.zeros(2, 1), torch.zeros(2, 1))
