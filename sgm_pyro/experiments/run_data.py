"""The images of a run described by a :class:`~sgm_pyro.config.RunConfig` (SPEC 7 protocols)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


# What to pass when a run's data is not where its config says (fit, evaluate, sample and plot take --data).
MISSING_DATA_HINT = {
    "npz": "point to the file with --data npz:PATH (or data.name in the config)",
    "idx": "point to the folder of IDX files with --data idx:DIR (or data.name in the config)",
    "root": "point to the folder of IDX files with --data idx:DIR, or set data.root in the config "
            "(sgm fit --set data.root=DIR); the default is data/<name> under the current directory",
}


@dataclass
class RunData:
    """Images of a run: ``train`` is a tensor or an infinite stream; the others are tensors or None."""

    train: object
    val: object
    test: object
    test_labels: object
    test_latents: dict | None
    image_shape: tuple[int, int, int]


def load_pool(d, *, split: str | None = None):
    """All images (and labels or None) of a tensor data set described by ``d`` (a DataConfig)."""
    from ..config import parse_data_name
    from ..data import load_fashion_mnist, load_mnist, load_npz

    kind, path = parse_data_name(d.name)
    split = split or d.split
    if kind == "npz":
        if not Path(path).is_file():
            raise FileNotFoundError(f"npz file {path!r} does not exist; {MISSING_DATA_HINT['npz']}")
        labels_key = d.labels_key or None
        if labels_key == "labels":  # the default key is optional: an .npz of images alone is fine
            import numpy as np
            with np.load(path, allow_pickle=False) as f:
                labels_key = labels_key if labels_key in f.files else None
        return load_npz(path, d.images_key, labels_key)
    load, where = (load_mnist, path) if kind == "idx" else \
        (load_mnist if kind == "mnist" else load_fashion_mnist, d.root or f"data/{kind}")
    try:
        return load(where, split)
    except FileNotFoundError as e:  # name the option that points at the data
        hint = MISSING_DATA_HINT["idx" if kind == "idx" else "root"]
        raise FileNotFoundError(f"{e} To use data elsewhere, {hint}.") from e


def load_run_data(cfg, batch_size: int, device, rank: int = 0) -> RunData:
    """Training, validation and test images of the run ``cfg`` (SPEC 7 protocols), reproducible by seeds.

    ``rank``: the process's rank in data-parallel training; an infinite dSprites stream is then
    seeded per rank (tensor data sets are sharded by the training loops instead).
    """
    from ..data import DSpritesStream, dsprites, rotate_fixed, split_indices
    from ..inference.distributed import rank_seed

    d = cfg.data
    if d.name == "dsprites":
        def draw(n: int, seed: int):
            return dsprites(n, laws=d.laws, seed=seed) if n else (None, None)
        val, _ = draw(d.n_val, d.split_seed + 10_000)
        test, latents = draw(d.n_test, d.split_seed + 20_000)
        if d.n_train == 0:
            train = DSpritesStream(batch_size, laws=d.laws, seed=rank_seed(d.split_seed + 1, rank), device=device)
        else:
            train, _ = draw(d.n_train, d.split_seed + 1)
            if d.rotation_degrees:
                train = rotate_fixed(train, d.rotation_degrees, d.rotation_seed)[0]
        labels = None if latents is None else latents["shape"]
        return RunData(train, val, test, labels, latents, (1, 64, 64))
    images, labels = load_pool(d)
    if d.rotation_degrees:
        images = rotate_fixed(images, d.rotation_degrees, d.rotation_seed)[0]
    n = images.shape[0]
    rest = n - d.n_val - d.n_test
    if rest < 1 or d.n_train > rest:
        raise ValueError(f"{d.name} has {n} images: data.n_val ({d.n_val}) + data.n_test ({d.n_test}) + "
                         f"data.n_train ({d.n_train or 'all the rest'}) need more than that")
    val_idx, test_idx, train_idx = split_indices(n, [d.n_val, d.n_test, d.n_train or rest], seed=d.split_seed)
    return RunData(images[train_idx], images[val_idx] if d.n_val else None, images[test_idx] if d.n_test else None,
                   None if labels is None or not d.n_test else labels[test_idx], None, tuple(images.shape[1:]))
