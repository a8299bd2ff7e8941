"""Data-parallel training steps for the 2-rank pairs: gradients all-reduced one by one, flat, or by DDP.

The runner has initialised the default process group (gloo or NCCL) before `build_sync_step` runs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.distributed as dist
from torch import nn

from benchmarks.advice.training import SEED, TrainStep, seeded_mlp

__all__ = ["Sync", "SyncStep", "build_sync_step", "sync_step"]

Sync = Literal["per_gradient", "coalesced", "ddp"]


@dataclass
class SyncStep:
    """A training step and how its gradients are averaged across ranks."""

    train: TrainStep
    sync: Sync


def build_sync_step(sync: Sync, *, width: int, depth: int, batch: int, device: str) -> SyncStep:
    """An MLP training step of `depth` layers (2 gradients each) whose gradients are averaged by `sync`."""
    dev = torch.device("cuda", torch.cuda.current_device()) if device == "cuda" else torch.device(device)
    model: nn.Module = seeded_mlp(width, depth).to(dev)
    if sync == "ddp":
        model = nn.parallel.DistributedDataParallel(model, device_ids=None if dev.type == "cpu" else [dev])
    opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9, foreach=True)
    gen = torch.Generator().manual_seed(SEED + dist.get_rank())
    inputs = torch.randn(batch, width, generator=gen).to(dev)
    target = torch.randn(batch, width, generator=gen).to(dev)
    return SyncStep(TrainStep(model, opt, inputs, target, nn.functional.mse_loss), sync)


def _average_each(grads: list[torch.Tensor]) -> None:
    world = dist.get_world_size()
    for g in grads:
        dist.all_reduce(g)
        g.div_(world)


def _average_flat(grads: list[torch.Tensor]) -> None:
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat)
    flat.div_(dist.get_world_size())
    offset = 0
    for g in grads:
        g.copy_(flat[offset:offset + g.numel()].view_as(g))
        offset += g.numel()


def sync_step(state: SyncStep) -> None:
    """One data-parallel training step: forward, backward, gradients averaged, optimizer step."""
    t = state.train
    t.optimizer.zero_grad(set_to_none=True)
    t.loss_fn(t.model(t.inputs), t.target).backward()
    grads = [p.grad for p in t.model.parameters() if p.grad is not None]
    if state.sync == "per_gradient":
        _average_each(grads)
    elif state.sync == "coalesced":
        _average_flat(grads)
    t.optimizer.step()  # under DDP the gradients were averaged during backward
