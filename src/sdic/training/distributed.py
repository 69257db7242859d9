"""Data-parallel training across processes (``torchrun``), and the single-process case.

The same code runs on 1 process or N: :func:`setup` reads ``RANK``,
``WORLD_SIZE`` and ``LOCAL_RANK`` (set by ``torchrun``) and joins a process
group (gloo on CPU, nccl on CUDA) when ``WORLD_SIZE > 1``.

Gradients are averaged with one coalesced all-reduce per optimiser step
(:func:`average_gradients`) rather than by wrapping modules in
``DistributedDataParallel``: GAN training runs several forward passes per
backward, freezes and unfreezes networks and regularises lazily, which DDP's
autograd hooks do not follow; an explicit all-reduce is exact in all these
cases. Every source of randomness that touches a batch (latents, noise maps,
mixing decisions) is drawn for the *global* batch from a generator seeded
identically on every process, and each process takes its slice
(:meth:`DistContext.shard`), so N processes x batch B compute what one process
computes with batch N*B. State that depends on the whole batch (e4e's code
pools) is kept for the global batch on every process (:meth:`DistContext.gather`).

BatchNorm statistics are per process by default; :func:`sync_batchnorm`
replaces BN layers by :class:`GlobalBatchNorm`, which normalises with the
statistics of the global batch (CPU and GPU, unlike ``nn.SyncBatchNorm``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn

from .. import devices


@dataclass
class DistContext:
    """Where this process runs and which part of the global batch it owns."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")
    backend: str = ""

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    def shard(self, tensor: torch.Tensor) -> torch.Tensor:
        """This process's rows of a global-batch tensor (rows rank, rank+W, ...)."""
        if self.world_size == 1:
            return tensor
        return tensor[self.rank:: self.world_size]

    def gather(self, tensor: torch.Tensor) -> torch.Tensor:
        """The global batch from every process's rows (the inverse of :meth:`shard`; not differentiable)."""
        if self.world_size == 1:
            return tensor
        parts = [torch.empty_like(tensor) for _ in range(self.world_size)]
        dist.all_gather(parts, tensor.detach().contiguous())
        return torch.stack(parts, dim=1).flatten(0, 1)  # row j * W + r is row j of rank r


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    """``auto`` -> cuda when available, else cpu; ``cuda`` -> cuda:LOCAL_RANK."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = devices.resolve_device(name)
    except devices.DeviceError as error:
        raise devices.DeviceError(f"run.device: {error}") from None
    if device.type == "cuda":
        if device.index is None:
            device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    return device


def setup(device_name: str = "auto") -> DistContext:
    """Join the process group described by torchrun's environment variables (if any)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", str(rank)))
    device = resolve_device(device_name, local_rank)
    if world == 1:
        return DistContext(device=device)
    backend = "nccl" if device.type == "cuda" else "gloo"
    if not dist.is_initialized():
        dist.init_process_group(backend, rank=rank, world_size=world)
    return DistContext(rank, world, local_rank, device, backend)


def cleanup(ctx: DistContext) -> None:
    if ctx.distributed and dist.is_initialized():
        dist.destroy_process_group()


def barrier(ctx: DistContext) -> None:
    if ctx.distributed:
        dist.barrier()


def broadcast_module(module: nn.Module, ctx: DistContext) -> None:
    """Copy rank 0's parameters and buffers to every process."""
    if not ctx.distributed:
        return
    with torch.no_grad():
        for tensor in list(module.parameters()) + list(module.buffers()):
            dist.broadcast(tensor.data, src=0)


def average_gradients(params, ctx: DistContext) -> None:
    """Replace every gradient by its mean over processes (one flat all-reduce)."""
    if not ctx.distributed:
        return
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat)
    flat /= ctx.world_size
    offset = 0
    for g in grads:
        n = g.numel()
        g.copy_(flat[offset: offset + n].view_as(g))
        offset += n


def mean_over_processes(tensor: torch.Tensor, ctx: DistContext) -> torch.Tensor:
    """All-reduced mean (a new tensor; not differentiable)."""
    if not ctx.distributed:
        return tensor
    out = tensor.detach().clone()
    dist.all_reduce(out)
    return out / ctx.world_size


def gather_objects(obj, ctx: DistContext) -> list:
    """Every process's ``obj`` (picklable), in rank order, on every process."""
    if not ctx.distributed:
        return [obj]
    out = [None] * ctx.world_size
    dist.all_gather_object(out, obj)
    return out


# ------------------------------------------------------------ BatchNorm
def full_precision(x: torch.Tensor) -> torch.Tensor:
    return x.float() if x.dtype in (torch.float16, torch.bfloat16) else x


class _SumOverProcesses(torch.autograd.Function):
    """All-reduce (sum) whose backward all-reduces the incoming gradients (sum) as well."""

    @staticmethod
    def forward(ctx, tensor: torch.Tensor) -> torch.Tensor:
        out = tensor.clone()
        dist.all_reduce(out)
        return out

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        out = grad.clone()
        dist.all_reduce(out)
        return out


def _global_sum(tensor: torch.Tensor) -> torch.Tensor:
    """Differentiable sum over processes."""
    return _SumOverProcesses.apply(tensor)


class GlobalBatchNorm(nn.modules.batchnorm._BatchNorm):
    """BatchNorm whose training statistics cover the batches of all processes.

    Same parameters, buffers and state-dict names as ``nn.BatchNorm{1,2,3}d``;
    in eval mode, or with a single process, it is exactly ``F.batch_norm``.
    """

    def _check_input_dim(self, input: torch.Tensor) -> None:
        if input.dim() < 2:
            raise ValueError(f"expected at least 2-D input, got {input.dim()}-D")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        use_batch = self.training or not self.track_running_stats
        if not use_batch or not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
            return super().forward(x)
        dims = [0] + list(range(2, x.dim()))
        shape = [1, -1] + [1] * (x.dim() - 2)
        count = torch.tensor(float(x.numel() // x.shape[1]), device=x.device, dtype=full_precision(x).dtype)
        count = _global_sum(count)
        x32 = full_precision(x)
        mean = _global_sum(x32.sum(dims)) / count
        centred = x32 - mean.view(shape)
        var = _global_sum(centred.pow(2).sum(dims)) / count
        out = centred * torch.rsqrt(var + self.eps).view(shape)
        if self.affine:
            out = out * self.weight.view(shape) + self.bias.view(shape)
        if self.training and self.track_running_stats:
            self._update_running_stats(mean.detach(), var.detach(), count)
        return out.to(x.dtype)

    @torch.no_grad()
    def _update_running_stats(self, mean: torch.Tensor, var: torch.Tensor, count: torch.Tensor) -> None:
        self.num_batches_tracked.add_(1)
        momentum = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)
        unbiased = var * count / (count - 1).clamp_min(1)
        self.running_mean.mul_(1 - momentum).add_(mean.to(self.running_mean.dtype), alpha=momentum)
        self.running_var.mul_(1 - momentum).add_(unbiased.to(self.running_var.dtype), alpha=momentum)


def sync_batchnorm(module: nn.Module) -> nn.Module:
    """Replace every BatchNorm{1,2,3}d inside ``module`` by :class:`GlobalBatchNorm` (in place)."""
    for name, child in list(module.named_children()):
        if isinstance(child, nn.modules.batchnorm._BatchNorm) and not isinstance(child, GlobalBatchNorm):
            replacement = GlobalBatchNorm(child.num_features, child.eps, child.momentum, child.affine,
                                          child.track_running_stats)
            replacement.load_state_dict(child.state_dict())
            replacement.train(child.training)
            replacement.to(next(iter(child.state_dict().values())).device)
            setattr(module, name, replacement)
        else:
            sync_batchnorm(child)
    return module

