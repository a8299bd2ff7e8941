"""2 ranks (gloo) all-reducing each of 160 gradients one at a time after backward -> one flat all-reduce."""

from __future__ import annotations

from benchmarks.advice.grad_sync import SyncStep, build_sync_step, sync_step

NAME = "gloo_coalesced_allreduce"
EXPECTED = "bottleneck.exposed_communication"
DEVICE = "cpu"
WORLD_SIZE = 2
BACKEND = "gloo"
CHANGE = "160 dist.all_reduce(grad) calls -> one all_reduce of the gradients flattened into one tensor"

WIDTH, DEPTH, BATCH = 64, 80, 32


def build(variant: str) -> SyncStep:
    """Data-parallel MLP step, gradients averaged one by one (before) or as one flat tensor (after)."""
    return build_sync_step("per_gradient" if variant == "before" else "coalesced",
                           width=WIDTH, depth=DEPTH, batch=BATCH, device=DEVICE)


def step(state: SyncStep) -> None:
    """One data-parallel training step."""
    sync_step(state)


def close(state: SyncStep) -> None:
    """Nothing to release (the runner destroys the process group)."""
