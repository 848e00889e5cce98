"""The Symmetry-aware Generative Model as a Pyro program (SPEC sections 1, 4 and 5)."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from contextlib import contextmanager

import pyro
import pyro.distributions as dist
import torch
from pyro import poutine
from pyro.nn import PyroModule, pyro_method
from torch import Tensor

from ..checkpoint import CheckpointError, load_checkpoint, save_atomic
from ..groups import Group, make_group
from ..validation import check_images, check_positive_int
from .param_state import ParamsOnDevice, constrained_params, decode_param_state, encode_param_state, move_params
from .priors import make_prior
from .priors.conditioned import eta_log_prob
from .prototype import PrototypeInference
from .trainers import loop


# version 5 refuses rotation harmonics for heads other than the equivariant one (4 ignored them), 4 records
# the colour head, 3 the rotation and hue heads, 2 only the rotation head, 1 neither
FORMAT = "sgm-pyro/SGM/5"
# the heads the older formats were written with (the reference heads were then the default)
_OLD_HEADS = {"sgm-pyro/SGM/1": {"rotation_head": "real", "hue_head": "real", "colour_head": "mlp"},
              "sgm-pyro/SGM/2": {"hue_head": "real", "colour_head": "mlp"},
              "sgm-pyro/SGM/3": {"colour_head": "mlp"},
              "sgm-pyro/SGM/4": {}}


class SGM(PyroModule):
    """``x = T_η(x̂)``, ``η ~ p_ψ(η | x̂)``, with prototypes ``x̂ = T_{f_ω(x)}⁻¹(x)``.

    The two Pyro programs, both with a ``pyro.plate("data", N)``:

    * :meth:`model`: ``eta ~ prior(x̂)``; ``x ~ Normal(T_η(x̂), pixel_scale)`` (observed). ``T_η(x̂)`` is
      computed as one warp of ``x`` by the chain ``f_ω(x)⁻¹, η``.
    * :meth:`guide`: ``eta ~ q_ω(η | x)`` (the prototype network is the deterministic guide component).

    Args:
        group: the transformation group and its box.
        image_shape: ``(C, H, W)`` of the data.
        prior: ``None`` (the default :class:`~sgm_pyro.models.priors.FlowPrior`), a registry name
            (``"flow"``, ``"box"``, ``"circular"``, ``"discrete-rotation"``), or any Pyro program
            ``prior(x_hat)`` that samples the site ``"eta"``.
        inference: a :class:`PrototypeInference`, or ``None`` to build one from ``inference_kwargs``.
        pixel_scale: observation noise of the model's ``"x"`` site.
    """

    def __init__(self, group: Group, image_shape: Sequence[int], prior: str | Callable | None = None, *,
                 inference: PrototypeInference | None = None, inference_kwargs: dict | None = None,
                 prior_kwargs: dict | None = None, pixel_scale: float = 0.1) -> None:
        super().__init__()
        if not isinstance(group, Group):
            raise ValueError(f"group must be a sgm_pyro Group (AffineGroup, ColorGroup, ...), got {type(group).__name__}")
        if len(image_shape) != 3 or any(int(s) < 1 for s in image_shape):
            raise ValueError(f"image_shape must be (C, H, W) with positive sizes, got {tuple(image_shape)}")
        if not pixel_scale > 0:
            raise ValueError(f"pixel_scale must be positive, got {pixel_scale}")
        self.group = group
        self.image_shape = tuple(int(s) for s in image_shape)
        self.pixel_scale = float(pixel_scale)
        self._config = {"group": group.config(), "image_shape": list(self.image_shape),
                        "inference_kwargs": dict(inference_kwargs or {}), "prior_kwargs": dict(prior_kwargs or {}),
                        "pixel_scale": self.pixel_scale, "prior": None}
        self.inference = inference if inference is not None else \
            PrototypeInference(group, self.image_shape, **(inference_kwargs or {}))
        # saved explicitly, so that a later change of the default head cannot change a loaded model
        self._config["inference_kwargs"].setdefault("rotation_head", self.inference.rotation_head)
        self._config["inference_kwargs"].setdefault("hue_head", self.inference.hue_head)
        self._config["inference_kwargs"].setdefault("colour_head", self.inference.colour_head)
        if prior is None or isinstance(prior, str):
            name = prior or "flow"
            self._config["prior"] = name
            prior = make_prior(name, group, self.image_shape, **(prior_kwargs or {}))
        elif not callable(prior):
            raise ValueError(f"prior must be None, a registry name or a callable Pyro program, got {type(prior).__name__}")
        self.prior = prior
        self.history: dict = {}
        # Free pyro.params of a user-written prior program live here, not in the global store, so
        # two models in one process never share parameters by name (see param_scope).
        self.pyro_param_state: dict = {"params": {}, "constraints": {}}

    @contextmanager
    def param_scope(self):
        """Run Pyro code against this model's private parameter store.

        Module parameters are registered afresh from the module on entry; only free ``pyro.param``s
        (declared by a user's prior program) persist in :attr:`pyro_param_state` between scopes.
        Inside the scope ``pyro.param("name")`` reads the fitted value, and a new ``pyro.param``'s
        initial value is created on the model's device (a program's ``torch.ones(1)`` is a CPU tensor).
        """
        with pyro.get_param_store().scope(self.pyro_param_state) as state, ParamsOnDevice(self.device):
            yield state
        own = {id(p) for p in self.parameters()}
        for name in [n for n, v in state["params"].items() if id(v) in own]:
            del state["params"][name]
            state["constraints"].pop(name, None)

    def prior_params(self) -> dict[str, Tensor]:
        """The fitted free ``pyro.param``s of a user's prior program, constrained: ``{name: tensor}``.

        ``pyro_param_state`` holds what Pyro optimises, the *unconstrained* values (a log for a
        ``constraints.positive`` scale); this returns the values the program sees, detached copies
        on the model's device. Parameters of ``PyroModule`` priors are ``model.prior``'s ordinary
        ``named_parameters()``. Empty for the shipped priors.
        """
        return constrained_params(self.pyro_param_state)

    def _apply(self, fn, recurse: bool = True):
        # .to(), .cuda(), .double() ...: the free pyro.params are not module tensors, so move them here.
        out = super()._apply(fn, recurse)
        move_params(self.pyro_param_state, fn)
        return out

    # ------------------------------------------------------------------ Pyro programs
    @pyro_method
    def model(self, x: Tensor) -> None:
        """Generative program; ``x: (N, C, H, W)`` in ``[-1, 1]`` is observed at site ``"x"``."""
        g = self.group
        pose = self.inference.mode(x)
        x_hat = g.apply(x, g.inverse(pose))
        with pyro.plate("data", x.shape[0]):
            eta = self.prior(x_hat)
            loc = self._reposed(x, pose, eta)
            pyro.sample("x", dist.Normal(loc, self.pixel_scale).to_event(3), obs=x)

    @pyro_method
    def guide(self, x: Tensor) -> None:
        """Variational program: ``eta ~ q_ω(η | x)``."""
        with pyro.plate("data", x.shape[0]):
            self.inference(x)

    def _reposed(self, x: Tensor, pose: Tensor, eta: Tensor) -> Tensor:
        """``T_η(T_pose⁻¹ x)`` as one warp of ``x``; ``eta`` may carry leading particle dimensions."""
        g = self.group
        lead = eta.shape[:-2]
        k = math.prod(lead)
        xs = x.expand(*lead, *x.shape).reshape(-1, *x.shape[1:])
        poses = pose.expand(*lead, *pose.shape).reshape(-1, pose.shape[-1])
        out = g.apply_chain(xs, [g.inverse(poses), eta.reshape(k * x.shape[0], -1)])
        return out.view(*lead, *x.shape)

    # ------------------------------------------------------------------ user-facing queries
    @property
    def device(self) -> torch.device:
        return self.group.bounds.device

    def _images(self, x: Tensor, name: str = "x") -> Tensor:
        return check_images(x, self.image_shape, name).to(self.device, self.group.bounds.dtype)

    @torch.no_grad()
    def infer_eta(self, x: Tensor) -> Tensor:
        """The pose ``η = f_ω(x)``, ``(N, dim)``: ``x ≈ group.apply(prototype(x), η)``."""
        return self.inference.mode(self._images(x))

    @torch.no_grad()
    def prototype(self, x: Tensor) -> Tensor:
        """Invariant prototypes ``x̂ = T_{f_ω(x)}⁻¹(x)``, ``(N, C, H, W)``."""
        x = self._images(x)
        return self.group.apply(x, self.group.inverse(self.inference.mode(x)))

    def _prior_distribution(self, x_hat: Tensor):
        return self.prior.distribution(x_hat) if hasattr(self.prior, "distribution") else None

    @torch.no_grad()
    def sample_eta(self, x_hat: Tensor, num_samples: int = 1) -> Tensor:
        """Draws from ``p_ψ(η | x̂)``, shape ``(num_samples, N, dim)``."""
        check_positive_int(num_samples, "num_samples")
        x_hat = x_hat.to(self.device)
        d = self._prior_distribution(x_hat)
        if d is not None:
            return d.sample((num_samples,))
        with self.param_scope(), pyro.plate("samples", num_samples, dim=-2), \
                pyro.plate("data", x_hat.shape[0], dim=-1):
            return poutine.trace(self.prior).get_trace(x_hat).nodes["eta"]["value"]

    @torch.no_grad()
    def log_prob_eta(self, eta: Tensor, x_hat: Tensor) -> Tensor:
        """``log p_ψ(η | x̂)``, shape ``(N,)``, for ``eta: (N, dim)`` and ``x_hat: (N, C, H, W)``."""
        self.group.validate_eta(eta)
        if eta.shape[0] != x_hat.shape[0]:
            raise ValueError(f"eta has {eta.shape[0]} rows but x_hat has {x_hat.shape[0]} images")
        eta, x_hat = eta.to(self.device), x_hat.to(self.device)
        d = self._prior_distribution(x_hat)
        if d is not None:
            return d.log_prob(eta)
        with self.param_scope():
            return eta_log_prob(self.prior, x_hat, eta)

    @torch.no_grad()
    def resample(self, x: Tensor, num_samples: int = 1) -> Tensor:
        """Natural augmentation (SPEC 5): ``(num_samples, N, C, H, W)``, each one warp of ``x``.

        ``η ~ q_ω(· | x)``, ``x̂ = T_η⁻¹(x)``, ``η' ~ p_ψ(· | x̂)``, ``x_new = x`` warped by ``η⁻¹`` then ``η'``.
        """
        check_positive_int(num_samples, "num_samples")
        x = self._images(x)
        g = self.group
        eta = self.inference.rsample(x)
        x_hat = g.apply(x, g.inverse(eta))
        new = self.sample_eta(x_hat, num_samples)
        return self._reposed(x, eta, new)

    # ------------------------------------------------------------------ training and persistence
    def fit(self, images, *, inference_steps: int, prior_steps: int, batch_size: int = 512,
            val_images: Tensor | None = None, device: str | torch.device = "cpu", seed: int = 0,
            progress: bool = True, **kwargs) -> dict:
        """Fit both stages; see :func:`sgm_pyro.inference.fit_sgm` for every option."""
        return loop("sgm")(self, images, inference_steps=inference_steps, prior_steps=prior_steps,
                       batch_size=batch_size, val_images=val_images, device=device, seed=seed,
                       progress=progress, **kwargs)

    def config(self) -> dict:
        """Plain-data constructor arguments (``prior`` is ``None`` for a user-supplied program)."""
        return dict(self._config)

    def save(self, path) -> None:
        """Write the configuration and weights atomically as CPU tensors (loadable with ``weights_only=True``)."""
        save_atomic({"format": FORMAT, "config": self.config(), "state_dict": self.state_dict(),
                     "history": self.history, "pyro_params": encode_param_state(self.pyro_param_state)}, path)

    @classmethod
    def load(cls, path, map_location=None, *, prior: Callable | None = None) -> SGM:
        """Rebuild a saved model, on the CPU or on ``map_location``. A user-supplied prior program needs ``prior=``.

        Models are saved as CPU tensors (:meth:`save`), so a model fitted on a GPU loads anywhere.
        """
        ckpt = load_checkpoint(path)  # CPU first; moved below with the free pyro.params
        if ckpt.get("format") not in (FORMAT, *_OLD_HEADS):
            raise CheckpointError(f"{path} is not an SGM checkpoint (format {ckpt.get('format')!r})")
        cfg = ckpt["config"]
        group = make_group(**cfg["group"])
        old = dict(_OLD_HEADS.get(ckpt["format"], {}))
        if "rotation_head" in old:  # format 1 named no head, but a circle head has one output more than η
            old["rotation_head"] = _format1_rotation_head(ckpt["state_dict"], group.dim)
        cfg["inference_kwargs"] = {**old, **cfg["inference_kwargs"]}
        if ckpt["format"] in _OLD_HEADS and cfg["inference_kwargs"].get("rotation_head") != "equivariant":
            cfg["inference_kwargs"].pop("rotation_harmonics", None)  # before format 5 only that head read them
        if cfg["prior"] is None and prior is None:
            raise ValueError(f"{path} was saved with a user-supplied prior program; pass it as SGM.load(..., prior=...)")
        model = cls(group, cfg["image_shape"], prior if prior is not None else cfg["prior"],
                    inference_kwargs=cfg["inference_kwargs"], prior_kwargs=cfg["prior_kwargs"],
                    pixel_scale=cfg["pixel_scale"])
        model.load_state_dict(ckpt["state_dict"])
        model.history = ckpt.get("history", {})
        model.pyro_param_state = decode_param_state(ckpt.get("pyro_params", {}))
        if map_location is not None:
            model.to(map_location)
        return model.eval()

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        try:
            return super().load_state_dict(state_dict, strict=strict, assign=assign)
        except RuntimeError as e:  # a checkpoint of another group / image size / architecture
            raise ValueError(f"checkpoint does not match this model (group, image shape or networks differ): {e}") from e


def _format1_rotation_head(state: dict, dim: int) -> str:
    """The pose head of a format-1 file, read off the width of the MLP head's last layer."""
    last = max((int(k.split(".")[2]) for k in state if k.startswith("inference.head.") and k.endswith(".bias")),
               default=None)
    if last is None:
        return "real"
    return "circle" if state[f"inference.head.{last}.bias"].shape[0] == dim + 1 else "real"
