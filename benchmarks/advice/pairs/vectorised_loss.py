"""A cross-entropy written as a Python loop over the batch rows (7 small ops a row) -> one vectorised call."""

from __future__ import annotations

import torch
from torch import nn

from benchmarks.advice.training import SEED, TrainStep, run_train_step

NAME = "vectorised_loss"
EXPECTED = "bottleneck.dispatch_bound"
DEVICE = "cpu"
WORLD_SIZE = 1
CLOCK = "cpu"  # one process, host compute only, before and after
CHANGE = "per-row Python loss loop -> torch.nn.functional.cross_entropy over the batch"

FEATURES, HIDDEN, CLASSES, BATCH = 128, 256, 64, 64


def row_loop_cross_entropy(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy computed row by row, as a hand-rolled loss would."""
    total = logits.new_zeros(())
    for i in range(logits.shape[0]):
        row = logits[i]
        peak = row.max()
        log_sum_exp = peak + torch.log(torch.exp(row - peak).sum())
        total = total + (log_sum_exp - row[target[i]])
    return total / logits.shape[0]


def build(variant: str) -> TrainStep:
    """Training step of a small classifier; loss by row loop (before) or F.cross_entropy (after)."""
    torch.manual_seed(SEED)
    model = nn.Sequential(nn.Linear(FEATURES, HIDDEN), nn.ReLU(), nn.Linear(HIDDEN, CLASSES))
    opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9, foreach=True)
    gen = torch.Generator().manual_seed(SEED)
    loss_fn = row_loop_cross_entropy if variant == "before" else nn.functional.cross_entropy
    return TrainStep(model, opt, torch.randn(BATCH, FEATURES, generator=gen),
                     torch.randint(0, CLASSES, (BATCH,), generator=gen), loss_fn)


def step(state: TrainStep) -> None:
    """One training step."""
    run_train_step(state)


def close(state: TrainStep) -> None:
    """Nothing to release."""
