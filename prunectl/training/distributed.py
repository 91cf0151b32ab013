"""Several processes (``torchrun``): who this process is, and the few collectives ``auto`` uses.

Under ``torchrun --nproc-per-node N -m prunectl auto ...`` the environment names the rank and
the world size; the process group uses gloo (prunectl's models live on the CPU, and gloo also
works across machines: see docs/auto.md for multi-node). Outside
torchrun everything here is a no-op on a world of one, so single-process code paths are the
same functions with ``world == 1``.

Exactness matters more than bandwidth here: results are gathered and combined in a fixed
order (never an all-reduce, whose summation order depends on the ring), so that a run with N
processes computes bit for bit what one process computes with ``--micro-batches N``.
"""
from __future__ import annotations

import atexit
import os
from dataclasses import dataclass
from typing import Any

import torch


@dataclass(frozen=True)
class Dist:
    rank: int = 0
    world: int = 1

    @property
    def active(self) -> bool:
        return self.world > 1

    @property
    def is_writer(self) -> bool:
        """Only rank 0 writes files (state, bundle)."""
        return self.rank == 0

    def gather_tensor(self, tensor: torch.Tensor) -> list[torch.Tensor]:
        """Every rank's ``tensor`` (same shape on all ranks), indexed by rank."""
        if not self.active:
            return [tensor]
        parts = [torch.empty_like(tensor) for _ in range(self.world)]
        torch.distributed.all_gather(parts, tensor.contiguous())
        return parts

    def gather_objects(self, obj: Any) -> list[Any]:
        """Every rank's picklable ``obj`` (our own data only), indexed by rank."""
        if not self.active:
            return [obj]
        out: list[Any] = [None] * self.world
        torch.distributed.all_gather_object(out, obj)
        return out

    def broadcast_object(self, obj: Any, src: int) -> Any:
        if not self.active:
            return obj
        box = [obj if self.rank == src else None]
        torch.distributed.broadcast_object_list(box, src=src)
        return box[0]

    def broadcast_tensors(self, tensors: list[torch.Tensor], src: int = 0) -> None:
        if self.active:
            for tensor in tensors:
                torch.distributed.broadcast(tensor, src=src)

    def barrier(self) -> None:
        if self.active:
            torch.distributed.barrier()


def from_environment() -> Dist:
    """The process group torchrun describes (initialised once), or a world of one."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Dist()
    import torch.distributed as dist

    if not dist.is_initialized():
        dist.init_process_group(backend="gloo")
        # a group left to the interpreter's exit tears gloo's threads down in no set order: a rank
        # then aborted now and then with "terminate called without an active exception" (SIGABRT)
        atexit.register(_destroy_group)
    return Dist(dist.get_rank(), dist.get_world_size())


def _destroy_group() -> None:
    if torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()
