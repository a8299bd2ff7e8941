"""Local worker processes: a worker that dies takes its pool with it; its tasks are tried again on a new pool."""

from __future__ import annotations

import os
from pathlib import Path

from torchscope.analyzers.jobs.rank_task import RankFailure
from torchscope.analyzers.jobs.schedulers import INLINE, PROCESSES, run_tasks


def _dies_on_first_try(item: tuple[str, int]) -> int:
    """Kill this worker process the first time item 1 runs (a marker file remembers); else item × 10."""
    marker_dir, i = item
    marker = Path(marker_dir) / f"tried-{i}"
    if i == 1 and not marker.exists():
        marker.write_text("x")
        os._exit(1)  # as a kill or the OOM killer would: no exception, no cleanup
    return i * 10


def _always_dies_on_one(item: tuple[str, int]) -> int:
    marker_dir, i = item
    if i == 1:
        (Path(marker_dir) / f"try-{os.getpid()}").write_text("x")
        os._exit(1)
    return i * 10


def _labels(n: int) -> list[tuple[str, int]]:
    return [(f"rank{i}.json", i) for i in range(n)]


def test_a_killed_worker_process_has_its_task_retried(tmp_path: Path) -> None:
    items = [(str(tmp_path), i) for i in range(4)]
    got = dict(run_tasks(PROCESSES, _dies_on_first_try, items, _labels(4)))
    assert got == {0: 0, 1: 10, 2: 20, 3: 30}
    assert (tmp_path / "tried-1").exists()  # it did die once
    assert dict(run_tasks(INLINE, lambda item: item[1] * 10, items, _labels(4))) == {0: 0, 1: 10, 2: 20, 3: 30}


def test_a_task_that_kills_every_worker_fails_alone(tmp_path: Path) -> None:
    items = [(str(tmp_path), i) for i in range(5)]
    got = dict(run_tasks(PROCESSES, _always_dies_on_one, items, _labels(5)))
    # The tasks that were in flight beside it are lost with the pool too, but run again and succeed.
    assert {i: got[i] for i in (0, 2, 3, 4)} == {0: 0, 2: 20, 3: 30, 4: 40}
    assert isinstance(got[1], RankFailure) and got[1].rank == 1
    assert "worker process analyzing it died" in got[1].reason and got[1].reason.startswith("rank1.json: ")
    assert len(list(tmp_path.glob("try-*"))) == 2  # once among the others, once alone
