"""The shared interface of transformation groups T_η (SPEC section 2)."""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager

import torch
from torch import Tensor, nn

from .chain import Chain

# Whether validate_eta also reads the values (NaN / inf). Reading them is a host sync, a blocking
# wait on a GPU, so the training loops switch it off after their first, checked, step.
_VALUE_CHECKS = True

# A factor per η coordinate: one number, one per coordinate, or {coordinate name: number}.
CoordinateScale = float | Sequence[float] | Mapping[str, float]

# Coordinates that live on a circle, and their periods in the group's units.
PERIODS = {"rot": 2 * math.pi, "hue": 1.0}


@contextmanager
def value_checks(enabled: bool) -> Iterator[None]:
    """Turn the value part (NaN / inf) of :meth:`Group.validate_eta` on or off inside the block.

    Shape and dtype checks stay on: they read only host metadata and cost no device sync.
    """
    global _VALUE_CHECKS
    before, _VALUE_CHECKS = _VALUE_CHECKS, bool(enabled)
    try:
        yield
    finally:
        _VALUE_CHECKS = before


def _as_vector(value, dim: int, name: str, default: float) -> Tensor:
    if value is None:
        return torch.full((dim,), float(default))
    t = torch.as_tensor(value, dtype=torch.get_default_dtype()).flatten()
    if t.numel() == 1 and dim > 1:
        t = t.expand(dim).clone()
    if t.numel() != dim:
        raise ValueError(f"{name} must have {dim} entries (one per η coordinate), got {t.numel()}")
    if not torch.isfinite(t).all():
        raise ValueError(f"{name} must be finite, got {t.tolist()}")
    return t


class Group(nn.Module):
    """A family of transformations ``T_η`` with a box ``offset ± bounds`` of allowed parameters.

    Subclasses set ``names`` and implement :meth:`apply_chain`. ``bounds`` and ``offset`` are
    buffers, so ``group.to(device)`` moves them with the rest of a model.
    """

    names: tuple[str, ...]

    def __init__(self, names: Sequence[str], bounds=None, offset=None, *, squash: bool = False,
                 default_bounds: Sequence[float] | None = None) -> None:
        super().__init__()
        self.names = tuple(names)
        dim = len(self.names)
        if bounds is None and default_bounds is not None:
            bounds = default_bounds
        b = _as_vector(bounds, dim, "bounds", 1.0)
        if (b <= 0).any():
            raise ValueError(f"bounds must be positive for every coordinate {self.names}, got {b.tolist()}")
        self.register_buffer("bounds", b)
        self.register_buffer("offset", _as_vector(offset, dim, "offset", 0.0))
        self.squash = bool(squash)
        self._factors: dict = {}  # per_coordinate's results, by value, device and dtype

    @property
    def dim(self) -> int:
        return len(self.names)

    # ----------------------------------------------------------------- validation
    def validate_eta(self, eta: Tensor, name: str = "eta") -> None:
        if not isinstance(eta, Tensor):
            raise ValueError(f"{name} must be a torch.Tensor of shape (N, {self.dim}), got {type(eta).__name__}")
        if eta.dim() != 2 or eta.shape[-1] != self.dim:
            raise ValueError(
                f"{name} must have shape (N, {self.dim}) for coordinates {self.names}, got {tuple(eta.shape)}")
        if not eta.is_floating_point():
            raise ValueError(f"{name} must be a floating-point tensor, got dtype {eta.dtype}")
        if _VALUE_CHECKS and not torch.isfinite(eta).all():
            raise ValueError(f"{name} contains NaN or inf values")

    def validate_images(self, x: Tensor, name: str = "x") -> None:
        if not isinstance(x, Tensor):
            raise ValueError(f"{name} must be a torch.Tensor of shape (N, C, H, W), got {type(x).__name__}")
        if x.dim() != 4:
            raise ValueError(f"{name} must have shape (N, C, H, W), got rank {x.dim()} shape {tuple(x.shape)}")
        if not x.is_floating_point():
            raise ValueError(f"{name} must be a floating-point tensor in [-1, 1], got dtype {x.dtype}")

    def _check(self, x: Tensor, etas: Sequence[Tensor]) -> None:
        self.validate_images(x)
        for i, eta in enumerate(etas):
            self.validate_eta(eta, f"etas[{i}]" if len(etas) > 1 else "eta")
            if eta.shape[0] != x.shape[0]:
                raise ValueError(f"eta batch size {eta.shape[0]} does not match the {x.shape[0]} images")

    # ----------------------------------------------------------------- group structure
    def identity(self, n: int, *, device=None, dtype=None) -> Tensor:
        """The identity element η = 0, shape ``(n, dim)``."""
        return torch.zeros(n, self.dim, device=device or self.bounds.device, dtype=dtype or self.bounds.dtype)

    def inverse(self, eta: Tensor) -> Tensor:
        """Parameters of ``T_η⁻¹``: ``-η`` (exact for the exponential map and for colour shifts)."""
        return -eta

    def covers_circle(self, name: str) -> bool:
        """Whether the box of the circular coordinate ``name`` (``"rot"``, ``"hue"``) is its whole circle:
        a half-width of at least half the period (π for a rotation, 0.5 for a hue)."""
        if name not in self.names or name not in PERIODS:
            return False
        return float(self.bounds[self.names.index(name)]) >= PERIODS[name] / 2 * (1 - 1e-6)

    def per_coordinate(self, value: CoordinateScale, name: str = "scale", default: float = 1.0) -> Tensor:
        """A positive factor per η coordinate, ``(dim,)`` on the group's device.

        ``value`` is one number for every coordinate, a sequence of ``dim`` numbers, or a mapping
        ``{coordinate name: number}`` whose missing coordinates get ``default``. Each result is
        built once per device: a training loop draws its views with the same value every step, and
        building the tensor copies it to the device, which on a GPU waits for the queued work. The
        returned tensor is shared; do not modify it.
        """
        key = (repr(value), name, default, self.bounds.device, self.bounds.dtype)
        if key not in self._factors:
            self._factors[key] = self._per_coordinate(value, name, default)
        return self._factors[key]

    def _per_coordinate(self, value: CoordinateScale, name: str, default: float) -> Tensor:
        if isinstance(value, Mapping):
            unknown = sorted(set(value) - set(self.names))
            if unknown:
                raise ValueError(f"{name} names unknown coordinates {unknown}; the group has {list(self.names)}")
            value = [value.get(c, default) for c in self.names]
        try:
            t = _as_vector(value, self.dim, name, default)
        except (TypeError, RuntimeError) as e:
            raise ValueError(f"{name} must be a number, {self.dim} numbers or a mapping of coordinate "
                             f"names {list(self.names)} to numbers, got {value!r}") from e
        if (t <= 0).any():
            raise ValueError(f"{name} must be positive for every coordinate {self.names}, got {t.tolist()}")
        return t.to(self.bounds)

    def sample_uniform(self, n: int, scale: CoordinateScale = 1.0, generator: torch.Generator | None = None) -> Tensor:
        """η uniform on ``offset ± scale · bounds``, shape ``(n, dim)``; ``scale`` as in :meth:`per_coordinate`."""
        if n < 0:
            raise ValueError(f"n must be non-negative, got {n}")
        s = scale if isinstance(scale, (int, float)) else self.per_coordinate(scale)
        if isinstance(s, (int, float)) and not s >= 0:  # 0: every draw is the offset
            raise ValueError(f"scale must be non-negative, got {scale}")
        u = torch.rand(n, self.dim, generator=generator, device=self.bounds.device, dtype=self.bounds.dtype)
        return self.offset + s * self.bounds * (2.0 * u - 1.0)

    def to_box(self, u: Tensor) -> Tensor:
        """Map unconstrained values onto the box: ``offset + bounds · squash(u)``."""
        return self.offset + self.bounds * (torch.tanh(u) if self.squash else u)

    def from_box(self, eta: Tensor, eps: float = 1e-6) -> Tensor:
        """Inverse of :meth:`to_box` (clamped just inside the box when squashed)."""
        v = (eta - self.offset) / self.bounds
        return torch.atanh(v.clamp(-1 + eps, 1 - eps)) if self.squash else v

    def in_box(self, eta: Tensor, tol: float = 1e-6) -> Tensor:
        """Boolean ``(N,)``: whether each η lies in the box."""
        return ((eta - self.offset).abs() <= self.bounds * (1 + tol)).all(-1)

    # ----------------------------------------------------------------- actions
    def apply(self, x: Tensor, eta: Tensor) -> Tensor:
        """``T_η(x)`` with one interpolation. ``x: (N, C, H, W)``, ``eta: (N, dim)``."""
        return self.apply_chain(x, [eta])

    def apply_chain(self, x: Tensor, etas: Sequence[Tensor]) -> Tensor:  # pragma: no cover - abstract
        """Apply ``etas[0]`` first, then ``etas[1]``, ... as one transformation of ``x``."""
        raise NotImplementedError

    # ----------------------------------------------------------------- elements
    # A loss that warps one batch by several chains sharing members (the invariance loss of SPEC 3) builds
    # each member once and composes them: a group whose elements have a cheaper form than the chain of
    # coordinates (the affine group's matrices) overrides the four methods below together.
    @property
    def background(self) -> float:
        """The pixel value :meth:`act` may subtract before and add after acting (``act``'s
        ``background`` argument): 0 here; the affine group's fill when it pads with a constant."""
        return 0.0

    def element(self, eta: Tensor):
        """The batch of elements ``T_η``, ``eta: (N, dim)``. Elements index along the batch like tensors."""
        self.validate_eta(eta)
        return Chain((eta,))

    def compose(self, *elements):
        """``elements[0]`` first, then ``elements[1]``, ...: one batch of elements."""
        if not elements:
            raise ValueError("compose needs at least one element batch")
        return Chain(tuple(e for el in elements for e in el.etas))

    def invert(self, element):
        """The inverse of every element of the batch."""
        return Chain(tuple(self.inverse(e) for e in reversed(element.etas)))

    def act(self, x: Tensor, element, *, background: float = 0.0) -> Tensor:
        """``T(x)`` for a batch of elements, with one interpolation.

        ``background``: ``x`` holds the images minus this value and so does the result (a loss that
        compares warped images with each other then needs no shift per warp; use :attr:`background`).
        """
        if background == 0.0:
            return self.apply_chain(x, element.etas)
        return self.apply_chain(x + background, element.etas) - background

    def config(self) -> dict:  # pragma: no cover - abstract
        """Plain-data description from which :func:`sgm_pyro.groups.make_group` rebuilds the group."""
        raise NotImplementedError

    def extra_repr(self) -> str:
        b = ", ".join(f"{n}={v:.3g}" for n, v in zip(self.names, self.bounds.tolist()))
        return f"bounds=({b}), squash={self.squash}"

