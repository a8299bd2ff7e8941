"""The pairs: one module each, a before and an after that applies one recommendation.

Every pair module declares

- ``NAME`` (its module name), ``EXPECTED`` (the finding id that must fire before and not after),
  ``DEVICE`` ("cpu" or "cuda"), ``WORLD_SIZE`` (1 or 2; 2-rank pairs also name their ``BACKEND``),
  ``CHANGE`` (one line: what the after changes);
- ``build(variant) -> state`` for variant "before" or "after" (2-rank pairs: inside an initialised
  process group), ``step(state)`` running one step, and ``close(state)`` releasing what build took;
- optionally ``CLOCK`` (`CLOCKS`): what the realized change is timed by. "wall" (the default) for
  every pair whose step waits (on data, a peer, a device); "cpu" (this process's CPU time) for a
  single-process pair that only computes on the host in both versions, where the wall clock of this
  machine's 2 shared cores mostly measures other people's work (two runs differed by 20 points).

The runner drives the steps itself, so it can profile, warm up and time them as it needs.
"""

from __future__ import annotations

import importlib
from types import ModuleType

__all__ = ["PAIR_NAMES", "VARIANTS", "DEVICES", "CLOCKS", "REQUIRED_ATTRS", "load_pair", "load_pairs", "clock_of"]

#: every pair, in the order the runner runs and prints them: the CPU pairs first
PAIR_NAMES: tuple[str, ...] = (
    "adam_foreach",
    "sgd_momentum_foreach",
    "adamw_many_small_params",
    "dataloader_workers_2",
    "dataloader_workers_4",
    "compile_gelu_mlp",
    "compile_layernorm_softmax",
    "vectorised_loss",
    "gloo_coalesced_allreduce",
    "gloo_ddp",
    "cuda_pinned_copy",
    "cuda_item_sync",
    "cuda_graphs_tiny_kernels",
    "cuda_bf16_autocast",
    "nccl_ddp",
)
VARIANTS: tuple[str, ...] = ("before", "after")
DEVICES: tuple[str, ...] = ("cpu", "cuda")
CLOCKS: tuple[str, ...] = ("wall", "cpu")
#: what every pair module must define
REQUIRED_ATTRS: tuple[str, ...] = ("NAME", "EXPECTED", "DEVICE", "WORLD_SIZE", "CHANGE", "build", "step", "close")


def load_pair(name: str) -> ModuleType:
    """The pair module called `name` (KeyError naming the known pairs when there is none)."""
    if name not in PAIR_NAMES:
        raise KeyError(f"unknown pair {name!r} (known: {', '.join(PAIR_NAMES)})")
    return importlib.import_module(f"{__name__}.{name}")


def clock_of(pair: ModuleType) -> str:
    """The clock the pair's realized change is timed by ("wall" unless the pair says "cpu")."""
    return getattr(pair, "CLOCK", "wall")


def load_pairs() -> list[ModuleType]:
    """Every pair module, in PAIR_NAMES order."""
    return [load_pair(name) for name in PAIR_NAMES]
