"""Jobs of many ranks: one task per rank returning a small summary, job-level analyses on the summaries."""

from torchscope.analyzers.jobs.job import JobReport, PartialJobError, analyze_job
from torchscope.analyzers.jobs.rank_task import RankFailure, RankSummary

__all__ = ["JobReport", "PartialJobError", "RankFailure", "RankSummary", "analyze_job"]
