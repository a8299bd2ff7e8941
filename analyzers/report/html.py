"""Findings, results and reports as HTML for Jupyter (their ``_repr_html_``), every value through units.py.

Everything taken from a trace (names, evidence, table cells) is escaped: a kernel name is not markup.
"""

from __future__ import annotations

from html import escape
from typing import Any

import pandas as pd

from torchscope.analyzers.report.units import format_for_key, key_label

__all__ = ["finding_html", "result_html", "report_html", "TABLE_ROWS_SHOWN"]

#: Rows of each table a result shows inline (the DataFrame itself has them all).
TABLE_ROWS_SHOWN = 10
_SEVERITY_COLOUR = {"critical": "#b3261e", "warning": "#a05a00", "info": "#3c5a99"}


def _items(mapping: Any) -> str:
    rows = "".join(f"<tr><th style='text-align:left'>{escape(key_label(str(k)))}</th>"
                   f"<td>{escape(format_for_key(str(k), v))}</td></tr>" for k, v in mapping.items())
    return f"<table>{rows}</table>" if rows else ""


def finding_html(finding: Any) -> str:
    """One finding: severity, title, evidence, the change to make and its estimated gain."""
    colour = _SEVERITY_COLOUR.get(finding.severity, "#444")
    rank = "" if finding.rank is None else f", rank {finding.rank}"
    return (f"<div style='border-left:4px solid {colour};padding-left:8px;margin:6px 0'>"
            f"<b style='color:{colour}'>{escape(finding.severity.upper())}</b> <b>{escape(finding.title)}</b> "
            f"<small>({escape(finding.id)}{escape(rank)})</small>"
            f"{_items(finding.evidence)}"
            f"<div><b>Change:</b> {escape(finding.recommendation)}</div>"
            f"<div><b>Gain:</b> {escape(finding.estimated_gain)}</div></div>")


def _table_html(name: str, frame: pd.DataFrame) -> str:
    shown = frame.head(TABLE_ROWS_SHOWN).to_html(index=False, escape=True, border=0, na_rep="")
    more = f" (first {TABLE_ROWS_SHOWN} of {len(frame)} rows)" if len(frame) > TABLE_ROWS_SHOWN else ""
    summary = f"{escape(name)}: {len(frame)} rows × {frame.shape[1]} columns{more}"
    return f"<details><summary>{summary}</summary>{shown}</details>"


def result_html(result: Any) -> str:
    """One analyzer's result: its summary, its findings, and its tables folded."""
    rank = "" if result.rank is None else f" (rank {result.rank})"
    findings = "".join(finding_html(f) for f in result.findings)
    tables = "".join(_table_html(name, frame) for name, frame in result.tables.items())
    return f"<div><h4>{escape(result.analyzer)}{escape(rank)}</h4>{_items(result.summary)}{findings}{tables}</div>"


def report_html(report: Any) -> str:
    """A whole report: the findings ranked by gain, then what was skipped or failed and why."""
    findings = report.findings
    n = len(findings)
    head = f"<h3>torchscope report: {escape(str(report.source))}</h3><p>{n} finding{'' if n == 1 else 's'}"
    head += f" from {len(report.results)} result{'' if len(report.results) == 1 else 's'}</p>"
    body = "".join(finding_html(f) for f in findings)
    skipped = "".join(f"<li>{escape(k)}: {escape(v)}</li>" for k, v in report.skipped.items())
    errors = "".join(f"<li>{escape(k)}: {escape(v)}</li>" for k, v in report.errors.items())
    tail = (f"<details><summary>skipped ({len(report.skipped)})</summary><ul>{skipped}</ul></details>" if skipped
            else "")
    tail += f"<p><b>Errors</b></p><ul>{errors}</ul>" if errors else ""
    return f"<div>{head}{body}{tail}</div>"
