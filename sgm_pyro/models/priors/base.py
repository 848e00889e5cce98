"""The shared shell of the shipped prior programs p_ψ(η | x̂) (docs/architecture.md)."""

from __future__ import annotations

from collections.abc import Sequence

import pyro
from pyro.contrib.zuko import ZukoToPyro
from pyro.nn import PyroModule
from torch import Tensor
from torch.distributions import Distribution


class PriorProgram(PyroModule):
    """Base class: a ``PyroModule`` whose ``forward(x_hat)`` samples the site ``"eta"``.

    Subclasses implement :meth:`_distribution`. The caller owns the data plate::

        with pyro.plate("data", N):
            eta = prior(x_hat)          # site "eta": batch (N,), event (group.dim,)

    Args:
        group: a transformation group (``sgm_pyro.groups``); registered as a submodule so that
            ``prior.to(device)`` moves its ``bounds``/``offset`` buffers with the parameters.
        image_shape: ``(C, H, W)`` expected of ``x_hat``, or ``None`` to accept any image shape.
    """

    def __init__(self, group, image_shape: Sequence[int] | None = None) -> None:
        super().__init__()
        self.group = group
        self.image_shape = None if image_shape is None else tuple(int(s) for s in image_shape)
        if self.image_shape is not None and len(self.image_shape) != 3:
            raise ValueError(f"image_shape must be (C, H, W), got {image_shape}")

    @property
    def dim(self) -> int:
        """Number of η coordinates (``group.dim``)."""
        return self.group.dim

    def validate_x_hat(self, x_hat: Tensor) -> None:
        """Raise ``ValueError`` unless ``x_hat`` is a float ``(N, C, H, W)`` tensor of ``image_shape``."""
        if not isinstance(x_hat, Tensor) or x_hat.dim() != 4 or not x_hat.is_floating_point():
            got = tuple(x_hat.shape) if isinstance(x_hat, Tensor) else type(x_hat).__name__
            raise ValueError(f"x_hat must be a float tensor of shape (N, C, H, W), got {got}")
        if self.image_shape is not None and tuple(x_hat.shape[1:]) not in self.accepted_shapes():
            raise ValueError(f"x_hat must have image shape {' or '.join(map(str, self.accepted_shapes()))} (C, H, W), "
                             f"got {tuple(x_hat.shape[1:])}")

    def accepted_shapes(self) -> list[tuple[int, ...]]:
        """``image_shape``, and the pooled shape when the prior's features pool x̂ to ``input_size``.

        Stage 2 may re-augment pooled images (``PriorConfig.image_size``); a prior that pools its
        input anyway sees the same pixels either way.
        """
        shapes = [self.image_shape]
        size = getattr(getattr(self, "features", None), "input_size", None)
        if size is not None and (self.image_shape[0], size, size) != self.image_shape:
            shapes.append((self.image_shape[0], size, size))
        return shapes

    def distribution(self, x_hat: Tensor) -> Distribution:
        """p_ψ(η | x̂) as a fresh ``torch.distributions.Distribution`` (zuko style).

        ``x_hat: (N, C, H, W)``; the result has batch shape ``(N,)`` and event shape ``(dim,)``:
        ``log_prob(eta: (..., N, dim)) -> (..., N)`` and ``sample((S,)) -> (S, N, dim)``.
        ``x_hat`` is cast to the prior's dtype (the dtype of ``group.bounds``).
        """
        self.validate_x_hat(x_hat)
        return self._distribution(x_hat.to(dtype=self.group.bounds.dtype))

    def _distribution(self, x_hat: Tensor) -> Distribution:  # pragma: no cover - abstract
        raise NotImplementedError

    def log_prob(self, eta: Tensor, x_hat: Tensor) -> Tensor:
        """``log p_ψ(eta | x_hat)``, shape ``(N,)``, for ``eta: (N, dim)`` and ``x_hat: (N, C, H, W)``."""
        if not isinstance(eta, Tensor) or eta.dim() != 2 or eta.shape[-1] != self.dim:
            got = tuple(eta.shape) if isinstance(eta, Tensor) else type(eta).__name__
            raise ValueError(f"eta must have shape (N, {self.dim}) for coordinates {self.group.names}, got {got}")
        self.validate_x_hat(x_hat)
        if eta.shape[0] != x_hat.shape[0]:
            raise ValueError(f"eta has {eta.shape[0]} rows but x_hat has {x_hat.shape[0]} images")
        return self.distribution(x_hat).log_prob(eta)

    def forward(self, x_hat: Tensor) -> Tensor:
        """Sample the site ``"eta"``: ``(N, dim)`` given ``x_hat: (N, C, H, W)``."""
        # ZukoToPyro turns any torch distribution into a Pyro one; flows also get their
        # log-density cached from sampling (rsample_and_log_prob), saving an inverse pass.
        return pyro.sample("eta", ZukoToPyro(self.distribution(x_hat)))
