"""Inference through 100 tiny Linear+ReLU layers (200 kernels of a few µs each) -> one CUDA graph replay."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from benchmarks.advice.training import SEED, seeded_mlp

NAME = "cuda_graphs_tiny_kernels"
EXPECTED = "bottleneck.dispatch_bound"
DEVICE = "cuda"
WORLD_SIZE = 1
CHANGE = "model(x) each step -> torch.cuda.CUDAGraph captured once, graph.replay() each step"

WIDTH, DEPTH, BATCH = 64, 100, 16
CAPTURE_WARMUP_STEPS = 3


@dataclass
class GraphStep:
    """A tiny-kernel model with a static input, run eagerly or by replaying a captured graph."""

    model: nn.Module
    static_input: torch.Tensor
    graph: torch.cuda.CUDAGraph | None = None
    static_output: torch.Tensor | None = None


def build(variant: str) -> GraphStep:
    """100 tiny layers on the GPU, eager (before) or captured into a CUDA graph (after)."""
    model = seeded_mlp(WIDTH, DEPTH).cuda().eval()
    gen = torch.Generator().manual_seed(SEED)
    state = GraphStep(model, torch.randn(BATCH, WIDTH, generator=gen).cuda())
    if variant == "after":
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.no_grad(), torch.cuda.stream(side):
            for _ in range(CAPTURE_WARMUP_STEPS):  # capture needs the lazy initialisations done
                model(state.static_input)
        torch.cuda.current_stream().wait_stream(side)
        state.graph = torch.cuda.CUDAGraph()
        with torch.no_grad(), torch.cuda.graph(state.graph):
            state.static_output = model(state.static_input)
    return state


def step(state: GraphStep) -> None:
    """One forward pass: 200 launches (before) or one graph replay (after)."""
    if state.graph is None:
        with torch.no_grad():
            state.static_output = state.model(state.static_input)
    else:
        state.graph.replay()


def close(state: GraphStep) -> None:
    """Nothing to release."""
