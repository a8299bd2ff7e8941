"""Which finding a person should read first: the step model's, then the largest predicted gain.

The ``bottleneck`` analyzer's findings come first: their gains are replayed on the step model,
while older threshold findings assume theirs. Within each group findings are ordered by
``gain_fraction`` (share of step time a fix saves), then severity; the analyzers' order breaks ties.
"""

from __future__ import annotations

from typing import Iterable

from torchscope.analyzers.core.findings import Finding

__all__ = ["ranked_findings", "SEVERITY_ORDER", "REPLAYED_ANALYZER"]

#: The analyzer whose findings' gains come from a replay of the step model (read first).
REPLAYED_ANALYZER = "bottleneck"

#: Severity rank for ordering (lower first).
SEVERITY_ORDER = {"critical": 0, "warning": 1, "info": 2}


def ranked_findings(findings: Iterable[Finding]) -> list[Finding]:
    """Findings: the step model's first, then by predicted gain (largest first), then severity, then as given."""
    items = list(findings)
    return [f for _, f in sorted(enumerate(items), key=lambda p: (
        p[1].analyzer != REPLAYED_ANALYZER, -(p[1].gain_fraction or 0.0), SEVERITY_ORDER.get(p[1].severity, 3), p[0]))]
