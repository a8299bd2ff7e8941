"""Tables for people: analyzer frames on an AG Grid, cells in human units, key columns first.

An analyzer table keeps raw values with the unit in the column name (``step_ns``, ``peak_bytes``).
`grid_table` turns it into a sortable, filterable, virtualised grid: each column gets a label in
words with its unit (`column_label`), every cell its display text from the one formatting module
(`cell_text`), while sorting and filtering still work on the raw number (the text rides along in a
hidden ``<column>__text`` field the cell shows). Absolute timestamps read relative to the trace's
start; a missing value (None, NaN) or an id placeholder (-1) is a blank cell, never a value. The
first KEY_COLUMNS columns show; the rest are one click away behind the column chooser.
"""

from __future__ import annotations

import json
import math
import re
from typing import Sequence

import numpy as np
import dash_ag_grid as dag
import pandas as pd
from dash import dcc, html

from torchscope.analyzers.report.names import looks_like_symbol, short_name
from torchscope.analyzers.report.units import format_quantity, format_timestamp_ns, key_label, unit_of_key

__all__ = ["grid_table", "column_label", "cell_text", "grid_rows", "is_timestamp_column", "KEY_COLUMNS",
           "MAX_GRID_ROWS", "NAME_WIDTH", "TEXT_SUFFIX", "GRID_ROW_PX", "GRID_MAX_HEIGHT_PX", "ID_COLUMNS"]

#: Columns shown before the column chooser (the others are hidden until chosen).
KEY_COLUMNS = 7
#: Rows of one table sent to the browser (the grid virtualises; the payload is the limit).
MAX_GRID_ROWS = 20_000
#: Kernel/operator names in cells are folded to this many characters (the full name on hover).
NAME_WIDTH = 60
#: Suffix of the hidden field that carries a column's display text.
TEXT_SUFFIX = "__text"
#: The widest a text column auto-sizes to, px (longer text ends in an ellipsis, whole on hover).
TEXT_MAX_WIDTH_PX = 480
#: Height of a grid row, px, and the most a grid grows before it scrolls.
GRID_ROW_PX = 32
GRID_HEADER_PX = 38
GRID_MAX_HEIGHT_PX = 460
#: Integer id columns where -1 means "none" (or, for ``step``, the whole trace): never shown as "-1".
ID_COLUMNS = frozenset({"step", "rank", "device", "stream", "pid", "tid", "layer_index", "expert", "correlation",
                        "external_id"})
#: What a ``step`` of -1 means in an analyzer table (one window over the whole trace).
WHOLE_TRACE = "whole trace"
#: Columns with an absolute time on the trace clock (besides ``*_ts_ns``), shown from the trace start.
_TIMESTAMP_NAMES = re.compile(r"^(?:.*_)?(?:ts|start|end|window_start|gap_start|gap_end|call_ts|t)_ns$")
#: Column names that hold a name worth folding (kernel signatures, operators, modules).
_NAME_COLUMNS = frozenset({"name", "kernel", "op", "operator", "module", "top_op", "evidence", "detail"})
#: Abbreviations in column names, spelled out in headers.
_ABBREVIATIONS = {"dur": "duration", "busbw": "bus bandwidth", "algbw": "algorithm bandwidth", "p50": "median",
                  "h2d": "host-to-device", "rss": "RSS"}
#: Unit of a column -> the word its label ends with.
_UNIT_WORDS = {"ns": "time", "us": "time", "ms": "time", "bytes": "size", "%": "%", "share": "%",
               "bytes/s": "B/s", "flop/s": "FLOP/s", "GB/s": "GB/s", "flop": "FLOP", "flop/byte": "FLOP/B",
               "mJ": "energy", "J": "energy", "W": "W", "mW": "W", "MHz": "MHz", "°C": "°C"}


def is_timestamp_column(name: str) -> bool:
    """Whether column ``name`` holds an absolute time on the trace clock (ns), not a duration."""
    return bool(_TIMESTAMP_NAMES.match(name))


def column_label(name: str) -> str:
    """A column name as a header for people: words, with the unit its values are in (``step_ns`` -> "Step (time)")."""
    if is_timestamp_column(name):
        words = key_label(name.removesuffix("_ns")).removesuffix(" at").strip() or "time"
        words = "time" if words == "ts" else words.removesuffix(" ts")
        text = f"{words} (from trace start)"
    else:
        unit = unit_of_key(name)
        words = key_label(name)
        if unit in ("share", "%"):
            words = re.sub(r"\s*(share|pct|fraction)$", "", words).strip() or "share"
        words = " ".join(_ABBREVIATIONS.get(w, w) for w in words.split())
        word = _UNIT_WORDS.get(unit or "")
        text = f"{words} ({word})" if word and word not in words.split() else words
    return text[:1].upper() + text[1:]


def _missing(value: object) -> bool:
    if value is None:
        return True
    try:
        return bool(value != value)
    except (TypeError, ValueError):
        return True


def cell_text(column: str, value: object, origin_ns: int | None = None) -> str:
    """One cell's display text: in the column's unit, timestamps from ``origin_ns``, blanks for placeholders."""
    if isinstance(value, (list, tuple, np.ndarray)):
        return ", ".join(cell_text(column, v, origin_ns) for v in list(value)[:8]) + ("…" if len(value) > 8 else "")
    if isinstance(value, dict):
        return ", ".join(f"{k} {cell_text(str(k), v, origin_ns)}" for k, v in list(value.items())[:8])
    if _missing(value):
        return ""
    if isinstance(value, str):
        if column in _NAME_COLUMNS and looks_like_symbol(value):
            return short_name(value, NAME_WIDTH)
        return value
    if isinstance(value, (bool, np.bool_)):
        return "yes" if value else "no"
    if column in ID_COLUMNS and isinstance(value, (int, np.integer, float, np.floating)) and float(value) == -1:
        return WHOLE_TRACE if column == "step" else ""
    unit = unit_of_key(column) or ""
    if (is_timestamp_column(column) and origin_ns is not None) or unit == "ts":
        exact = int(value) if isinstance(value, (int, np.integer)) else float(value)  # ns precision at 1e18
        return format_timestamp_ns(exact, origin_ns)
    return format_quantity(value, unit)


def _raw(value: object) -> object:
    """A JSON-safe raw value for sorting/filtering (NaN -> None, numpy scalars -> Python)."""
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.floating, float)):
        f = float(value)
        return None if math.isnan(f) or math.isinf(f) else f
    if isinstance(value, (np.bool_, bool)):
        return bool(value)
    if value is None or isinstance(value, (int, str)):
        return value
    if _missing(value):
        return None
    return str(value)


def grid_rows(df: pd.DataFrame, origin_ns: int | None = None, limit: int = MAX_GRID_ROWS) -> list[dict]:
    """Rows of ``df`` as grid records: the raw value under each column, its display text beside it."""
    shown = df.head(limit)
    cols = [str(c) for c in shown.columns]
    records = []
    for row in shown.itertuples(index=False, name=None):
        rec: dict = {}
        for c, v in zip(cols, row):
            rec[c] = _raw(v)
            rec[c + TEXT_SUFFIX] = cell_text(c, v, origin_ns)
        records.append(rec)
    return records


def _is_numeric(series: pd.Series) -> bool:
    return pd.api.types.is_numeric_dtype(series) and not pd.api.types.is_bool_dtype(series)


def _column_def(df: pd.DataFrame, col: str, hidden: bool) -> dict:
    numeric = _is_numeric(df[col])
    text_field = json.dumps(col + TEXT_SUFFIX)
    spec = {
        "field": col, "headerName": column_label(col), "hide": hidden,
        # The cell shows the text formatted in Python; sorting and filters use the raw value.
        "valueFormatter": {"function": f"params.data ? params.data[{text_field}] : ''"},
        "filter": "agNumberColumnFilter" if numeric and not is_timestamp_column(col) else "agTextColumnFilter",
        "type": "rightAligned" if numeric else None,
        "tooltipValueGetter": {"function": f"params.data ? String(params.data[{json.dumps(col)}] ?? '') : ''"}
        if col in _NAME_COLUMNS else None,
    }
    if not numeric:
        spec["filterValueGetter"] = {"function": f"params.data ? params.data[{text_field}] : ''"}
        # Auto-sized to its longest text, one long name (a kernel's template signature in a trace-diff metric)
        # made a column as wide as the page and pushed every value column off-screen; it is cut with an
        # ellipsis instead, the whole text on hover.
        spec["maxWidth"] = TEXT_MAX_WIDTH_PX
        if spec.get("tooltipValueGetter") is None:
            spec["tooltipValueGetter"] = {"function": f"params.data ? String(params.data[{text_field}] ?? '') : ''"}
    return {k: v for k, v in spec.items() if v is not None}


def key_columns(df: pd.DataFrame, first: Sequence[str] = ()) -> list[str]:
    """The columns shown without the chooser: ``first`` (those present), then the table's own order."""
    cols = [str(c) for c in df.columns]
    lead = [c for c in first if c in cols]
    rest = [c for c in cols if c not in lead]
    return (lead + rest)[:max(KEY_COLUMNS, len(lead))]


def grid_table(name: str, df: pd.DataFrame, table_id: str, *, origin_ns: int | None = None,
               first: Sequence[str] = (), title: str | None = None) -> html.Div:
    """One analyzer table as a grid with a title, a row count and a column chooser for the hidden columns."""
    frame = df if isinstance(df.index, pd.RangeIndex) else df.reset_index()
    frame = frame.rename(columns=str)
    keys = key_columns(frame, first)
    cols = keys + [c for c in frame.columns if c not in keys]
    frame = frame[cols]
    defs = [_column_def(frame, c, c not in keys) for c in cols]
    n = len(frame)
    kept = min(n, MAX_GRID_ROWS)
    note = f"{n:,} rows" if kept == n else f"first {kept:,} of {n:,} rows"
    height = min(GRID_MAX_HEIGHT_PX, GRID_HEADER_PX + GRID_ROW_PX * max(kept, 1) + 18)
    chooser = None
    if len(cols) > len(keys):
        chooser = html.Div([
            html.Span("more columns:", className="muted"),
            dcc.Dropdown(id={"type": "grid-columns", "grid": table_id},
                         options=[{"label": column_label(c), "value": c} for c in cols if c not in keys],
                         value=[], multi=True, placeholder=f"{len(cols) - len(keys)} hidden columns",
                         style={"minWidth": "320px"}),
        ], className="grid-chooser")
    grid = dag.AgGrid(
        id={"type": "grid", "grid": table_id}, rowData=grid_rows(frame, origin_ns), columnDefs=defs,
        defaultColDef={"sortable": True, "resizable": True, "filter": True, "floatingFilter": False,
                       "minWidth": 90},
        dashGridOptions={"rowHeight": GRID_ROW_PX, "headerHeight": GRID_HEADER_PX, "tooltipShowDelay": 300, "enableCellTextSelection": True, "animateRows": False,
                         "suppressFieldDotNotation": True},
        columnSize="autoSize", style={"height": f"{height}px", "width": "100%"}, className="grid",
    )
    return html.Div([html.H4([title or key_label(name).capitalize(), html.Span(f" ({note})", className="muted")]),
                     chooser, grid], id=table_id, className="table-block", **{"data-table": name})
