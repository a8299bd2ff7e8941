"""A result: what every analyzer returns.

An analyzer is a pure function ``analyze(trace, **needs) -> Result``. A ``Result`` holds named
pandas tables (units in column names), a few headline numbers (``summary``, keys documented by the
analyzer's ``SUMMARY_KEYS``), and the ``Finding``s raised from measured evidence.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping

import pandas as pd

from torchscope.analyzers.core.findings import Finding
from torchscope.analyzers.report.html import result_html

__all__ = ["Result", "NotApplicable"]


@dataclass(frozen=True)
class Result:
    """An analyzer's output: named tables, headline numbers and findings."""

    analyzer: str
    tables: Mapping[str, pd.DataFrame] = field(default_factory=dict)
    summary: Mapping[str, object] = field(default_factory=dict)
    findings: tuple[Finding, ...] = ()
    rank: int | None = None

    def _repr_html_(self) -> str:
        """The result as HTML, for Jupyter: summary, findings, tables folded."""
        return result_html(self)

    def table(self, name: str) -> pd.DataFrame:
        """The table called ``name`` (KeyError naming the available ones otherwise)."""
        try:
            return self.tables[name]
        except KeyError:
            raise KeyError(f"{self.analyzer} has no table {name!r}; it has {sorted(self.tables)}") from None


class NotApplicable(Exception):
    """Raised by an analyzer when the trace lacks what it needs; the message says what."""

