"""Inference through attention blocks with hand-written layernorm and softmax chains, eager -> torch.compile."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from benchmarks.advice.training import SEED

NAME = "compile_layernorm_softmax"
EXPECTED = "bottleneck.unfused_elementwise"
DEVICE = "cpu"
WORLD_SIZE = 1
CLOCK = "cpu"  # one process, host compute only, before and after
CHANGE = "model -> torch.compile(model): the layernorm and softmax chains fuse"

DIM, SEQ, BATCH, BLOCKS = 128, 128, 8, 2
EPS = 1e-5


def hand_layernorm(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """Layer norm over the last dimension, op by op."""
    mean = x.mean(-1, keepdim=True)
    centred = x - mean
    var = (centred * centred).mean(-1, keepdim=True)
    return centred / torch.sqrt(var + EPS) * weight + bias


def hand_softmax(x: torch.Tensor) -> torch.Tensor:
    """Softmax over the last dimension, op by op."""
    shifted = x - x.amax(-1, keepdim=True)
    e = torch.exp(shifted)
    return e / e.sum(-1, keepdim=True)


class Block(nn.Module):
    """Pre-norm single-head self-attention with the hand-written chains, residual."""

    def __init__(self) -> None:
        super().__init__()
        self.weight, self.bias = nn.Parameter(torch.ones(DIM)), nn.Parameter(torch.zeros(DIM))
        self.qkv, self.out = nn.Linear(DIM, 3 * DIM), nn.Linear(DIM, DIM)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v = self.qkv(hand_layernorm(x, self.weight, self.bias)).chunk(3, dim=-1)
        attn = hand_softmax(q @ k.transpose(-2, -1) / math.sqrt(DIM))
        return x + self.out(attn @ v)


@dataclass
class Inference:
    """A model in eval mode and its fixed input."""

    model: nn.Module
    inputs: torch.Tensor


def build(variant: str) -> Inference:
    """Two attention blocks, eager (before) or torch.compile'd (after)."""
    torch.manual_seed(SEED)
    model: nn.Module = nn.Sequential(*[Block() for _ in range(BLOCKS)]).eval()
    if variant == "after":
        model = torch.compile(model)
    gen = torch.Generator().manual_seed(SEED)
    return Inference(model, torch.randn(BATCH, SEQ, DIM, generator=gen))


def step(state: Inference) -> None:
    """One forward pass without autograd."""
    with torch.no_grad():
        state.model(state.inputs)


def close(state: Inference) -> None:
    """Nothing to release."""
