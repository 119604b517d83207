"""Collectives over the training workers (torch.distributed; one worker without a process group),
and printing from a worker."""

from __future__ import annotations

import sys

import torch


def world() -> tuple[int, int]:
    """This worker's rank and the number of workers (0, 1 outside a process group)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """Sum ``tensor`` over all workers, in place."""
    import torch.distributed as dist

    if world()[1] > 1:
        dist.all_reduce(tensor)
    return tensor


def broadcast(values: list[float], device: torch.device) -> list[float]:
    """Rank 0's ``values`` on every worker."""
    import torch.distributed as dist

    tensor = torch.tensor(values, dtype=torch.float64, device=device)
    if world()[1] > 1:
        dist.broadcast(tensor, 0)
    return tensor.tolist()


def check_replicas(model: torch.nn.Module, device: torch.device) -> None:
    """Raise when the workers' copies of ``model`` differ: data-parallel training keeps them equal
    (DDP averages the gradients, word2vec adds up the updates), so a difference is a broken sync.
    One all-reduce of two numbers: the largest and smallest checksum over the workers."""
    import torch.distributed as dist

    if world()[1] == 1:
        return
    checksum = sum(float(p.detach().double().sum()) for p in model.parameters())
    extremes = torch.tensor([checksum, -checksum], dtype=torch.float64, device=device)
    dist.all_reduce(extremes, op=dist.ReduceOp.MAX)
    largest, smallest = float(extremes[0]), -float(extremes[1])
    if largest - smallest > 1e-6 * max(1.0, abs(largest)):
        raise RuntimeError(
            f"the workers' models differ (parameter sums from {smallest!r} to {largest!r}): "
            "the gradient or update sync is broken"
        )


def worker_log(message: str) -> None:
    """Print from inside a Ray Train worker, once. Train V2 replaces ``print`` in its workers with a
    version that logs *and* writes to a wrapped stdout, so a plain print reaches the driver twice."""
    stream = sys.__stdout__ or sys.stdout
    stream.write(message + "\n")
    stream.flush()
