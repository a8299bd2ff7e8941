"""Each step copies its 64 MiB of predictions to pageable host memory (`.to('cpu')`) -> pinned, non_blocking."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from benchmarks.advice.training import SEED, TrainStep, seeded_mlp

NAME = "cuda_pinned_copy"
EXPECTED = "bottleneck.blocking_copy"
DEVICE = "cuda"
WORLD_SIZE = 1
CHANGE = "preds.to('cpu') -> host_buffer.copy_(preds, non_blocking=True) into a pinned buffer"

WIDTH, DEPTH, BATCH = 4096, 4, 4096


@dataclass
class CopyStep:
    """A GPU training step that keeps each step's predictions on the host."""

    train: TrainStep
    pinned: torch.Tensor | None  # None: copy to pageable memory with .to('cpu')
    kept: torch.Tensor | None = None


def build(variant: str) -> CopyStep:
    """GPU MLP training step; predictions copied pageable + blocking (before) or pinned + async (after)."""
    model = seeded_mlp(WIDTH, DEPTH).cuda()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=True)
    gen = torch.Generator().manual_seed(SEED)
    inputs = torch.randn(BATCH, WIDTH, generator=gen).cuda()
    target = torch.randn(BATCH, WIDTH, generator=gen).cuda()
    pinned = torch.empty(BATCH, WIDTH, pin_memory=True) if variant == "after" else None
    return CopyStep(TrainStep(model, opt, inputs, target, nn.functional.mse_loss), pinned)


def step(state: CopyStep) -> None:
    """One training step, then its predictions to the host."""
    t = state.train
    t.optimizer.zero_grad(set_to_none=True)
    preds = t.model(t.inputs)
    t.loss_fn(preds, t.target).backward()
    t.optimizer.step()
    if state.pinned is None:
        state.kept = preds.detach().to("cpu")
    else:
        state.pinned.copy_(preds.detach(), non_blocking=True)
        state.kept = state.pinned


def close(state: CopyStep) -> None:
    """Nothing to release."""

