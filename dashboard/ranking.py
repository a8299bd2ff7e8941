"""Which finding a person should read first: the step model's, then the largest predicted gain.

The ``bottleneck`` analyzer's findings come first: their gains are replayed on the step model,
while older threshold findings assume theirs. Within each group findings are ordered by
``gain_fraction`` (share of step time a fix saves), then severity; the analyzers' order breaks ties.
"""

from __future__ import annotations

from typing import Iterable

from torchscope.analyzers.core.findings import Finding

__all__ = ["ranked_findings", "one_per_finding", "SEVERITY_ORDER", "REPLAYED_ANALYZER"]

#: The analyzer whose findings' gains come from a replay of the step model (read first).
REPLAYED_ANALYZER = "bottleneck"

#: Severity rank for ordering (lower first).
SEVERITY_ORDER = {"critical": 0, "warning": 1, "info": 2}


def ranked_findings(findings: Iterable[Finding]) -> list[Finding]:
    """Findings: the step model's first, then by predicted gain (largest first), then severity, then as given."""
    items = list(findings)
    return [f for _, f in sorted(enumerate(items), key=lambda p: (
        p[1].analyzer != REPLAYED_ANALYZER, -(p[1].gain_fraction or 0.0), SEVERITY_ORDER.get(p[1].severity, 3), p[0]))]


def one_per_finding(findings: Iterable[Finding]) -> list[tuple[Finding, tuple[int, ...]]]:
    """Ranked findings of several ranks with each finding once: the rank with the largest gain stands for every
    rank that has the same finding (same id), and the ranks it stands for follow it, in ranked order.

    A rank's second finding of one id (two slow kernels, say) stays a finding of its own, and a finding of no
    rank (job-level) stands for itself."""
    groups: list[tuple[Finding, list[int]]] = []
    open_by_id: dict[str, list[int]] = {}  # id -> indices of the groups of that id
    for f in ranked_findings(findings):
        if f.rank is None:
            groups.append((f, []))
            continue
        home = next((i for i in open_by_id.get(f.id, ()) if f.rank not in groups[i][1]), None)
        if home is None:
            open_by_id.setdefault(f.id, []).append(len(groups))
            groups.append((f, [f.rank]))
        else:
            groups[home][1].append(f.rank)
    return [(f, tuple(ranks)) for f, ranks in groups]
