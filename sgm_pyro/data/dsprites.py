"""Procedural dSprites (SPEC section 7): 64x64 binary shapes rendered in torch, with known latents.

Geometry (pixel units; pixel ``j`` covers ``[j, j+1)`` and is lit when its centre ``j + 0.5`` is
inside the shape):

* position: centre ``c = MARGIN + pos * (64 - 2 * MARGIN)`` = ``15 + 34 * pos``, so pos 0.5 is the
  frame centre 32, ``pos_x`` grows to the right and ``pos_y`` downwards (row index);
* sizes at scale 1: square 18 px wide, ellipse 24 x 12 px (long axis horizontal at orientation 0),
  heart about 22 x 22 px, upright at orientation 0 (two lobes at the top, point at the bottom);
* every shape at scale <= 1 lies within ``R_MAX = 12.73`` px of its centre (the square's half
  diagonal), so at any position in [0, 1] and any orientation its content stays at least 2.27 px
  from the edge: the two outermost rows and columns on every side are always background. The
  warp-based SGM breaks when content touches the border (SPEC section 9), hence the margin;
* ``pos`` is the shape's centre of mass (the heart is centred on its centroid), and the shape is
  rotated about it: positive ``orientation`` turns it counter-clockwise as displayed with row 0 at
  the top, the convention of ``rot`` in SPEC section 2.1.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping

import torch
from torch import Tensor

from .laws import (ORIENTATION_GRID, POSITION_GRID, SCALE_GRID, SHAPES, DSpritesLaws, Sampler, ShapeLaw, pick,
                   resolve_laws)

SIZE = 64
MARGIN = 15.0
SQUARE_HALF = 9.0
ELLIPSE_AXES = (12.0, 6.0)
# Heart: the curve (x² + y² − 1)³ − x²y³ <= 0 (y up), whose centroid sits at y = 0.2935 and whose
# farthest point from it is 1.2931 units away; 9.7 px per unit keeps it within R_MAX.
HEART_UNIT = 9.7
HEART_CENTROID_Y = 0.2935
R_MAX = SQUARE_HALF * math.sqrt(2.0)
# Images rendered per pass: small enough that the (chunk, 64, 64) temporaries stay in cache.
CHUNK = 256

Laws = str | DSpritesLaws | Mapping[str, ShapeLaw | Mapping[str, Sampler]]


def dsprites(n: int, *, laws: Laws = "paper", seed: int = 0, device: torch.device | str | None = None,
             generator: torch.Generator | None = None, grid: bool = False) -> tuple[Tensor, dict[str, Tensor]]:
    """Draw ``n`` dSprites images and their latents.

    Args:
        n: number of images, > 0.
        laws: ``"paper"`` (SPEC section 7, default), ``"uniform"`` (uniform over the original
            dSprites grid: 3 shapes x 6 scales x 40 orientations x 32 x 32 positions), a
            :class:`~sgm_pyro.data.laws.DSpritesLaws`, or a mapping ``{"square": ShapeLaw or
            {"scale": sampler, "orientation": ..., "pos_x": ..., "pos_y": ...}, ...}`` whose absent
            shapes are never drawn. A sampler is ``(n, generator) -> (n,) tensor``.
        seed: seeds a fresh CPU generator; ignored when ``generator`` is given.
        device: where the images and latents are returned. Latents are always drawn on the CPU,
            so a seed gives the same latents on every device (images may differ in rare pixels
            whose centre lies on a shape's edge, where another device's float rounding differs).
        generator: a CPU ``torch.Generator`` to draw from (advanced: share one across calls).
        grid: snap scale to the 6 values linspace(0.5, 1, 6), orientation to the 40 values
            k·2π/40 and positions to the 32 values linspace(0, 1, 32), as in the original dataset.
            Off by default: the paper's laws are continuous (and ``"uniform"`` is on the grid anyway).

    Returns:
        ``images``: float32 ``(n, 1, 64, 64)`` with values exactly -1 (background) and +1 (shape);
        ``latents``: dict of ``(n,)`` tensors: ``shape`` int64 (0 square, 1 ellipse, 2 heart),
        ``scale`` in (0, 1], ``orientation`` (radians), ``pos_x``, ``pos_y`` in [0, 1].
    """
    latents = sample_latents(n, laws, _generator(seed, generator), grid=grid)
    images = render_dsprites(latents, device=device)
    return images, {k: v.to(images.device) for k, v in latents.items()}


class DSpritesStream:
    """Infinite stream of dSprites batches (the paper trains on a stream, SPEC section 7).

    Iterating yields ``images`` of shape ``(batch_size, 1, 64, 64)`` in {-1, +1} for ever, or
    ``(images, latents)`` when ``with_latents=True``. Each ``iter()`` restarts from ``seed``, so two
    passes see the same sequence; use ``itertools.islice`` to take a finite number of batches.
    It is a plain iterable, not a DataLoader dataset: rendering is fast enough in the main process,
    and worker processes would each replay the same seed.
    """

    def __init__(self, batch_size: int, *, laws: Laws = "paper", seed: int = 0,
                 device: torch.device | str | None = None, grid: bool = False, with_latents: bool = False) -> None:
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size <= 0:
            raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
        self.batch_size = batch_size
        self.laws = resolve_laws(laws)
        self.seed = seed
        self.device = device
        self.grid = grid
        self.with_latents = with_latents
        _generator(seed, None)  # validate the seed now rather than at the first batch

    def __iter__(self) -> Iterator[Tensor | tuple[Tensor, dict[str, Tensor]]]:
        generator = _generator(self.seed, None)
        while True:
            latents = sample_latents(self.batch_size, self.laws, generator, grid=self.grid)
            images = render_dsprites(latents, device=self.device)
            if self.with_latents:
                yield images, {k: v.to(images.device) for k, v in latents.items()}
            else:
                yield images


def sample_latents(n: int, laws: Laws, generator: torch.Generator, *, grid: bool = False) -> dict[str, Tensor]:
    """Draw ``n`` CPU latents (the dict of :func:`dsprites`) without rendering them.

    ``laws`` and ``grid`` are as in :func:`dsprites`. Shapes are drawn first, then each shape's
    four latents in turn, so the stream of random numbers is fixed by ``generator`` alone.
    """
    if isinstance(n, bool) or not isinstance(n, int) or n <= 0:
        raise ValueError(f"n must be a positive int, got {n!r}")
    laws = resolve_laws(laws)
    generator = _generator(0, generator)
    probs = torch.tensor(laws.probs(), dtype=torch.float64)
    shape = pick((probs / probs.sum()).cumsum(0), n, generator)
    out = {"shape": shape, **{k: torch.zeros(n) for k in ("scale", "orientation", "pos_x", "pos_y")}}
    for k, law in enumerate(laws.per_shape()):
        idx = (shape == k).nonzero().squeeze(1)
        if law is None or idx.numel() == 0:
            continue
        for name in ("scale", "orientation", "pos_x", "pos_y"):
            values = getattr(law, name)(idx.numel(), generator)
            _check_sample(values, idx.numel(), SHAPES[k], name)
            out[name][idx] = values.float()
    if grid:
        out["scale"] = _snap(out["scale"], SCALE_GRID)
        step = 2 * math.pi / ORIENTATION_GRID.numel()
        out["orientation"] = torch.remainder(torch.round(out["orientation"] / step), ORIENTATION_GRID.numel()) * step
        out["pos_x"] = _snap(out["pos_x"], POSITION_GRID)
        out["pos_y"] = _snap(out["pos_y"], POSITION_GRID)
    return out


def render_dsprites(latents: Mapping[str, Tensor], *, device: torch.device | str | None = None) -> Tensor:
    """Render latents (the dict :func:`dsprites` returns) into float32 ``(n, 1, 64, 64)`` images in {-1, +1}.

    ``shape`` holds 0 (square), 1 (ellipse) or 2 (heart); ``scale`` must be in (0, 1] and the
    positions in [0, 1] (module docstring: geometry and conventions).
    """
    keys = ("shape", "scale", "orientation", "pos_x", "pos_y")
    missing = [k for k in keys if k not in latents]
    if missing:
        raise ValueError(f"latents need the keys {keys}; missing {missing}")
    n = latents["shape"].shape[0] if latents["shape"].dim() == 1 else -1
    for k in keys:
        if latents[k].shape != (n,):
            raise ValueError(f"every latent must be 1-D of the same length; {k!r} has shape "
                             f"{tuple(latents[k].shape)}, 'shape' has {tuple(latents['shape'].shape)}")
    if latents["shape"].is_floating_point() or latents["shape"].dtype == torch.bool:
        raise ValueError(f"latent 'shape' must be an integer tensor, got dtype {latents['shape'].dtype}")
    shape = latents["shape"].to(device=device, dtype=torch.long)
    if ((shape < 0) | (shape > 2)).any():
        raise ValueError("latent 'shape' must hold 0 (square), 1 (ellipse) or 2 (heart)")
    for k in keys[1:]:
        _check_sample(latents[k], n, "latents", k)
    scale, theta, px, py = (latents[k].to(device=shape.device, dtype=torch.float32) for k in keys[1:])

    # Pixel centres relative to the shape centre, in "math" orientation (y up) so that a positive
    # angle turns content counter-clockwise as displayed with row 0 at the top.
    centres = torch.arange(SIZE, device=shape.device, dtype=torch.float32) + 0.5
    span = SIZE - 2 * MARGIN
    dx = centres - (MARGIN + span * px)[:, None]                    # (n, 64) over columns
    dy_up = (MARGIN + span * py)[:, None] - centres                 # (n, 64) over rows
    cos, sin = torch.cos(theta)[:, None], torch.sin(theta)[:, None]

    # Per-shape units: shape-local coordinates are (rotation by -theta) / (scale * unit). They are
    # separable, u[r, c] = a_u[c] + b_u[r], so only the final broadcast add touches n*64*64 values.
    unit_u = torch.tensor([SQUARE_HALF, ELLIPSE_AXES[0], HEART_UNIT], device=shape.device)[shape] * scale
    unit_v = torch.tensor([SQUARE_HALF, ELLIPSE_AXES[1], HEART_UNIT], device=shape.device)[shape] * scale
    shift_v = torch.tensor([0.0, 0.0, HEART_CENTROID_Y], device=shape.device)[shape]
    a_u, b_u = cos * dx / unit_u[:, None], sin * dy_up / unit_u[:, None]
    a_v, b_v = -sin * dx / unit_v[:, None], cos * dy_up / unit_v[:, None] + shift_v[:, None]

    images = torch.empty(n, 1, SIZE, SIZE, device=shape.device)
    # Chunks keep CPU temporaries in cache; an accelerator prefers one large launch per shape.
    chunk = CHUNK if images.device.type == "cpu" else max(n, 1)
    for k, inside in enumerate((_inside_square, _inside_ellipse, _inside_heart)):
        idx = (shape == k).nonzero().squeeze(1)
        for start in range(0, idx.numel(), chunk):
            j = idx[start:start + chunk]
            u = a_u[j, None, :] + b_u[j, :, None]
            v = a_v[j, None, :] + b_v[j, :, None]
            # {False, True} -> {-1, +1} while the chunk is still in cache.
            images.index_copy_(0, j, inside(u, v).unsqueeze(1).float().mul_(2.0).sub_(1.0))
    return images


def _inside_square(u: Tensor, v: Tensor) -> Tensor:
    return torch.maximum(u.abs_(), v.abs_()) <= 1.0


def _inside_ellipse(u: Tensor, v: Tensor) -> Tensor:
    return u.mul_(u).addcmul_(v, v) <= 1.0


def _inside_heart(u: Tensor, v: Tensor) -> Tensor:
    # (u² + v² − 1)³ <= u² v³, upright for v pointing up (lobes at v > 0, point at v = −1).
    u2 = u.mul_(u)
    v2 = v * v
    t = (u2 + v2).sub_(1.0)
    u2v3 = v2.mul_(v).mul_(u2)
    return (t * t).mul_(t) <= u2v3


def _snap(values: Tensor, grid: Tensor) -> Tensor:
    """Nearest value of a sorted 1-D ``grid``."""
    return grid[(values[:, None] - grid).abs().argmin(dim=1)]


def _check_sample(values: Tensor, n: int, who: str, name: str) -> None:
    if not isinstance(values, Tensor) or values.shape != (n,):
        got = tuple(values.shape) if isinstance(values, Tensor) else type(values).__name__
        raise ValueError(f"{who} {name}: expected a tensor of shape ({n},), got {got}")
    if not torch.isfinite(values).all():
        raise ValueError(f"{who} {name}: expected finite values, got NaN or inf")
    if name == "scale" and ((values <= 0) | (values > 1)).any():
        raise ValueError(f"{who} scale must be in (0, 1], got values in [{values.min():.3g}, {values.max():.3g}]")
    if name in ("pos_x", "pos_y") and ((values < 0) | (values > 1)).any():
        raise ValueError(f"{who} {name} must be in [0, 1], got values in [{values.min():.3g}, {values.max():.3g}]")


def _generator(seed: int, generator: torch.Generator | None) -> torch.Generator:
    if generator is not None:
        if not isinstance(generator, torch.Generator) or generator.device.type != "cpu":
            raise ValueError(f"generator must be a CPU torch.Generator, got {generator!r}")
        return generator
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ValueError(f"seed must be an int, got {seed!r}")
    return torch.Generator().manual_seed(seed)
