"""Pieces the pairs share: a seeded MLP, a training step of model + optimizer + fixed batch, a free port.

Every pair builds its before and its after from the same seed, so the two differ only by the one
change the pair is about.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

__all__ = ["SEED", "TrainStep", "seeded_mlp", "run_train_step", "free_port"]

#: one seed for every pair's weights and batches (before and after start from the same numbers)
SEED = 0


@dataclass
class TrainStep:
    """A model, its optimizer, one fixed batch and the loss: what one training step needs."""

    model: nn.Module
    optimizer: torch.optim.Optimizer
    inputs: torch.Tensor
    target: torch.Tensor
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def seeded_mlp(width: int, depth: int, *, activation: Callable[[], nn.Module] = nn.ReLU) -> nn.Sequential:
    """`depth` Linear(width, width) layers, each followed by `activation`, weights from SEED."""
    torch.manual_seed(SEED)
    layers: list[nn.Module] = []
    for _ in range(depth):
        layers += [nn.Linear(width, width), activation()]
    return nn.Sequential(*layers)


def run_train_step(state: TrainStep) -> torch.Tensor:
    """One step: zero grads, forward, loss, backward, optimizer step; returns the (detached) loss."""
    state.optimizer.zero_grad(set_to_none=True)
    loss = state.loss_fn(state.model(state.inputs), state.target)
    loss.backward()
    state.optimizer.step()
    return loss.detach()


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (for MASTER_PORT)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
