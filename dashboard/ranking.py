"""Which finding a person should read first: the largest predicted gain, then the most severe.

The analyzers predict each finding's ``gain_fraction`` (share of step time a fix saves); the
dashboard only orders them by it. Findings without a predicted gain follow, most severe first.
"""

from __future__ import annotations

from typing import Iterable

from torchscope.analyzers.core.findings import Finding

__all__ = ["ranked_findings", "SEVERITY_ORDER"]

#: Severity rank for ordering (lower first).
SEVERITY_ORDER = {"critical": 0, "warning": 1, "info": 2}


def ranked_findings(findings: Iterable[Finding]) -> list[Finding]:
    """Findings ordered by predicted gain (largest first), then severity, keeping the analyzers' order on ties."""
    items = list(findings)
    return [f for _, f in sorted(enumerate(items), key=lambda p: (
        -(p[1].gain_fraction or 0.0), SEVERITY_ORDER.get(p[1].severity, 3), p[0]))]
