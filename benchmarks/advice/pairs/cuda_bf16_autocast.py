"""A matmul-heavy MLP trained in fp32 on the GPU -> the same under bf16 autocast."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from benchmarks.advice.training import SEED, TrainStep, seeded_mlp

NAME = "cuda_bf16_autocast"
EXPECTED = "bottleneck.fp32_matmul"
DEVICE = "cuda"
WORLD_SIZE = 1
CHANGE = "fp32 forward -> torch.autocast('cuda', dtype=torch.bfloat16) around forward and loss"

WIDTH, DEPTH, BATCH = 4096, 6, 4096


@dataclass
class PrecisionStep:
    """A GPU training step run in fp32 or under bf16 autocast."""

    train: TrainStep
    autocast: bool


def build(variant: str) -> PrecisionStep:
    """GPU MLP training step, fp32 (before) or bf16 autocast (after); TF32 stays off, as by default."""
    model = seeded_mlp(WIDTH, DEPTH).cuda()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=True)
    gen = torch.Generator().manual_seed(SEED)
    train = TrainStep(model, opt, torch.randn(BATCH, WIDTH, generator=gen).cuda(),
                      torch.randn(BATCH, WIDTH, generator=gen).cuda(), nn.functional.mse_loss)
    return PrecisionStep(train, variant == "after")


def step(state: PrecisionStep) -> None:
    """One training step, forward and loss under autocast in the after."""
    t = state.train
    t.optimizer.zero_grad(set_to_none=True)
    with torch.autocast("cuda", dtype=torch.bfloat16, enabled=state.autocast):
        loss = t.loss_fn(t.model(t.inputs).float(), t.target)
    loss.backward()
    t.optimizer.step()


def close(state: PrecisionStep) -> None:
    """Nothing to release."""
