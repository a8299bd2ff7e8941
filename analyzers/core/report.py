"""A report: every analyzer's result on one trace or trace set, with what was skipped and why."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping

import pandas as pd

from torchscope.analyzers.core.findings import SEVERITIES, Finding
from torchscope.analyzers.core.result import Result
from torchscope.analyzers.report.html import report_html

#: Columns of ``Report.findings_frame()``, in order.
FINDING_COLUMNS = ("id", "analyzer", "rank", "severity", "title", "gain_fraction", "estimated_gain",
                   "recommendation", "page")

__all__ = ["Report", "FINDING_COLUMNS"]


@dataclass(frozen=True)
class Report:
    """Results of all analyzers on one trace or trace set, with skipped analyzers and reasons."""

    source: str
    results: tuple[Result, ...]
    skipped: Mapping[str, str] = field(default_factory=dict)
    errors: Mapping[str, str] = field(default_factory=dict)

    def result(self, name: str, rank: int | None = None) -> Result | None:
        """The result of analyzer ``name`` (for ``rank``, or the first one when rank is None)."""
        for res in self.results:
            if res.analyzer == name and (rank is None or res.rank == rank):
                return res
        return None

    @property
    def findings(self) -> list[Finding]:
        """All findings, largest estimated gain first, then by severity."""
        order = {s: i for i, s in enumerate(reversed(SEVERITIES))}
        found = [f for r in self.results for f in r.findings]
        return sorted(found, key=lambda f: (-f.gain_fraction, order[f.severity], f.analyzer, f.id))

    def findings_frame(self) -> pd.DataFrame:
        """The findings as a DataFrame (``FINDING_COLUMNS``), largest estimated gain first."""
        rows = [{c: getattr(f, c) for c in FINDING_COLUMNS} for f in self.findings]
        return pd.DataFrame(rows, columns=list(FINDING_COLUMNS))

    def table(self, analyzer: str, name: str, rank: int | None = None) -> pd.DataFrame:
        """Table ``name`` of ``analyzer``: one rank's, or every rank's stacked with a leading ``rank`` column."""
        found = [r for r in self.results if r.analyzer == analyzer and (rank is None or r.rank == rank)]
        if not found:
            have = sorted({(r.analyzer, r.rank) for r in self.results}, key=lambda ar: (ar[0], ar[1] is None, ar[1]))
            raise KeyError(f"no result of {analyzer!r}" + (f" for rank {rank}" if rank is not None else "")
                           + f"; results are {[f'{a} rank {r}' for a, r in have]}")
        if rank is not None or len(found) == 1:
            return found[0].table(name)
        frames = [r.table(name).assign(rank=r.rank) for r in found]
        stacked = pd.concat(frames, ignore_index=True)
        return stacked[["rank", *[c for c in stacked.columns if c != "rank"]]]

    def _repr_html_(self) -> str:
        """The report as HTML, for Jupyter: findings ranked by gain, skipped and failed analyzers."""
        return report_html(self)

