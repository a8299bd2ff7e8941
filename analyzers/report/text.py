"""The report for a terminal: a summary per analyzer and rank, then the findings ranked by gain.

Also holds the pieces the markdown report shares (header lines, rank tag, evidence line, summary
items); every number goes through ``units``.
"""

from __future__ import annotations

import pandas as pd

from torchscope.analyzers.core.findings import Finding
from torchscope.analyzers.core.report import Report
from torchscope.analyzers.core.result import Result
from torchscope.analyzers.core.trace import TraceSet
from torchscope.analyzers.report.units import format_duration_ns, format_for_key, format_pct, key_label

__all__ = ["render_text", "header_lines", "rank_tag", "evidence_text", "summary_items",
           "TEXT_TOP_KERNELS", "SHOWN_FINDINGS", "LINE_WIDTH"]

#: Kernels listed per rank in the text report.
TEXT_TOP_KERNELS = 5
#: Findings shown in the text/markdown report (JSON has them all).
SHOWN_FINDINGS = 20
#: Summary lines wrap before this many columns.
LINE_WIDTH = 110
#: Kernel names longer than this are cut (with "...") in the top-kernels lines.
KERNEL_NAME_WIDTH = 70


def summary_items(result: Result) -> list[tuple[str, str]]:
    """(label, value text) of every scalar or list summary value, in the summary's order."""
    return [(key_label(k), format_for_key(k, v)) for k, v in result.summary.items()
            if not isinstance(v, (dict, pd.DataFrame))]


def rank_tag(rank: int | None) -> str:
    """ "rank 3", or "all ranks" for a job-level result."""
    return f"rank {rank}" if rank is not None else "all ranks"


def header_lines(traces: TraceSet, report: Report) -> list[str]:
    """Source, ranks, world size and device of the analyzed traces."""
    first = next(iter(traces))
    device = first.meta.device_name or "no device recorded"
    ranks = sorted(traces.ranks)
    return [f"source: {report.source or traces.path}",
            f"ranks: {', '.join(map(str, ranks))} (world size {traces.world_size})   device: {device}"]


def evidence_text(f: Finding) -> str:
    """A finding's evidence as ``key=value`` pairs, each value in its key's unit."""
    return ", ".join(f"{k}={format_for_key(k, v)}" for k, v in f.evidence.items())


def render_text(traces: TraceSet, report: Report) -> str:
    """The report for a terminal."""
    out = ["torchscope analysis", *("  " + line for line in header_lines(traces, report)), ""]
    out.append("Summary")
    for res in report.results:
        items = summary_items(res)
        if not items:
            continue
        out.append(f"  {res.analyzer} ({rank_tag(res.rank)})")
        line = "    "
        for label, value in items:
            piece = f"{label}: {value}   "
            if len(line) + len(piece) > LINE_WIDTH and line.strip():
                out.append(line.rstrip())
                line = "    "
            line += piece
        if line.strip():
            out.append(line.rstrip())
        if "top_kernels" in res.tables:
            out.extend(_top_kernel_lines(res.tables["top_kernels"]))
    out.append("")
    findings = report.findings
    out.append(f"Findings ({len(findings)}, largest estimated gain first)")
    if not findings:
        out.append("  none: no rule's threshold was reached")
    for i, f in enumerate(findings[:SHOWN_FINDINGS], 1):
        out.append(f"  {i}. [{f.severity}] {f.title}  ({f.analyzer}, {rank_tag(f.rank)})")
        out.append(f"     evidence: {evidence_text(f)}")
        out.append(f"     change:   {f.recommendation}")
        out.append(f"     gain:     {f.estimated_gain}")
    if len(findings) > SHOWN_FINDINGS:
        out.append(f"  ... {len(findings) - SHOWN_FINDINGS} more (see --format json)")
    if report.skipped:
        out.append("")
        out.append("Skipped")
        out.extend(f"  {name}: {why}" for name, why in sorted(report.skipped.items()))
    if report.errors:
        out.append("")
        out.append("Errors (analyzer bugs; the other results stand)")
        out.extend(f"  {name}: {why}" for name, why in sorted(report.errors.items()))
    return "\n".join(out) + "\n"


def _top_kernel_lines(top: pd.DataFrame, n: int = TEXT_TOP_KERNELS) -> list[str]:
    lines = ["    top kernels (share of GPU work, count, mean):"]
    for row in top.head(n).itertuples(index=False):
        name = row.name if len(row.name) <= KERNEL_NAME_WIDTH else row.name[:KERNEL_NAME_WIDTH - 3] + "..."
        share, mean = format_pct(row.share_pct), format_duration_ns(row.mean_ns)
        lines.append(f"      {share:>6s}  {row.count:6d} × {mean:>9s}  {name}")
    return lines
