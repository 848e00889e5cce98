"""The library's compiled CPU kernels (``sgm_pyro/csrc``): built on first use, with an eager fallback.

Two kernels replace chains of eager PyTorch kernels in the stage-1 step on a CPU, where each link
of the chain is a pass over an activation far larger than the cache (docs/results.md §2):

* ``layer_norm_gelu`` (:mod:`sgm_pyro.nn.fused`): an MLP block's bias, LayerNorm and GELU in one
  pass per row, forward and backward;
* ``affine_warp`` (:meth:`sgm_pyro.AffineGroup.act`): a bilinear affine warp with zero padding that
  computes its sampling points on the fly instead of reading a grid tensor, with the matrices'
  gradient from the same pass.

They are compiled on first use with :func:`torch.utils.cpp_extension.load` (a C++ compiler and
``ninja`` are needed, which ``make install`` provides; 7 seconds once on a 2-core Xeon, then cached by
PyTorch under ``TORCH_EXTENSIONS_DIR``), for the CPU they run on: the build's name carries a digest
of the CPU's model and flags, so a home directory shared between different machines keeps one
build per kind. Where they cannot be built, :func:`available` says why once in a warning and the
callers run the eager PyTorch operations, which compute the same functions.

``SGM_PYRO_FUSED_KERNELS=0`` in the environment (or :func:`set_enabled`) keeps the eager operations.
"""

from __future__ import annotations

import hashlib
import os
import platform
import shutil
import sys
import warnings
from pathlib import Path

import torch

ENV = "SGM_PYRO_FUSED_KERNELS"
SOURCES = sorted((Path(__file__).with_name("csrc")).glob("*.cpp"))
# -fno-trapping-math lets the compiler vectorise clamped arithmetic (otherwise it keeps masked
# operations it cannot vectorise); 512-bit vectors ran the LayerNorm+GELU forward 25% faster on an
# AVX-512 Xeon.
CFLAGS = ["-O3", "-march=native", "-fno-trapping-math", "-fno-math-errno", "-fopenmp"] + \
    (["-mprefer-vector-width=512"] if platform.machine() in ("x86_64", "AMD64") else [])
_state: dict = {"enabled": os.environ.get(ENV, "1") != "0", "ops": None, "error": None}


def _cpu_digest(cpuinfo: str | None = None) -> str:
    """A digest of this CPU's model and feature flags (``-march=native`` builds for them)."""
    text = platform.machine()
    try:
        lines = (Path("/proc/cpuinfo").read_text() if cpuinfo is None else cpuinfo).splitlines()
        text += "".join(sorted({ln for ln in lines if ln.startswith(("model name", "flags", "Features"))}))
    except OSError:
        text += platform.processor()
    return hashlib.sha1(text.encode()).hexdigest()[:10]


def _find_ninja() -> None:
    """Put the environment's own ``ninja`` (``pip install ninja``) on ``PATH`` where PyTorch looks for it.

    ``make test`` and scripts run ``.venv/bin/python`` without activating the environment, so its
    ``bin`` folder, where pip puts the ``ninja`` command, is not on ``PATH``.
    """
    here = Path(sys.executable).parent
    if shutil.which("ninja") is None and (here / "ninja").exists():
        os.environ["PATH"] = f"{here}{os.pathsep}{os.environ.get('PATH', '')}"


def _load():
    if _state["ops"] is not None or _state["error"] is not None:
        return _state["ops"]
    try:
        from torch.utils.cpp_extension import load

        _find_ninja()
        load(name=f"sgm_pyro_native_{_cpu_digest()}", sources=[str(s) for s in SOURCES], extra_cflags=CFLAGS,
             extra_ldflags=["-fopenmp"], is_python_module=False, verbose=False)
        _state["ops"] = torch.ops.sgm_pyro_native
    except Exception as err:  # no compiler, no ninja, a read-only cache: the eager operations still work
        text = str(err).strip()
        _state["error"] = f"{type(err).__name__}: {text.splitlines()[-1] if text else ''}"
        warnings.warn(f"sgm_pyro: the compiled CPU kernels could not be built ({_state['error']}); the eager "
                      f"PyTorch operations run instead, which compute the same functions more slowly. They need "
                      f"a C++ compiler and `pip install ninja`; {ENV}=0 silences this.", stacklevel=3)
    return _state["ops"]


def set_enabled(enabled: bool) -> None:
    """Use (``True``, the default unless ``SGM_PYRO_FUSED_KERNELS=0``) or skip the compiled kernels."""
    _state["enabled"] = bool(enabled)


def is_enabled() -> bool:
    return _state["enabled"]


def available() -> bool:
    """Whether the kernels are enabled and built (builds them on the first call)."""
    return _state["enabled"] and _load() is not None


def usable(x: torch.Tensor) -> bool:
    """Whether a kernel may take ``x``: a float32 CPU tensor, outside autocast and ``torch.compile``."""
    return (x.device.type == "cpu" and x.dtype == torch.float32
            and not torch.is_autocast_enabled("cpu") and not torch.compiler.is_compiling() and available())


def ops():
    """``torch.ops.sgm_pyro_native`` (check :func:`available` first)."""
    return _state["ops"]


def error() -> str | None:
    """Why the kernels could not be built, if they could not."""
    return _state["error"]
