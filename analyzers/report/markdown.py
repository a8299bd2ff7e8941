"""The report as GitHub-flavoured markdown (a PR comment or a wiki page): findings first, then summaries.

Values read as in the text report (``report.text``): labelled, in units, names folded, timestamps
relative to the trace start, empty values left out. At the top, as there: how the run ended when not
normally ("incomplete: <reason>", in bold) and the loader's warnings, the source, and what was traced.
"""

from __future__ import annotations

from torchscope.analyzers.core.report import Report
from torchscope.analyzers.core.trace import TraceSet
from torchscope.analyzers.report.text import (
    SHOWN_FINDINGS, evidence_text, header_lines, origin_ns, rank_tag, status_lines, summary_items,
)

__all__ = ["render_markdown"]


def render_markdown(traces: TraceSet, report: Report) -> str:
    """The report as GitHub-flavoured markdown."""
    out = ["# torchscope analysis", ""]
    out.extend(f"- **{_md(line)}**" for line in status_lines(traces))
    out.extend(f"- {_md(line)}" for line in header_lines(traces, report))
    out += ["", "## Findings", ""]
    findings = report.findings
    if not findings:
        out.append("No rule's threshold was reached.")
    else:
        out.append("| # | severity | finding | rank | estimated gain |")
        out.append("|---|---|---|---|---|")
        for i, f in enumerate(findings[:SHOWN_FINDINGS], 1):
            out.append(f"| {i} | {f.severity} | {_md(f.title)} | {_md(rank_tag(f.rank))} | {_md(f.estimated_gain)} |")
        for i, f in enumerate(findings[:SHOWN_FINDINGS], 1):
            out += ["", f"### {i}. {_md(f.title)}", "",
                    f"- **evidence**: {_md(evidence_text(f, origin=origin_ns(traces, f.rank)))}",
                    f"- **change**: {_md(f.recommendation)}",
                    f"- **estimated gain**: {_md(f.estimated_gain)}"]
    out += ["", "## Summary", ""]
    for res in report.results:
        items = summary_items(res, origin=origin_ns(traces, res.rank))
        if not items:
            continue
        out += [f"### {res.analyzer} ({rank_tag(res.rank)})", "", "| metric | value |", "|---|---|"]
        out.extend(f"| {_md(k)} | {_md(v)} |" for k, v in items)
        out.append("")
    if report.skipped:
        out += ["## Skipped", ""]
        out.extend(f"- **{name}**: {_md(why)}" for name, why in sorted(report.skipped.items()))
        out.append("")
    if report.errors:
        out += ["## Errors", ""]
        out.extend(f"- **{name}**: {_md(why)}" for name, why in sorted(report.errors.items()))
        out.append("")
    return "\n".join(out).rstrip() + "\n"


def _md(text: object) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")
