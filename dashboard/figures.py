"""Dedicated figures drawn from specific analyzer tables (each returns None when its table is absent).

Figures only re-shape what an analyzer computed into plotly traces; they never derive new
measurements. Every axis has a title in words with its unit; values are drawn in one display unit
per axis picked from the data (`duration_axis`, `bytes_axis`, `rate_axis`: ms or s, MiB or GiB,
GFLOP/s or TFLOP/s); log axes only where the data span decades (`LOG_SPAN_DECADES`), with ranges
fitted to the data; kernel names folded (``names.short_name``) with the full name on hover; one
series per device; a legend only when more than one series is drawn; colours from `palette`.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from torchscope.analyzers.core.result import Result
from torchscope.analyzers.report.names import short_name
from torchscope.analyzers.report.units import format_quantity, key_label

from torchscope.dashboard import palette

__all__ = [
    "gpu_time_figure", "step_phase_figure", "attribution_figure", "phase_share_by_rank", "category_figure", "collectives_figure",
    "series_figure", "memory_figure", "roofline_figure", "heatmap_figure", "bar_figure", "lines_by_group",
    "before_after_figure", "duration_axis", "bytes_axis", "rate_axis", "log_range", "LOG_SPAN_DECADES",
    "AXIS_NAME_WIDTH",
]

_LAYOUT = {"margin": {"l": 10, "r": 10, "t": 40, "b": 30}, "height": 360}
_GPU_PARTS = (("compute_pct", "compute"), ("communication_pct", "communication"),
              ("memcpy_pct", "memcpy"), ("memset_pct", "memset"),
              ("idle_host_wait_pct", "idle: host wait"), ("idle_kernel_wait_pct", "idle: kernel wait"),
              ("idle_other_pct", "idle: other"))
#: Columns of training_loop's ``steps`` table that end in _ns but are not a phase.
_STEP_NOT_PHASES = ("start_ns", "step_ns")
#: Columns of roofline's ``ops`` table the roofline plot draws.
_ROOFLINE_X, _ROOFLINE_Y, _ROOFLINE_SIZE = "intensity_flop_per_byte", "achieved_flops_per_s", "time_ns"
#: A value axis is logarithmic only when its positive data span at least this many decades.
LOG_SPAN_DECADES = 2.0
#: Padding of a fitted log axis on each side, in decades.
LOG_PAD_DECADES = 0.15
#: Category labels on an axis are folded to this many characters (full name on hover).
AXIS_NAME_WIDTH = 42
#: A step of -1 in an analyzer table is one window over the whole trace.
_WHOLE_TRACE = "whole trace"
_DURATION_SCALES = ((1e9, "s"), (1e6, "ms"), (1e3, "µs"), (1.0, "ns"))
_BYTE_SCALES = ((1024.0**3, "GiB"), (1024.0**2, "MiB"), (1024.0, "KiB"), (1.0, "B"))
_RATE_SCALES = ((1e15, "P"), (1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k"), (1.0, ""))


def _has(df: pd.DataFrame | None, *cols: str) -> bool:
    return df is not None and not df.empty and all(c in df.columns for c in cols)


def _pick(values: object, scales: Sequence[tuple[float, str]], by: str = "median") -> tuple[float, str]:
    arr = np.abs(np.asarray(values, dtype=np.float64).ravel())
    arr = arr[np.isfinite(arr) & (arr > 0)]
    top = (float(np.median(arr)) if by == "median" else float(arr.max())) if len(arr) else 0.0
    for scale, name in scales:
        if top >= scale:
            return scale, name
    return scales[-1]


def duration_axis(values_ns: object) -> tuple[float, str]:
    """(divisor, unit) that shows these ns durations on one axis: s, ms, µs or ns, from their typical size."""
    return _pick(values_ns, _DURATION_SCALES)


def bytes_axis(values_bytes: object) -> tuple[float, str]:
    """(divisor, unit) that shows these sizes in bytes on one axis: GiB, MiB, KiB or B."""
    return _pick(values_bytes, _BYTE_SCALES)


def rate_axis(values_per_s: object, unit: str) -> tuple[float, str]:
    """(divisor, unit) for a rate axis with a decimal prefix: ``rate_axis(x, "FLOP")`` -> (1e12, "TFLOP/s")."""
    scale, prefix = _pick(values_per_s, _RATE_SCALES, by="max")
    return scale, f"{prefix}{unit}/s"


def log_range(values: object, pad_decades: float = LOG_PAD_DECADES) -> list[float] | None:
    """A plotly log-axis range (log10 ends) that fits the positive finite values, padded; None if none."""
    arr = np.asarray(values, dtype=np.float64).ravel()
    arr = arr[np.isfinite(arr) & (arr > 0)]
    if not len(arr):
        return None
    lo, hi = math.log10(float(arr.min())), math.log10(float(arr.max()))
    if hi - lo < 1e-9:
        lo, hi = lo - 0.5, hi + 0.5
    return [lo - pad_decades, hi + pad_decades]


def _spans_decades(values: object) -> bool:
    r = log_range(values, 0.0)
    return r is not None and (r[1] - r[0]) >= LOG_SPAN_DECADES


def _step_labels(steps: pd.Series) -> list[str]:
    return [_WHOLE_TRACE if str(s) == "-1" else str(s) for s in steps]


def _finish(fig: go.Figure, title: str, x_title: str | None, y_title: str | None, **layout) -> go.Figure:
    drawn = sum(1 for t in fig.data if t.showlegend is not False)
    fig.update_layout(title=title, showlegend=drawn > 1, **{**_LAYOUT, **layout})
    if x_title is not None:
        fig.update_xaxes(title_text=x_title, automargin=True)
    if y_title is not None:
        fig.update_yaxes(title_text=y_title, automargin=True)
    return fig


def gpu_time_figure(results: Sequence[Result]) -> go.Figure | None:
    """Stacked bars of the GPU time breakdown (% of window) per rank, from gpu_time summaries."""
    rows = [r for r in results if all(k in r.summary for k, _ in _GPU_PARTS[:3])]
    if not rows:
        return None
    ranks = [f"rank {r.rank}" for r in rows]
    fig = go.Figure()
    for key, label in _GPU_PARTS:
        vals = [float(r.summary.get(key) or 0.0) for r in rows]
        if not any(vals):
            continue  # a part no rank has: no empty legend entry
        fig.add_trace(go.Bar(y=ranks, x=vals, name=label, orientation="h",
                             marker_color=palette.GPU_PART_COLOURS[key.removesuffix("_pct")],
                             hovertemplate="%{x:.1f}% of the window<extra>" + label + "</extra>"))
    fig.update_xaxes(range=[0, 100])
    fig.update_yaxes(type="category", autorange="reversed")  # rank 0 on top, as on every per-rank figure
    # A few ranks: the legend in a row below the bars. Many: on the right, because the offset of a legend below
    # is a share of the figure's height, and on a tall figure of 64 ranks it floated a screen away from them.
    few = len(rows) <= 3
    return _finish(fig, "Where the GPU's time goes (% of the profiled window)", "% of the profiled window", None,
                   barmode="stack",
                   legend={"orientation": "h", "y": -0.45, "yanchor": "top", "x": 0, "traceorder": "normal"} if few
                   else {"traceorder": "normal"},  # compute first, as the bars read left to right
                   height=200 + 40 * len(rows) if few else _rank_rows_height(len(rows), 160),
                   margin={"l": 10, "r": 10, "t": 40, "b": 100 if few else 50})


def _rank_rows_height(n: int, base: int) -> int:
    """Height of a figure of one bar per rank: roomy rows for a few ranks, compact ones (still labelled) for a
    job of many, so a 64-rank job's bars fit a screen or two instead of three."""
    return base + (36 if n <= 8 else 24 if n <= 24 else 15) * n


def step_phase_figure(table: pd.DataFrame | None, step_col: str = "step") -> go.Figure | None:
    """Stacked bars per step of phase durations, from training_loop's ``steps`` table (``<phase>_ns`` columns)."""
    if table is None or table.empty or step_col not in table.columns:
        return None
    cols = [c for c in table.columns if c.endswith("_ns") and c not in _STEP_NOT_PHASES]
    cols = [c for c in cols if (table[c].fillna(0) > 0).any()]
    if not cols:
        return None
    total = table["step_ns"] if "step_ns" in table.columns else table[cols].sum(axis=1)
    scale, unit = duration_axis(total)
    steps = _step_labels(table[step_col])
    fig = go.Figure()
    for col in cols:
        phase = col[:-3]
        vals = table[col].to_numpy(dtype=float)
        text = [format_quantity(v, "ns") for v in vals]
        fig.add_trace(go.Bar(x=steps, y=vals / scale, name=phase.replace("_", " "), customdata=text,
                             marker_color=palette.phase_colour(phase),
                             hovertemplate="step %{x}: %{customdata}<extra>" + phase.replace("_", " ") + "</extra>"))
    fig.update_xaxes(type="category")
    return _finish(fig, "Step time by phase", "Step", f"Time ({unit})", barmode="stack")


def phase_share_by_rank(phases: Sequence[tuple[int, pd.DataFrame]]) -> go.Figure | None:
    """Stacked horizontal bars, one per rank, of each phase's share of step time (training_loop ``phases``)."""
    rows = [(rank, t) for rank, t in phases if _has(t, "phase", "share_pct")]
    if len(rows) < 2:
        return None
    labels = [f"rank {rank}" for rank, _ in rows]
    # Plain lists, not Series.astype(str): a pandas conversion per rank cost ~1.5 ms, 0.2 s on a 64-rank job.
    names = [[str(p) for p in t["phase"].tolist()] for _, t in rows]
    order = list(dict.fromkeys(p for ranks_phases in names for p in ranks_phases))
    shares = []  # per rank, phase -> its first row's share (one pass per rank, not a lookup per phase and rank)
    for (_, t), phases_of_rank in zip(rows, names):
        first: dict[str, float] = {}
        for phase, share in zip(phases_of_rank, t["share_pct"].to_numpy(dtype=float)):
            first.setdefault(phase, share)
        shares.append(first)
    fig = go.Figure()
    for phase in order:
        vals = [share if pd.notna(share := first.get(phase, 0.0)) else 0.0 for first in shares]
        if not any(vals):
            continue
        words = phase.replace("_", " ")
        fig.add_trace(go.Bar(y=labels, x=vals, name=words, orientation="h", marker_color=palette.phase_colour(phase),
                             hovertemplate="%{y}: %{x:.1f}% of step time<extra>" + words + "</extra>"))
    fig.update_yaxes(type="category", autorange="reversed")
    fig.update_xaxes(range=[0, 100])
    return _finish(fig, "Phases per rank (share of step time)", "% of step time", None, barmode="stack",
                   height=_rank_rows_height(len(rows), 140))


def attribution_figure(attribution: pd.DataFrame | None, causes: pd.DataFrame | None = None) -> go.Figure | None:
    """Stacked bars per step of the time each cause took, from the bottleneck analyzer's ``attribution`` table."""
    if not _has(attribution, "step", "cause", "time_ns"):
        return None
    labels = {}
    if _has(causes, "cause", "label"):
        labels = dict(zip(causes["cause"].astype(str), causes["label"].astype(str)))
    order = list(causes.sort_values("time_ns", ascending=False)["cause"].astype(str)) \
        if _has(causes, "cause", "time_ns") else list(dict.fromkeys(attribution["cause"].astype(str)))
    wide = attribution.pivot_table(index="step", columns="cause", values="time_ns", aggfunc="sum",
                                   observed=True).fillna(0)
    scale, unit = duration_axis(wide.sum(axis=1))
    steps = _step_labels(pd.Series(wide.index))
    fig = go.Figure()
    for cause in [c for c in order if c in wide.columns] + [c for c in wide.columns if c not in order]:
        vals = wide[cause].to_numpy(dtype=float)
        if not (vals > 0).any():
            continue
        label = labels.get(str(cause), str(cause).replace("_", " "))
        fig.add_trace(go.Bar(x=steps, y=vals / scale, name=label, marker_color=palette.cause_colour(cause),
                             customdata=[format_quantity(v, "ns") for v in vals],
                             hovertemplate="step %{x}: %{customdata}<extra>" + label + "</extra>"))
    fig.update_xaxes(type="category")
    return _finish(fig, "Where each step's time goes (every ns has one cause)", "Step", f"Time ({unit})",
                   barmode="stack")


def category_figure(table: pd.DataFrame | None, label_col: str, value_col: str, title: str,
                    value_title: str | None = None, colour_col: str | None = None,
                    top: int | None = None) -> go.Figure | None:
    """A horizontal bar per category or name (longest first; names folded, the full name on hover)."""
    if not _has(table, label_col, value_col):
        return None
    t = table[table[value_col].fillna(0).to_numpy(dtype=float) > 0]  # a category with no time is no bar
    if t.empty:
        return None
    t = t.sort_values(value_col, ascending=False)
    if top is not None:
        t = t.head(top)
    t = t.iloc[::-1]  # plotly draws the first row at the bottom
    vals = t[value_col].to_numpy(dtype=float)
    is_time = value_col.endswith("_ns")
    scale, unit = duration_axis(vals) if is_time else (1.0, "")
    full = t[label_col].astype(str).tolist()
    shown = _unique_short(full)
    colour_key = colour_col if colour_col and colour_col in t.columns else (label_col if label_col == "category" else None)
    colours = [palette.category_colour(c) for c in t[colour_key].astype(str)] if colour_key \
        else palette.CATEGORY_COLOURS["gemm/conv"]
    text = [format_quantity(v, "ns") if is_time else format_quantity(v, "") for v in vals]
    fig = go.Figure(go.Bar(y=shown, x=vals / scale, orientation="h", marker_color=colours,
                           customdata=np.stack([full, text], axis=1) if len(full) else None,
                           hovertemplate="%{customdata[0]}<br>%{customdata[1]}<extra></extra>"))
    x_title = value_title or (f"{key_label(value_col).capitalize()} time ({unit})" if is_time else key_label(value_col))
    fig.update_yaxes(type="category", automargin=True)
    return _finish(fig, title, x_title, None, height=120 + 26 * len(t))


def _unique_short(names: Sequence[str]) -> list[str]:
    """Names folded to AXIS_NAME_WIDTH, kept distinct (a category axis merges equal labels)."""
    out, seen = [], {}
    for name in names:
        s = short_name(name, AXIS_NAME_WIDTH)
        if s in seen:
            seen[s] += 1
            s = f"{s} #{seen[s]}"
        else:
            seen[s] = 1
        out.append(s)
    return out


def bar_figure(table: pd.DataFrame | None, x: str, y: str, title: str, colour_col: str | None = None,
               x_title: str | None = None, y_title: str | None = None, colour: str | None = None) -> go.Figure | None:
    """Vertical bars of column ``y`` over ``x`` (optionally one series per value of ``colour_col``).

    ``*_ns`` columns are drawn in one duration unit, ``*_pct`` as %, fractions (``mfu``, ``*_share``) as %.
    """
    if not _has(table, x, y):
        return None
    vals_all = table[y].to_numpy(dtype=float)
    if y.endswith("_ns"):
        scale, unit = duration_axis(vals_all)
    elif y.endswith(("_share", "_fraction")) or y in ("mfu", "model_mfu"):
        scale, unit = 0.01, "%"
    else:
        scale, unit = 1.0, ("%" if y.endswith("_pct") else "")
    fig = go.Figure()
    grouped = bool(colour_col) and colour_col in table.columns
    groups = table.groupby(colour_col, observed=True) if grouped else [(y, table)]
    for key, grp in groups:
        xs = _step_labels(grp[x]) if x == "step" else grp[x].astype(str)
        vals = grp[y].to_numpy(dtype=float)
        fig.add_trace(go.Bar(x=xs, y=vals / scale, name=str(key),
                             marker_color=colour if colour and not grouped else palette.colour_for(key),
                             customdata=[format_quantity(v, "ns") if y.endswith("_ns") else
                                         format_quantity(v / scale, unit) if unit == "%" else
                                         format_quantity(v, "") for v in vals],
                             hovertemplate="%{x}: %{customdata}<extra>" + str(key) + "</extra>"))
    fig.update_xaxes(type="category")
    y_words = y_title or key_label(y).capitalize()
    return _finish(fig, title, x_title or key_label(x).capitalize(), f"{y_words} ({unit})" if unit else y_words,
                   barmode="group")


#: The per-rank comparison rows: (table key, column, row title, colour).
PER_RANK_ROWS = (("per_rank", "step_median_ns", "Median step time", palette.PHASE_COLOURS["forward"]),
                 ("per_rank", "exposed_comm_pct", "Exposed communication", palette.cause_colour("exposed_communication")),
                 ("lateness", "median_lateness_ns", "Straggler lateness at collectives (median)",
                  palette.cause_colour("device_sync")))


def per_rank_figure(per_rank: pd.DataFrame | None, lateness: pd.DataFrame | None) -> go.Figure | None:
    """Every rank side by side in one figure: median step time, exposed communication and straggler lateness,
    a row each over one rank axis (one figure draws faster than three, and the rows line up by rank)."""
    from plotly.subplots import make_subplots

    tables = {"per_rank": per_rank, "lateness": lateness}
    rows = [(tables[key], col, title, colour) for key, col, title, colour in PER_RANK_ROWS
            if _has(tables[key], "rank", col)]
    if not rows:
        return None
    fig = make_subplots(rows=len(rows), cols=1, shared_xaxes=True, vertical_spacing=0.12,
                        subplot_titles=[title for _, _, title, _ in rows])
    for i, (table, col, title, colour) in enumerate(rows, start=1):
        vals = table[col].to_numpy(dtype=float)
        if col.endswith("_ns"):
            scale, unit = duration_axis(vals)
            text = [format_quantity(v, "ns") for v in vals]
        else:
            scale, unit = 1.0, "%"
            text = [format_quantity(v, "%") for v in vals]
        fig.add_trace(go.Bar(x=table["rank"].astype(str), y=vals / scale, name=title, marker_color=colour,
                             customdata=text, hovertemplate="rank %{x}: %{customdata}<extra>" + title + "</extra>"),
                      row=i, col=1)
        fig.update_yaxes(title_text=unit, row=i, col=1, automargin=True)
    fig.update_xaxes(type="category")
    fig.update_xaxes(title_text="Rank", row=len(rows), col=1)
    fig = _finish(fig, "Each rank side by side", None, None, height=170 + 190 * len(rows))
    fig.update_layout(showlegend=False)  # each row is titled
    return fig


def collectives_figure(table: pd.DataFrame | None, origin_ns: int | None = None) -> go.Figure | None:
    """Bus bandwidth of every collective over time (from the trace start), one colour per collective type."""
    if not _has(table, "ts_ns", "busbw_gbps", "type"):
        return None
    t0 = int(origin_ns) if origin_ns is not None else int(table["ts_ns"].min())
    rel = table["ts_ns"].to_numpy(dtype=np.int64) - t0
    scale, unit = duration_axis(rel)
    fig = go.Figure()
    for typ, grp in table.assign(_rel=rel).groupby("type", observed=True):
        ok = grp["busbw_gbps"].notna()
        if not ok.any():
            continue
        grp = grp[ok]
        fig.add_trace(go.Scatter(x=grp["_rel"] / scale, y=grp["busbw_gbps"], mode="markers", name=str(typ),
                                 marker={"color": palette.colour_for(typ), "size": 8},
                                 customdata=[format_quantity(v, "bytes") for v in grp.get("bytes", [])]
                                 if "bytes" in grp.columns else None,
                                 hovertemplate="%{y:.3g} GB/s · %{customdata}<extra>" + str(typ) + "</extra>"))
    if not fig.data:
        return None
    return _finish(fig, "Collective bus bandwidth over time", f"Time from the first traced event ({unit})",
                   "Bus bandwidth (GB/s)")


def series_figure(table: pd.DataFrame | None, x: str, ys: Sequence[str], title: str,
                  origin_ns: int | None = None, group: str | None = None) -> go.Figure | None:
    """Line chart of columns ``ys`` over time column ``x`` (from the trace start); bytes in one binary unit;
    one line per value of ``group`` (e.g. rank) where the table has that column."""
    if table is None or table.empty or x not in table.columns:
        return None
    ys = [c for c in ys if c in table.columns and table[c].notna().any()]
    if not ys:
        return None
    t0 = int(origin_ns) if origin_ns is not None else int(table[x].min())
    rel = table[x].to_numpy(dtype=np.int64) - t0
    tscale, tunit = duration_axis([rel.max() if len(rel) else 0])
    is_bytes = all(c.endswith("_bytes") for c in ys)
    scale, unit = bytes_axis(table[ys].to_numpy(dtype=float)) if is_bytes else (1.0, "")
    fig = go.Figure()
    table = table.assign(_rel=rel)
    parts = table.groupby(group, observed=True, sort=True) if group and group in table.columns else [(None, table)]
    for key, part in parts:
        part = part.sort_values(x, kind="stable")
        for col in ys:
            words = [str(key)] if key is not None else []
            if len(ys) > 1 or not words:
                words.append(key_label(col))
            name = " · ".join(words)
            fig.add_trace(go.Scatter(x=part["_rel"].to_numpy() / tscale, y=part[col].to_numpy(dtype=float) / scale,
                                     mode="lines", name=name,
                                     line={"color": palette.colour_for(str(key))} if key is not None else None))
    return _finish(fig, title, f"Time from the first traced event ({tunit})", f"Size ({unit})" if unit else None)


def memory_figure(table: pd.DataFrame | None, origin_ns: int | None = None,
                  capacity_bytes: float | None = None) -> go.Figure | None:
    """Device memory over time from memory's ``timeline`` table: one line per device and measure, only those
    with data, in one binary unit, with the device's capacity as a dashed line when known."""
    measures = [c for c in ("allocated_bytes", "reserved_bytes", "used_bytes") if _has(table, "ts_ns", c)]
    if not measures:
        return None
    keys = [c for c in ("rank", "device_type", "device") if c in table.columns]
    scale, unit = bytes_axis(table[measures].to_numpy(dtype=float))
    t0 = int(origin_ns) if origin_ns is not None else int(table["ts_ns"].min())
    rel_all = table["ts_ns"].to_numpy(dtype=np.int64) - t0
    tscale, tunit = duration_axis([rel_all.max() if len(rel_all) else 0])
    fig = go.Figure()
    dash_of = {"allocated_bytes": "solid", "reserved_bytes": "dash", "used_bytes": "dot"}
    groups = table.groupby(keys, observed=True, sort=True) if keys else [((), table)]
    for key, grp in groups:
        key = key if isinstance(key, tuple) else (key,)
        device = " ".join(str(k) for k in key if str(k) not in ("", "-1", "nan")) or "device"
        grp = grp.sort_values("ts_ns", kind="stable")
        for col in measures:
            ok = grp[col].notna().to_numpy()
            if not ok.any():
                continue
            vals = grp[col].to_numpy(dtype=float)[ok]
            name = f"{device} · {key_label(col)}"
            fig.add_trace(go.Scatter(
                x=(grp["ts_ns"].to_numpy(dtype=np.int64)[ok] - t0) / tscale, y=vals / scale, mode="lines",
                name=name, line={"dash": dash_of[col], "color": palette.colour_for(device)},
                customdata=[format_quantity(v, "bytes") for v in vals],
                hovertemplate="%{customdata}<extra>" + name + "</extra>"))
    if not fig.data:
        return None
    if capacity_bytes:
        fig.add_hline(y=float(capacity_bytes) / scale, line_dash="dot", line_color="#c0392b",
                      annotation_text=f"capacity {format_quantity(capacity_bytes, 'bytes')}")
    return _finish(fig, "Device memory over time", f"Time from the first traced event ({tunit})", f"Memory ({unit})")


def heatmap_figure(table: pd.DataFrame | None, row: str, col: str, value: str, title: str,
                   row_order: str | None = None) -> go.Figure | None:
    """Heatmap of ``value`` over (``row`` × ``col``) from a long table, rows sorted by ``row_order``."""
    if not _has(table, row, col, value):
        return None
    wide = table.pivot_table(index=row, columns=col, values=value, aggfunc="sum", observed=True).fillna(0)
    if row_order is not None and row_order in table.columns:  # e.g. blocks.2 before blocks.10
        wide = wide.reindex(table.groupby(row, observed=True)[row_order].min().sort_values().index)
    fig = go.Figure(go.Heatmap(z=wide.to_numpy(dtype=float), x=[str(c) for c in wide.columns],
                               y=[str(i) for i in wide.index], colorscale="Viridis",
                               colorbar={"title": {"text": key_label(value)}},
                               hovertemplate=f"{key_label(row)} %{{y}} · {key_label(col)} %{{x}}: %{{z}}"
                                             "<extra></extra>"))
    fig.update_yaxes(autorange="reversed")  # first row (layer 0) on top, as people read a table
    return _finish(fig, title, key_label(col).capitalize(), key_label(row).capitalize(),
                   height=max(300, 60 + 18 * len(wide)))


def roofline_figure(points: pd.DataFrame | None, roofs: pd.DataFrame | None = None,
                    peak_flops: float | None = None, peak_bw: float | None = None) -> go.Figure | None:
    """Log-log roofline of roofline's ``ops`` table: ops at (intensity, achieved FLOP/s), sized by time,
    coloured by bound, with the roof of ``peak_flops``/``peak_bw`` (FLOP/s, bytes/s); axes fitted to the ops
    (and the ridge when it lies within a decade of them)."""
    if not _has(points, _ROOFLINE_X, _ROOFLINE_Y):
        return None
    xcol, ycol = _ROOFLINE_X, _ROOFLINE_Y
    pts = points[(points[xcol] > 0) & (points[ycol] > 0) & np.isfinite(points[xcol]) & np.isfinite(points[ycol])]
    if pts.empty:
        return None
    size_col = _ROOFLINE_SIZE if _ROOFLINE_SIZE in pts.columns else None
    bound_col = "bound" if "bound" in pts.columns else None
    name_col = "name" if "name" in pts.columns else None
    yscale, yunit = rate_axis(np.append(pts[ycol].to_numpy(dtype=float), peak_flops or 0.0), "FLOP")
    fig = go.Figure()
    size = None
    if size_col:
        d = pts[size_col].to_numpy(dtype=float)
        size = 6 + 30 * np.sqrt(d / d.max()) if len(d) and d.max() > 0 else None
    groups = pts.groupby(pts[bound_col].fillna("unknown"), observed=True) if bound_col else [("ops", pts)]
    for key, grp in groups:
        sz = None if size is None else size[pts.index.get_indexer(grp.index)]
        names = grp[name_col].astype(str) if name_col else pd.Series(["op"] * len(grp))
        times = [format_quantity(v, "ns") for v in grp[size_col]] if size_col else [""] * len(grp)
        fig.add_trace(go.Scatter(
            x=grp[xcol], y=grp[ycol] / yscale, mode="markers", name=f"{key}-bound" if key in ("memory", "compute")
            else str(key), marker={"size": sz if sz is not None else 8, "opacity": 0.7,
                                   "color": {"memory": "#ff7f0e", "compute": "#2ca02c"}.get(str(key), "#7f7f7f")},
            customdata=np.stack([[short_name(n, 80) for n in names], times], axis=1),
            hovertemplate="%{customdata[0]}<br>%{x:.3g} FLOP/B · %{y:.3g} " + yunit
                          + "<br>%{customdata[1]}<extra></extra>"))
    xs_data = pts[xcol].to_numpy(dtype=float)
    ys_data = pts[ycol].to_numpy(dtype=float) / yscale
    x_range, y_range = log_range(xs_data), log_range(ys_data)
    if peak_flops and peak_bw and np.isfinite(peak_flops) and np.isfinite(peak_bw) and peak_bw > 0:
        ridge = peak_flops / peak_bw
        if x_range[0] - 1 <= math.log10(ridge) <= x_range[1] + 1:  # show the ridge when it is near the ops
            x_range = [min(x_range[0], math.log10(ridge) - LOG_PAD_DECADES),
                       max(x_range[1], math.log10(ridge) + LOG_PAD_DECADES)]
        xs = np.logspace(x_range[0], x_range[1], 64)
        xs = np.unique(np.append(xs, ridge))
        xs = xs[(xs >= 10 ** x_range[0]) & (xs <= 10 ** x_range[1])]
        roof = np.minimum(xs * peak_bw, peak_flops)
        fig.add_trace(go.Scatter(x=xs, y=roof / yscale, mode="lines", name="roof", line={"color": "black"},
                                 hovertemplate="roof: %{y:.3g} " + yunit + "<extra></extra>"))
        y_range = [y_range[0], max(y_range[1], math.log10(peak_flops / yscale) + LOG_PAD_DECADES)]
        if 10 ** x_range[0] <= ridge <= 10 ** x_range[1]:
            fig.add_vline(x=ridge, line_dash="dot", annotation_text=f"ridge {ridge:.3g} FLOP/B")
    # Log axes where the ops span decades (they usually do); otherwise linear, fitted with a margin.
    for axis, values, rng in ((fig.update_xaxes, xs_data, x_range), (fig.update_yaxes, ys_data, y_range)):
        if _spans_decades(values):
            # A tick per decade (no "2 5" minor labels), small decades as powers of ten: plotly's SI prefixes
            # read "100µ" on a TFLOP/s axis.
            axis(type="log", range=rng, dtick=1, exponentformat="power")
        else:
            lo, hi = 10 ** rng[0], 10 ** rng[1]
            axis(type="linear", range=[max(0.0, lo - 0.05 * (hi - lo)), hi + 0.05 * (hi - lo)])
    return _finish(fig, "Roofline: achieved FLOP rate against arithmetic intensity",
                   "Arithmetic intensity (FLOP per byte moved)", f"Achieved rate ({yunit})", height=480)


#: Up to this many steps on a line chart get one tick each.
STEP_TICKS_MAX = 30


def lines_by_group(table: pd.DataFrame | None, x: str, y: str, group: str | Sequence[str], title: str,
                   y_title: str | None = None, x_title: str | None = None) -> go.Figure | None:
    """One line per group (e.g. per layer × policy) of ``y`` over ``x``."""
    groups = [group] if isinstance(group, str) else list(group)
    if not _has(table, x, y, *groups):
        return None
    fig = go.Figure()
    for key, grp in table.sort_values(x).groupby(groups, observed=True, sort=True):
        if not grp[y].notna().any():
            continue
        label = " · ".join(str(k) for k in (key if isinstance(key, tuple) else (key,)))
        fig.add_trace(go.Scatter(x=grp[x], y=grp[y].to_numpy(dtype=float), mode="lines+markers", name=label,
                                 line={"color": palette.colour_for(label)}))
    if not fig.data:
        return None
    if x == "step":  # steps are whole numbers: no 0.5 ticks between them
        fig.update_xaxes(tickformat="d", dtick=1 if table[x].nunique() <= STEP_TICKS_MAX else None)
    return _finish(fig, title, x_title or key_label(x).capitalize(), y_title or key_label(y).capitalize())


def before_after_figure(table: pd.DataFrame | None, x: str, before: str, after: str, title: str,
                        facet: str | None = None, y_title: str | None = None) -> go.Figure | None:
    """Grouped bars of ``before`` vs ``after`` per ``x`` (labels prefixed by ``facet`` when given)."""
    if not _has(table, x, before, after):
        return None
    labels = table[x].astype(str) if facet is None or facet not in table.columns \
        else table[facet].astype(str) + " · " + table[x].astype(str)
    fig = go.Figure([go.Bar(x=labels, y=table[before].to_numpy(dtype=float), name=key_label(before),
                            marker_color="#b0b0b0"),
                     go.Bar(x=labels, y=table[after].to_numpy(dtype=float), name=key_label(after),
                            marker_color="#1f77b4")])
    fig.update_xaxes(type="category")
    return _finish(fig, title, key_label(x).capitalize(), y_title or key_label(before).capitalize(), barmode="group")
