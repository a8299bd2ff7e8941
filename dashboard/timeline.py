"""The Timeline view: lanes per rank and stream, server-side level of detail, downsampled counters.

Presentation only. `build_lanes` assigns each event to a lane once per loaded trace; for every
zoom `level_of_detail` keeps the events that are visible and at least one pixel wide and folds
the rest into per-pixel busy bins (fraction of the pixel's time covered), so the browser never
receives more than about (lanes × width) shapes. Counter series are cut to the window and
downsampled with MinMaxLTTB (tsdownsample) to a few points per pixel on the same time axis.
"""

from __future__ import annotations

import base64
import re
from dataclasses import dataclass

import numpy as np
import pandas as pd

from torchscope.analyzers.report.names import short_name
from torchscope.analyzers.report.units import format_duration_ns, format_timestamp_ns, key_label
from torchscope.analyzers.timeline.nesting import parents

from torchscope.dashboard import palette

__all__ = [
    "LaneIndex", "Detail", "build_lanes", "level_of_detail", "downsample_counter",
    "timeline_figure", "window_from_relayout", "counter_series", "MAX_VISIBLE_EVENTS", "COUNTER_POINTS_PER_PX",
    "DEFAULT_WIDTH_PX", "busy_heatmap", "typed_array", "decode_typed", "Flows", "flows_for", "flow_annotations",
    "MAX_FLOW_ARROWS",
]

#: Above this many visible (≥ 1 px) events, the shortest ones are folded into busy bins too.
MAX_VISIBLE_EVENTS = 12_000
#: Counter points kept per horizontal pixel after downsampling.
COUNTER_POINTS_PER_PX = 2
#: Plot width assumed when the browser has not reported one, px.
DEFAULT_WIDTH_PX = 1400
#: CPU slices nested deeper than this on a thread share the last depth lane.
MAX_CPU_DEPTH = 6
#: Bars at least this many px wide carry their (shortened) name.
LABEL_MIN_PX = 40
#: Names on bars are folded to this many characters.
LABEL_NAME_WIDTH = 40
#: Counters whose name says too little, with what their values mean.
COUNTER_TITLES = {"cpu_util_pct": "Process CPU use (% of one core: 200% = two cores busy)",
                  "rss_bytes": "Host memory of the process (RSS)"}
#: Counter rows below the lanes (one per counter name; further names are not drawn).
MAX_COUNTER_ROWS = 6
#: Height of one counter row, px.
COUNTER_ROW_PX = 90
#: Counter series kept when the window holds fewer points than this are sent untouched.
_MIN_DOWNSAMPLE_POINTS = 8

_STEP_PREFIX = "ProfilerStep#"
# (group order, label) for each event kind shown; kinds not listed are not drawn.
_GROUPS = {"step": 0, "phase": 1, "module": 2, "annotation": 3, "cpu": 4, "gpu": 5}
_KIND_GROUP = {
    "phase": "phase", "module": "module", "annotation": "annotation",
    "cpu_op": "cpu", "runtime": "cpu", "driver": "cpu", "cuda_sync": "cpu",
    "kernel": "gpu", "memcpy": "gpu", "memset": "gpu",
}
KIND_COLOURS = palette.KIND_COLOURS


@dataclass(frozen=True)
class LaneIndex:
    """Drawable events of one run as flat arrays, each assigned to a lane (rows of the timeline)."""

    labels: tuple[str, ...]
    lane: np.ndarray  # int32 lane code per event (index into labels)
    start_ns: np.ndarray  # int64, absolute
    end_ns: np.ndarray  # int64, absolute
    name: np.ndarray  # object: event name
    kind: np.ndarray  # object: normalised kind ("step" for ProfilerStep annotations)
    rank: np.ndarray  # int32
    origin_ns: int  # start of the first event: x = 0 on the axis
    span_end_ns: int  # end of the last event
    correlation: np.ndarray | None = None  # int64 launch<->GPU-work correlation id, -1 if none
    pid: np.ndarray | None = None  # int64 process of each event
    tid: np.ndarray | None = None  # int64 thread of each event

    def __len__(self) -> int:
        return len(self.lane)


@dataclass(frozen=True)
class Detail:
    """What one zoom window shows: indices of drawn events and per-pixel busy bins of the rest."""

    visible: np.ndarray  # int64 indices into the LaneIndex arrays
    bin_lane: np.ndarray  # int32 lane code per bin
    bin_start_ns: np.ndarray  # int64 start of the bin's pixel
    bin_busy: np.ndarray  # float64 in (0, 1]: fraction of the pixel covered by folded events
    ns_per_px: float
    folded: int  # number of events folded into bins
    bin_px: np.ndarray | None = None  # int64 pixel column of each bin (0 = the window's first pixel)


def build_lanes(events: pd.DataFrame, origin_ns: int | None = None) -> LaneIndex:
    """Assign every drawable event (steps, phases, modules, annotations, CPU ops, GPU work) to a lane.

    ``origin_ns`` is x = 0 on the time axis (the run's first event, as every page reads times); by
    default the first drawable event.
    """
    kinds = events["kind"].astype(str)
    names = events["name"].astype(str)
    group = kinds.map(_KIND_GROUP)
    is_step = (kinds == "annotation") & names.str.startswith(_STEP_PREFIX)
    group = group.where(~is_step, "step")
    keep = group.notna() & (events["dur_ns"].to_numpy() > 0)
    ev = events.loc[keep.to_numpy()]
    group = group[keep]
    kinds = kinds[keep].where(~is_step[keep], "step")
    rank = ev["rank"].to_numpy().astype(np.int64)
    tid = ev["tid"].to_numpy()
    stream = ev["stream"].to_numpy()
    device = ev["device"].to_numpy()
    pid = ev["pid"].to_numpy()
    grp = group.to_numpy()
    # Lane key: (rank, group order, sub key) — sub key is the thread (CPU) or device/stream (GPU).
    gorder = group.map(_GROUPS).to_numpy(dtype=np.int64) if len(grp) else np.zeros(0, np.int64)
    gpu = gorder == _GROUPS["gpu"]
    cpu = gorder == _GROUPS["cpu"]
    dev = np.where(device >= 0, device, pid)
    depth = _cpu_depth(ev, cpu)
    sub_a = np.where(gpu, dev, np.where(cpu, tid, 0))
    sub_b = np.where(gpu, np.where(stream >= 0, stream, tid), np.where(cpu, depth, 0))
    keys = pd.DataFrame({"rank": rank, "g": gorder, "a": sub_a, "b": sub_b})
    lane = keys.groupby(["rank", "g", "a", "b"], sort=True).ngroup().to_numpy().astype(np.int32)
    uniq = keys.drop_duplicates().sort_values(["rank", "g", "a", "b"])
    labels = tuple(_lane_label(r, g, a, b) for r, g, a, b in uniq.itertuples(index=False))
    start = ev["ts_ns"].to_numpy().astype(np.int64)
    end = start + ev["dur_ns"].to_numpy().astype(np.int64)
    origin = int(origin_ns) if origin_ns is not None else (int(start.min()) if len(start) else 0)
    span_end = int(end.max()) if len(end) else 0
    corr = ev["correlation"].to_numpy().astype(np.int64) if "correlation" in ev.columns \
        else np.full(len(ev), -1, np.int64)
    return LaneIndex(labels, lane, start, end, names[keep].to_numpy(dtype=object),
                     kinds.to_numpy(dtype=object), rank.astype(np.int32), origin, span_end,
                     corr, pid.astype(np.int64), tid.astype(np.int64))


#: Kinds that launch GPU work (the CPU side of a flow) and the GPU work they launch.
LAUNCH_KINDS = ("runtime", "driver")
GPU_KINDS = ("kernel", "memcpy", "memset")
#: Arrows drawn for one selected slice at most (an optimizer step can launch thousands of kernels).
MAX_FLOW_ARROWS = 60


@dataclass(frozen=True)
class Flows:
    """The CPU->GPU flows of one selected event: (launch, GPU work) index pairs into a LaneIndex."""

    event: int
    pairs: tuple[tuple[int, int], ...]  # the first MAX_FLOW_ARROWS, in launch order
    total: int  # every pair found (pairs may hold fewer)
    direction: str  # "launches" (a CPU slice or a launch call) | "launched by" (GPU work) | "" (neither)


def flows_for(index: LaneIndex, event: int, max_arrows: int = MAX_FLOW_ARROWS) -> Flows:
    """Launch -> GPU work pairs of ``event``: a launch call's kernels, a CPU slice's (every launch inside it
    on its thread), or for GPU work the call that launched it; matched by correlation id within the rank."""
    event = int(event)
    if index.correlation is None or not 0 <= event < len(index):
        return Flows(event, (), 0, "")
    kind, corr, rank = index.kind, index.correlation, index.rank
    if kind[event] in GPU_KINDS:
        direction = "launched by"
        if corr[event] < 0:
            return Flows(event, (), 0, direction)
        launch = np.flatnonzero(np.isin(kind, LAUNCH_KINDS) & (corr == corr[event]) & (rank == rank[event]))
        pairs = [(int(launch[0]), event)] if len(launch) else []
        return Flows(event, tuple(pairs), len(pairs), direction)
    if kind[event] not in LAUNCH_KINDS and kind[event] != "cpu_op":
        return Flows(event, (), 0, "")
    # The launch calls on the event's thread that start inside it (the call itself for a launch call).
    inside = (np.isin(kind, LAUNCH_KINDS) & (rank == rank[event]) & (index.pid == index.pid[event])
              & (index.tid == index.tid[event]) & (index.start_ns >= index.start_ns[event])
              & (index.start_ns <= index.end_ns[event]) & (corr >= 0))
    launches = np.flatnonzero(inside)
    gpu = np.flatnonzero(np.isin(kind, GPU_KINDS) & (rank == rank[event]) & (corr >= 0))
    if not len(launches) or not len(gpu):
        return Flows(event, (), 0, "launches")
    by_corr = pd.Series(gpu, index=corr[gpu])
    by_corr = by_corr[~by_corr.index.duplicated(keep="first")]
    pos = by_corr.index.get_indexer(corr[launches])
    found = pos >= 0
    pairs = sorted(zip(launches[found].tolist(), by_corr.to_numpy()[pos[found]].tolist()),
                   key=lambda p: index.start_ns[p[0]])
    return Flows(event, tuple((int(a), int(b)) for a, b in pairs[:max_arrows]), len(pairs), "launches")


def flow_annotations(index: LaneIndex, flows: Flows) -> list[dict]:
    """Plotly arrows for ``flows``: from each launch's start to its GPU work's start (ms since the origin)."""
    out = []
    for src, dst in flows.pairs:
        out.append({"x": (int(index.start_ns[dst]) - index.origin_ns) / 1e6, "y": index.labels[index.lane[dst]],
                    "ax": (int(index.start_ns[src]) - index.origin_ns) / 1e6, "ay": index.labels[index.lane[src]],
                    "xref": "x", "yref": "y", "axref": "x", "ayref": "y", "showarrow": True, "arrowhead": 2,
                    "arrowsize": 1, "arrowwidth": 1.5, "arrowcolor": FLOW_COLOUR, "text": "", "standoff": 2,
                    "name": "flow"})
    return out


#: Flow arrows' colour (dark, to read over every kind's colour).
FLOW_COLOUR = "#c0392b"


def _cpu_depth(ev: pd.DataFrame, cpu: np.ndarray) -> np.ndarray:
    """Nesting depth of each CPU slice on its thread (0 = outermost), capped at MAX_CPU_DEPTH - 1."""
    depth = np.zeros(len(ev), dtype=np.int64)
    idx = np.flatnonzero(cpu)
    if not len(idx):
        return depth
    spans = pd.DataFrame({"ts_ns": ev["ts_ns"].to_numpy()[idx], "dur_ns": ev["dur_ns"].to_numpy()[idx],
                          "pid": ev["pid"].to_numpy()[idx], "tid": ev["tid"].to_numpy()[idx]})
    parent = parents(spans)
    d = np.zeros(len(idx), dtype=np.int64)
    up = parent.copy()
    while (up >= 0).any():  # one pass per level of the deepest stack
        has = up >= 0
        d[has] += 1
        up = np.where(has, parent[np.maximum(up, 0)], -1)
    depth[idx] = np.minimum(d, MAX_CPU_DEPTH - 1)
    return depth


def _lane_label(rank: int, g: int, a: int, b: int) -> str:
    group = [k for k, v in _GROUPS.items() if v == g][0]
    if group == "cpu":
        if b == MAX_CPU_DEPTH - 1:
            return f"rank {rank} · CPU thread {a} · depth {b}+"
        return f"rank {rank} · CPU thread {a}" + (f" · depth {b}" if b else "")
    if group == "gpu":
        return f"rank {rank} · GPU {a} stream {b}"
    return f"rank {rank} · {group}s"


def level_of_detail(start_ns: np.ndarray, end_ns: np.ndarray, lane: np.ndarray, n_lanes: int,
                    t0_ns: int, t1_ns: int, width_px: int, *,
                    max_visible: int = MAX_VISIBLE_EVENTS) -> Detail:
    """Events of window [t0_ns, t1_ns) that are ≥ 1 px wide at ``width_px``; the rest as busy bins."""
    width_px = max(int(width_px), 1)
    t0_ns, t1_ns = int(t0_ns), int(t1_ns)
    if t1_ns <= t0_ns:
        t1_ns = t0_ns + 1
    ns_per_px = (t1_ns - t0_ns) / width_px
    in_view = (end_ns > t0_ns) & (start_ns < t1_ns)
    idx = np.flatnonzero(in_view)
    s = np.maximum(start_ns[idx], t0_ns)
    e = np.minimum(end_ns[idx], t1_ns)
    wide = (e - s) >= ns_per_px
    visible = idx[wide]
    fold = idx[~wide]
    if len(visible) > max_visible:  # keep the longest, fold the rest
        clipped = np.minimum(end_ns[visible], t1_ns) - np.maximum(start_ns[visible], t0_ns)
        order = np.argsort(-clipped, kind="stable")
        fold = np.concatenate([fold, visible[order[max_visible:]]])
        visible = np.sort(visible[order[:max_visible]])
    bin_lane, bin_px, busy = _busy_bins(start_ns[fold], end_ns[fold], lane[fold], n_lanes,
                                        t0_ns, ns_per_px, width_px)
    bin_start = (t0_ns + bin_px * ns_per_px).astype(np.int64)
    return Detail(visible.astype(np.int64), bin_lane, bin_start, busy, ns_per_px, int(len(fold)), bin_px)


def _busy_bins(start_ns: np.ndarray, end_ns: np.ndarray, lane: np.ndarray, n_lanes: int,
               t0_ns: int, ns_per_px: float, width_px: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(lane, pixel column, fraction of the pixel covered by the given events, clipped to 1) per busy pixel."""
    if len(start_ns) == 0 or n_lanes == 0:
        return np.zeros(0, np.int32), np.zeros(0, np.int64), np.zeros(0, np.float64)
    w = width_px
    a = np.clip((start_ns - t0_ns) / ns_per_px, 0.0, w)
    b = np.clip((end_ns - t0_ns) / ns_per_px, 0.0, w)
    # Covered length up to pixel edge k: C(k) = R_a(k) - R_b(k), R_x(k) = Σ_{x_i < k} (k - x_i).
    stride = w + 2
    grid = np.arange(w + 2, dtype=np.float64)

    def ramp(x: np.ndarray) -> np.ndarray:
        slot = lane.astype(np.int64) * stride + (np.floor(x).astype(np.int64) + 1)
        cnt = np.bincount(slot, minlength=n_lanes * stride).reshape(n_lanes, stride).cumsum(axis=1)
        tot = np.bincount(slot, weights=x, minlength=n_lanes * stride).reshape(n_lanes, stride).cumsum(axis=1)
        return grid * cnt - tot

    covered = ramp(a) - ramp(b)  # (n_lanes, w + 2): covered px up to each edge
    per_px = np.diff(covered[:, : w + 1], axis=1)  # (n_lanes, w)
    per_px = np.clip(per_px, 0.0, 1.0)
    lanes_i, px = np.nonzero(per_px > 1e-9)
    busy = per_px[lanes_i, px]
    return lanes_i.astype(np.int32), px.astype(np.int64), busy


def downsample_counter(ts_ns: np.ndarray, values: np.ndarray, t0_ns: int, t1_ns: int,
                       n_out: int) -> np.ndarray:
    """Indices of the points of one sorted counter series to draw in [t0_ns, t1_ns] (MinMaxLTTB)."""
    ts_ns = np.asarray(ts_ns)
    values = np.asarray(values, dtype=np.float64)
    lo = max(int(np.searchsorted(ts_ns, t0_ns, side="left")) - 1, 0)
    hi = min(int(np.searchsorted(ts_ns, t1_ns, side="right")) + 1, len(ts_ns))
    idx = np.arange(lo, hi)
    idx = idx[np.isfinite(values[idx])]
    n_out = max(int(n_out), _MIN_DOWNSAMPLE_POINTS)
    if len(idx) <= n_out:
        return idx
    from tsdownsample import MinMaxLTTBDownsampler

    chosen = MinMaxLTTBDownsampler().downsample(ts_ns[idx].astype(np.int64), values[idx], n_out=n_out)
    return idx[np.asarray(chosen, dtype=np.int64)]


def counter_series(counters: pd.DataFrame) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Counter events as sorted (ts_ns, value) arrays keyed "rank R · name.series"."""
    out: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    if counters is None or counters.empty:
        return out
    for (rank, name, series), grp in counters.groupby(["rank", "name", "series"], observed=True, sort=True):
        grp = grp.sort_values("ts_ns", kind="stable")
        plain = str(series) in ("", str(name), "value")
        label = f"rank {rank} · {name}" if plain else f"rank {rank} · {name}.{series}"
        out[label] = (grp["ts_ns"].to_numpy().astype(np.int64), grp["value"].to_numpy().astype(np.float64))
    return out


def timeline_figure(index: LaneIndex, counters: dict[str, tuple[np.ndarray, np.ndarray]],
                    t0_ns: int | None = None, t1_ns: int | None = None,
                    width_px: int = DEFAULT_WIDTH_PX, lanes: tuple[int, ...] | None = None) -> dict:
    """The timeline figure for one window, as plotly figure JSON: event bars, busy bins, counters below (ms).

    Built as plain dicts with numeric arrays base64-typed (what plotly.js reads directly) rather than
    through plotly.py's validated objects, which cost most of a zoom's server time.
    """
    t0 = index.origin_ns if t0_ns is None else int(t0_ns)
    t1 = index.span_end_ns if t1_ns is None else int(t1_ns)
    if t1 <= t0:
        t1 = t0 + 1
    labels = index.labels
    if lanes is not None:
        keep_lane = np.zeros(max(len(labels), 1), dtype=bool)
        keep_lane[list(lanes)] = True
        sel = np.flatnonzero(keep_lane[index.lane]) if len(index) else np.zeros(0, np.int64)
    else:
        sel = np.arange(len(index))
    detail = level_of_detail(index.start_ns[sel], index.end_ns[sel], index.lane[sel], len(labels), t0, t1, width_px)
    drawn = sel[detail.visible]
    shown_lanes = sorted(set(index.lane[sel].tolist())) if lanes is None else sorted(lanes)
    groups = sorted({label.split(" · ", 1)[-1] for label in counters})[:MAX_COUNTER_ROWS]
    lane_px = max(240, 26 * len(shown_lanes) + 60)
    heights = [lane_px] + [COUNTER_ROW_PX] * len(groups)
    counter_scales = {g: _counter_scale(g, [v for k, (_, v) in counters.items() if k.split(" · ", 1)[-1] == g])
                      for g in groups}
    layout = _rows_layout(heights, [counter_title(g, counter_scales[g][1]) for g in groups])
    origin = index.origin_ns
    data: list[dict] = []

    def ms(ns: np.ndarray | int) -> np.ndarray:
        return (np.asarray(ns, dtype=np.float64) - origin) / 1e6

    n_lanes = max(len(shown_lanes), 1)
    if len(detail.bin_busy):
        data.append(busy_heatmap(detail, labels, list(reversed(shown_lanes)), float(ms(t0)), width_px))
        layout[BUSY_AXIS.replace("y", "yaxis", 1)] = {"overlaying": "y", "range": [-0.5, n_lanes - 0.5],
                                                      "fixedrange": True, "visible": False}
    kinds = index.kind[drawn]
    px_per_ns = width_px / max(t1 - t0, 1)
    for kind in [k for k in KIND_COLOURS if k in set(kinds.tolist())]:
        pick = drawn[kinds == kind]
        start_ns, end_ns = index.start_ns[pick], index.end_ns[pick]
        names = index.name[pick]
        wide = (np.minimum(end_ns, t1) - np.maximum(start_ns, t0)) * px_per_ns >= LABEL_MIN_PX
        # Hover: the name, where the slice starts (from the first event) and how long it lasted.
        # The event's index last: a click on the bar names the event whose flows to draw.
        hover = [[str(n), format_timestamp_ns(int(a), origin), format_duration_ns(int(b - a)), int(i)]
                 for n, a, b, i in zip(names, start_ns, end_ns, pick)]
        colour = [palette.phase_colour(n) for n in names] if kind == "phase" else KIND_COLOURS[kind]
        # A slice crossing an edge of the window is drawn from (or to) that edge, so its label, anchored at
        # the bar's start, shows (a step lasting the whole window read blank); the hover keeps its real start
        # and length, and the next zoom or pan draws it again for its window.
        shown_start = np.where((start_ns < t0) & (end_ns > t0), t0, start_ns)
        shown_end = np.where((start_ns < t1) & (end_ns > t1), t1, end_ns)
        data.append({
            "type": "bar", "orientation": "h", "base": typed_array(ms(shown_start)),
            "x": typed_array((shown_end - shown_start) / 1e6), "y": [labels[c] for c in index.lane[pick]],
            "xaxis": "x", "yaxis": "y", "name": KIND_LABELS.get(kind, kind),
            "marker": {"color": colour, "line": {"width": 0}},
            "text": [short_name(n, LABEL_NAME_WIDTH) if w else "" for n, w in zip(names, wide)],
            "textposition": "inside", "insidetextanchor": "start", "textfont": {"color": "#ffffff", "size": 10},
            "customdata": hover,
            "hovertemplate": "<b>%{customdata[0]}</b><br>start %{customdata[1]} · lasted %{customdata[2]}"
                             "<extra>" + KIND_LABELS.get(kind, kind) + "</extra>",
        })
    n_out = max(width_px * COUNTER_POINTS_PER_PX, _MIN_DOWNSAMPLE_POINTS)
    for label, (ts, vals) in counters.items():
        group = label.split(" · ", 1)[-1]
        if group not in groups:
            continue
        scale = counter_scales[group][0]
        pick = downsample_counter(ts, vals, t0, t1, n_out)
        row = 2 + groups.index(group)
        data.append({"type": "scatter", "x": typed_array(ms(ts[pick])), "y": typed_array(vals[pick] / scale),
                     "xaxis": f"x{row}", "yaxis": f"y{row}", "mode": "lines", "name": label.split(" · ", 1)[0],
                     "line": {"width": 1}, "showlegend": False,
                     "hovertemplate": "%{y:.4g} " + counter_scales[group][1] + "<extra>" + label + "</extra>"})
    x_range = [float(ms(t0)), float(ms(t1))]
    for r in range(1, len(heights) + 1):
        layout["xaxis" if r == 1 else f"xaxis{r}"]["range"] = x_range
    layout["xaxis" if len(heights) == 1 else f"xaxis{len(heights)}"]["title"] = {
        "text": "Time since the first event (ms)"}
    # Every lane of the run stays on the axis at every zoom, in the same place (a fixed range).
    layout["yaxis"].update({"categoryorder": "array", "categoryarray": [labels[c] for c in reversed(shown_lanes)],
                            "type": "category", "range": [-0.5, n_lanes - 0.5], "fixedrange": True})
    layout.update(
        barmode="overlay", bargap=0.25, height=sum(heights) + 110, uniformtext={"minsize": 8, "mode": "hide"},
        margin={"l": 10, "r": 10, "t": 30, "b": 40}, uirevision="timeline", template=TIMELINE_TEMPLATE,
        legend={"orientation": "h", "y": 1.0, "yanchor": "bottom", "x": 0},
        meta={"t0_ns": t0, "t1_ns": t1, "origin_ns": int(origin), "drawn": int(len(drawn)),
              "folded": int(detail.folded), "lanes": [labels[c] for c in shown_lanes], "counter_rows": groups},
    )
    return {"data": data, "layout": layout}


def _rows_layout(heights: list[int], titles: list[str]) -> dict:
    """Axes of rows stacked top to bottom sharing one time axis (as plotly's make_subplots lays them out),
    with each row below the first titled at its top left."""
    n = len(heights)
    spacing = min(0.04, 0.3 / n) if n > 1 else 0.0
    usable = 1.0 - spacing * (n - 1)
    layout: dict = {"annotations": []}
    top = 1.0
    for r, h in enumerate(heights, start=1):
        bottom = max(top - usable * h / sum(heights), 0.0)
        x, y = ("xaxis", "yaxis") if r == 1 else (f"xaxis{r}", f"yaxis{r}")
        layout[x] = {"anchor": "y" if r == 1 else f"y{r}", "domain": [0.0, 1.0]}
        if r < n:
            layout[x].update(matches=f"x{n}", showticklabels=False)
        layout[y] = {"anchor": "x" if r == 1 else f"x{r}", "domain": [bottom, top]}
        if r > 1:
            layout["annotations"].append({"text": titles[r - 2], "font": {"size": 11}, "showarrow": False,
                                          "x": 0, "xanchor": "left", "xref": "paper", "y": top,
                                          "yanchor": "bottom", "yref": "paper"})
        top = bottom - spacing
    return layout


#: plotly.js typed-array codes of the numpy dtypes figures are sent in.
_TYPED_CODES = {np.dtype(np.float64): "f8", np.dtype(np.float32): "f4", np.dtype(np.int32): "i4",
                np.dtype(np.uint8): "u1", np.dtype(np.int16): "i2", np.dtype(np.uint32): "u4"}


def typed_array(values: np.ndarray) -> dict:
    """A numeric array as plotly.js's base64 typed array ({"dtype", "bdata"[, "shape"]}); int64 as float64."""
    arr = np.asarray(values)
    if arr.dtype not in _TYPED_CODES:
        arr = arr.astype(np.float64)
    arr = np.ascontiguousarray(arr)
    out = {"dtype": _TYPED_CODES[arr.dtype], "bdata": base64.b64encode(arr.tobytes()).decode("ascii")}
    if arr.ndim > 1:
        out["shape"] = ", ".join(str(d) for d in arr.shape)
    return out


def decode_typed(value: object) -> np.ndarray:
    """The numpy array of a `typed_array` (or of a plain list)."""
    if isinstance(value, dict) and "bdata" in value:
        codes = {v: k for k, v in _TYPED_CODES.items()}
        arr = np.frombuffer(base64.b64decode(value["bdata"]), dtype=codes[value["dtype"]])
        if "shape" in value:
            arr = arr.reshape([int(d) for d in str(value["shape"]).split(",")])
        return arr
    return np.asarray(value)


#: Busy bins' colour by percent of the pixel busy: none transparent, then the folded events' grey from
#: faint (a sliver of the pixel busy) to solid.
BUSY_COLOURSCALE = [[0.0, "rgba(68,68,68,0)"], [0.01, "rgba(68,68,68,0.15)"], [1.0, "rgba(68,68,68,1.0)"]]
#: Image rows per lane of the busy-bin image: three rows of bins and one empty (the gap between lanes,
#: as bars leave it: bargap 0.25). The image is drawn unsmoothed (assets/style.css: pixelated).
BUSY_ROWS_PER_LANE = 4
#: The hidden numeric y axis the busy-bin image is drawn on, over the lanes' category axis.
BUSY_AXIS = "y99"


def busy_heatmap(detail: Detail, labels: tuple[str, ...], rows: list[int], x0_ms: float, width_px: int) -> dict:
    """The folded events as one image: lanes ``rows`` bottom first, a column per pixel, shade = % of the pixel busy.

    One heatmap drawn as a bitmap (``zsmooth="fast"``) instead of a bar per (lane, pixel): thousands of
    bars, or a heatmap drawn brick by brick, cost the browser most of a zoom's time. The image sits on
    its own numeric y axis (BUSY_AXIS, lane k centred on k as on the category axis), each lane
    BUSY_ROWS_PER_LANE image rows tall, the bins where the lane's bars are and the last row empty.
    Values are whole percents in uint8 (0 = nothing folded).
    """
    n = BUSY_ROWS_PER_LANE
    pos = np.full(max(len(labels), 1), -1, dtype=np.int64)
    pos[np.asarray(rows, dtype=np.int64)] = np.arange(len(rows))
    z = np.zeros((len(rows) * n, max(int(width_px), 1)), dtype=np.uint8)
    keep = pos[detail.bin_lane] >= 0
    pct = np.clip(np.ceil(detail.bin_busy[keep] * 100), 1, 100).astype(np.uint8)
    lane_pos, px = pos[detail.bin_lane[keep]], detail.bin_px[keep]
    for sub in range(n - 1):  # rows k - 3/8 .. k + 3/8 of lane k; the last row is the gap to lane k + 1
        z[lane_pos * n + sub, px] = pct
    ms_per_px, dy = detail.ns_per_px / 1e6, 1.0 / n
    return {"type": "heatmap", "z": typed_array(z), "x0": x0_ms + ms_per_px / 2, "dx": ms_per_px,
            "y0": -0.375 + dy / 2, "dy": dy, "xaxis": "x", "yaxis": BUSY_AXIS, "name": "sub-pixel busy",
            "colorscale": BUSY_COLOURSCALE, "zmin": 0, "zmax": 100, "showscale": False, "showlegend": False,
            "zsmooth": "fast", "hovertemplate": "busy %{z}% of this pixel<extra>folded</extra>"}


#: The few looks of plotly's default template the timeline uses: sent with every zoom, the full template
#: (every trace type's defaults, ~10 kB) would be parsed and applied by the browser each time.
TIMELINE_TEMPLATE = {"layout": {
    "font": {"color": "#2a3f5f"}, "paper_bgcolor": "white", "plot_bgcolor": "#E5ECF6", "hoverlabel": {"align": "left"},
    "xaxis": {"gridcolor": "white", "linecolor": "white", "zerolinecolor": "white", "ticks": "", "automargin": True},
    "yaxis": {"gridcolor": "white", "linecolor": "white", "zerolinecolor": "white", "ticks": "", "automargin": True}}}

#: Event kinds as the legend names them.
KIND_LABELS = {"step": "step", "phase": "phase", "module": "module", "annotation": "annotation", "cpu_op": "CPU op",
               "runtime": "CUDA runtime", "driver": "CUDA driver", "cuda_sync": "CUDA sync", "kernel": "kernel",
               "memcpy": "memcpy", "memset": "memset"}


def _counter_scale(name: str, series: list) -> tuple[float, str]:
    """(divisor, unit) a counter row is drawn in: bytes in one binary unit, % as %, others as recorded."""
    base = name.split(".", 1)[0]
    if base.endswith("_bytes"):
        from torchscope.dashboard.figures import bytes_axis

        return bytes_axis(np.concatenate(series) if series else [])
    if base.endswith("_pct"):
        return 1.0, "%"
    for suffix, unit in (("_w", "W"), ("_mhz", "MHz"), ("_c", "°C")):
        if base.endswith(suffix):
            return 1.0, unit
    return 1.0, ""


def counter_title(name: str, unit: str) -> str:
    """A counter row's title in words with its unit ("Process CPU use (% of one core ...)", "Power (W)")."""
    base, _, series = name.partition(".")
    words = COUNTER_TITLES.get(base) or key_label(base).capitalize()
    if unit and unit not in words:
        words = f"{words} ({unit})"
    return f"{words} · {series}" if series else words


def window_from_relayout(relayout: dict | None, origin_ns: int) -> tuple[int, int] | str | None:
    """The zoom window (absolute ns) a plotly relayout event asks for; "full" on autorange; None if no zoom."""
    if not relayout:
        return None
    axes = sorted({k.split(".", 1)[0] for k in relayout if re.match(r"^xaxis\d*\.", k)},
                  key=lambda a: int(a[5:] or 0))
    for axis in axes:
        if relayout.get(f"{axis}.autorange"):
            return "full"
        lo, hi = relayout.get(f"{axis}.range[0]"), relayout.get(f"{axis}.range[1]")
        whole = relayout.get(f"{axis}.range")
        if lo is None and isinstance(whole, (list, tuple)) and len(whole) == 2:
            lo, hi = relayout[f"{axis}.range"]
        if lo is None or hi is None:
            continue
        try:
            lo_ms, hi_ms = float(lo), float(hi)
        except (TypeError, ValueError):
            return None
        if not (np.isfinite(lo_ms) and np.isfinite(hi_ms)):
            return None
        lo_ms, hi_ms = min(lo_ms, hi_ms), max(lo_ms, hi_ms)
        t0 = origin_ns + int(round(lo_ms * 1e6))
        t1 = origin_ns + int(round(hi_ms * 1e6))
        return (t0, max(t1, t0 + 1))
    return None
