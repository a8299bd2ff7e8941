"""A report: every analyzer's result on one trace or trace set, with what was skipped and why."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping

from torchscope.analyzers.core.findings import SEVERITIES, Finding
from torchscope.analyzers.core.result import Result

__all__ = ["Report"]


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

