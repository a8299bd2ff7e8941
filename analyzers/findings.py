"""Findings and results: what every analyzer returns.

An analyzer is a pure function ``analyze(trace, **options) -> Result``. A ``Result`` holds named
pandas tables (units in column names), a few headline numbers, and the ``Finding``s raised from
measured evidence. A finding names the bottleneck, the numbers that triggered it, the change to
make, and an estimated gain together with how it was estimated.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping

import pandas as pd

__all__ = ["Finding", "Result", "NotApplicable", "SEVERITIES"]

SEVERITIES = ("info", "warning", "critical")


@dataclass(frozen=True)
class Finding:
    """One bottleneck with its measured evidence, a concrete change and the gain to expect."""

    id: str
    analyzer: str
    severity: str
    title: str
    evidence: Mapping[str, object]
    recommendation: str
    estimated_gain: str
    #: Estimated share (0..1) of step time — or of energy for energy findings — the change saves;
    #: used to rank findings. 0 when no estimate is possible.
    gain_fraction: float = 0.0
    rank: int | None = None
    #: Dashboard page that shows the evidence ("overview", "kernels", "timeline", ...).
    page: str = "overview"

    def __post_init__(self) -> None:
        if self.severity not in SEVERITIES:
            raise ValueError(f"severity must be one of {SEVERITIES}, got {self.severity!r}")
        if not 0.0 <= self.gain_fraction <= 1.0:
            raise ValueError(f"gain_fraction must be within [0, 1], got {self.gain_fraction!r}")

    def to_dict(self) -> dict:
        """Plain-JSON form of the finding."""
        return {
            "id": self.id,
            "analyzer": self.analyzer,
            "severity": self.severity,
            "title": self.title,
            "evidence": {k: _plain(v) for k, v in self.evidence.items()},
            "recommendation": self.recommendation,
            "estimated_gain": self.estimated_gain,
            "gain_fraction": self.gain_fraction,
            "rank": self.rank,
            "page": self.page,
        }


@dataclass(frozen=True)
class Result:
    """An analyzer's output: named tables, headline numbers and findings."""

    analyzer: str
    tables: Mapping[str, pd.DataFrame] = field(default_factory=dict)
    summary: Mapping[str, object] = field(default_factory=dict)
    findings: tuple[Finding, ...] = ()
    rank: int | None = None

    def table(self, name: str) -> pd.DataFrame:
        """The table called ``name`` (KeyError naming the available ones otherwise)."""
        try:
            return self.tables[name]
        except KeyError:
            raise KeyError(f"{self.analyzer} has no table {name!r}; it has {sorted(self.tables)}") from None


class NotApplicable(Exception):
    """Raised by an analyzer when the trace lacks what it needs; the message says what."""


def _plain(value: object) -> object:
    """A JSON-friendly version of a scalar (numpy numbers become Python numbers)."""
    if hasattr(value, "item") and callable(value.item):
        try:
            return value.item()
        except (ValueError, TypeError):
            pass
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    return value
