"""2 ranks (NCCL, one GPU each) all-reducing each of 160 gradients one at a time -> DistributedDataParallel."""

from __future__ import annotations

from benchmarks.advice.grad_sync import SyncStep, build_sync_step, sync_step

NAME = "nccl_ddp"
EXPECTED = "bottleneck.exposed_communication"
DEVICE = "cuda"
WORLD_SIZE = 2
BACKEND = "nccl"
CHANGE = "160 dist.all_reduce(grad) calls -> DistributedDataParallel (bucketed, overlapped with backward)"

WIDTH, DEPTH, BATCH = 1024, 80, 256


def build(variant: str) -> SyncStep:
    """Data-parallel MLP step on this rank's GPU, gradients averaged one by one (before) or by DDP (after)."""
    return build_sync_step("per_gradient" if variant == "before" else "ddp",
                           width=WIDTH, depth=DEPTH, batch=BATCH, device=DEVICE)


def step(state: SyncStep) -> None:
    """One data-parallel training step."""
    sync_step(state)


def close(state: SyncStep) -> None:
    """Nothing to release (the runner destroys the process group)."""
