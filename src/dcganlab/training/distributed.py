"""Multi-process training under `torchrun` (DistributedDataParallel).

`torchrun --nproc_per_node N -m dcganlab.cli train EXP` (or `--nnodes`/`--rdzv-endpoint`
for several machines) starts N copies of the training command; torchrun sets RANK,
WORLD_SIZE and LOCAL_RANK. Without them everything here is a no-op (world of one).

Decisions, as in the usual DDP recipes:
- every rank holds the whole (small, pre-decoded uint8) dataset and draws the SAME
  epoch permutation; rank r takes its own slice of each global batch (rank-sharded data,
  no DistributedSampler needed for in-memory arrays). `batch_size` is per process.
- the networks start identical (DDP broadcasts rank 0's weights); the noise of each rank
  comes from its own seed (seed + rank), so ranks do not draw the same fakes.
- only rank 0 writes checkpoints, grids, reports and talks to MLflow; checkpoints keep
  every rank's RNG state so a resumed run continues exactly.
- BatchNorm running statistics are synced once at the start, then stay per rank (a sync
  before each of D's several forward passes per step would be wasted work); rank 0's are saved.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn

from dcganlab.core.errors import UserError


@dataclass(frozen=True)
class World:
    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.size > 1


def from_env() -> World:
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size <= 1:
        return World()
    return World(int(os.environ["RANK"]), size, int(os.environ.get("LOCAL_RANK", "0")))


def init(world: World, device: torch.device) -> torch.device:
    """Join the process group; each process gets its own GPU (cuda:LOCAL_RANK)."""
    if not world.active:
        return device
    if device.type == "cuda":
        if world.local_rank >= torch.cuda.device_count():
            raise UserError(f"LOCAL_RANK {world.local_rank} but only {torch.cuda.device_count()} CUDA devices")
        device = torch.device("cuda", world.local_rank)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return device


def wrap(model: nn.Module, world: World, device: torch.device) -> nn.Module:
    if not world.active:
        return model
    ids = [device.index] if device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(model, device_ids=ids, forward_sync_buffers=False)


def unwrap(model: nn.Module) -> nn.Module:
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


def shard(indices: torch.Tensor, world: World) -> torch.Tensor:
    """Rank r's part of one global batch of indices (all ranks hold the same global batch)."""
    if not world.active:
        return indices
    per = len(indices) // world.size
    return indices[world.rank * per : (world.rank + 1) * per]


def all_reduce_mean(t: torch.Tensor, world: World) -> torch.Tensor:
    if world.active:
        dist.all_reduce(t)
        t /= world.size
    return t


def agree_max(value: int, world: World, device: torch.device) -> int:
    """The largest `value` over all ranks (a stop signal or a failure seen by any of them)."""
    if not world.active:
        return value
    t = torch.tensor([value], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return int(t.item())


def rng_state(device: torch.device) -> dict:
    state = {"cpu": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def gather_objects(obj, world: World) -> list:
    """Every rank's `obj` (e.g. RNG states), in rank order; [obj] without torchrun."""
    if not world.active:
        return [obj]
    out = [None] * world.size
    dist.all_gather_object(out, obj)
    return out


def broadcast_object(obj, world: World):
    if not world.active:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def barrier(world: World) -> None:
    if world.active:
        dist.barrier()


def close(world: World) -> None:
    if world.active and dist.is_initialized():
        dist.destroy_process_group()
