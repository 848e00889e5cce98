"""Run configurations: dataclasses that load from and save to TOML (``sgm fit --config run.toml``).

A run is fully described by a :class:`RunConfig`; its sections mirror the package:

.. code-block:: toml

    seed = 0
    device = ""                # "" picks cuda when available, else cpu
    checkpoint_every = 500

    [data]                     # dsprites | mnist | fashion-mnist | npz:PATH | idx:DIR
    name = "npz:../shared/data/mnist10k.npz"   # sgm fit stores it absolute in the run folder
    n_train = 0                # 0: every image left after n_val + n_test (dsprites: an infinite stream)
    rotation_degrees = 90.0    # rotated-MNIST protocol: one fixed rotation U(-θ, θ) per image

    [group]                    # affine | color | affine+color, box offset ± bounds
    name = "affine"
    bounds = []                # [] keeps the group's default (SPEC 2.4)

    [model]
    prior = "flow"             # a name of sgm_pyro.models.PRIORS
    [model.inference_net]      # keyword arguments of PrototypeInference
    hidden = [512, 256]
    [model.prior_kwargs]       # keyword arguments of the prior class
    transforms = 4

    [inference]                # the fields of sgm_pyro.inference.InferenceConfig (stage 1)
    steps = 2000
    [prior]                    # the fields of sgm_pyro.inference.PriorConfig (stage 2)
    steps = 1000

Every key is checked: an unknown key raises ``ValueError`` naming the key, its section and the
allowed keys, and a value of the wrong type names the expected type. ``save_config`` writes TOML
that ``load_config`` reads back to an equal object (floats are written with ``repr``, exact).
"""

from __future__ import annotations

import collections.abc
import inspect
import math
import os
import tomllib
import types
import typing
from dataclasses import dataclass, field, fields, is_dataclass, replace
from pathlib import Path

from .inference.stage1 import InferenceConfig
from .inference.stage2 import PriorConfig

DATA_NAMES = ("dsprites", "mnist", "fashion-mnist")
DATA_PREFIXES = ("npz:", "idx:")
GROUP_NAMES = ("affine", "color", "affine+color")


@dataclass
class DataConfig:
    """Where the images come from and how they are split (SPEC 7).

    ``name``: ``"dsprites"`` (procedural), ``"mnist"`` / ``"fashion-mnist"`` (IDX files in ``root``,
    default ``data/<name>``), ``"npz:PATH"`` or ``"idx:DIR"`` (a directory with the four MNIST-style
    IDX files). Tensor data sets are shuffled with ``split_seed`` and split into validation
    (``n_val``), test (``n_test``) and training (``n_train``, 0 = all the rest) images.
    """

    name: str = "dsprites"
    root: str = ""
    split: str = "train"
    n_train: int = 0
    n_val: int = 512
    n_test: int = 1024
    split_seed: int = 0
    rotation_degrees: float = 0.0
    rotation_seed: int = 0
    laws: str = "paper"
    images_key: str = "images"
    labels_key: str = "labels"


@dataclass
class GroupConfig:
    """The transformation group and its box (SPEC 2). Empty ``bounds``/``offset`` keep the defaults.

    For ``"affine+color"`` the lists run over the affine coordinates, then (hue, log_sat, log_val).
    """

    name: str = "affine"
    bounds: list[float] = field(default_factory=list)
    offset: list[float] = field(default_factory=list)
    generators: list[str] = field(default_factory=lambda: ["tx", "ty", "rot", "log_sx", "log_sy"])
    shear: bool = False
    squash: bool = False
    interpolation: str = "bilinear"
    padding_mode: str = "constant"
    fill: float = -1.0


@dataclass
class ModelConfig:
    """The SGM's networks: ``inference_net`` goes to PrototypeInference, ``prior_kwargs`` to the prior."""

    prior: str = "flow"
    pixel_scale: float = 0.1
    inference_net: dict = field(default_factory=dict)
    prior_kwargs: dict = field(default_factory=dict)


@dataclass
class RunConfig:
    """Everything that defines a run; ``sgm fit`` writes it to ``<out>/config.toml``."""

    seed: int = 0
    device: str = ""
    checkpoint_every: int = 500
    data: DataConfig = field(default_factory=DataConfig)
    group: GroupConfig = field(default_factory=GroupConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    inference: InferenceConfig = field(default_factory=InferenceConfig)
    prior: PriorConfig = field(default_factory=PriorConfig)

    def __post_init__(self) -> None:
        validate(self)


# ---------------------------------------------------------------------------------------- checks
def parse_data_name(name: str) -> tuple[str, str]:
    """``"npz:PATH"`` -> ``("npz", "PATH")``; ``"mnist"`` -> ``("mnist", "")``. Raises on unknown names."""
    for prefix in DATA_PREFIXES:
        if name.startswith(prefix):
            if not name[len(prefix):]:
                raise ValueError(f"data name {name!r} needs a path after {prefix!r}, e.g. {prefix}path/to/data")
            return prefix[:-1], name[len(prefix):]
    if name not in DATA_NAMES:
        raise ValueError(f"unknown data set {name!r}; expected one of {list(DATA_NAMES)}, 'npz:PATH' or 'idx:DIR'")
    return name, ""


def absolute_data_paths(cfg: RunConfig) -> RunConfig:
    """A copy of ``cfg`` whose data paths are absolute, resolved against the current directory.

    ``npz:PATH`` and ``idx:DIR`` get an absolute path; ``mnist`` / ``fashion-mnist`` get an
    absolute ``data.root`` (its default ``data/<name>`` included). ``sgm fit`` saves this form, so a
    run folder's ``config.toml`` repeats the run from any working directory. Symbolic links are
    kept as written (``os.path.abspath``, not ``resolve``).
    """
    kind, path = parse_data_name(cfg.data.name)
    data = cfg.data
    if kind in ("npz", "idx"):
        data = replace(data, name=f"{kind}:{os.path.abspath(os.path.expanduser(path))}")
    elif kind in ("mnist", "fashion-mnist"):
        data = replace(data, root=os.path.abspath(os.path.expanduser(data.root or f"data/{kind}")))
    return replace(cfg, data=data)


def _constructor_keys(fn, skip: int) -> tuple[list[str], bool]:
    params = list(inspect.signature(fn).parameters.values())[skip:]
    return [p.name for p in params if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)], \
        any(p.kind == p.VAR_KEYWORD for p in params)


def _check_kwargs(kwargs: dict, fn, skip: int, section: str) -> None:
    allowed, var_kw = _constructor_keys(fn, skip)
    for key in kwargs:
        if key not in allowed and not var_kw:
            raise ValueError(f"unknown key {key!r} in [{section}]; allowed keys: {', '.join(allowed) or '(none)'}")


def validate(cfg: RunConfig) -> None:
    """Check the cross-field rules of a run configuration (field types are checked on load)."""
    from .models.priors import PRIORS
    from .models.prototype import PrototypeInference

    parse_data_name(cfg.data.name)
    d = cfg.data
    for name in ("n_train", "n_val", "n_test"):
        v = getattr(d, name)
        if isinstance(v, bool) or not isinstance(v, int) or v < 0:
            raise ValueError(f"data.{name} must be a non-negative integer, got {v!r}")
    if d.split not in ("train", "test"):
        raise ValueError(f"data.split must be 'train' or 'test', got {d.split!r}")
    if not 0 <= d.rotation_degrees <= 180:
        raise ValueError(f"data.rotation_degrees must be in [0, 180], got {d.rotation_degrees}")
    if cfg.group.name not in GROUP_NAMES:
        raise ValueError(f"unknown group {cfg.group.name!r}; expected one of {list(GROUP_NAMES)}")
    build_group(cfg.group)  # bounds of the wrong length, non-positive bounds, bad generators...
    if cfg.model.prior not in PRIORS:
        raise ValueError(f"unknown prior {cfg.model.prior!r}; expected one of {sorted(PRIORS)}")
    if not cfg.model.pixel_scale > 0:
        raise ValueError(f"model.pixel_scale must be positive, got {cfg.model.pixel_scale}")
    _check_kwargs(cfg.model.inference_net, PrototypeInference.__init__, 3, "model.inference_net")
    _check_kwargs(cfg.model.prior_kwargs, PRIORS[cfg.model.prior].__init__, 3, "model.prior_kwargs")
    if isinstance(cfg.checkpoint_every, bool) or cfg.checkpoint_every < 1:
        raise ValueError(f"checkpoint_every must be a positive integer, got {cfg.checkpoint_every!r}")
    if cfg.inference.batch_size != cfg.prior.batch_size:
        raise ValueError(f"prior.batch_size ({cfg.prior.batch_size}) must equal inference.batch_size "
                         f"({cfg.inference.batch_size}): both stages are fitted with one batch size")
    if d.name == "dsprites" and d.n_train == 0 and d.rotation_degrees:
        raise ValueError("data.rotation_degrees needs a fixed data set; with dsprites set data.n_train > 0")


def build_group(g: GroupConfig):
    """The :class:`~sgm_pyro.groups.Group` described by ``g``."""
    from .groups import AffineGroup, ColorGroup, ProductGroup

    bounds, offset = g.bounds or None, g.offset or None
    affine_kw = dict(generators=g.generators, shear=g.shear, squash=g.squash, interpolation=g.interpolation,
                     fill=g.fill, padding_mode=g.padding_mode)
    if g.name == "affine":
        return AffineGroup(bounds, offset, **affine_kw)
    if g.name == "color":
        return ColorGroup(bounds, offset, squash=g.squash)
    if g.name == "affine+color":
        n_aff = len(g.generators) + int(g.shear)
        for name, v in (("bounds", bounds), ("offset", offset)):
            if v is not None and len(v) != n_aff + 3:
                raise ValueError(f"group.{name} of 'affine+color' must have {n_aff + 3} entries "
                                 f"({n_aff} affine, then hue, log_sat, log_val), got {len(v)}")

        def part(v, sl):
            return None if v is None else v[sl]
        return ProductGroup(ColorGroup(part(bounds, slice(n_aff, None)), part(offset, slice(n_aff, None)),
                                       squash=g.squash),
                            AffineGroup(part(bounds, slice(0, n_aff)), part(offset, slice(0, n_aff)), **affine_kw))
    raise ValueError(f"unknown group {g.name!r}; expected one of {list(GROUP_NAMES)}")


def build_model(cfg: RunConfig, image_shape):
    """An untrained :class:`~sgm_pyro.models.SGM` for images of ``image_shape`` ``(C, H, W)``."""
    from .models import SGM
    return SGM(build_group(cfg.group), image_shape, cfg.model.prior, inference_kwargs=dict(cfg.model.inference_net),
               prior_kwargs=dict(cfg.model.prior_kwargs), pixel_scale=cfg.model.pixel_scale)


# ---------------------------------------------------------------------------------------- from plain data
def _type_name(tp) -> str:
    return getattr(tp, "__name__", str(tp))


def _coerce(value, tp, where: str):
    """``value`` (from TOML) as the field type ``tp``; ValueError naming ``where`` otherwise."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):  # ``int | None``: TOML has no null, an absent key is None
        options = [a for a in typing.get_args(tp) if a is not type(None)]
        if value is None:
            return None
        if len(options) == 1:
            return _coerce(value, options[0], where)
        for option in options:  # e.g. a number, a list or a table (``CoordinateScale``)
            try:
                return _coerce(value, option, where)
            except ValueError:
                pass
        raise ValueError(f"{where} must be {' or '.join(_type_name(o) for o in options)}, got {value!r}")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif tp is int or tp is str or tp is bool:
        if type(value) is tp:
            return value
    elif origin in (list, collections.abc.Sequence) or tp is list:
        (item,) = typing.get_args(tp) or (object,)
        if isinstance(value, (list, tuple)):
            return [v if item is object else _coerce(v, item, f"{where}[{i}]") for i, v in enumerate(value)]
    elif tp is dict or origin in (dict, collections.abc.Mapping):
        if isinstance(value, dict):
            return {k: _plain(v, f"{where}.{k}") for k, v in value.items()}
    elif is_dataclass(tp):
        if isinstance(value, dict):
            return from_dict(tp, value, where)
        raise ValueError(f"[{where}] must be a table, got {type(value).__name__}")
    else:  # pragma: no cover - every field type is listed above
        return value
    raise ValueError(f"{where} must be {_type_name(tp) if origin is None else str(tp)}, got {value!r}")


def _plain(value, where: str):
    if isinstance(value, (str, int, float, bool)):
        return value
    if isinstance(value, (list, tuple)):
        return [_plain(v, f"{where}[{i}]") for i, v in enumerate(value)]
    raise ValueError(f"{where} must be a string, number, boolean or list of them, got {type(value).__name__}")


def from_dict(cls, data: dict, section: str = ""):
    """Build the dataclass ``cls`` from nested plain data, refusing unknown keys and wrong types."""
    hints = typing.get_type_hints(cls)
    names = [f.name for f in fields(cls)]
    where = f"[{section}]" if section else "the top level"
    for key in data:
        if key not in names:
            raise ValueError(f"unknown key {key!r} in {where}; allowed keys: {', '.join(names)}")
    kwargs = {k: _coerce(v, hints[k], f"{section}.{k}" if section else k) for k, v in data.items()}
    return cls(**kwargs)


def to_dict(obj) -> dict:
    """Nested plain data of a config dataclass (tuples become lists)."""
    out = {}
    for f in fields(obj):
        v = getattr(obj, f.name)
        if v is None:  # an optional setting left unset: absent from TOML, and from_dict restores None
            continue
        out[f.name] = to_dict(v) if is_dataclass(v) else _plain(v, f.name) if not isinstance(v, dict) else \
            {k: _plain(x, f"{f.name}.{k}") for k, x in v.items()}
    return out


# ---------------------------------------------------------------------------------------- TOML
def _toml_key(key: str) -> str:
    if key and all(c.isalnum() or c in "-_" for c in key):
        return key
    return _toml_value(key)


def _toml_value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if math.isnan(v):
            return "nan"
        if math.isinf(v):
            return "inf" if v > 0 else "-inf"
        return repr(v)
    if isinstance(v, str):
        out = ['"']
        for c in v:
            if c in '"\\':
                out.append("\\" + c)
            elif ord(c) < 0x20 or ord(c) == 0x7F:
                out.append(f"\\u{ord(c):04x}")
            else:
                out.append(c)
        return "".join(out) + '"'
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    raise ValueError(f"cannot write {type(v).__name__} to TOML (only str, int, float, bool, lists and tables)")


def dumps_toml(data: dict) -> str:
    """TOML text of nested dictionaries whose leaves are str, int, float, bool or lists of them."""
    lines: list[str] = []

    def table(d: dict, prefix: tuple[str, ...]) -> None:
        if prefix:
            lines.append(("\n" if lines else "") + "[" + ".".join(_toml_key(k) for k in prefix) + "]")
        for k, v in d.items():
            if not isinstance(v, dict):
                lines.append(f"{_toml_key(k)} = {_toml_value(v)}")
        for k, v in d.items():
            if isinstance(v, dict):
                table(v, prefix + (k,))

    table(data, ())
    return "\n".join(lines) + "\n"


def load_config(path: str | os.PathLike) -> RunConfig:
    """Read a :class:`RunConfig` from a TOML file; absent keys keep their defaults."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no config file at {path}")
    try:
        data = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as e:
        raise ValueError(f"{path} is not valid TOML: {e}") from e
    try:
        return from_dict(RunConfig, data)
    except ValueError as e:
        raise ValueError(f"{path}: {e}") from e


def save_config(cfg: RunConfig, path: str | os.PathLike) -> Path:
    """Write ``cfg`` as TOML (every field, so the file alone repeats the run); returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(dumps_toml(to_dict(cfg)))
    return path


__all__ = ["DataConfig", "GroupConfig", "ModelConfig", "RunConfig", "absolute_data_paths", "build_group", "build_model",
           "dumps_toml", "from_dict", "load_config", "parse_data_name", "save_config", "to_dict", "validate"]
