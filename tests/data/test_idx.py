"""IDX reading and writing, and the MNIST / Fashion-MNIST loaders, on small files built here."""

import gzip

import numpy as np
import pytest
import torch

from sgm_pyro.data import DATASETS, dsprites, load_fashion_mnist, load_mnist, read_idx, write_idx
from sgm_pyro.data.idx import IMAGES_MAGIC, LABELS_MAGIC


def fake_split(root, prefix, n, *, gz=True, labels_n=None, rng=None):
    rng = rng or np.random.default_rng(0)
    images = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
    labels = rng.integers(0, 10, size=(labels_n or n,), dtype=np.uint8)
    ext = ".gz" if gz else ""
    write_idx(root / f"{prefix}-images-idx3-ubyte{ext}", images)
    write_idx(root / f"{prefix}-labels-idx1-ubyte{ext}", labels)
    return images, labels


@pytest.mark.parametrize("name", ["a.idx", "a.idx.gz"])
@pytest.mark.parametrize("shape", [(5, 28, 28), (7,), (2, 3, 4, 5)])
def test_round_trip(tmp_path, name, shape):
    array = np.random.default_rng(1).integers(0, 256, size=shape, dtype=np.uint8)
    path = write_idx(tmp_path / name, array)
    raw = path.read_bytes()
    assert (raw[:2] == b"\x1f\x8b") == name.endswith(".gz")
    back = read_idx(path)
    assert back.dtype == np.uint8 and back.shape == shape and np.array_equal(back, array)
    assert back.flags.writeable  # torch.from_numpy must not warn about read-only memory


def test_magic_numbers_match_mnist(tmp_path):
    write_idx(tmp_path / "i", np.zeros((2, 28, 28), np.uint8))
    write_idx(tmp_path / "l", np.zeros(2, np.uint8))
    assert int.from_bytes((tmp_path / "i").read_bytes()[:4], "big") == IMAGES_MAGIC == 2051
    assert int.from_bytes((tmp_path / "l").read_bytes()[:4], "big") == LABELS_MAGIC == 2049
    assert read_idx(tmp_path / "i", magic=2051).shape == (2, 28, 28)


def header(dtype, dims):
    return bytes([0, 0, dtype, len(dims)]) + b"".join(d.to_bytes(4, "big") for d in dims)


BAD_FILES = {
    "too_short": (b"\x00\x00", "at least 4 bytes"),
    "not_idx": (b"\x50\x4b\x03\x04" + bytes(20), "not an IDX file"),
    "dtype": (header(0x0D, (2,)) + bytes(8), "unsupported IDX data type 0x0d"),
    "no_dims": (bytes([0, 0, 8, 0]), "at least one dimension"),
    "truncated_header": (header(8, (2, 3, 4))[:10], "truncated header"),
    "missing_bytes": (header(8, (2, 3)) + bytes(5), "need 6 bytes of data, the file has 5"),
    "extra_bytes": (header(8, (2, 3)) + bytes(7), "need 6 bytes of data, the file has 7"),
    "corrupt_gzip": (b"\x1f\x8b" + bytes(30), "corrupt gzip"),
}


@pytest.mark.parametrize("case", sorted(BAD_FILES))
def test_bad_files_raise_clear_errors(tmp_path, case):
    content, message = BAD_FILES[case]
    (tmp_path / "bad").write_bytes(content)
    with pytest.raises(ValueError, match=message):
        read_idx(tmp_path / "bad")


def test_bad_header_inside_gzip_and_wrong_magic(tmp_path):
    (tmp_path / "bad.gz").write_bytes(gzip.compress(header(8, (4,)) + bytes(3)))
    with pytest.raises(ValueError, match="need 4 bytes"):
        read_idx(tmp_path / "bad.gz")
    write_idx(tmp_path / "labels", np.zeros(3, np.uint8))
    with pytest.raises(ValueError, match="expected magic number 2051 \\(an image file\\), got 2049 \\(a label file\\)"):
        read_idx(tmp_path / "labels", magic=IMAGES_MAGIC)


def test_write_idx_rejects_other_dtypes(tmp_path):
    with pytest.raises(ValueError, match="uint8"):
        write_idx(tmp_path / "x", np.zeros(3, np.float32))


@pytest.mark.parametrize("loader", [load_mnist, load_fashion_mnist])
def test_loaders_read_both_splits_gz_or_raw(tmp_path, loader):
    train_images, train_labels = fake_split(tmp_path, "train", 6, gz=True)
    test_images, _ = fake_split(tmp_path, "t10k", 4, gz=False)
    images, labels = loader(tmp_path, "train")
    assert images.shape == (6, 1, 28, 28) and images.dtype == torch.float32
    assert labels.dtype == torch.int64 and labels.tolist() == train_labels.tolist()
    expected = torch.from_numpy(train_images.astype(np.float32)) / 127.5 - 1
    assert torch.allclose(images[:, 0], expected)
    assert images.min() >= -1 and images.max() <= 1
    test_x, test_y = loader(tmp_path, split="test")
    assert test_x.shape == (4, 1, 28, 28) and test_y.shape == (4,)
    assert torch.allclose(test_x[:, 0], torch.from_numpy(test_images.astype(np.float32)) / 127.5 - 1)


def test_pixel_mapping_endpoints(tmp_path):
    write_idx(tmp_path / "train-images-idx3-ubyte.gz", np.array([[[0, 255], [51, 204]]], np.uint8))
    write_idx(tmp_path / "train-labels-idx1-ubyte.gz", np.array([3], np.uint8))
    images, labels = load_mnist(tmp_path)
    assert torch.allclose(images[0, 0], torch.tensor([[-1.0, 1.0], [-0.6, 0.6]])) and labels.tolist() == [3]


def test_count_mismatch(tmp_path):
    fake_split(tmp_path, "train", 5, labels_n=4)
    with pytest.raises(ValueError, match="5 images .* but 4 labels"):
        load_mnist(tmp_path)


def test_missing_directory_names_every_file_and_a_source(tmp_path):
    with pytest.raises(FileNotFoundError) as err:
        load_mnist(tmp_path / "nowhere")
    text = str(err.value)
    assert "nowhere" in text and "does not exist" in text and "https://" in text
    for name in ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
                 "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"):
        assert name in text


def test_missing_file_names_it_and_the_directory(tmp_path):
    fake_split(tmp_path, "train", 3)
    (tmp_path / "train-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(FileNotFoundError) as err:
        load_fashion_mnist(tmp_path, "train")
    text = str(err.value)
    assert "missing train-labels-idx1-ubyte.gz" in text and str(tmp_path) in text
    assert "Fashion-MNIST" in text and "zalandoresearch" in text
    with pytest.raises(FileNotFoundError, match="t10k-images-idx3-ubyte.gz, t10k-labels-idx1-ubyte.gz"):
        load_mnist(tmp_path, "test")


def test_bad_split_name(tmp_path):
    with pytest.raises(ValueError, match="split must be one of \\['test', 'train'\\], got 'valid'"):
        load_mnist(tmp_path, "valid")


def test_registry():
    assert DATASETS == {"dsprites": dsprites, "mnist": load_mnist, "fashion-mnist": load_fashion_mnist}
