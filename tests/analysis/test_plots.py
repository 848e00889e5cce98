"""Every figure renders headless, saves a non-empty file and returns a Figure."""

import math

import pytest
import torch
from matplotlib.figure import Figure

from sgm_pyro.analysis import (eta_densities, image_grid, image_statistics, iwlb_plot, marginals_comparison,
                               prototype_grid, resample_grid, rotation_density, training_curves)
from sgm_pyro.data.dsprites import dsprites


@pytest.fixture(scope="module")
def data():
    x, lat = dsprites(12, seed=4)
    return x[:, :, ::2, ::2].contiguous(), lat["shape"]  # 32x32 keeps the figures cheap


def _saved(fig, path):
    assert isinstance(fig, Figure)
    assert path.is_file() and path.stat().st_size > 1000
    return True


def test_image_grid_grayscale_png_and_rgb_pdf(tmp_path, data):
    x, _ = data
    path = tmp_path / "nested" / "grid.png"  # parent folders are created
    assert _saved(image_grid(x, nrow=4, title="dSprites", path=path), path)
    rgb = torch.rand(5, 3, 16, 16) * 2 - 1
    pdf = tmp_path / "rgb.pdf"
    assert _saved(image_grid(rgb, nrow=3, path=pdf), pdf)
    assert pdf.read_bytes().startswith(b"%PDF")


def test_image_grid_without_path_saves_nothing(tmp_path, data):
    fig = image_grid(data[0])
    assert isinstance(fig, Figure) and not any(tmp_path.iterdir())


def test_prototype_grid_by_label(tmp_path, data):
    x, shapes = data
    path = tmp_path / "protos.png"
    fig = prototype_grid(x, x.flip(-1), shapes, label_names=("square", "ellipse", "heart"), max_per_label=3, path=path)
    assert _saved(fig, path)
    assert len(fig.axes) == len(shapes.unique())
    assert _saved(prototype_grid(x, x, path=tmp_path / "p2.png"), tmp_path / "p2.png")


def test_resample_grid(tmp_path, data):
    x, _ = data
    path = tmp_path / "resamples.png"
    assert _saved(resample_grid(x, torch.roll(x, 3, -1).expand(4, *x.shape), max_images=5, path=path), path)


def test_eta_densities_with_prototypes_and_point_masses(tmp_path, data):
    x, _ = data
    names = ("tx", "ty", "rot", "log_sx", "log_sy")
    samples = torch.randn(200, 4, 5) * 0.2
    samples[..., 2] = torch.rand(200, 4) * 2 * math.pi - math.pi
    samples[:, 1] = 0.0  # a point mass in every coordinate must still plot
    path = tmp_path / "eta.png"
    fig = eta_densities(samples, names, labels=["a", "b", "c", "d"], prototypes=x[:4], max_images=3, path=path)
    assert _saved(fig, path)
    assert len(fig.axes) == 3 * 6
    assert "deg" in fig.axes[-3].get_xlabel()  # the rotation column, bottom row
    box = [(-0.75, 0.75)] * 2 + [(-180.0, 180.0)] + [(-0.75, 0.75)] * 2
    fig = eta_densities(samples, names, limits=box, max_images=2, path=tmp_path / "eta_box.pdf")
    assert _saved(fig, tmp_path / "eta_box.pdf")
    assert fig.axes[0].get_xlim()[0] <= -0.75 and fig.axes[0].get_xlim()[1] >= 0.75


def test_marginals_comparison(tmp_path, data):
    x, shapes = data
    real = image_statistics(x)
    fake = image_statistics(torch.roll(x, 2, -2).expand(3, *x.shape).reshape(-1, *x.shape[1:]))
    path = tmp_path / "marginals.pdf"
    fig = marginals_comparison(real, fake, shapes, ("square", "ellipse", "heart"), path=path)
    assert _saved(fig, path)
    assert len(fig.axes) == 3 * len(shapes.unique())
    with pytest.raises(ValueError, match="multiple"):
        marginals_comparison(real, {k: v[:-1] for k, v in fake.items()}, shapes)


def test_rotation_density_reports_its_spread(tmp_path):
    path = tmp_path / "rot.png"
    fig = rotation_density(torch.randn(100, 8) * 3.0, title="hearts", path=path)
    assert _saved(fig, path)
    title = fig.axes[0].get_title()
    assert title.startswith("hearts") and "std" in title
    assert abs(float(title.split("std ")[1].rstrip("°")) - 3.0) < 0.5


def test_training_curves_full_partial_and_empty(tmp_path):
    steps = list(range(30))
    history = {
        "inference": {"step": steps, "loss": [1 / (s + 1) for s in steps], "mse": [0.5 / (s + 1) for s in steps],
                      "inv": [0.01] * 30, "val_step": [10, 20, 30], "val_mse": [0.3, 0.2, 0.1]},
        "prior": {"step": steps, "loss": [-s * 0.1 for s in steps], "val_step": [15, 30], "val_log_prob": [1.0, 2.0]},
    }
    path = tmp_path / "curves.png"
    assert _saved(fig := training_curves(history, title="fit", path=path), path)
    assert len(fig.axes) == 4
    partial = training_curves({"inference": {"loss": [3.0, 2.0, 1.0]}}, path=tmp_path / "partial.png")
    assert len(partial.axes) == 1 and _saved(partial, tmp_path / "partial.png")
    assert _saved(training_curves({}, path=tmp_path / "empty.png"), tmp_path / "empty.png")


def test_iwlb_plot(tmp_path):
    table = {"VAE": {12500: (1015.0, 10.0), 25000: (1100.0, 8.0), 50000: (1270.0, 5.0)},
             "AugVAE": {12500: (1255.0, 6.0), 50000: (1277.0, 4.0)}}
    path = tmp_path / "iwlb.pdf"
    fig = iwlb_plot(table, title="rotated MNIST, 15°", path=path)
    assert _saved(fig, path)
    assert len(fig.axes[0].get_legend().get_texts()) == 2
    with pytest.raises(ValueError, match="non-empty"):
        iwlb_plot({})


def test_plots_validate_inputs(tmp_path, data):
    x, _ = data
    with pytest.raises(ValueError, match="C = 1"):
        image_grid(torch.zeros(2, 2, 8, 8))
    with pytest.raises(ValueError, match="same shape"):
        prototype_grid(x, x[:-1])
    with pytest.raises(ValueError, match=r"\(S, "):
        resample_grid(x, x)
    with pytest.raises(ValueError, match="names"):
        eta_densities(torch.zeros(5, 2, 3), ("a", "b"))
    with pytest.raises(ValueError, match="suffix"):
        image_grid(x, path=tmp_path / "grid.jpg")


# ---------------------------------------------------------------- readable at the default size
LONG = "held-out images (top) and their prototypes (bottom), with a long run name: runs/mnist90-again"


def _tiny_figures(data):
    """Every figure of the library, from the smallest inputs it accepts, each with a long title."""
    x, shapes = data
    stats = image_statistics(x)
    one_step = {"inference": {"step": [0], "loss": [0.5], "mse": [0.5], "inv": [0.0], "val_step": [0],
                              "val_mse": [0.4]},
                "prior": {"step": [0], "loss": [1.0], "val_step": [0], "val_log_prob": [-1.0]}}
    yield "image_grid", image_grid(x[:1], title=LONG)
    yield "prototype_grid", prototype_grid(x[:2], x[:2], title=LONG)
    yield "prototype_grid by label", prototype_grid(x, x, shapes, label_names=("square", "ellipse", "heart"),
                                                     max_per_label=1, title=LONG)
    yield "resample_grid", resample_grid(x[:1], x[:1].expand(1, 1, *x.shape[1:]), title=LONG)
    yield "eta_densities", eta_densities(torch.randn(20, 1, 1), ("rot",), title=LONG)
    yield "marginals_comparison", marginals_comparison(stats, stats, shapes, title=LONG)
    yield "rotation_density", rotation_density(torch.randn(10), title=LONG)
    yield "training_curves", training_curves(one_step, title=LONG)
    yield "iwlb_plot", iwlb_plot({"VAE": {100: (1.0, 0.1)}}, title=LONG)


def _titles(fig):
    texts = [fig._suptitle] if fig._suptitle is not None else []
    return texts + [t for ax in fig.axes for t in (ax.title, ax._left_title, ax._right_title, ax.xaxis.label,
                                                   ax.yaxis.label) if t.get_text()]


def test_every_title_lies_inside_its_figure(data):
    import io
    for name, fig in _tiny_figures(data):
        fig.savefig(io.BytesIO(), format="png", dpi=100)
        renderer = fig.canvas.get_renderer()
        titles = _titles(fig)
        assert titles, name
        for text in titles:
            box = text.get_window_extent(renderer)
            assert box.x0 >= -1 and box.y0 >= -1, (name, text.get_text())
            assert box.x1 <= fig.bbox.width + 1 and box.y1 <= fig.bbox.height + 1, (name, text.get_text())


def test_training_curves_keep_the_loss_visible_and_label_a_lone_validation():
    steps = list(range(40))
    mse = [1 / (s + 1) for s in steps]
    history = {"inference": {"step": steps, "loss": mse, "mse": mse, "inv": [0.0] * 40,  # loss == x-MSE exactly
                             "val_step": [40], "val_mse": [0.1234]}}
    fig = training_curves(history)
    train, val = fig.axes
    styles = [(line.get_linestyle(), line.get_linewidth()) for line in train.lines]
    assert len(set(styles)) == 3, styles  # loss, x-MSE and invertibility are told apart
    (dot,) = val.lines
    assert dot.get_marker() == "o" and dot.get_markersize() >= 6
    assert "0.1234" in [t.get_text() for t in val.texts]  # the value, written next to the lone point
    lo, hi = val.get_xlim()
    assert lo < 40 < hi and hi - lo >= 2
