"""NPZ image loading (layouts, value validation) and seeded splits."""

import numpy as np
import pytest
import torch

from sgm_pyro.data import load_npz, split_indices


def save(tmp_path, **arrays):
    path = tmp_path / "d.npz"
    np.savez(path, **arrays)
    return path


def test_uint8_nhw_becomes_n1hw_in_range(tmp_path):
    images = np.array([[[0, 255], [51, 102]]] * 3, np.uint8)
    x, y = load_npz(save(tmp_path, images=images, labels=np.array([2, 0, 1], np.uint8)))
    assert x.shape == (3, 1, 2, 2) and x.dtype == torch.float32
    assert torch.allclose(x[0, 0], torch.tensor([[-1.0, 1.0], [-0.6, -0.2]]))
    assert y.dtype == torch.int64 and y.tolist() == [2, 0, 1]


def test_channels_last_and_first(tmp_path):
    rgb = np.zeros((2, 8, 8, 3), np.uint8)
    rgb[..., 1] = 255  # green channel on
    x, _ = load_npz(save(tmp_path, images=rgb), labels_key=None)
    assert x.shape == (2, 3, 8, 8) and (x[:, 1] == 1).all() and (x[:, 0] == -1).all()
    x2, labels = load_npz(save(tmp_path, images=rgb.transpose(0, 3, 1, 2)), labels_key=None)
    assert labels is None and torch.equal(x, x2)


def test_ambiguous_layout_needs_an_explicit_one(tmp_path):
    images = np.zeros((2, 3, 5, 3), np.uint8)
    images[:, 0] = 255
    path = save(tmp_path, images=images)
    with pytest.raises(ValueError, match="pass layout="):
        load_npz(path, labels_key=None)
    x, _ = load_npz(path, labels_key=None, layout="NCHW")
    assert x.shape == (2, 3, 5, 3) and (x[:, 0] == 1).all()
    with pytest.raises(ValueError, match="layout must be one of"):
        load_npz(path, labels_key=None, layout="CHW")


def test_float_images_in_range_pass_through(tmp_path):
    images = np.linspace(-1, 1, 2 * 4 * 4, dtype=np.float64).reshape(2, 4, 4)
    x, _ = load_npz(save(tmp_path, images=images), labels_key=None)
    assert x.dtype == torch.float32 and torch.allclose(x[:, 0], torch.from_numpy(images).float())


@pytest.mark.parametrize("images, message", [
    (np.full((2, 4, 4), 1.5, np.float32), "must already be in \\[-1, 1\\]"),
    (np.array([[[np.nan, 0.0]]], np.float32), "NaN"),
    (np.full((2, 4, 4), 300, np.int64), "must be in 0..255"),
    (np.full((2, 4, 4), -3, np.int16), "must be in 0..255"),
    (np.zeros((2, 4, 4), bool), "dtype bool"),
    (np.zeros((0, 4, 4), np.uint8), "is empty"),
    (np.zeros((4, 4), np.uint8), "expected images of shape"),
])
def test_invalid_images(tmp_path, images, message):
    with pytest.raises(ValueError, match=message):
        load_npz(save(tmp_path, images=images), labels_key=None)


def test_missing_key_and_bad_labels(tmp_path):
    images = np.zeros((3, 4, 4), np.uint8)
    with pytest.raises(ValueError, match="no array named 'labels'; the file holds \\['images'\\]"):
        load_npz(save(tmp_path, images=images))
    with pytest.raises(ValueError, match="integers of shape \\(3,\\)"):
        load_npz(save(tmp_path, images=images, labels=np.zeros(2, np.int64)))
    with pytest.raises(ValueError, match="integers of shape"):
        load_npz(save(tmp_path, images=images, labels=np.zeros(3, np.float32)))
    x, y = load_npz(save(tmp_path, pixels=images, y=np.arange(3)), images_key="pixels", labels_key="y")
    assert x.shape == (3, 1, 4, 4) and y.tolist() == [0, 1, 2]


def test_split_indices_are_disjoint_seeded_and_shuffled():
    a = split_indices(100, (60, 30), seed=0)
    b = split_indices(100, [60, 30], seed=0)
    c = split_indices(100, (60, 30), seed=1)
    assert [len(t) for t in a] == [60, 30] and all(t.dtype == torch.int64 for t in a)
    assert all(torch.equal(s, t) for s, t in zip(a, b)) and not torch.equal(a[0], c[0])
    joined = torch.cat(a)
    assert len(joined.unique()) == 90 and joined.min() >= 0 and joined.max() < 100
    # Shuffled: a label-sorted file (first half 0s, second half 1s) gets both labels in each part.
    labels = torch.arange(100) >= 50
    assert 0.3 < labels[a[0]].float().mean() < 0.7


@pytest.mark.parametrize("n, sizes", [(0, (1,)), (10, (8, 3)), (10, (-1, 2)), (10, (2.5,))])
def test_split_indices_validation(n, sizes):
    with pytest.raises(ValueError):
        split_indices(n, sizes)
