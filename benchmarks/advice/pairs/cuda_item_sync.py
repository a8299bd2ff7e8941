"""`.item()` on the loss every step for logging -> the loss summed on the device and read every 50 steps."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from benchmarks.advice.training import SEED, TrainStep, run_train_step, seeded_mlp

NAME = "cuda_item_sync"
EXPECTED = "bottleneck.device_sync"
DEVICE = "cuda"
WORLD_SIZE = 1
CHANGE = "losses.append(loss.item()) each step -> running += loss on the device, .item() every 50 steps"

WIDTH, DEPTH, BATCH = 512, 24, 256
LOG_EVERY = 50


@dataclass
class LoggedStep:
    """A GPU training step whose loss is logged, every step (before) or every LOG_EVERY steps (after)."""

    train: TrainStep
    log_every: int
    steps: int = 0
    running: torch.Tensor | None = None
    logged: list[float] = field(default_factory=list)


def build(variant: str) -> LoggedStep:
    """GPU MLP training step that logs its loss with .item() every step or every LOG_EVERY steps."""
    model = seeded_mlp(WIDTH, DEPTH).cuda()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=True)
    gen = torch.Generator().manual_seed(SEED)
    train = TrainStep(model, opt, torch.randn(BATCH, WIDTH, generator=gen).cuda(),
                      torch.randn(BATCH, WIDTH, generator=gen).cuda(), nn.functional.mse_loss)
    return LoggedStep(train, 1 if variant == "before" else LOG_EVERY)


def step(state: LoggedStep) -> None:
    """One training step and the logging of its loss."""
    loss = run_train_step(state.train)
    state.running = loss if state.running is None else state.running + loss
    state.steps += 1
    if state.steps % state.log_every == 0:
        state.logged.append(state.running.item() / state.log_every)  # the host waits for the GPU here
        state.running = None


def close(state: LoggedStep) -> None:
    """Nothing to release."""
