"""Data-parallel runs on PyTorch's own DistributedDataParallel, set up from torchrun's environment variables.

Under `torchrun` (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT set) `setup` joins the process group
(NCCL on CUDA, gloo on the CPU). Every helper here is a no-op in a plain, single-process run, so the engine and
the pipeline call them unconditionally. Only rank 0 writes files (see `distil.checkpoint.write_atomically`).
"""

from __future__ import annotations

import atexit
import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from distil.errors import DistilError


@dataclass(frozen=True)
class DistEnv:
    """Where this process stands in a torchrun launch: its global rank, the number of processes, its local rank."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0


def _int_env(name: str, default: int) -> int:
    value = os.environ.get(name, "")
    try:
        return int(value) if value.strip() else default
    except ValueError:
        raise DistilError(f"environment variable {name}={value!r} is not a number; launch with torchrun.") from None


def env() -> DistEnv:
    """RANK / WORLD_SIZE / LOCAL_RANK as torchrun sets them (rank 0 of 1 when they are absent)."""
    return DistEnv(_int_env("RANK", 0), _int_env("WORLD_SIZE", 1), _int_env("LOCAL_RANK", 0))


def is_distributed() -> bool:
    """Whether this process is one of several joined in a process group."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    """This process's global rank (0 outside a distributed run)."""
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else env().rank


def world_size() -> int:
    """How many processes train together (1 outside a distributed run)."""
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else env().world_size


def is_main() -> bool:
    """Rank 0: the one process that writes checkpoints, metrics.jsonl, trackers and reports."""
    return rank() == 0


def resolve_device(spec: str = "auto") -> torch.device:
    """`auto` picks CUDA when available, else the CPU; anything else is passed to torch.device."""
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(spec)
    except RuntimeError:
        raise DistilError(f"device: '{spec}' is not a device; use auto, cpu or cuda[:N].") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise DistilError("device: CUDA was asked for but is not available here; use device: auto or cpu.")
    return device


def setup(device_spec: str = "auto") -> torch.device:
    """Join the process group when launched by torchrun and return this process's device.

    On CUDA each process takes the GPU of its LOCAL_RANK and talks over NCCL; on the CPU processes use gloo.
    """
    device = resolve_device(device_spec)
    info = env()
    if info.world_size <= 1:
        return device
    if device.type == "cuda":
        if info.local_rank >= torch.cuda.device_count():
            raise DistilError(f"LOCAL_RANK {info.local_rank} has no GPU ({torch.cuda.device_count()} visible); "
                              "give torchrun --nproc_per_node at most the number of GPUs.")
        device = torch.device("cuda", info.local_rank)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        if "MASTER_ADDR" not in os.environ:
            raise DistilError("WORLD_SIZE > 1 but MASTER_ADDR is not set; launch several processes with torchrun.")
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo", rank=info.rank,
                                world_size=info.world_size)
        atexit.register(_teardown)
    return device


def _teardown() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def barrier() -> None:
    """Wait for every process (no-op in a single-process run)."""
    if is_distributed():
        dist.barrier()


def wrap(model: nn.Module, device: torch.device) -> nn.Module:
    """The student wrapped in DistributedDataParallel (gradients averaged over ranks), or unchanged when alone."""
    if not is_distributed() or not any(p.requires_grad for p in model.parameters()):
        return model
    device_ids = [device.index] if device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(model, device_ids=device_ids)


def average_gradients(params: list[nn.Parameter]) -> None:
    """Average the gradients of parameters outside the DDP model (e.g. a loss's connector) over ranks."""
    if not is_distributed():
        return
    grads = [p.grad for p in params if p.grad is not None]
    if grads:
        flat = torch.cat([g.reshape(-1) for g in grads])
        dist.all_reduce(flat)
        flat /= dist.get_world_size()
        offset = 0
        for g in grads:
            g.copy_(flat[offset:offset + g.numel()].view_as(g))
            offset += g.numel()


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """The element-wise sum of `tensor` over ranks (in place; the tensor itself when alone)."""
    if is_distributed():
        dist.all_reduce(tensor)
    return tensor


def all_reduce_max(tensor: torch.Tensor) -> torch.Tensor:
    """The element-wise maximum of `tensor` over ranks (in place)."""
    if is_distributed():
        dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
    return tensor


def broadcast_object(obj: Any) -> Any:
    """Rank 0's `obj`, on every rank (picklable objects only)."""
    if not is_distributed():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def all_gather_object(obj: Any) -> list[Any]:
    """Every rank's `obj`, in rank order."""
    if not is_distributed():
        return [obj]
    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def shard() -> tuple[int, int]:
    """(rank, world size): which slice of every global batch this process trains on."""
    return rank(), world_size()
