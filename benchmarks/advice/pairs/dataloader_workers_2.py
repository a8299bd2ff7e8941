"""A DataLoader whose reads take ~40% of the compute step, loaded in the main process -> 2 workers."""

from __future__ import annotations

from benchmarks.advice.slow_disk import LoaderStep, build_loader_step, close_loader_step, loader_step

NAME = "dataloader_workers_2"
EXPECTED = "bottleneck.data_loading"
DEVICE = "cpu"
WORLD_SIZE = 1
CHANGE = "DataLoader(num_workers=0) -> DataLoader(num_workers=2, persistent_workers=True)"

#: reading one batch takes this share of one compute step
LOAD_SHARE = 0.4
WORKERS_AFTER = 2


def build(variant: str) -> LoaderStep:
    """Training fed by a slow-disk DataLoader: no workers (before) or 2 (after)."""
    return build_loader_step(LOAD_SHARE, WORKERS_AFTER if variant == "after" else 0)


def step(state: LoaderStep) -> None:
    """Next batch, one training step."""
    loader_step(state)


def close(state: LoaderStep) -> None:
    """Stop the loader's workers."""
    close_loader_step(state)
