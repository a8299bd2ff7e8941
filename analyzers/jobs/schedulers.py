"""Where the rank tasks run: in this process, in local worker processes, or on a Dask cluster.

Every scheduler has one job: ``run(task, items)`` yields ``(index, outcome)`` for each item as its
task finishes (in any order), where ``outcome`` is what ``task(item)`` returned, or a `RankFailure`
when the machinery lost the task for good. The task and the items are the same whichever runs them.

- ``"inline"``: one after another in this process.
- ``"processes"``: a `ProcessPoolExecutor` of ``min(ranks, usable CPUs)`` workers, at most
  ``IN_FLIGHT_PER_WORKER`` tasks per worker submitted at a time, so memory is bounded by the ranks in
  flight. A worker that dies (killed, out of memory) breaks the pool and loses every task on it: a new
  pool takes over the tasks not started, and each lost task runs again alone on a pool of one worker,
  so that only the task that kills its worker there too becomes a failure.
- ``"tcp://HOST:PORT"`` (any ``scheme://`` address): a ``dask.distributed`` cluster; its workers read
  the ranks' files from the paths in the tasks. The scheduler re-runs a task whose worker died (up to
  its ``distributed.scheduler.allowed-failures``); past that the rank is a failure.

`resolve_scheduler` picks one: the argument, else ``$TORCHSCOPE_SCHEDULER``, else processes when there
are several ranks worth the start-up (``PARALLEL_MIN_BYTES`` of files), else inline.
"""

from __future__ import annotations

import os
import uuid
from collections import deque
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from multiprocessing import get_all_start_methods, get_context
from typing import Any, Callable, Generator, Iterator, Sequence

from torchscope.analyzers.core.errors import TraceError
from torchscope.analyzers.core.registry import ANALYZER_MODULES
from torchscope.analyzers.jobs.rank_task import RankFailure

__all__ = ["resolve_scheduler", "run_tasks", "usable_cpus", "ENV_SCHEDULER", "INLINE", "PROCESSES", "PARALLEL_MIN_BYTES",
           "IN_FLIGHT_PER_WORKER", "DASK_CONNECT_TIMEOUT_S"]

#: Environment variable naming the scheduler when the caller does not.
ENV_SCHEDULER = "TORCHSCOPE_SCHEDULER"
INLINE = "inline"
PROCESSES = "processes"
#: Below this many bytes of rank files in all, starting worker processes costs more than it saves: the fork
#: server imports the analyzers once (~1.5 s) and a gzipped MiB of trace takes ~1-2 s of CPU to load and analyze.
PARALLEL_MIN_BYTES = 4 * 1024 * 1024
#: Tasks submitted per local worker at a time (one running, one queued so no worker waits).
IN_FLIGHT_PER_WORKER = 2
#: Seconds to wait for a Dask scheduler to answer.
DASK_CONNECT_TIMEOUT_S = 10


def resolve_scheduler(scheduler: str | None, *, ranks: int, total_bytes: int) -> str:
    """The scheduler to use: ``scheduler``, else $TORCHSCOPE_SCHEDULER, else processes or inline by job size."""
    chosen = scheduler if scheduler is not None else (os.environ.get(ENV_SCHEDULER) or None)
    if chosen is None:
        workers = min(ranks, usable_cpus())
        return PROCESSES if workers > 1 and total_bytes >= PARALLEL_MIN_BYTES else INLINE
    chosen = str(chosen).strip()
    if chosen in (INLINE, PROCESSES) or "://" in chosen:
        return chosen
    raise ValueError(f"scheduler must be 'inline', 'processes' or a Dask address such as tcp://HOST:8786, "
                     f"got {chosen!r}")


def usable_cpus() -> int:
    """CPUs this process may run on (its affinity mask: a container's or taskset's share), else the CPU count."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # not Linux
        return os.cpu_count() or 1


def run_tasks(scheduler: str, task: Callable[[Any], Any], items: Sequence[Any],
              labels: Sequence[tuple[str, int | None]]) -> Iterator[tuple[int, Any]]:
    """Run ``task`` on every item with ``scheduler``; yields (index, outcome) as tasks finish."""
    if scheduler == INLINE:
        for i, item in enumerate(items):
            yield i, task(item)
    elif scheduler == PROCESSES:
        yield from _run_local_processes(task, items, labels)
    else:
        yield from _run_dask(scheduler, task, items, labels)


def _run_local_processes(task: Callable[[Any], Any], items: Sequence[Any],
                         labels: Sequence[tuple[str, int | None]]) -> Iterator[tuple[int, Any]]:
    workers = max(1, min(len(items), usable_cpus()))
    pending = deque(range(len(items)))
    suspects: deque[int] = deque()
    while pending or suspects:
        if pending:
            suspects.extend((yield from _pool_round(task, items, pending, workers)))
            continue
        # A task in flight when a worker died may be the one that killed it, or its neighbour: alone
        # on a pool of its own, a death is its own.
        i = suspects.popleft()
        if (yield from _pool_round(task, items, deque([i]), 1)):
            label, rank = labels[i]
            yield i, RankFailure(label, rank, f"{label}: the worker process analyzing it died "
                                              "(killed, or out of memory)")


#: Modules a local worker needs, imported once by the fork server rather than by every worker.
_WORKER_MODULES = ["torchscope.analyzers.jobs.rank_task", *ANALYZER_MODULES]


def _worker_context():
    """How local workers start: forked from a fork server that has imported the analyzers, else spawned.

    Not a plain fork: a forked child of a threaded parent (dash, samplers, a Dask client) can deadlock;
    the fork server is a fresh single-threaded process. It lives as long as this process, so a second
    job here starts its workers at once.
    """
    if "forkserver" not in get_all_start_methods():
        return get_context("spawn")
    context = get_context("forkserver")
    context.set_forkserver_preload(_WORKER_MODULES)
    return context


def _pool_round(task: Callable[[Any], Any], items: Sequence[Any], pending: deque,
                workers: int) -> Generator[tuple[int, Any], None, list[int]]:
    """Run ``pending`` on one pool until done or the pool breaks; yields outcomes, returns the tasks it lost."""
    pool = ProcessPoolExecutor(max_workers=workers, mp_context=_worker_context())
    running: dict = {}
    lost: list[int] = []
    try:
        while pending or running:
            while pending and not lost and len(running) < workers * IN_FLIGHT_PER_WORKER:
                i = pending.popleft()
                running[pool.submit(task, items[i])] = i
            if not running:
                break
            done, _ = wait(running, return_when=FIRST_COMPLETED)
            for fut in done:
                i = running.pop(fut)
                try:
                    outcome = fut.result()
                except BrokenProcessPool:  # a worker died, and with it the pool and every task on it
                    lost.append(i)
                    continue
                yield i, outcome
    finally:
        pool.shutdown(wait=not lost, cancel_futures=True)
    return lost


def _run_dask(address: str, task: Callable[[Any], Any], items: Sequence[Any],
              labels: Sequence[tuple[str, int | None]]) -> Iterator[tuple[int, Any]]:
    try:
        from distributed import Client, as_completed
    except ImportError:
        raise TraceError(address, "a Dask scheduler needs dask.distributed (pip install 'torchscope[dask]')") from None
    try:
        client = Client(address, timeout=DASK_CONNECT_TIMEOUT_S, set_as_default=False)
    except (OSError, TimeoutError, ValueError) as exc:
        raise TraceError(address, f"cannot reach the Dask scheduler ({type(exc).__name__}: {exc})") from None
    tag = uuid.uuid4().hex[:8]
    try:
        futures = {client.submit(task, item, key=f"torchscope-rank-task-{tag}-{i}", pure=False): i
                   for i, item in enumerate(items)}
        for fut in as_completed(list(futures), loop=client.loop):
            i = futures.pop(fut)
            try:
                outcome = fut.result()
            except Exception as exc:  # the cluster gave up on the task (e.g. KilledWorker)
                label, rank = labels[i]
                outcome = RankFailure(label, rank, f"{label}: the Dask cluster lost the task "
                                                   f"({type(exc).__name__}: {exc})")
            fut.release()
            yield i, outcome
    finally:
        client.close()
