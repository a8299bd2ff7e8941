"""A finding: one bottleneck, the measured evidence, the change to make and the gain to expect.

Ids follow one scheme, ``<analyzer>.<rule>`` (``training_loop.data_loader_bound``), each a named
constant of the analyzer module beside its rule; the rank lives in ``Finding.rank``, never in the id.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal, Mapping, get_args

from torchscope.analyzers.report.html import finding_html
from torchscope.analyzers.report.json import to_jsonable

__all__ = ["Finding", "Severity", "Page", "SEVERITIES", "PAGES", "FINDING_ID_RE"]

Severity = Literal["info", "warning", "critical"]
#: Dashboard pages a finding can point to (where its evidence is shown).
Page = Literal["overview", "timeline", "kernels", "communication", "memory", "power", "roofline", "moe"]
SEVERITIES: tuple[str, ...] = get_args(Severity)
PAGES: tuple[str, ...] = get_args(Page)
#: ``<analyzer>.<rule>``, both snake_case.
FINDING_ID_RE = re.compile(r"^[a-z][a-z0-9_]*\.[a-z][a-z0-9_]*$")


@dataclass(frozen=True)
class Finding:
    """One bottleneck with its measured evidence, a concrete change and the gain to expect."""

    id: str
    analyzer: str
    severity: Severity
    title: str
    evidence: Mapping[str, object]
    recommendation: str
    estimated_gain: str
    #: Estimated share (0..1) of step time — or of energy for energy findings — the change saves;
    #: used to rank findings. 0 when no estimate is possible.
    gain_fraction: float = 0.0
    rank: int | None = None
    #: Dashboard page that shows the evidence ("overview", "kernels", "timeline", ...).
    page: Page = "overview"

    def __post_init__(self) -> None:
        if not FINDING_ID_RE.match(self.id) or self.id.split(".", 1)[0] != self.analyzer:
            raise ValueError(f"finding id must read '{self.analyzer}.<rule>' (snake_case), got {self.id!r}")
        if self.severity not in SEVERITIES:
            raise ValueError(f"severity must be one of {SEVERITIES}, got {self.severity!r}")
        if self.page not in PAGES:
            raise ValueError(f"page must be one of {PAGES}, got {self.page!r}")
        if not 0.0 <= self.gain_fraction <= 1.0:
            raise ValueError(f"gain_fraction must be within [0, 1], got {self.gain_fraction!r}")

    def _repr_html_(self) -> str:
        """The finding as HTML, for Jupyter."""
        return finding_html(self)

    def to_dict(self) -> dict:
        """Plain-JSON form of the finding."""
        return {
            "id": self.id,
            "analyzer": self.analyzer,
            "severity": self.severity,
            "title": self.title,
            "evidence": {str(k): to_jsonable(v) for k, v in self.evidence.items()},
            "recommendation": self.recommendation,
            "estimated_gain": self.estimated_gain,
            "gain_fraction": self.gain_fraction,
            "rank": self.rank,
            "page": self.page,
        }
