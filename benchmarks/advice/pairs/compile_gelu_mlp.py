"""An MLP whose activations are hand-written tanh-GELU chains (8 elementwise ops each), eager -> torch.compile."""

from __future__ import annotations

import math

import torch
from torch import nn

from benchmarks.advice.training import SEED, TrainStep, run_train_step

NAME = "compile_gelu_mlp"
EXPECTED = "bottleneck.unfused_elementwise"
DEVICE = "cpu"
WORLD_SIZE = 1
CLOCK = "cpu"  # one process, host compute only, before and after
CHANGE = "model -> torch.compile(model): the GELU chains fuse into one kernel each"

WIDTH, HIDDEN, BLOCKS, BATCH = 256, 1024, 3, 128
_SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)


class HandGelu(nn.Module):
    """tanh-approximated GELU written out op by op, as in older model code."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return 0.5 * x * (1.0 + torch.tanh(_SQRT_2_OVER_PI * (x + 0.044715 * x * x * x)))


class Block(nn.Module):
    """Linear up, hand-written GELU, Linear down, residual."""

    def __init__(self) -> None:
        super().__init__()
        self.up, self.act, self.down = nn.Linear(WIDTH, HIDDEN), HandGelu(), nn.Linear(HIDDEN, WIDTH)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.down(self.act(self.up(x)))


def build(variant: str) -> TrainStep:
    """Training step of 3 GELU-MLP blocks, eager (before) or torch.compile'd (after)."""
    torch.manual_seed(SEED)
    model: nn.Module = nn.Sequential(*[Block() for _ in range(BLOCKS)])
    opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9, foreach=True)
    if variant == "after":
        model = torch.compile(model)
    gen = torch.Generator().manual_seed(SEED)
    return TrainStep(model, opt, torch.randn(BATCH, WIDTH, generator=gen),
                     torch.randn(BATCH, WIDTH, generator=gen), nn.functional.mse_loss)


def step(state: TrainStep) -> None:
    """One training step (the first call of the compiled model compiles: the runner warms up first)."""
    run_train_step(state)


def close(state: TrainStep) -> None:
    """Nothing to release."""
