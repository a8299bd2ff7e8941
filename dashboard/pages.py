"""Page layouts: each page is a layout over analyzer Results of the chosen run (never an analysis).

`PAGES` lists the pages in navigation order. `render_page` builds the page body for a loaded
run; pages a run cannot fill say "not available for this run: <reason>" with the reason from
`Report.skipped` (or the analyzer's error).
"""

from __future__ import annotations

import datetime as _dt
from dataclasses import dataclass
from typing import Callable
from urllib.parse import urlencode

import pandas as pd
from dash import dcc, html

from torchscope.analyzers.core.findings import SEVERITIES
from torchscope.analyzers.core.registry import REGISTRY
from torchscope.analyzers.core.report import Report
from torchscope.analyzers.report.units import format_bytes, format_for_key, format_quantity

from torchscope.dashboard import figures
from torchscope.dashboard.result_view import analyzer_section, findings_list, not_available, table_view
from torchscope.dashboard.run_cache import LoadedRun, RunCache
from torchscope.dashboard.timeline import DEFAULT_WIDTH_PX, build_lanes, counter_series, timeline_figure

__all__ = ["PAGES", "PAGE_ANALYZERS", "PageContext", "render_page", "runs_page", "progress_view",
           "param_dropdown", "TOP_FINDINGS", "timeline_for", "filter_findings",
           "required_analyzers", "findings_count"]

PAGES: tuple[tuple[str, str], ...] = (
    ("runs", "Runs"), ("overview", "Overview"), ("timeline", "Timeline"), ("kernels", "Kernels"),
    ("communication", "Communication"), ("memory", "Memory"), ("power", "Power/energy"),
    ("roofline", "Roofline"), ("moe", "MoE"), ("compare", "Compare"), ("recommendations", "Recommendations"),
)
#: Analyzers each page shows (besides any registered analyzer whose spec names that page).
PAGE_ANALYZERS: dict[str, tuple[str, ...]] = {
    "overview": ("training_loop", "gpu_time"),
    "kernels": ("kernels",),
    "communication": ("communication", "stragglers"),
    "memory": ("memory",),
    "power": ("power",),
    "roofline": ("roofline",),
    "moe": ("moe",),
}
#: Findings shown on the Overview.
TOP_FINDINGS = 5


@dataclass(frozen=True)
class PageContext:
    """What a page renders from: the run (and the second run on Compare), the rank, the query."""

    run: LoadedRun
    rank: int | None
    query: dict
    cache: RunCache
    run_b: LoadedRun | None = None
    width_px: int = DEFAULT_WIDTH_PX  # estimated plot width in the browser

    @property
    def run_query(self) -> str:
        """Query string that selects this run and rank (for links)."""
        q = {"run": self.run.entry.run_id}
        if self.rank is not None:
            q["rank"] = str(self.rank)
        return urlencode(q)


def required_analyzers(page: str) -> set[str] | None:
    """Analyzers ``page`` waits for before it renders (None: all of them; empty: none)."""
    if page == "timeline":
        return set()
    if page in ("recommendations", "compare"):
        return None
    return set(page_analyzers(page))


def page_analyzers(page: str) -> list[str]:
    """Analyzer names shown on ``page``: the fixed list plus any registered analyzer pointing at it."""
    names = list(PAGE_ANALYZERS.get(page, ()))
    for name, spec in REGISTRY.items():
        if spec.page == page and name not in names:
            names.append(name)
    return names


def param_dropdown(name: str, options: list[dict], value: object, label: str, clearable: bool = False) -> html.Div:
    """A picker whose value is written to the URL query (``name=value``) by the app's callback."""
    return html.Div([
        html.Label(label, htmlFor=f"param-{name}"),
        dcc.Dropdown(id={"type": "param", "name": name}, options=options, value=value,
                     clearable=clearable, style={"minWidth": "260px"}),
    ], className="param")


def _graph(fig, graph_id: str):
    return dcc.Graph(id=graph_id, figure=fig, config={"displaylogo": False}) if fig is not None else None


def _results(report: Report, name: str, rank: int | None) -> list:
    return [r for r in report.results if r.analyzer == name and (rank is None or r.rank in (rank, None))]


def _first_table(report: Report, name: str, table: str, rank: int | None) -> pd.DataFrame | None:
    for r in _results(report, name, rank):
        if table in r.tables:
            return r.tables[table]
    return None


def timeline_for(run: LoadedRun, rank: int | None, t0_ns: int | None, t1_ns: int | None, width_px: int):
    """The timeline figure of ``run`` (one rank or all) for a window, from the run's memoised lanes."""
    def lanes():
        events = pd.concat([t.events for t in run.traces], ignore_index=True) if len(run.traces) > 1 \
            else run.traces[0].events
        return build_lanes(events)

    def counters():
        frames = [t.counters for t in run.traces if t.counters is not None and not t.counters.empty]
        return counter_series(pd.concat(frames, ignore_index=True) if frames else None)

    index = run.memoised("timeline-lanes", lanes)
    series = run.memoised("timeline-counters", counters)
    lane_sel = None
    if rank is not None:
        lane_sel = tuple(i for i, label in enumerate(index.labels) if label.startswith(f"rank {rank} ·"))
        series = {k: v for k, v in series.items() if k.startswith(f"rank {rank} ·")}
    return timeline_figure(index, series, t0_ns, t1_ns, width_px, lane_sel)


# -- pages ---------------------------------------------------------------------------------------

def overview_page(ctx: PageContext) -> list:
    """Step time by phase, GPU time per rank, top findings."""
    rep = ctx.run.report
    blocks: list = []
    fig = figures.step_phase_figure(_first_table(rep, "training_loop", "steps", ctx.rank))
    blocks.append(_graph(fig, "overview-steps"))
    gfig = figures.gpu_time_figure(_results(rep, "gpu_time", ctx.rank))
    blocks.append(_graph(gfig, "overview-gpu"))
    top = [f for f in rep.findings if ctx.rank is None or f.rank in (ctx.rank, None)][:TOP_FINDINGS]
    blocks += [html.H3("Top findings"), findings_list(top, ctx.run_query)]
    if ctx.run.pending:
        blocks.append(html.Div(f"still analyzing: {', '.join(ctx.run.pending)} (this page updates when done)",
                               className="muted", id="still-analyzing"))
    blocks += [analyzer_section(rep, n, ctx.rank, ctx.run_query) for n in page_analyzers("overview")]
    return blocks


def timeline_page(ctx: PageContext) -> list:
    """Lanes per rank and stream plus counters; zooming re-renders at the new level of detail."""
    fig = timeline_for(ctx.run, ctx.rank, None, None, ctx.width_px)
    meta = fig.layout.meta or {}
    return [
        html.Div([
            html.A("Open in Perfetto (download annotated trace)", id="perfetto-export",
                   href=f"/download/perfetto?{urlencode({'run': ctx.run.entry.run_id})}",
                   className="button"),
            html.Span(" then drag the file into ui.perfetto.dev", className="muted"),
            html.Button("reset zoom", id="timeline-reset", className="button"),
        ], className="toolbar"),
        html.Div(f"{meta.get('drawn', 0)} events drawn, {meta.get('folded', 0)} folded into busy bins",
                 id="timeline-stats", className="muted"),
        dcc.Graph(id="timeline-graph", figure=fig, config={"displaylogo": False, "scrollZoom": False}),
        dcc.Store(id="timeline-request"),
    ]


def generic_page(page: str) -> Callable[[PageContext], list]:
    """A page that shows its analyzers' Results (with the dedicated figures that exist for them)."""

    def render(ctx: PageContext) -> list:
        rep = ctx.run.report
        blocks: list = []
        for fig_id, fig in _dedicated_figures(page, rep, ctx.rank):
            blocks.append(_graph(fig, fig_id))
        blocks += [analyzer_section(rep, n, ctx.rank, ctx.run_query) for n in page_analyzers(page)]
        return blocks

    return render


def _dedicated_figures(page: str, rep: Report, rank: int | None) -> list:
    out = []
    if page == "kernels":
        out.append(("kernels-categories", figures.category_figure(
            _first_table(rep, "kernels", "categories", rank), "category", "total_ns", "Kernel time by category (ms)")))
        out.append(("kernels-top", figures.category_figure(
            _first_table(rep, "kernels", "top_kernels", rank), "name", "total_ns", "Top kernels by time (ms)")))
    elif page == "communication":
        out.append(("communication-collectives", figures.collectives_figure(
            _first_table(rep, "communication", "collectives", rank))))
        out.append(("communication-exposed", figures.bar_figure(
            _first_table(rep, "communication", "per_step", rank), "step", "exposed_pct",
            "Exposed communication per step (% of step)")))
    elif page == "roofline":
        roofs = _first_table(rep, "roofline", "roofs", rank)
        # The roof of the dtype that carries most of this run's FLOPs (as the analyzer chose it), not
        # the highest row: on an H100 that is FP8, which would mislead for bf16 work.
        roofline = next(iter(_results(rep, "roofline", rank)), None)
        summary = roofline.summary if roofline is not None else {}
        peak_flops, peak_bw = summary.get("peak_flops_per_s"), summary.get("mem_bw_bytes_per_s")
        out.append(("roofline-plot", figures.roofline_figure(
            _first_table(rep, "roofline", "ops", rank), roofs, peak_flops, peak_bw)))
        out.append(("roofline-mfu", figures.bar_figure(
            _first_table(rep, "roofline", "steps", rank), "step", "mfu", "MFU per step")))
    elif page == "moe":
        out.append(("moe-heatmap", figures.heatmap_figure(
            _first_table(rep, "moe", "expert_load", rank), "layer", "expert", "assignments",
            "Tokens routed per layer × expert", row_order="layer_index")))
        imbalance = _first_table(rep, "moe", "step_imbalance", rank)
        out.append(("moe-imbalance", figures.lines_by_group(
            imbalance, "step", "max_over_mean", ["layer", "phase"],
            "Imbalance over steps (max / mean expert load)")))
        out.append(("moe-buffering", figures.lines_by_group(
            _first_table(rep, "moe", "cache_curves", rank), "resident_experts", "hit_rate", ["layer", "policy"],
            "Expert buffering hit rate per policy")))
        out.append(("moe-placement", figures.before_after_figure(
            _first_table(rep, "moe", "placement", rank), "rank", "tokens_before", "tokens_after",
            "Tokens per rank: placement before / after", facet="layer")))
    elif page == "power":
        timeline = _first_table(rep, "power", "timeline", rank)
        if timeline is not None and not timeline.empty and "t_ns" in timeline.columns:
            timeline = timeline.assign(t_s=(timeline["t_ns"] - timeline["t_ns"].min()) / 1e9)  # display unit
        out.append(("power-timeline", figures.lines_by_group(timeline, "t_s", "power_w", "device",
                                                             "Power per GPU (W) over time (s)")))
        out.append(("power-clocks", figures.lines_by_group(timeline, "t_s", "sm_clock_mhz", "device",
                                                           "SM clock per GPU (MHz) over time (s)")))
        out.append(("power-steps", figures.bar_figure(_first_table(rep, "power", "steps", rank), "step", "energy_j",
                                                      "Energy per step (J)")))
        out.append(("power-phases", figures.category_figure(_first_table(rep, "power", "phases", rank), "phase",
                                                            "energy_mj", "Energy by phase (mJ)")))
        out.append(("power-throttle", figures.bar_figure(_first_table(rep, "power", "throttle", rank), "reason",
                                                         "time_share", "Throttling: share of time per reason",
                                                         colour_col="device")))
    elif page == "memory":
        out.append(("memory-series", figures.series_figure(
            _first_table(rep, "memory", "timeline", rank), "ts_ns", ["allocated_bytes", "reserved_bytes", "used_bytes"],
            "Memory over time (bytes)")))
        out.append(("memory-rss", figures.series_figure(
            _first_table(rep, "memory", "host_rss", rank), "ts_ns", ["rss_bytes"], "Host RSS (bytes)")))
    if page == "communication":
        out.append(("stragglers-lateness", figures.bar_figure(
            _first_table(rep, "stragglers", "per_rank", None), "rank", "median_lateness_ns",
            "Median collective lateness per rank (ns)")))
    return [(i, f) for i, f in out if f is not None]


def recommendations_page(ctx: PageContext) -> list:
    """All findings, filterable by analyzer and severity, each linking to its evidence page."""
    findings = ctx.run.report.findings
    analyzers_ = sorted({f.analyzer for f in findings})
    return [
        html.Div([
            html.Div([html.Label("analyzer", htmlFor="rec-analyzer"),
                      dcc.Dropdown(id="rec-analyzer", options=analyzers_, value=[], multi=True,
                                   placeholder="all analyzers", style={"minWidth": "260px"})], className="param"),
            html.Div([html.Label("severity", htmlFor="rec-severity"),
                      dcc.Dropdown(id="rec-severity", options=list(SEVERITIES), value=[], multi=True,
                                   placeholder="all severities", style={"minWidth": "260px"})], className="param"),
        ], className="toolbar"),
        html.Div(findings_count(len(findings)), id="rec-count", className="muted"),
        html.Div(findings_list(findings, ctx.run_query, empty="No findings for this run."), id="rec-list"),
        html.H3("Analyzers that did not run"),
        html.Ul([html.Li(f"{n}: not available for this run: {why}") for n, why in ctx.run.report.skipped.items()]
                + [html.Li(f"{n}: failed: {why}") for n, why in ctx.run.report.errors.items()]
                or [html.Li("none", className="muted")]),
    ]


def findings_count(n: int) -> str:
    """ "1 finding" / "3 findings"."""
    return f"{n} finding" if n == 1 else f"{n} findings"


def filter_findings(report: Report, analyzers_: list | None, severities: list | None) -> list:
    """Report findings restricted to the chosen analyzers and severities (empty choice = all)."""
    return [f for f in report.findings
            if (not analyzers_ or f.analyzer in analyzers_) and (not severities or f.severity in severities)]


def compare_page(ctx: PageContext) -> list:
    """Two runs side by side, using the trace-diff logic of analyzers.diff when available."""
    catalog = ctx.cache.catalog()
    picker = param_dropdown("b", [{"label": e.label, "value": e.run_id} for e in catalog
                                  if e.run_id != ctx.run.entry.run_id],
                            ctx.run_b.entry.run_id if ctx.run_b else None, "compare with", clearable=True)
    if ctx.run_b is None:
        return [picker, html.Div("Choose a second run to compare.", className="muted", id="compare-body")]
    from torchscope.analyzers.diff import model as diff_mod  # the trace-diff logic

    body: list = _diff_tables(diff_mod, ctx.run, ctx.run_b)
    body.append(html.Div([
        html.Div([html.H3(f"A: {ctx.run.entry.label}"), _summary_tables(ctx.run)], className="col"),
        html.Div([html.H3(f"B: {ctx.run_b.entry.label}"), _summary_tables(ctx.run_b)], className="col"),
    ], className="columns"))
    return [picker, html.Div(body, id="compare-body")]


def _diff_tables(diff_mod, a: LoadedRun, b: LoadedRun) -> list:
    """trace-diff rows (A = base, B = new) from the cached runs, through analyzers.diff."""
    from torchscope.analyzers.diff.metrics import extract_run_metrics

    def side(run: LoadedRun):
        trace = run.traces[0]  # trace-diff's default: the lowest rank
        metrics = run.memoised("diff-metrics", lambda: extract_run_metrics(trace))
        return diff_mod.SideInfo((run.entry.run_id,), (metrics,))

    try:
        report = diff_mod.diff_runs(side(a), side(b), diff_mod.DiffOptions(fail_on="never"))
    except Exception as exc:  # the diff must not take the page down
        return [not_available("trace-diff", f"{type(exc).__name__}: {exc}")]
    rows = []
    for r in report.rows:
        d = r.to_dict()
        rows.append({"metric": d["key"], "group": d["group"], "unit": d["unit"], "base (A)": d["base"],
                     "new (B)": d["new"], "delta": d["delta"], "ratio": d["ratio"], "p_value": d["p_value"],
                     "verdict": r.verdict, "gated": r.gated})
    df = pd.DataFrame(rows, columns=["metric", "group", "unit", "base (A)", "new (B)", "delta", "ratio",
                                     "p_value", "verdict", "gated"])
    # Headline metrics first (as trace-diff prints them), then regressions, improvements, the rest.
    order = {"regression": 0, "improvement": 1}
    rank_of = [(0 if r.headline else 1, order.get(r.verdict, 2), i) for i, r in enumerate(report.rows)]
    df = df.iloc[sorted(range(len(df)), key=lambda i: rank_of[i])].reset_index(drop=True)
    return [html.H3(["trace-diff: ", html.Span(report.verdict, id="compare-verdict")]),
            html.Div(f"{len(report.failing_rows)} gated regressions of {len(report.gated_rows)} gated metrics "
                     f"(same logic as `torchscope diff A B`)", className="muted"),
            table_view("diff", df, "diff-rows")]


def _summary_tables(run: LoadedRun) -> html.Div:
    rows = []
    for res in run.report.results:
        for k, v in res.summary.items():
            if not isinstance(v, (dict, list, tuple)):
                rows.append({"analyzer": res.analyzer, "rank": res.rank, "metric": k, "value": format_for_key(k, v)})
    df = pd.DataFrame(rows, columns=["analyzer", "rank", "metric", "value"])
    return table_view("summary", df, f"summary-{run.entry.run_id}")


RENDERERS: dict[str, Callable[[PageContext], list]] = {
    "overview": overview_page,
    "timeline": timeline_page,
    "recommendations": recommendations_page,
    "compare": compare_page,
    **{p: generic_page(p) for p in ("kernels", "communication", "memory", "power", "roofline", "moe")},
}


def render_page(page: str, ctx: PageContext) -> list:
    """The body of ``page`` for the run in ``ctx`` (run and rank pickers on top)."""
    ranks = ctx.run.ranks
    pickers = [param_dropdown("run", [{"label": e.label, "value": e.run_id} for e in ctx.cache.catalog()],
                              ctx.run.entry.run_id, "run")]
    if len(ranks) > 1:
        pickers.append(param_dropdown("rank", [{"label": "all ranks", "value": "all"}]
                                      + [{"label": f"rank {r}", "value": str(r)} for r in ranks],
                                      "all" if ctx.rank is None else str(ctx.rank), "rank"))
    body = RENDERERS[page](ctx)
    return [html.Div(pickers, className="toolbar"), *[b for b in body if b is not None]]


# -- Runs page and progress ----------------------------------------------------------------------

def runs_page(cache: RunCache) -> html.Div:
    """Every run under the root with date, devices, steps, median step time and top finding."""
    rows = []
    for e in cache.catalog():
        s = cache.summary(e.run_id) or {}
        state = cache.state(e.run_id)
        started = s.get("started_at_ns") or e.mtime_ns
        date = _dt.datetime.fromtimestamp(started / 1e9, tz=_dt.timezone.utc).strftime("%Y-%m-%d %H:%M")
        q = urlencode({"run": e.run_id})
        status = "loaded" if s else (state.describe() if state.status != "idle" else "not loaded")
        rows.append(html.Tr([
            html.Td(dcc.Link(e.label, href=f"/overview?{q}", className="run-link")),
            html.Td(e.kind), html.Td(date), html.Td(format_bytes(e.size_bytes)),
            html.Td(s.get("devices", "")), html.Td(format_quantity(s.get("ranks"), "count")),
            html.Td(format_quantity(s.get("steps"), "count")), html.Td(format_quantity(s.get("median_step_ns"), "ns")),
            html.Td(s.get("top_finding", "")), html.Td(status, className="muted"),
            html.Td(dcc.Link("compare…", href=f"/compare?{q}")),
        ], **{"data-run": e.run_id}))
    head = html.Tr([html.Th(h) for h in ("run", "kind", "date (UTC)", "size", "devices", "ranks", "steps",
                                         "median step", "top finding", "status", "")])
    if not rows:
        return html.Div("No runs (trace files or run bundles) found under this folder.", className="muted")
    return html.Div([html.H2("Runs"), html.Table([html.Thead(head), html.Tbody(rows)], className="runs-table",
                                                 id="runs-table")])


def progress_view(run_id: str, state) -> html.Div:
    """Progress of a run that is being loaded."""
    pct = int(round(100 * state.fraction))
    return html.Div([
        html.H3(f"Loading {run_id}"),
        html.Div(html.Div(style={"width": f"{pct}%"}, className="bar-fill"), className="bar"),
        html.Div(state.describe(), id="load-progress-text"),
    ], id="load-progress", className="progress")
