"""`analyze_job(path)`: a job of many ranks analyzed as one task per rank, then job-level analyses on the summaries.

    report = analyze_job("runs/big_job")                         # local worker processes (or inline if small)
    report = analyze_job("runs/big_job", scheduler="tcp://head:8786")   # the same tasks on a Dask cluster
    report.ranks[3].results, report.job["stragglers"], report.failed, report.report

Each rank's task (`rank_task.analyze_rank`) loads that rank, runs the per-rank analyzers and returns a
small `RankSummary`; the job-level analyzers (``scope="set"``: stragglers with cross-rank collective
matching, the job overview) then run on what each summary kept, never on full traces. So memory is
bounded by the ranks in flight, not by the rank count. The scheduler (`schedulers`) decides only where
the tasks run; the tasks, and so the results, are the same inline, in processes and on Dask.

A job opened again reads its ranks' summaries from the summary cache (`summary_cache`): with local
schedulers this process reads what the cache holds and only the other ranks become tasks (a job all
in the cache starts no worker), and the job-level pass over summaries all in the cache is cached too.

A rank that cannot be loaded (a corrupt file, a file the manifest lists but the folder lacks) does not
lose the others: it is named in ``JobReport.failed`` with its reason and the rest are analyzed; with
``partial_ok=False`` the caller (the CLI) treats that as bad input.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field, replace
from functools import partial
from itertools import chain
from pathlib import Path
from typing import Mapping

from torchscope.analyzers.core.errors import TraceError
from torchscope.analyzers.core.registry import AnalyzerSpec, JobLevelRun, combine, run_job_level, select
from torchscope.analyzers.core.report import Report
from torchscope.analyzers.core.result import Result
from torchscope.analyzers.core.trace import TraceSet
from torchscope.analyzers.io.cache import cache_disabled_by_env, default_cache_dir
from torchscope.analyzers.io.loader import job_sources, progress_bar
from torchscope.analyzers.jobs.rank_task import analyze_rank, cached_summary
from torchscope.analyzers.jobs.schedulers import INLINE, PROCESSES, resolve_scheduler, run_tasks
from torchscope.analyzers.jobs.summary import RankFailure, RankSummary, TaskSettings
from torchscope.analyzers.jobs.summary_cache import open_summary_cache

__all__ = ["JobReport", "PartialJobError", "analyze_job", "PROGRESS_DESCRIPTION"]

#: Label of the progress bar across ranks.
PROGRESS_DESCRIPTION = "ranks analyzed"


@dataclass(frozen=True)
class JobReport:
    """A job analyzed rank by rank: per-rank summaries, job-level results, failed ranks, one Report of all."""

    path: str
    #: Rank -> its task's summary (results with tables cut short, findings, job-level parts).
    ranks: Mapping[int, RankSummary]
    #: Job-level analyzer name -> its result (stragglers, job_overview, ...).
    job: Mapping[str, Result]
    #: Rank (or file name, when the rank is not known without the file) -> why it failed, one line.
    failed: Mapping[int | str, str]
    #: Every result (per rank, then job level) with skipped analyzers and errors, as `run_all` gives.
    report: Report
    #: Where the tasks ran: "inline", "processes" or the Dask scheduler's address.
    scheduler: str = ""
    #: Rank -> run-status and loader warnings of that rank (``Trace.meta.warnings``).
    warnings: Mapping[int, tuple[str, ...]] = field(default_factory=dict)

    @property
    def world_size(self) -> int:
        """World size the ranks state, or the number of ranks (analyzed and failed)."""
        stated = [s.meta.world_size for s in self.ranks.values()]
        return max(stated + [len(self.ranks) + len(self.failed)])

    def header_traces(self) -> TraceSet:
        """The ranks' skeletons (`rank_task.skeleton_of`) as a TraceSet, for the report renderers' headers."""
        return TraceSet(ranks={rank: s.skeleton for rank, s in self.ranks.items()}, path=self.path)


class PartialJobError(TraceError):
    """Some ranks failed and ``partial_ok`` was False; ``.job`` is the report of the ranks that did not."""

    def __init__(self, job: "JobReport") -> None:
        self.job = job
        names = ", ".join(_rank_name(key) for key in job.failed)
        super().__init__(job.path, f"{len(job.failed)} of {len(job.failed) + len(job.ranks)} ranks failed "
                                   f"({names}); the rest were analyzed")


def _rank_name(key: int | str) -> str:
    """ "rank 3", or the file name of a rank whose number is not known."""
    return f"rank {key}" if isinstance(key, int) else str(key)


def analyze_job(path: str | os.PathLike, *, scheduler: str | None = None, partial_ok: bool = False,
                progress: bool | None = None, only: tuple[str, ...] | None = None,
                options: Mapping[str, Mapping] | None = None, cache: bool | None = None) -> JobReport:
    """Analyze every rank of ``path`` as its own task, then the job-level analyses on their summaries.

    ``scheduler``: "inline", "processes", a Dask address ("tcp://HOST:PORT"), or None ($TORCHSCOPE_SCHEDULER,
    else by job size). ``partial_ok=False``: a failed rank raises `PartialJobError` (a TraceError whose
    ``.job`` is the report of the others); True: failed ranks are only listed in ``failed``. ``progress``: one bar across ranks on stderr (None: when
    stderr is a terminal). ``only``/``options`` as for `run_all`; ``cache`` as for `load`, for the trace cache
    and the summary cache.
    """
    job = job_sources(Path(path).absolute())  # absolute: a worker's working folder may be another
    sources = list(job.sources)
    settings = TaskSettings(only=tuple(only) if only is not None else None, options=dict(options or {}),
                            cache=cache)
    chosen = resolve_scheduler(scheduler, ranks=len(sources), total_bytes=sum(s.size_bytes for s in sources))
    hits: list[RankSummary] = []
    if chosen in (INLINE, PROCESSES):
        # Local workers share this process's summary cache (named for them: their environment may be older):
        # what it holds is read here, and only the other ranks become tasks (no worker starts for a job opened
        # again). A Dask worker keeps its own.
        cache_on = settings.cache if settings.cache is not None else not cache_disabled_by_env()
        settings = replace(settings, cache=cache_on, cache_dir=str(default_cache_dir()))
        found = [(source, cached_summary(source, settings)) for source in sources]
        hits = [summary for _, summary in found if summary is not None]
        sources = [source for source, summary in found if summary is None]
        if hits and scheduler is None:
            chosen = resolve_scheduler(None, ranks=len(sources), total_bytes=sum(s.size_bytes for s in sources))
    specs, hidden = select(settings.only)
    summaries: dict[int, RankSummary] = {}
    failed: dict[int | str, str] = dict(job.missing)
    labels = [(s.label, s.rank) for s in sources]
    bar = progress_bar(len(sources) + len(hits), sys.stderr.isatty() if progress is None else progress,
                       PROGRESS_DESCRIPTION)
    outcomes = chain(((None, hit) for hit in hits), run_tasks(chosen, partial(analyze_rank, settings=settings),
                                                              sources, labels))
    try:
        for _, outcome in outcomes:
            if isinstance(outcome, RankFailure):
                failed[outcome.rank if outcome.rank is not None else outcome.label] = outcome.reason
            else:
                if outcome.rank in summaries:
                    raise TraceError(job.folder, f"two traces claim rank {outcome.rank}: "
                                                 f"{summaries[outcome.rank].label} and {outcome.label}")
                summaries[outcome.rank] = outcome
            bar.update(1)
            if failed:
                bar.set_postfix_str(f"{len(failed)} failed")
    finally:
        bar.close()
    if not summaries:
        first = next(iter(failed.values()), "no ranks")
        raise TraceError(job.path, f"no rank could be analyzed ({first})")
    summaries = {rank: summaries[rank] for rank in sorted(summaries)}
    level = _job_level(specs, summaries, settings, job.path)
    report = combine(specs, hidden, [s.run for s in summaries.values()], level, source=str(path))
    result = JobReport(path=str(path), ranks=summaries, job=dict(level.results),
                       failed=dict(sorted(failed.items(), key=lambda kv: (isinstance(kv[0], str), kv[0]))),
                       report=report, scheduler=chosen,
                       warnings={rank: tuple(s.meta.warnings) for rank, s in summaries.items() if s.meta.warnings})
    if result.failed and not partial_ok:
        raise PartialJobError(result)
    return result



def _job_level(specs: Mapping[str, AnalyzerSpec], summaries: Mapping[int, RankSummary], settings: TaskSettings,
               path: Path) -> JobLevelRun:
    """The job-level pass over the ranks' parts, from the summary cache when every summary is in it."""
    store = open_summary_cache(settings.cache, settings.cache_dir)
    key = store.job_level_key(summaries)
    level = store.get_job_level(key, path) if key is not None else None
    if level is None:
        level = run_job_level(specs, {rank: s.run.parts for rank, s in summaries.items()}, options=settings.options)
        if key is not None:
            store.put_job_level(key, level)
    return level
