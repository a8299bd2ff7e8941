"""AdamW over 600 tiny parameters (150 Linear(16)+LayerNorm blocks), per-parameter loop -> foreach."""

from __future__ import annotations

import torch
from torch import nn

from benchmarks.advice.training import SEED, TrainStep, run_train_step

NAME = "adamw_many_small_params"
EXPECTED = "bottleneck.optimizer_dispatch"
DEVICE = "cpu"
WORLD_SIZE = 1
CLOCK = "cpu"  # one process, host compute only, before and after
CHANGE = "torch.optim.AdamW(foreach=False) -> AdamW(foreach=True) on 600 tiny parameters"

WIDTH, BLOCKS, BATCH = 16, 150, 8


def _model() -> nn.Sequential:
    torch.manual_seed(SEED)
    return nn.Sequential(*[nn.Sequential(nn.Linear(WIDTH, WIDTH), nn.LayerNorm(WIDTH)) for _ in range(BLOCKS)])


def build(variant: str) -> TrainStep:
    """The training step of 150 tiny blocks with AdamW, foreach off (before) or on (after)."""
    model = _model()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, foreach=(variant == "after"))
    gen = torch.Generator().manual_seed(SEED)
    return TrainStep(model, opt, torch.randn(BATCH, WIDTH, generator=gen),
                     torch.randn(BATCH, WIDTH, generator=gen), nn.functional.mse_loss)


def step(state: TrainStep) -> None:
    """One training step."""
    run_train_step(state)


def close(state: TrainStep) -> None:
    """Nothing to release."""
