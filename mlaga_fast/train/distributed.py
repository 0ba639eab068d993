"""Multi-process helpers: torchrun detection, process-group setup, rank helpers, gather with gradient.

``torchrun --nproc-per-node P -m mlaga_fast train ...`` sets RANK / WORLD_SIZE / LOCAL_RANK /
MASTER_ADDR / MASTER_PORT; ``init_distributed`` reads them and starts the process group with NCCL
when the run uses CUDA and gloo on CPU. Without those variables everything degrades to a single
process, so the same training code runs under plain ``python`` too.
"""
from __future__ import annotations

import contextlib
import datetime
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from mlaga_fast.runtime.device import pick_device

__all__ = [
    "DistInfo",
    "is_torchrun",
    "init_distributed",
    "cleanup_distributed",
    "is_distributed",
    "get_rank",
    "get_world_size",
    "is_main_process",
    "barrier",
    "all_gather_with_grad",
    "all_gather_no_grad",
    "all_reduce_mean",
    "all_reduce_sum",
    "all_reduce_grads_mean",
    "broadcast_params",
    "main_first",
]


@dataclass(frozen=True)
class DistInfo:
    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def is_torchrun() -> bool:
    return all(k in os.environ for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK"))


def init_distributed(device: str = "auto", timeout_s: float = 600.0) -> DistInfo:
    """Start the process group when launched by torchrun (world size > 1); otherwise a 1-process info."""
    if not is_torchrun() or int(os.environ["WORLD_SIZE"]) <= 1:
        return DistInfo(0, 1, 0, pick_device(device, 0))
    rank = int(os.environ["RANK"])
    world = int(os.environ["WORLD_SIZE"])
    local_rank = int(os.environ["LOCAL_RANK"])
    dev = pick_device(device, local_rank)
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    backend = "nccl" if dev.type == "cuda" else "gloo"
    if not dist.is_initialized():
        kwargs = {}
        if backend == "nccl":
            kwargs["device_id"] = dev  # binds the communicator eagerly; avoids a hang on a wrong device
        dist.init_process_group(
            backend=backend,
            rank=rank,
            world_size=world,
            timeout=datetime.timedelta(seconds=timeout_s),
            **kwargs,
        )
    return DistInfo(rank, world, local_rank, dev)


def cleanup_distributed() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def get_rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def get_world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def is_main_process() -> bool:
    return get_rank() == 0


def barrier() -> None:
    if is_distributed():
        dist.barrier()


def _gather_sizes(n: int, device: torch.device) -> list[int]:
    t = torch.tensor([n], dtype=torch.int64, device=device)
    out = [torch.zeros_like(t) for _ in range(dist.get_world_size())]
    dist.all_gather(out, t)
    return [int(x.item()) for x in out]


def all_gather_no_grad(x: torch.Tensor) -> torch.Tensor:
    """Concatenate ``x`` [n_r, ...] from every rank along dim 0 (sizes may differ per rank)."""
    if not is_distributed():
        return x
    sizes = _gather_sizes(x.shape[0], x.device)
    m = max(sizes)
    padded = x.new_zeros((m, *x.shape[1:]))
    padded[: x.shape[0]] = x
    parts = [torch.empty_like(padded) for _ in sizes]
    dist.all_gather(parts, padded.contiguous())
    return torch.cat([p[:s] for p, s in zip(parts, sizes)], dim=0)


class _GatherWithGrad(torch.autograd.Function):
    """all_gather whose backward sends each rank the gradient of its own rows, summed over ranks.

    Every rank's loss reads all ranks' rows, so d(sum_r loss_r)/d(x_mine) is the sum over ranks of
    the gradient at my slice: an all_reduce(SUM) then a slice. DDP later divides parameter grads by
    the world size, which turns that sum into the gradient of the mean loss -- the same gradient a
    single process computing the loss over the whole global batch would get.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:  # x: [n_r, ...]
        sizes = _gather_sizes(x.shape[0], x.device)
        ctx.sizes = sizes
        ctx.rank = dist.get_rank()
        m = max(sizes)
        padded = x.new_zeros((m, *x.shape[1:]))
        padded[: x.shape[0]] = x
        parts = [torch.empty_like(padded) for _ in sizes]
        dist.all_gather(parts, padded.contiguous())
        return torch.cat([p[:s] for p, s in zip(parts, sizes)], dim=0)  # [sum n_r, ...]

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.contiguous().clone()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        start = sum(ctx.sizes[: ctx.rank])
        return grad[start : start + ctx.sizes[ctx.rank]]


def all_gather_with_grad(x: torch.Tensor) -> torch.Tensor:
    """Like ``all_gather_no_grad`` but differentiable (see ``_GatherWithGrad``); identity in 1 process."""
    if not is_distributed():
        return x
    return _GatherWithGrad.apply(x)


def all_reduce_mean(x: torch.Tensor) -> torch.Tensor:
    """Mean of a (detached) tensor over ranks, for logging."""
    if not is_distributed():
        return x
    y = x.detach().clone()
    dist.all_reduce(y, op=dist.ReduceOp.SUM)
    return y / dist.get_world_size()


def all_reduce_sum(x: torch.Tensor) -> torch.Tensor:
    """Sum of a (detached) tensor over ranks; ``x`` itself is left as it was."""
    if not is_distributed():
        return x
    y = x.detach().clone()
    dist.all_reduce(y, op=dist.ReduceOp.SUM)
    return y


def all_reduce_grads_mean(params) -> None:
    """Average ``.grad`` over ranks in place with one flat all_reduce, as DDP does for the parameters
    it wraps. Parameters without a grad are skipped: every rank runs the same model on the same kind
    of batch, so the set of parameters with grads is the same on every rank."""
    if not is_distributed():
        return
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return
    flat = torch.cat([g.reshape(-1).float() for g in grads])  # [sum numel], fp32 even for bf16 grads
    dist.all_reduce(flat, op=dist.ReduceOp.SUM)
    flat /= dist.get_world_size()
    for g, part in zip(grads, flat.split([g.numel() for g in grads])):
        g.copy_(part.view_as(g))


def broadcast_params(params, src: int = 0) -> None:
    """Copy rank ``src``'s parameter values to every rank (DDP does this for the parameters it wraps)."""
    if not is_distributed():
        return
    with torch.no_grad():
        for p in params:
            dist.broadcast(p.data, src=src)


@contextlib.contextmanager
def main_first():
    """Run the body on rank 0 first and then on the other ranks, e.g. so that rank 0 alone fills a disk
    cache that the others then read. If rank 0 fails inside, the others wait until torchrun stops them."""
    if is_distributed() and not is_main_process():
        barrier()
    yield
    if is_distributed() and is_main_process():
        barrier()
