"""`torchscope analyze PATH`: run every analyzer, print a summary and the findings ranked by gain.

Formats: ``text`` (terminal), ``markdown`` (a PR comment or a wiki page) and ``json`` (machine
readable, with ``schema_version``). Times are converted from ns only here, at the display edge.
"""

from __future__ import annotations

import math

import numpy as np
import orjson
import pandas as pd

from torchscope.analyzers.core.findings import Finding
from torchscope.analyzers.core.result import Result
from torchscope.analyzers.core.report import Report
from torchscope.analyzers.core.trace import TraceSet
from torchscope.analyzers.report.units import format_quantity

__all__ = ["render_text", "render_markdown", "render_json", "report_dict",
           "SCHEMA_VERSION", "JSON_TABLE_ROWS"]

#: Version of the JSON report layout; bump on incompatible changes.
SCHEMA_VERSION = 1
#: Rows kept per table in the JSON report (``rows_total`` says how many there were).
JSON_TABLE_ROWS = 200
#: Kernels listed per rank in the text report.
TEXT_TOP_KERNELS = 5
#: Findings shown in the text/markdown report (JSON has them all).
SHOWN_FINDINGS = 20


# --------------------------------------------------------------------------- formatting
def _fmt_value(key: str, value: object) -> str:
    """Human form of one summary value: *_ns as ms/µs/s, *_pct as %, floats rounded."""
    if value is None:
        return "n/a"
    if isinstance(value, (float, np.floating)) and math.isnan(float(value)):
        return "n/a"
    if key.endswith("_ns") and isinstance(value, (int, float, np.integer, np.floating)):
        return _fmt_ns(float(value))
    if key.endswith("_pct") and isinstance(value, (int, float, np.integer, np.floating)):
        return f"{float(value):.1f}%"
    if isinstance(value, (float, np.floating)):
        text = f"{float(value):.3g}"
        return text if any(c in text for c in ".en") else text + ".0"  # 7.0 stays a float on screen
    if isinstance(value, (list, tuple)):
        shown = ", ".join(str(v) for v in list(value)[:8])
        return f"[{shown}{', ...' if len(value) > 8 else ''}]"
    return str(value)


def _fmt_ns(ns: float) -> str:
    return format_quantity(ns, "ns")


def _label(key: str) -> str:
    for suffix in ("_ns", "_pct"):
        if key.endswith(suffix):
            key = key[: -len(suffix)]
    return key.replace("_", " ")


def _summary_items(result: Result) -> list[tuple[str, str]]:
    return [(_label(k), _fmt_value(k, v)) for k, v in result.summary.items()
            if not isinstance(v, (dict, pd.DataFrame))]


def _rank_tag(rank: int | None) -> str:
    return f"rank {rank}" if rank is not None else "all ranks"


def _header(traces: TraceSet, report: Report) -> list[str]:
    first = next(iter(traces))
    device = first.meta.device_name or "no device recorded"
    ranks = sorted(traces.ranks)
    return [f"source: {report.source or traces.path}",
            f"ranks: {', '.join(map(str, ranks))} (world size {traces.world_size})   device: {device}"]


# --------------------------------------------------------------------------- text
def render_text(traces: TraceSet, report: Report) -> str:
    """The report for a terminal."""
    out = ["torchscope analysis", *("  " + line for line in _header(traces, report)), ""]
    out.append("Summary")
    for res in report.results:
        items = _summary_items(res)
        if not items:
            continue
        out.append(f"  {res.analyzer} ({_rank_tag(res.rank)})")
        line = "    "
        for label, value in items:
            piece = f"{label}: {value}   "
            if len(line) + len(piece) > 110 and line.strip():
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
        out.append(f"  {i}. [{f.severity}] {f.title}  ({f.analyzer}, {_rank_tag(f.rank)})")
        out.append(f"     evidence: {_evidence(f)}")
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
        name = row.name if len(row.name) <= 70 else row.name[:67] + "..."
        lines.append(f"      {row.share_pct:5.1f}%  {row.count:6d} × {_fmt_ns(row.mean_ns):>9s}  {name}")
    return lines


def _evidence(f: Finding) -> str:
    return ", ".join(f"{k}={_fmt_value(k, v)}" for k, v in f.evidence.items())


# --------------------------------------------------------------------------- markdown
def render_markdown(traces: TraceSet, report: Report) -> str:
    """The report as GitHub-flavoured markdown."""
    out = ["# torchscope analysis", ""]
    out.extend(f"- {line}" for line in _header(traces, report))
    out += ["", "## Findings", ""]
    findings = report.findings
    if not findings:
        out.append("No rule's threshold was reached.")
    else:
        out.append("| # | severity | finding | rank | estimated gain |")
        out.append("|---|---|---|---|---|")
        for i, f in enumerate(findings[:SHOWN_FINDINGS], 1):
            out.append(f"| {i} | {f.severity} | {_md(f.title)} | {_md(_rank_tag(f.rank))} | {_md(f.estimated_gain)} |")
        for i, f in enumerate(findings[:SHOWN_FINDINGS], 1):
            out += ["", f"### {i}. {_md(f.title)}", "",
                    f"- **evidence**: {_md(_evidence(f))}",
                    f"- **change**: {_md(f.recommendation)}",
                    f"- **estimated gain**: {_md(f.estimated_gain)}"]
    out += ["", "## Summary", ""]
    for res in report.results:
        items = _summary_items(res)
        if not items:
            continue
        out += [f"### {res.analyzer} ({_rank_tag(res.rank)})", "", "| metric | value |", "|---|---|"]
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


# --------------------------------------------------------------------------- json
def report_dict(traces: TraceSet, report: Report) -> dict:
    """Plain-JSON form of the report (``schema_version`` first)."""
    return {
        "schema_version": SCHEMA_VERSION,
        "tool": "torchscope",
        "source": report.source or traces.path,
        "ranks": sorted(int(r) for r in traces.ranks),
        "world_size": int(traces.world_size),
        "device": next(iter(traces)).meta.device_name,
        "findings": [f.to_dict() for f in report.findings],
        "results": [_result_dict(r) for r in report.results],
        "skipped": dict(report.skipped),
        "errors": dict(report.errors),
    }


def _result_dict(res: Result) -> dict:
    tables = {}
    for name, frame in res.tables.items():
        shown = frame.head(JSON_TABLE_ROWS)
        tables[name] = {"rows_total": int(len(frame)), "columns": [str(c) for c in frame.columns],
                        "rows": [[_plain(v) for v in row] for row in shown.itertuples(index=False, name=None)]}
    return {"analyzer": res.analyzer, "rank": res.rank,
            "summary": {k: _plain(v) for k, v in res.summary.items()}, "tables": tables}


def _plain(value: object) -> object:
    """JSON-safe scalar: numpy → Python, NaN/NA → None, other objects → str."""
    if value is None:
        return None
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (np.bool_, bool)):
        return bool(value)
    if isinstance(value, (np.integer, int)):
        return int(value)
    if isinstance(value, (np.floating, float)):
        return None if math.isnan(float(value)) or math.isinf(float(value)) else float(value)
    if isinstance(value, str):
        return value
    try:
        if pd.isna(value):
            return None
    except (TypeError, ValueError):
        pass
    return str(value)


def render_json(traces: TraceSet, report: Report) -> str:
    """The report as indented JSON."""
    return orjson.dumps(report_dict(traces, report), option=orjson.OPT_INDENT_2).decode() + "\n"


# --------------------------------------------------------------------------- command
