"""Data-parallel training with ``torch.distributed``: process group, rank helpers, gradient averaging.

The training loops (:func:`~sgm_pyro.inference.fit_inference`, :func:`~sgm_pyro.inference.fit_prior`,
:func:`~sgm_pyro.inference.fit_vae`) train data-parallel whenever a process group with more than
one process is initialised (``torchrun --nproc-per-node N ...`` then :func:`init_distributed`);
with no process group, or a group of one, they run the unchanged single-process code.

Every rank holds a full replica of the parameters. Per step each rank draws its own batch (a
disjoint slice of the shared epoch permutation, or its own rank-seeded stream), computes its loss
with its own random draws (RNG seeded by :func:`rank_seed`), and the gradients are averaged with
one all-reduce before clipping and the optimiser step, so every replica takes the same step: that
of a batch ``world_size`` times larger.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterable, Sequence
from datetime import timedelta
from typing import Any, Callable

import torch
import torch.distributed as dist
from pyro import poutine
from torch import Tensor, nn

__all__ = ["AllReduceLossAndGrads", "all_gather_objects", "all_reduce_grads", "backward_loss_and_grads",
           "broadcast_module", "close_distributed", "get_rank", "get_world_size", "init_distributed", "is_distributed",
           "is_main_process", "rank_rng_states", "rank_seed", "restore_rank_rng", "rng_snapshot", "rng_state",
           "set_rng_state", "shard_range"]

LAUNCH_HINT = ("launch one process per device with torchrun, e.g. "
               "'torchrun --nproc-per-node 2 -m sgm_pyro.cli fit --distributed ...' (one machine) or add "
               "--nnodes N --node-rank R --rdzv-endpoint HOST:PORT (several machines); see docs/distributed.md")


def init_distributed(device: torch.device | str | None = None, *, backend: str | None = None,
                     timeout_s: float = 1800.0) -> torch.device:
    """Join the process group described by torchrun's environment (``RANK``, ``WORLD_SIZE``, ...).

    The backend is ``nccl`` when ``device`` is CUDA and ``gloo`` otherwise. A CUDA ``device``
    without an index becomes ``cuda:LOCAL_RANK`` (one GPU per process) and is made current.
    Returns the device this rank trains on. Calling it again in a joined process is harmless.
    """
    missing = [k for k in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT") if k not in os.environ]
    if missing and not dist.is_initialized():
        raise ValueError(f"distributed training needs the environment variables that torchrun sets "
                         f"({', '.join(missing)} unset): {LAUNCH_HINT}")
    if not dist.is_available():
        raise ValueError("this PyTorch build has no torch.distributed support")
    device = torch.device(device if device is not None else ("cuda" if torch.cuda.is_available() else "cpu"))
    if device.type == "cuda":
        device = rank_cuda_device(device)
        torch.cuda.set_device(device)  # nccl and the object collectives use the current device
    if not dist.is_initialized():
        dist.init_process_group(backend or ("nccl" if device.type == "cuda" else "gloo"),
                                timeout=timedelta(seconds=timeout_s))
    return device


def rank_cuda_device(device: torch.device) -> torch.device:
    """The GPU of this process: ``cuda:LOCAL_RANK``, checked against the GPUs this process sees.

    ``"cuda"`` and ``"cuda:LOCAL_RANK"`` are accepted. Any other index under a launch of several
    processes per node would put several ranks on one GPU (``--device cuda:0`` under torchrun
    used to put every rank on GPU 0), so it is refused, as is a rank without a GPU of its own.
    """
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    local_world = int(os.environ.get("LOCAL_WORLD_SIZE", os.environ.get("WORLD_SIZE", "1")))
    if device.index is not None and device.index != local_rank and local_world > 1:
        raise ValueError(f"device {str(device)!r} was asked for by rank {local_rank} of {local_world} processes on "
                         "this machine: every rank would train on that one GPU. Pass device 'cuda' (each rank then "
                         "takes cuda:LOCAL_RANK)")
    index = local_rank if device.index is None else device.index
    visible = torch.cuda.device_count()
    if index >= visible:
        raise ValueError(f"rank {local_rank} of this machine needs GPU cuda:{index}, but this process sees "
                         f"{visible} GPU(s): start at most {visible} process(es) per machine "
                         "(torchrun --nproc-per-node), or train on the CPU")
    return torch.device("cuda", index)


def close_distributed(wait: bool = True) -> None:
    """Leave the process group, if this process joined one.

    With ``wait`` every rank first waits for the others: a gloo rank that tore its group down while
    rank 0 was still writing the run (the report, the figures) could abort (``terminate called
    without an active exception``; seen on a loaded 2-core machine). A rank leaving on an error
    passes ``wait=False``, since the others may never arrive.
    """
    if dist.is_available() and dist.is_initialized():
        if wait and dist.get_world_size() > 1:
            dist.barrier()
        dist.destroy_process_group()


def is_distributed() -> bool:
    """True inside a process group of more than one process: the loops then train data-parallel."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def get_rank() -> int:
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def get_world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def is_main_process() -> bool:
    """Rank 0 (or the only process): the one that writes checkpoints, metrics and figures."""
    return get_rank() == 0


def rank_seed(seed: int, rank: int | None = None) -> int:
    """The seed of ``rank``'s random draws: ``seed`` itself on rank 0, a well-mixed 32-bit value elsewhere.

    Rank 0 keeps ``seed`` so its first batch of draws equals the single-process run; other ranks
    get draws independent of it (and of other seeds' ranks), so the averaged gradient is an
    estimate from ``world_size`` times more draws.
    """
    rank = get_rank() if rank is None else rank
    if rank == 0:
        return seed
    mask = (1 << 64) - 1  # splitmix64 of (seed, rank)
    z = (((seed & 0xFFFFFFFF) << 32 | rank) + 0x9E3779B97F4A7C15) & mask
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & mask
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & mask
    return (z ^ (z >> 31)) & 0xFFFFFFFF


def shard_range(n: int, rank: int | None = None, world_size: int | None = None) -> range:
    """Rank ``rank``'s contiguous share of ``range(n)``; shares differ in size by at most one."""
    rank = get_rank() if rank is None else rank
    world_size = get_world_size() if world_size is None else world_size
    return range(rank * n // world_size, (rank + 1) * n // world_size)


def all_gather_objects(obj: Any) -> list[Any]:
    """``[obj of rank 0, obj of rank 1, ...]`` on every rank (``[obj]`` when not distributed)."""
    if not is_distributed():
        return [obj]
    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


@torch.no_grad()
def broadcast_module(module: nn.Module, src: int = 0) -> None:
    """Copy rank ``src``'s parameters and buffers to every rank (replicas must start equal)."""
    if is_distributed():
        for t in list(module.parameters()) + list(module.buffers()):
            dist.broadcast(t.data, src)


def all_reduce_sum(values: Tensor) -> Tensor:
    """``values`` summed over the ranks (a copy; ``values`` itself in a single process). No gradient flows."""
    if not is_distributed():
        return values
    values = values.detach().clone()
    dist.all_reduce(values)
    return values


@torch.no_grad()
def all_reduce_grads(params: Sequence[Tensor], values: Sequence[Tensor | float] = (), *,
                     op: str = "mean", as_tensor: bool = False) -> list[float] | Tensor:
    """Average (or sum) the ``.grad`` of ``params`` over the ranks, in place, with one all-reduce.

    ``params`` must be listed in the same order on every rank. A parameter with no gradient on
    any rank keeps ``grad = None`` (as in a single process, so optimisers still skip it); one with
    a gradient on some ranks only counts zeros for the others. ``values`` (loss terms) are reduced
    in the same call and returned as floats (``as_tensor=True``: as one ``(len(values),)`` tensor on
    the gradients' device, read by nobody yet): every rank then logs, and NaN-checks, the same number.
    """
    if op not in ("mean", "sum"):
        raise ValueError(f"op must be 'mean' or 'sum', got {op!r}")
    ref = next((t for t in (*params, *values) if isinstance(t, Tensor)), torch.zeros(()))  # nccl needs its device
    device, dtype = ref.device, (ref.dtype if ref.is_floating_point() else torch.get_default_dtype())
    has = torch.tensor([p.grad is not None for p in params], device=device, dtype=dtype)
    logged = [v.detach().reshape(1).to(device, dtype) if isinstance(v, Tensor)
              else torch.full((1,), float(v), device=device, dtype=dtype) for v in values]
    parts = [has, *logged]
    parts += [(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1).to(dtype) for p in params]
    flat = torch.cat(parts)
    if is_distributed():
        dist.all_reduce(flat)
        if op == "mean":
            flat[len(params):] /= dist.get_world_size()
    offset = len(params) + len(values)
    for p, has_grad in zip(params, (flat[: len(params)] > 0).tolist()):
        n = p.numel()
        if has_grad:
            grad = flat[offset: offset + n].view_as(p).to(p.dtype)
            if p.grad is None:
                p.grad = grad.clone()
            else:
                p.grad.copy_(grad)
        offset += n
    reduced = flat[len(params): len(params) + len(values)]
    return reduced.clone() if as_tensor else reduced.tolist()


class AllReduceLossAndGrads:
    """A ``loss_and_grads`` for :class:`pyro.infer.SVI` that reduces gradients across ranks.

    ``SVI.step`` runs ``loss_and_grads`` under a param-only trace, then steps the parameters that
    trace found. This wrapper traces the same call itself, so it knows those parameters (sorted by
    site name: the same order on every rank), runs ``inner`` (which calls ``backward``), and
    all-reduces their gradients before Pyro's optimiser (and its clipping) sees them. A parameter
    seen for the first time (a ``pyro.param`` created lazily by the program) is first copied from
    rank 0, so a random initialisation cannot split the replicas.

    Args:
        inner: the single-process ``loss_and_grads(model, guide, *args, **kwargs)`` (an ELBO's
            method, or :func:`backward_loss_and_grads` of a callable loss).
        op: ``"mean"`` for losses that average over the batch; ``"sum"`` for losses that sum
            over it (``Trace_ELBO`` on an unscaled data plate), so the result is the gradient of
            the loss of the union of the ranks' batches either way. The returned loss is reduced
            the same way.
    """

    def __init__(self, inner: Callable[..., Any], op: str = "mean") -> None:
        self.inner, self.op = inner, op
        self._seen: set[str] = set()

    def __call__(self, model: Callable, guide: Callable, *args: Any, **kwargs: Any) -> Tensor:
        with poutine.trace(param_only=True) as capture:
            loss = self.inner(model, guide, *args, **kwargs)
        sites = sorted(capture.trace.nodes.items())
        params = [site["value"].unconstrained() for _, site in sites]
        new = [p for (name, _), p in zip(sites, params) if name not in self._seen]
        if is_distributed():
            with torch.no_grad():
                for p in new:
                    dist.broadcast(p.data, 0)
        self._seen.update(name for name, _ in sites)
        (value,) = all_reduce_grads(params, [loss], op=self.op)
        return torch.tensor(value)


def backward_loss_and_grads(loss: Callable[..., Tensor]) -> Callable[..., Tensor]:
    """What SVI does with a plain callable loss: evaluate it and call ``backward``."""
    def loss_and_grads(model: Callable, guide: Callable, *args: Any, **kwargs: Any) -> Tensor:
        value = loss(model, guide, *args, **kwargs)
        if getattr(value, "requires_grad", False):
            value.backward(retain_graph=True)
        return value
    return loss_and_grads


def rng_state(device: torch.device | str | None = None) -> dict[str, Tensor]:
    """This process's RNG states as CPU tensors: ``{"cpu": ...}``, plus ``"cuda"`` for a CUDA ``device``.

    The CUDA generator state is the one of ``device`` (the GPU this rank trains on). Both are
    ``ByteTensor``s on the CPU, so a checkpoint holding them loads on any machine.
    """
    state = {"cpu": torch.get_rng_state()}
    if device is not None and torch.device(device).type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(torch.device(device)).cpu()
    return state


def set_rng_state(state: dict[str, Tensor] | Tensor, device: torch.device | str | None = None) -> bool:
    """Restore what :func:`rng_state` returned (or a bare CPU state of older checkpoints).

    Returns whether a CUDA state was restored for a CUDA ``device`` (``False`` also when the
    state was saved on a machine without one).
    """
    if isinstance(state, Tensor):
        state = {"cpu": state}
    torch.set_rng_state(state["cpu"].cpu())  # set_rng_state takes a CPU ByteTensor only
    if device is not None and torch.device(device).type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"].cpu(), torch.device(device))
        return True
    return False


def rng_snapshot(device: torch.device | str | None = None) -> dict[str, Any]:
    """The RNG part of a training checkpoint: ``{"rng": this rank's states[, "rank_rng": every rank's]}``."""
    mine = rng_state(device)
    return {"rng": mine, **({"rank_rng": all_gather_objects(mine)} if is_distributed() else {})}


def rank_rng_states(device: torch.device | str | None = None) -> list[dict[str, Tensor]]:
    """Every rank's :func:`rng_state`, gathered on every rank (for a checkpoint written by rank 0)."""
    return all_gather_objects(rng_state(device))


def restore_rank_rng(state: dict, seed: int, device: torch.device | str | None = None) -> None:
    """Restore this rank's RNG (CPU, and CUDA on a CUDA ``device``) from a checkpoint ``state``.

    Checkpoints of a distributed run hold ``rank_rng`` (one state per rank) next to ``rng``
    (rank 0's, also used by single-process resumes). When the world size changed, each rank is
    reseeded from ``(seed, step, rank)``: the run continues soundly but not bit-identically. A
    checkpoint without a CUDA state (written on the CPU) resumed on a GPU seeds the CUDA
    generator the same way, so ranks never share CUDA draws.
    """
    states: Iterable | None = state.get("rank_rng")
    rank, world = get_rank(), get_world_size()
    fresh = rank_seed((seed * 1_000_003 + int(state["step"])) & 0xFFFFFFFF, rank)
    if world == 1 and states is None:
        restored = set_rng_state(state["rng"], device)
    elif states is not None and len(states) == world:
        restored = set_rng_state(list(states)[rank], device)
    else:
        if is_main_process():
            warnings.warn(f"the checkpoint was written by {len(states) if states else 1} process(es) and is resumed "
                          f"by {world}: each rank's RNG is reseeded, so the run will not repeat an uninterrupted one "
                          "exactly", stacklevel=2)
        torch.manual_seed(fresh)
        return
    if device is not None and torch.device(device).type == "cuda" and not restored:
        torch.cuda.manual_seed(fresh)
