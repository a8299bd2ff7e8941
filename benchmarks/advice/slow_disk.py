"""A training loop fed by a DataLoader whose Dataset waits on a slow disk (time.sleep), for the data pairs.

Each item is one whole batch (``batch_size=None``); reading it sleeps for a set share of the compute
step, measured once per process (`compute_seconds`) so before and after wait the same time, and then
returns one of a few batches made up front. The sleep holds no CPU, as a disk read would not, and
the worker makes no data of its own, so worker processes hide the wait behind compute without
taking cores from the training step (this machine has two, shared).
"""

from __future__ import annotations

import functools
import statistics
import time
import warnings
from dataclasses import dataclass
from typing import Iterator

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from benchmarks.advice.training import SEED, TrainStep, run_train_step, seeded_mlp

__all__ = ["SlowDisk", "LoaderStep", "compute_seconds", "build_loader_step", "loader_step", "close_loader_step"]

WIDTH, DEPTH, BATCH = 512, 8, 256
#: items the dataset claims to have: far more than any run takes, so the loader never restarts
ITEMS = 1_000_000
#: distinct batches the dataset hands out in turn
DISTINCT_BATCHES = 8
CALIBRATION_WARMUP_STEPS, CALIBRATION_STEPS = 3, 9
_MANY_WORKERS_WARNING = "This DataLoader will create"


class SlowDisk(Dataset):
    """Batches that take `wait_s` to read, like a slow disk; the data itself is seeded noise made up front."""

    def __init__(self, wait_s: float) -> None:
        self.wait_s = wait_s
        gen = torch.Generator().manual_seed(SEED)
        self.batches = [(torch.randn(BATCH, WIDTH, generator=gen), torch.randn(BATCH, WIDTH, generator=gen))
                        for _ in range(DISTINCT_BATCHES)]

    def __len__(self) -> int:
        return ITEMS

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        time.sleep(self.wait_s)
        return self.batches[index % DISTINCT_BATCHES]


@dataclass
class LoaderStep:
    """A training step and the batch iterator that feeds it."""

    train: TrainStep
    loader: DataLoader
    batches: Iterator


def _train_step() -> TrainStep:
    model = seeded_mlp(WIDTH, DEPTH)
    opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9, foreach=True)
    gen = torch.Generator().manual_seed(SEED)
    return TrainStep(model, opt, torch.randn(BATCH, WIDTH, generator=gen),
                     torch.randn(BATCH, WIDTH, generator=gen), nn.functional.mse_loss)


@functools.lru_cache(maxsize=1)
def compute_seconds() -> float:
    """Median seconds of one compute-only training step in this process (measured once)."""
    state = _train_step()
    times = []
    for i in range(CALIBRATION_WARMUP_STEPS + CALIBRATION_STEPS):
        t0 = time.perf_counter()
        run_train_step(state)
        if i >= CALIBRATION_WARMUP_STEPS:
            times.append(time.perf_counter() - t0)
    return statistics.median(times)


def _one_thread(_worker_id: int) -> None:
    torch.set_num_threads(1)  # workers only sleep and build a batch: leave the cores to the step


def build_loader_step(load_share: float, num_workers: int) -> LoaderStep:
    """A training step fed through a DataLoader of `num_workers` whose reads take `load_share` of compute."""
    dataset = SlowDisk(load_share * compute_seconds())
    with warnings.catch_warnings():
        # more workers than cores is the point here: they wait on the "disk", they do not compute
        warnings.filterwarnings("ignore", message=_MANY_WORKERS_WARNING, category=UserWarning)
        loader = DataLoader(dataset, batch_size=None, shuffle=False, num_workers=num_workers,
                            persistent_workers=num_workers > 0, worker_init_fn=_one_thread if num_workers else None)
        return LoaderStep(_train_step(), loader, iter(loader))


def loader_step(state: LoaderStep) -> None:
    """Take the next batch from the loader and train on it."""
    inputs, target = next(state.batches)
    state.train.inputs, state.train.target = inputs, target
    run_train_step(state.train)


def close_loader_step(state: LoaderStep) -> None:
    """Stop the loader's worker processes."""
    shutdown = getattr(state.batches, "_shutdown_workers", None)
    if shutdown is not None:
        shutdown()
