"""Dedicated figures drawn from specific analyzer tables (each returns None when its table is absent).

Figures only re-shape what an analyzer computed into plotly traces; they never derive new
measurements. When an analyzer's tables change shape, the figure is left out and the page still
shows the tables generically.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from torchscope.analyzers.core.result import Result

__all__ = [
    "gpu_time_figure", "step_phase_figure", "category_figure", "collectives_figure",
    "series_figure", "roofline_figure", "heatmap_figure", "bar_figure",
]

_LAYOUT = {"margin": {"l": 10, "r": 10, "t": 40, "b": 30}, "height": 360}
_GPU_PARTS = (("compute_pct", "compute", "#2ca02c"), ("communication_pct", "communication", "#9467bd"),
              ("memcpy_pct", "memcpy", "#ff7f0e"), ("memset_pct", "memset", "#8c564b"),
              ("idle_host_wait_pct", "idle: host wait", "#d62728"),
              ("idle_kernel_wait_pct", "idle: kernel wait", "#ff9896"),
              ("idle_other_pct", "idle: other", "#c7c7c7"))


#: Columns of training_loop's ``steps`` table that end in _ns but are not a phase.
_STEP_NOT_PHASES = ("start_ns", "step_ns")
#: Columns of roofline's ``ops`` table the roofline plot draws.
_ROOFLINE_X, _ROOFLINE_Y, _ROOFLINE_SIZE = "intensity_flop_per_byte", "achieved_flops_per_s", "time_ns"


def _has(df: pd.DataFrame | None, *cols: str) -> bool:
    return df is not None and not df.empty and all(c in df.columns for c in cols)


def gpu_time_figure(results: Sequence[Result]) -> go.Figure | None:
    """Stacked bars of the GPU time breakdown (% of window) per rank, from gpu_time summaries."""
    rows = [r for r in results if all(k in r.summary for k, _, _ in _GPU_PARTS[:3])]
    if not rows:
        return None
    ranks = [f"rank {r.rank}" for r in rows]
    fig = go.Figure()
    for key, label, colour in _GPU_PARTS:
        vals = [float(r.summary.get(key) or 0.0) for r in rows]
        fig.add_trace(go.Bar(y=ranks, x=vals, name=label, orientation="h", marker_color=colour,
                             hovertemplate="%{x:.1f}% of the window<extra>" + label + "</extra>"))
    fig.update_layout(barmode="stack", title="GPU time by rank (% of profiled window)", xaxis_title="%",
                      legend={"orientation": "h", "y": -0.35, "yanchor": "top", "x": 0},
                      **{**_LAYOUT, "height": 220 + 40 * len(rows), "margin": {"l": 10, "r": 10, "t": 40, "b": 90}})
    return fig


def step_phase_figure(table: pd.DataFrame | None, step_col: str = "step") -> go.Figure | None:
    """Stacked bars per step of phase durations, from training_loop's ``steps`` table (``<phase>_ns`` columns)."""
    if table is None or table.empty or step_col not in table.columns:
        return None
    cols = [c for c in table.columns if c.endswith("_ns") and c not in _STEP_NOT_PHASES]
    if not cols:
        return None
    wide = table.set_index(step_col)[cols]
    wide.columns = [c[:-3] for c in cols]
    fig = go.Figure()
    for phase in wide.columns:
        fig.add_trace(go.Bar(x=wide.index.astype(str), y=wide[phase].to_numpy() / 1e6, name=str(phase),
                             hovertemplate="step %{x}: %{y:.2f} ms<extra>" + str(phase) + "</extra>"))
    fig.update_layout(barmode="stack", title="Step time by phase (ms)", xaxis_title="step", yaxis_title="ms",
                      **_LAYOUT)
    return fig


def category_figure(table: pd.DataFrame | None, label_col: str, value_col: str, title: str) -> go.Figure | None:
    """A horizontal bar per category (e.g. kernel time per category)."""
    if not _has(table, label_col, value_col):
        return None
    t = table.sort_values(value_col)
    scale, unit = (1e6, "ms") if value_col.endswith("_ns") else (1.0, "")
    fig = go.Figure(go.Bar(y=t[label_col].astype(str), x=t[value_col].to_numpy(dtype=float) / scale,
                           orientation="h", marker_color="#2ca02c"))
    fig.update_layout(title=title, xaxis_title=unit or value_col, **{**_LAYOUT, "height": 120 + 24 * len(t)})
    return fig


def bar_figure(table: pd.DataFrame | None, x: str, y: str, title: str,
               colour_col: str | None = None) -> go.Figure | None:
    """Vertical bars of column ``y`` over ``x`` (optionally one series per value of ``colour_col``)."""
    if not _has(table, x, y):
        return None
    fig = go.Figure()
    groups = table.groupby(colour_col, observed=True) if colour_col and colour_col in table.columns else [(y, table)]
    for key, grp in groups:
        fig.add_trace(go.Bar(x=grp[x].astype(str), y=grp[y].to_numpy(dtype=float), name=str(key)))
    fig.update_layout(title=title, xaxis_title=x, yaxis_title=y, barmode="group", **_LAYOUT)
    return fig


def collectives_figure(table: pd.DataFrame | None) -> go.Figure | None:
    """Bus bandwidth of every collective over time, one colour per collective type."""
    if not _has(table, "ts_ns", "busbw_gbps", "type"):
        return None
    t0 = int(table["ts_ns"].min())
    fig = go.Figure()
    for typ, grp in table.groupby("type", observed=True):
        fig.add_trace(go.Scatter(x=(grp["ts_ns"] - t0) / 1e6, y=grp["busbw_gbps"], mode="markers", name=str(typ)))
    fig.update_layout(title="Collective bus bandwidth (GB/s) over time", xaxis_title="ms since first collective",
                      yaxis_title="GB/s", **_LAYOUT)
    return fig


def series_figure(table: pd.DataFrame | None, x: str, ys: Sequence[str], title: str,
                  x_is_ns: bool = True) -> go.Figure | None:
    """Line chart of columns ``ys`` over ``x`` (ns columns shown in ms / relative seconds)."""
    if table is None or table.empty or x not in table.columns:
        return None
    ys = [c for c in ys if c in table.columns]
    if not ys:
        return None
    xs = table[x].to_numpy()
    if x_is_ns and x.endswith("_ns"):
        xs = (xs.astype(np.int64) - int(xs.min())) / 1e9
    fig = go.Figure()
    for col in ys:
        fig.add_trace(go.Scatter(x=xs, y=table[col].to_numpy(dtype=float), mode="lines", name=col))
    fig.update_layout(title=title, xaxis_title="s" if x_is_ns and x.endswith("_ns") else x, **_LAYOUT)
    return fig


def heatmap_figure(table: pd.DataFrame | None, row: str, col: str, value: str, title: str,
                   row_order: str | None = None) -> go.Figure | None:
    """Heatmap of ``value`` over (``row`` × ``col``) from a long table, rows sorted by ``row_order``."""
    if not _has(table, row, col, value):
        return None
    wide = table.pivot_table(index=row, columns=col, values=value, aggfunc="sum", observed=True).fillna(0)
    if row_order is not None and row_order in table.columns:  # e.g. blocks.2 before blocks.10
        wide = wide.reindex(table.groupby(row, observed=True)[row_order].min().sort_values().index)
    fig = go.Figure(go.Heatmap(z=wide.to_numpy(dtype=float), x=[str(c) for c in wide.columns],
                               y=[str(i) for i in wide.index], colorscale="Viridis"))
    fig.update_layout(title=title, xaxis_title=col, yaxis_title=row,
                      **{**_LAYOUT, "height": max(300, 60 + 18 * len(wide))})
    fig.update_yaxes(autorange="reversed")  # first row (layer 0) on top, as people read a table
    return fig


def roofline_figure(points: pd.DataFrame | None, roofs: pd.DataFrame | None = None,
                    peak_flops: float | None = None, peak_bw: float | None = None) -> go.Figure | None:
    """Log-log roofline of roofline's ``ops`` table: ops at (intensity, achieved FLOP/s), sized by time,
    coloured by bound, with the roof of ``peak_flops``/``peak_bw`` (FLOP/s, bytes/s)."""
    if not _has(points, _ROOFLINE_X, _ROOFLINE_Y):
        return None
    xcol, ycol = _ROOFLINE_X, _ROOFLINE_Y
    size_col = _ROOFLINE_SIZE if _ROOFLINE_SIZE in points.columns else None
    bound_col = "bound" if "bound" in points.columns else None
    name_col = "name" if "name" in points.columns else None
    fig = go.Figure()
    pts = points[(points[xcol] > 0) & (points[ycol] > 0)]
    size = None
    if size_col:
        d = pts[size_col].to_numpy(dtype=float)
        size = 6 + 30 * np.sqrt(d / d.max()) if len(d) and d.max() > 0 else None
    groups = pts.groupby(pts[bound_col].fillna("unknown"), observed=True) if bound_col else [("ops", pts)]
    for key, grp in groups:
        sz = None if size is None else size[pts.index.get_indexer(grp.index)]
        fig.add_trace(go.Scatter(
            x=grp[xcol], y=grp[ycol], mode="markers", name=str(key),
            marker={"size": sz if sz is not None else 8, "opacity": 0.7},
            text=grp[name_col].astype(str) if name_col else None,
            hovertemplate="%{text}<br>intensity %{x:.3g}<br>%{y:.3g}<extra>" + str(key) + "</extra>"))
    if peak_flops and peak_bw:
        ridge = peak_flops / peak_bw
        lo = min(float(pts[xcol].min()), ridge) / 10 if len(pts) else ridge / 100
        hi = max(float(pts[xcol].max()), ridge) * 10 if len(pts) else ridge * 100
        xs = np.array([lo, ridge, hi])
        fig.add_trace(go.Scatter(x=xs, y=np.minimum(xs * peak_bw, peak_flops), mode="lines", name="roof",
                                 line={"color": "black"}))
        fig.add_vline(x=ridge, line_dash="dot", annotation_text=f"ridge {ridge:.3g}")
    fig.update_xaxes(type="log", title=xcol)
    fig.update_yaxes(type="log", title=ycol)
    fig.update_layout(title="Roofline", **{**_LAYOUT, "height": 480})
    return fig


def lines_by_group(table: pd.DataFrame | None, x: str, y: str, group: str | Sequence[str], title: str,
                   y_title: str | None = None) -> go.Figure | None:
    """One line per group (e.g. per layer × policy) of ``y`` over ``x``."""
    groups = [group] if isinstance(group, str) else list(group)
    if not _has(table, x, y, *groups):
        return None
    fig = go.Figure()
    for key, grp in table.sort_values(x).groupby(groups, observed=True, sort=True):
        label = " · ".join(str(k) for k in (key if isinstance(key, tuple) else (key,)))
        fig.add_trace(go.Scatter(x=grp[x], y=grp[y].to_numpy(dtype=float), mode="lines+markers", name=label))
    fig.update_layout(title=title, xaxis_title=x, yaxis_title=y_title or y, **_LAYOUT)
    return fig


def before_after_figure(table: pd.DataFrame | None, x: str, before: str, after: str, title: str,
                        facet: str | None = None) -> go.Figure | None:
    """Grouped bars of ``before`` vs ``after`` per ``x`` (labels prefixed by ``facet`` when given)."""
    if not _has(table, x, before, after):
        return None
    labels = table[x].astype(str) if facet is None or facet not in table.columns \
        else table[facet].astype(str) + " · " + table[x].astype(str)
    fig = go.Figure([go.Bar(x=labels, y=table[before].to_numpy(dtype=float), name=before),
                     go.Bar(x=labels, y=table[after].to_numpy(dtype=float), name=after)])
    fig.update_layout(title=title, barmode="group", **_LAYOUT)
    return fig
