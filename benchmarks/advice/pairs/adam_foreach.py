"""Adam stepping each of 64 parameters in a Python loop -> one foreach (multi-tensor) step."""

from __future__ import annotations

import torch
from torch import nn

from benchmarks.advice.training import SEED, TrainStep, run_train_step, seeded_mlp

NAME = "adam_foreach"
EXPECTED = "bottleneck.optimizer_dispatch"
DEVICE = "cpu"
WORLD_SIZE = 1
CLOCK = "cpu"  # one process, host compute only, before and after
CHANGE = "torch.optim.Adam(foreach=False) -> Adam(foreach=True)"

WIDTH, DEPTH, BATCH = 64, 32, 8


def build(variant: str) -> TrainStep:
    """The training step of a 32-layer MLP with Adam, foreach off (before) or on (after)."""
    model = seeded_mlp(WIDTH, DEPTH)
    opt = torch.optim.Adam(model.parameters(), lr=1e-4, foreach=(variant == "after"))
    gen = torch.Generator().manual_seed(SEED)
    return TrainStep(model, opt, torch.randn(BATCH, WIDTH, generator=gen),
                     torch.randn(BATCH, WIDTH, generator=gen), nn.functional.mse_loss)


def step(state: TrainStep) -> None:
    """One training step."""
    run_train_step(state)


def close(state: TrainStep) -> None:
    """Nothing to release."""
