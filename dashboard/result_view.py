"""Generic rendering of analyzer output: any Result's summary, findings and tables as Dash components.

This works for every analyzer, including ones the dashboard has no dedicated figure for: a page
shows each of its analyzers' Results through `analyzer_section`, and says why when an analyzer
was skipped or failed for the run.
"""

from __future__ import annotations

from html import escape
from typing import Iterable, Mapping

import pandas as pd
from dash import dcc, html

from torchscope.analyzers.core.findings import Finding
from torchscope.analyzers.core.registry import REGISTRY
from torchscope.analyzers.core.result import Result
from torchscope.analyzers.core.report import Report
from torchscope.analyzers.report.units import format_for_key, format_plain

__all__ = ["findings_list", "table_view", "result_view", "analyzer_section", "not_available",
           "summary_view", "table_html", "MAX_TABLE_ROWS", "TABLE_PREVIEW_ROWS"]

#: Rows of one table sent to the browser.
MAX_TABLE_ROWS = 200
#: Rows shown before "more rows" (the rest are folded in a <details>).
TABLE_PREVIEW_ROWS = 12
_SEVERITY_COLOURS = {"critical": "#c0392b", "warning": "#d68910", "info": "#2874a6"}


def not_available(name: str, reason: str) -> html.Div:
    """The notice shown in place of an analyzer that did not run for this run."""
    return html.Div(f"{name}: not available for this run: {reason}", className="not-available")


def summary_view(summary: Mapping[str, object], docs: Mapping[str, str] | None = None) -> html.Div:
    """Headline numbers as a compact key/value grid, each value in its key's unit (``*_ns`` as ms, ...).

    ``docs`` (an analyzer's ``SUMMARY_KEYS``) gives each key its description as a tooltip.
    """
    if not summary:
        return html.Div()
    docs = docs or {}
    items = [html.Div([html.Span(k, className="kv-key", title=docs.get(k)),
                       html.Span(format_for_key(k, v), className="kv-val")], className="kv")
             for k, v in summary.items() if not isinstance(v, (dict, list, tuple))]
    return html.Div(items, className="summary")


def _finding_card(f: Finding, run_query: str) -> html.Div:
    link = f"/{f.page}?{run_query}" if run_query else f"/{f.page}"
    evidence = html.Table([html.Tr([html.Td(str(k)), html.Td(format_for_key(str(k), v))])
                           for k, v in f.evidence.items()],
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


# Characters the Markdown renderer would interpret even inside HTML ({} starts an expression).
_MARKUP_ENTITIES = str.maketrans({c: f"&#{ord(c)};" for c in "{}[]()*_`#\\|~!$<>\r\n"})


def _text(value: object) -> str:
    """Display text safe to place inside the table markup (HTML-escaped, markup characters as entities)."""
    return escape(value if isinstance(value, str) else format_plain(value), quote=True).translate(_MARKUP_ENTITIES)


def table_html(df: pd.DataFrame, columns: list[str]) -> str:
    """Rows of ``df`` as an HTML table string; every header and cell is escaped."""
    head = "".join(f"<th>{_text(c)}</th>" for c in columns)
    body = "".join("<tr>" + "".join(f"<td>{_text(v)}</td>" for v in row) + "</tr>"
                   for row in df.itertuples(index=False, name=None))
    return f'<table class="data-table"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def table_view(name: str, df: pd.DataFrame, table_id: str | None = None) -> html.Div:
    """One named table: the first TABLE_PREVIEW_ROWS rows, the rest (to MAX_TABLE_ROWS) folded.

    Each table is one Markdown component holding escaped HTML rather than a tree of Td
    components: Dash renders thousands of small components very slowly.
    """
    shown = df.head(MAX_TABLE_ROWS)
    if not isinstance(shown.index, pd.RangeIndex):
        shown = shown.reset_index()
    cols = [str(c) for c in shown.columns]
    note = f" ({len(df)} rows" + (f", first {MAX_TABLE_ROWS} kept" if len(df) > MAX_TABLE_ROWS else "") + ")"
    markup = table_html(shown.head(TABLE_PREVIEW_ROWS), cols)
    if len(shown) > TABLE_PREVIEW_ROWS:
        markup += (f"<details><summary>{len(shown) - TABLE_PREVIEW_ROWS} more rows</summary>"
                   f"{table_html(shown.iloc[TABLE_PREVIEW_ROWS:], cols)}</details>")
    return html.Div([html.H4([name, html.Span(note, className="muted")]),
                     dcc.Markdown(markup, dangerously_allow_html=True)],
                    id=table_id or f"table-{name}", className="table-block")


def result_view(result: Result, run_query: str = "", tables: Iterable[str] | None = None) -> html.Div:
    """A Result's summary, findings and (selected, default all) tables."""
    names = list(result.tables) if tables is None else [t for t in tables if t in result.tables]
    suffix = f" (rank {result.rank})" if result.rank is not None else ""
    return html.Div([
        html.H3(result.analyzer + suffix),
        summary_view(result.summary, _summary_docs(result.analyzer)),
        findings_list(result.findings, run_query, empty="No findings from this analyzer."),
        *[table_view(n, result.tables[n], f"table-{result.analyzer}-{n}-{result.rank}") for n in names],
    ], className="result", **{"data-analyzer": result.analyzer})


def _summary_docs(analyzer: str) -> Mapping[str, str] | None:
    spec = REGISTRY.get(analyzer)
    return spec.summary_keys if spec is not None else None


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
