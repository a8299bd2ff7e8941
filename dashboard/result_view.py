"""Generic rendering of analyzer output: any Result's summary, findings and tables as Dash components.

This works for every analyzer, including ones the dashboard has no dedicated figure for: a page
shows each of its analyzers' Results through `analyzer_section`, and says why when an analyzer
was skipped or failed for the run.
"""

from __future__ import annotations

import warnings
from typing import Iterable, Mapping

import numpy as np
import pandas as pd
from dash import dash_table, dcc, html

from analyzers.findings import Finding, Result
from analyzers.registry import Report

__all__ = ["findings_list", "table_view", "result_view", "analyzer_section", "not_available",
           "summary_view", "MAX_TABLE_ROWS", "format_value"]

# DataTable still ships with Dash 4 and is what we need (sort + filter); silence its notice.
warnings.filterwarnings("ignore", message=r"\s*The dash_table.DataTable will be removed", category=DeprecationWarning)

#: Rows of one table sent to the browser (the DataTable pages through them).
MAX_TABLE_ROWS = 500
_SEVERITY_COLOURS = {"critical": "#c0392b", "warning": "#d68910", "info": "#2874a6"}


def format_value(value: object) -> str:
    """A number or value as short display text (4 significant digits for floats)."""
    if value is None:
        return "—"
    if isinstance(value, (float, np.floating)):
        if not np.isfinite(value):
            return str(value)
        return f"{value:.4g}" if abs(value) < 1e6 else f"{value:,.0f}"
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        return f"{int(value):,}" if abs(int(value)) >= 10_000 else str(int(value))
    return str(value)


def not_available(name: str, reason: str) -> html.Div:
    """The notice shown in place of an analyzer that did not run for this run."""
    return html.Div(f"{name}: not available for this run: {reason}", className="not-available")


def summary_view(summary: Mapping[str, object]) -> html.Div:
    """Headline numbers as a compact key/value grid."""
    if not summary:
        return html.Div()
    items = [html.Div([html.Span(k, className="kv-key"), html.Span(format_value(v), className="kv-val")],
                      className="kv") for k, v in summary.items() if not isinstance(v, (dict, list, tuple))]
    return html.Div(items, className="summary")


def _finding_card(f: Finding, run_query: str) -> html.Div:
    link = f"/{f.page}?{run_query}" if run_query else f"/{f.page}"
    evidence = html.Table([html.Tr([html.Td(str(k)), html.Td(format_value(v))]) for k, v in f.evidence.items()],
                          className="evidence")
    return html.Div([
        html.Div([
            html.Span(f.severity, className=f"sev sev-{f.severity}",
                      style={"background": _SEVERITY_COLOURS.get(f.severity, "#555")}),
            html.Span(f.title, className="finding-title"),
            html.Span(f" · {f.analyzer}" + (f" · rank {f.rank}" if f.rank is not None else ""),
                      className="finding-meta"),
        ]),
        html.Div([html.B("Recommendation: "), f.recommendation], className="finding-rec"),
        html.Div([html.B("Estimated gain: "), f.estimated_gain], className="finding-gain"),
        html.Details([html.Summary("evidence"), evidence]),
        dcc.Link(f"show evidence on the {f.page} page →", href=link, className="finding-link"),
    ], className=f"finding finding-{f.severity}", **{"data-analyzer": f.analyzer, "data-severity": f.severity})


def findings_list(findings: Iterable[Finding], run_query: str = "", empty: str = "No findings.") -> html.Div:
    """Findings as cards (severity, title, recommendation, gain, evidence, link to the evidence page)."""
    cards = [_finding_card(f, run_query) for f in findings]
    return html.Div(cards or [html.Div(empty, className="muted")], className="findings")


def _display_frame(df: pd.DataFrame) -> pd.DataFrame:
    out = df.head(MAX_TABLE_ROWS).copy()
    if not isinstance(out.index, pd.RangeIndex):
        out = out.reset_index()
    for col in out.columns:
        s = out[col]
        if pd.api.types.is_float_dtype(s):
            out[col] = s.round(4 if s.abs().max() < 1e4 else 1) if len(s) else s
        elif pd.api.types.is_integer_dtype(s) or pd.api.types.is_bool_dtype(s):
            continue
        else:
            out[col] = s.map(lambda v: "" if v is None else str(v))
    out.columns = [str(c) for c in out.columns]
    return out


def table_view(name: str, df: pd.DataFrame, table_id: str | None = None) -> html.Div:
    """One named table as a sortable, filterable DataTable (first MAX_TABLE_ROWS rows)."""
    shown = _display_frame(df)
    note = f" (first {MAX_TABLE_ROWS} of {len(df)} rows)" if len(df) > MAX_TABLE_ROWS else f" ({len(df)} rows)"
    return html.Div([
        html.H4([name, html.Span(note, className="muted")]),
        dash_table.DataTable(
            id=table_id or f"table-{name}",
            data=shown.to_dict("records"),
            columns=[{"name": c, "id": c} for c in shown.columns],
            page_size=15, sort_action="native", filter_action="native",
            style_table={"overflowX": "auto"},
            style_cell={"fontFamily": "monospace", "fontSize": "12px", "maxWidth": "420px",
                        "overflow": "hidden", "textOverflow": "ellipsis"},
        ),
    ], className="table-block")


def result_view(result: Result, run_query: str = "", tables: Iterable[str] | None = None) -> html.Div:
    """A Result's summary, findings and (selected, default all) tables."""
    names = list(result.tables) if tables is None else [t for t in tables if t in result.tables]
    suffix = f" (rank {result.rank})" if result.rank is not None else ""
    return html.Div([
        html.H3(result.analyzer + suffix),
        summary_view(result.summary),
        findings_list(result.findings, run_query, empty="No findings from this analyzer."),
        *[table_view(n, result.tables[n], f"table-{result.analyzer}-{n}-{result.rank}") for n in names],
    ], className="result", **{"data-analyzer": result.analyzer})


def analyzer_section(report: Report, name: str, rank: int | None = None, run_query: str = "",
                     tables: Iterable[str] | None = None) -> html.Div:
    """The Result of analyzer ``name`` for ``rank`` (all ranks if None), or why there is none."""
    results = [r for r in report.results if r.analyzer == name and (rank is None or r.rank in (rank, None))]
    if results:
        return html.Div([result_view(r, run_query, tables) for r in results])
    if name in report.skipped:
        return not_available(name, report.skipped[name])
    if name in report.errors:
        return not_available(name, f"the analyzer failed ({report.errors[name]})")
    return not_available(name, "this analyzer is not installed")
