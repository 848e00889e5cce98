"""Checks of user input at the public boundary; they raise ``ValueError`` saying what was expected."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from contextvars import ContextVar

import torch
from torch import Tensor

_NONNEGATIVE_ALLOWED: ContextVar[bool] = ContextVar("sgm_pyro_nonnegative_images_allowed", default=False)


@contextmanager
def allow_nonnegative_images() -> Iterator[None]:
    """Accept batches of images in ``[-1, 1]`` that have no pixel below 0, inside the ``with`` block.

    :func:`check_images` refuses such batches by default because they are almost always images in
    ``[0, 1]`` (the torchvision convention), whose background 0 is not the fill value −1 of every
    transformation. Use this only for data that really is in ``[-1, 1]`` and never darker than mid-grey::

        with sgm_pyro.validation.allow_nonnegative_images():
            model.fit(bright_images, ...)
    """
    token = _NONNEGATIVE_ALLOWED.set(True)
    try:
        yield
    finally:
        _NONNEGATIVE_ALLOWED.reset(token)


def check_images(x, image_shape: Sequence[int] | None = None, name: str = "x", *, tol: float = 1e-4) -> Tensor:
    """Validate a batch of images ``(N, C, H, W)``, floating point, finite, in ``[-1, 1]``.

    ``image_shape`` (``(C, H, W)``), when given, must match the trailing dimensions (a trained model
    only accepts the image size it was built for). A batch with no pixel below 0 is refused as
    images in ``[0, 1]`` (their background would be 0, not the fill value −1): convert them with
    ``x * 2 - 1``, or see :func:`allow_nonnegative_images`. Returns ``x`` unchanged.
    """
    if not isinstance(x, Tensor):
        raise ValueError(f"{name} must be a torch.Tensor of shape (N, C, H, W), got {type(x).__name__}")
    if x.dim() != 4:
        hint = " (add a channel dimension: x.unsqueeze(1))" if x.dim() == 3 else ""
        raise ValueError(f"{name} must have shape (N, C, H, W), got shape {tuple(x.shape)}{hint}")
    if image_shape is not None and tuple(x.shape[1:]) != tuple(image_shape):
        raise ValueError(f"{name} must have image shape (C, H, W) = {tuple(image_shape)} for this model, "
                         f"got {tuple(x.shape[1:])}")
    if x.shape[0] == 0:
        raise ValueError(f"{name} is empty (0 images)")
    if not x.is_floating_point():
        raise ValueError(f"{name} must be floating point with values in [-1, 1], got dtype {x.dtype} "
                         "(convert uint8 images with x.float() / 127.5 - 1)")
    if not torch.isfinite(x).all():
        raise ValueError(f"{name} contains NaN or inf pixels")
    lo, hi = x.min().item(), x.max().item()
    if lo < -1 - tol or hi > 1 + tol:
        raise ValueError(f"{name} must have values in [-1, 1], got range [{lo:.4g}, {hi:.4g}]"
                         + (" (looks like [0, 255]: use x / 127.5 - 1)" if hi > 2 else ""))
    if lo >= -tol and not _NONNEGATIVE_ALLOWED.get():
        raise ValueError(f"{name} has no pixel below 0 (range [{lo:.4g}, {hi:.4g}]), like images in [0, 1]: "
                         "convert with x * 2 - 1 (sgm-pyro expects [-1, 1] with background -1, the fill value "
                         "of every transformation; for data that really is in [-1, 1] and never below 0, wrap "
                         "the calls in `with sgm_pyro.validation.allow_nonnegative_images():`)")
    return x


def check_positive_int(value, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return value


def check_config_fields(cfg, *, integers: tuple[str, ...] = (), positive: tuple[str, ...] = (),
                        non_negative: tuple[str, ...] = (), optional: tuple[str, ...] = ()) -> None:
    """Validate a settings dataclass: positive integers, positive and non-negative numbers (``optional``
    ones may also be None)."""
    kind = type(cfg).__name__
    for name in integers:
        v = getattr(cfg, name)
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"{kind}.{name} must be a positive integer, got {v!r}")
    for name in positive:
        if not getattr(cfg, name) > 0:
            raise ValueError(f"{kind}.{name} must be positive, got {getattr(cfg, name)!r}")
    for name in non_negative:
        if getattr(cfg, name) is None and name in optional:
            continue
        if not getattr(cfg, name) >= 0:
            raise ValueError(f"{kind}.{name} must be non-negative, got {getattr(cfg, name)!r}")


def check_coordinate_scale(value, name: str):
    """A positive factor for every η coordinate: a number, a sequence of numbers or ``{coordinate: number}``.

    Only the values are checked here; the names and the length are checked against the group where
    it is known (:meth:`~sgm_pyro.groups.Group.per_coordinate`). Returns ``value`` unchanged.
    """
    def bad(v) -> bool:
        return isinstance(v, bool) or not isinstance(v, (int, float)) or not v > 0 or v == float("inf")

    if isinstance(value, Mapping):
        if not all(isinstance(k, str) for k in value) or any(bad(v) for v in value.values()):
            raise ValueError(f"{name} as a mapping must name coordinates and give each a positive number, got {value!r}")
    elif isinstance(value, Sequence) and not isinstance(value, str):
        if len(value) == 0 or any(bad(v) for v in value):
            raise ValueError(f"{name} as a sequence must hold one positive number per coordinate, got {value!r}")
    elif bad(value):
        raise ValueError(f"{name} must be a positive number, one per coordinate, or {{coordinate: number}}, "
                         f"got {value!r}")
    return value
