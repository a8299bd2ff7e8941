"""Page layouts: each page answers one question about the chosen run, from analyzer Results (never an analysis).

Top to bottom a page shows its question, a verdict row (the few numbers that answer it, in human
units), the plot that shows the answer, what to change (the findings that point at this page, the
largest predicted gain first), and then the details folded: every table and number of its
analyzers. `PAGES` lists the pages in navigation order; `page_availability` says which of them the
run can fill (the others are offered disabled, with the reason on hover). The Overview leads with
the ``bottleneck`` analyzer's attribution and what-if gains when the run has them, and with the
training loop's phases and the best-ranked finding when it does not.
"""

from __future__ import annotations

import datetime as _dt
import math
import statistics
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urlencode

import pandas as pd
from dash import dcc, html
from torchscope.analyzers.bottleneck.analysis import MIN_GAIN_FRACTION
from torchscope.analyzers.core.findings import SEVERITIES, Finding
from torchscope.analyzers.core.registry import load_analyzers
from torchscope.analyzers.core.report import Report
from torchscope.analyzers.diff.stats import MIN_SAMPLES_MANN_WHITNEY
from torchscope.analyzers.info import run_status
from torchscope.analyzers.report.names import short_name
from torchscope.analyzers.report.text import traced_steps_line
from torchscope.analyzers.report.units import (
    format_bytes,
    format_for_key,
    format_quantity,
    format_ratio,
    format_share,
    key_label,
    plural,
)
from torchscope.dashboard import figures, palette
from torchscope.dashboard.ranking import one_per_finding, ranked_findings
from torchscope.dashboard.result_view import (
    analyzer_section,
    findings_list,
    is_shown_value,
    not_available,
    table_view,
)
from torchscope.dashboard.run_cache import LoadedRun, RunCache
from torchscope.dashboard.timeline import (
    DEFAULT_WIDTH_PX,
    build_lanes,
    counter_series,
    flow_annotations,
    flows_for,
    timeline_figure,
)

__all__ = [
    "DETAILS_PLACEHOLDER",
    "PAGES",
    "PAGE_ANALYZERS",
    "PAGE_QUESTIONS",
    "TOP_FINDINGS",
    "PageContext",
    "VerdictItem",
    "details_body",
    "filter_findings",
    "findings_count",
    "flows_view",
    "overview_verdict",
    "page_availability",
    "page_verdict",
    "param_dropdown",
    "progress_view",
    "render_page",
    "required_analyzers",
    "runs_page",
    "timeline_for",
    "verdict_row",
]

PAGES: tuple[tuple[str, str], ...] = (
    ("runs", "Runs"), ("overview", "Overview"), ("timeline", "Timeline"), ("kernels", "Kernels"),
    ("communication", "Communication"), ("memory", "Memory"), ("power", "Power/energy"),
    ("roofline", "Roofline"), ("moe", "MoE"), ("compare", "Compare"), ("recommendations", "Recommendations"),
)
#: The question each page answers (its heading).
PAGE_QUESTIONS: dict[str, str] = {
    "overview": "What is this run's bottleneck, and what do I change?",
    "timeline": "What runs when, on which thread and stream?",
    "kernels": "Where do the GPU kernels spend their time?",
    "communication": "Is communication exposed, and is a rank late?",
    "memory": "Is memory close to capacity?",
    "power": "Am I power-limited, and what does a step cost in energy?",
    "roofline": "Is the work limited by compute or by memory bandwidth?",
    "moe": "Are my experts balanced?",
    "compare": "What changed between two runs?",
    "recommendations": "What should I change, and what will it gain?",
}
#: Analyzers each page shows (besides any registered analyzer whose spec names that page).
PAGE_ANALYZERS: dict[str, tuple[str, ...]] = {
    "overview": ("training_loop", "gpu_time", "bottleneck"),
    "kernels": ("kernels",),
    "communication": ("communication", "stragglers"),
    "memory": ("memory",),
    "power": ("power",),
    "roofline": ("roofline",),
    "moe": ("moe",),
}
#: What the Overview waits for before its first paint: the training loop (step time, phases, the
#: step plot) is the cheapest result that answers its question. GPU busy (gpu_time) and the step model
#: (bottleneck, about 1 s on a 75K-event trace) run next and the page redraws as each is done.
FIRST_PAINT: dict[str, tuple[str, ...]] = {"overview": ("training_loop",)}
#: Analyzers whose headline numbers the Overview's verdict row also shows once they are done.
OVERVIEW_EXTRA = ("roofline", "power")
#: Findings shown on the Overview (the rest are on Recommendations).
TOP_FINDINGS = 3
#: Causes or phases named in the Overview's "where the time goes".
WHERE_TIME_GOES = 3
#: Fewer steps than this on either side cannot be tested (trace-diff's Mann-Whitney minimum).
MIN_SAMPLES_TESTED = MIN_SAMPLES_MANN_WHITNEY
#: Kernels drawn on the Kernels page's top-kernels chart (the grid below lists all of them).
TOP_KERNELS_DRAWN = 20
#: Pages a job opened from per-rank summaries shows for all its ranks; the others need one rank picked.
JOB_PAGES = ("overview", "recommendations")
#: Pages every run can show.
_ALWAYS = ("runs", "overview", "timeline", "recommendations")


@dataclass(frozen=True)
class PageContext:
    """What a page renders from: the run (and the second run on Compare), the rank, the query."""

    run: LoadedRun
    rank: int | None
    query: dict
    cache: RunCache
    run_b: LoadedRun | None = None
    width_px: int = DEFAULT_WIDTH_PX  # estimated plot width in the browser
    #: A job opened from per-rank summaries (`LoadedRun.job`): ``run`` is then the one rank picked
    #: (``job_rank``), loaded on its own, and ``rank`` None (that run has only this rank).
    job: LoadedRun | None = None
    job_rank: int | None = None

    @property
    def run_query(self) -> str:
        """Query string that selects this run and rank (for links)."""
        q = {"run": (self.job or self.run).entry.run_id}
        rank = self.job_rank if self.job is not None else self.rank
        if rank is not None:
            q["rank"] = str(rank)
        return urlencode(q)


@dataclass(frozen=True)
class VerdictItem:
    """One number of a verdict row: what it is, its value as text, and a line of context."""

    label: str
    value: str
    detail: str = ""
    key: str = ""  # the summary key (or what) it came from, for tests and tooltips


def required_analyzers(page: str) -> set[str] | None:
    """Analyzers ``page`` waits for before it renders (None: all of them; empty: none)."""
    if page == "timeline":
        return set()
    if page in ("recommendations", "compare"):
        return None
    # The page's own analyzers; others that point at it (job_overview on the Overview) fill in as they finish.
    own = [n for n in FIRST_PAINT.get(page, PAGE_ANALYZERS.get(page, ())) if n in load_analyzers()]
    return set(own or page_analyzers(page))


def page_analyzers(page: str) -> list[str]:
    """Registered analyzers shown on ``page``: the fixed list plus any registered analyzer pointing at it."""
    registry = load_analyzers()
    names = [n for n in PAGE_ANALYZERS.get(page, ()) if n in registry]
    for name, spec in registry.items():
        if spec.page == page and name not in names:
            names.append(name)
    return names


def page_availability(run: LoadedRun, runs_in_catalog: int = 1) -> dict[str, str | None]:
    """For every page, None when the run can fill it, else the reason it cannot (shown on hover)."""
    rep = run.report
    have = {r.analyzer for r in rep.results}
    out: dict[str, str | None] = {}
    for page, _ in PAGES:
        if page in _ALWAYS:
            out[page] = None
        elif page == "compare":
            out[page] = None if runs_in_catalog > 1 else "only one run under this folder: nothing to compare with"
        else:
            names = page_analyzers(page)
            if not names or any(n in have or n in run.pending for n in names):
                out[page] = None
            else:
                out[page] = "; ".join(f"{n}: {rep.skipped.get(n) or rep.errors.get(n) or 'did not run'}"
                                      for n in names)
    return out


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


def _rank_tables(report: Report, name: str, table: str, rank: int | None) -> pd.DataFrame | None:
    """``table`` of analyzer ``name`` for the picked rank; with no rank picked, every rank's stacked, each row
    labelled in a ``rank`` column ("rank 3"), so "all ranks" draws all of them. One rank's table comes as it is."""
    if rank is not None:
        return _first_table(report, name, table, rank)
    frames = [(r.rank, r.tables[table]) for r in _results(report, name, None)
              if table in r.tables and r.tables[table] is not None and not r.tables[table].empty]
    if len(frames) <= 1 or any(r is None for r, _ in frames):
        return frames[0][1] if frames else _first_table(report, name, table, rank)
    return pd.concat([frame.assign(rank=f"rank {r}") for r, frame in frames], ignore_index=True)


def _summed(table: pd.DataFrame | None, label_col: str, value_col: str, keep: tuple[str, ...] = ()) -> \
        pd.DataFrame | None:
    """Rows of ``table`` with one ``label_col`` summed over ranks (``keep`` columns: the first value)."""
    if table is None or "rank" not in table.columns or label_col not in table.columns:
        return table
    agg = {value_col: "sum", **{c: "first" for c in keep if c in table.columns}}
    return table.groupby(label_col, observed=True, sort=False).agg(agg).reset_index()


def _ranks_word(table: pd.DataFrame | None) -> str:
    """" (N ranks summed)" for a table stacked over ranks, else ""."""
    return f" ({table['rank'].nunique()} ranks summed)" if table is not None and "rank" in table.columns else ""


def _summary_values(report: Report, name: str, key: str, rank: int | None) -> list:
    return [r.summary.get(key) for r in _results(report, name, rank) if is_shown_value(r.summary.get(key))]


def _number(values: list) -> object:
    """One value for a verdict: the value itself for one rank, the median over ranks for numbers."""
    if len(values) == 1:
        return values[0]
    nums = [float(v) for v in values if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)]
    return statistics.median(nums) if len(nums) == len(values) and nums else values[0]


def _over_ranks(values: list) -> str:
    """How a verdict's one value stands for several ranks: their median (numbers), or the value they share, or
    the first rank's when they differ (a dtype, a layer name)."""
    if len(values) <= 1:
        return ""
    if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
        return f"median over {len(values)} ranks"
    if len({str(v) for v in values}) == 1:
        return f"on all {len(values)} ranks"
    return f"the first rank's; the {len(values)} ranks differ"


def verdict_row(items: list[VerdictItem], row_id: str = "verdict") -> html.Div:
    """The numbers that answer a page's question, as a row of cards (nothing for values the run lacks)."""
    cards = [html.Div([html.Div(i.label, className="verdict-label"),
                       html.Div(i.value, className="verdict-value"),
                       html.Div(i.detail, className="verdict-detail") if i.detail else None],
                      className="verdict-card", title=i.key or None, **{"data-key": i.key})
             for i in items]
    return html.Div(cards or [html.Div("No headline numbers for this run.", className="muted")],
                    className="verdict", id=row_id)


def _join(*parts: str) -> str:
    return " · ".join(p for p in parts if p)


def overview_verdict(report: Report, rank: int | None) -> list[VerdictItem]:
    """Step time, where the time goes, GPU busy, MFU, energy per step and the top bottleneck with its gain."""
    items: list[VerdictItem] = []
    bottleneck = _results(report, "bottleneck", rank)
    step = _summary_values(report, "bottleneck", "step_ns", rank) or \
        _summary_values(report, "training_loop", "step_median_ns", rank)
    steps = _summary_values(report, "bottleneck", "steps", rank) or _summary_values(report, "training_loop", "steps", rank)
    if step:
        n = _number(steps) if steps else None
        items.append(VerdictItem("Step time", format_quantity(_number(step), "ns"),
                                 _join(f"median of {plural(int(n), 'step')}" if n else "", _over_ranks(step)),
                                 "step_median_ns"))
    causes = _first_table(report, "bottleneck", "causes", rank)
    if causes is not None and not causes.empty and {"share", "cause"} <= set(causes.columns):
        top = causes.sort_values("share", ascending=False).head(WHERE_TIME_GOES)
        label_col = "label" if "label" in top.columns else "cause"
        # The label's explanation in brackets stays in the chart's legend; the card names the cause.
        text = ", ".join(f"{str(lbl).split(' (', 1)[0]} {format_share(sh)}" for lbl, sh in zip(top[label_col], top["share"]))
        items.append(VerdictItem("Where the time goes", text, "share of step time, by cause", "causes"))
    else:
        phases = _first_table(report, "training_loop", "phases", rank)
        if phases is not None and not phases.empty and {"phase", "share_pct"} <= set(phases.columns):
            top = phases[phases["share_pct"] > 0].sort_values("share_pct", ascending=False).head(WHERE_TIME_GOES)
            text = ", ".join(f"{str(p).replace('_', ' ')} {format_quantity(v, '%')}"
                             for p, v in zip(top["phase"], top["share_pct"]))
            if text:
                items.append(VerdictItem("Where the time goes", text, "share of step time, by phase", "phases"))
    idle = _summary_values(report, "gpu_time", "idle_pct", rank)
    if idle:
        host = _summary_values(report, "gpu_time", "idle_host_wait_pct", rank)
        items.append(VerdictItem("GPU busy", format_quantity(100.0 - float(_number(idle)), "%"),
                                 _join(f"idle waiting for the host {format_quantity(_number(host), '%')}" if host else "",
                                       _over_ranks(idle)), "idle_pct"))
    mfu = [v for v in _summary_values(report, "roofline", "mfu_mean", rank) if isinstance(v, (int, float))]
    if mfu:
        model = _summary_values(report, "roofline", "model_mfu_mean", rank)
        items.append(VerdictItem("MFU", format_share(float(_number(mfu))),
                                 _join(f"model FLOPs: {format_share(float(_number(model)))}" if model else
                                       "counted FLOPs over the dtype's peak", _over_ranks(mfu)), "mfu_mean"))
    energy = _summary_values(report, "power", "energy_per_step_j", rank)
    if energy:
        power = _summary_values(report, "power", "avg_power_w", rank)
        items.append(VerdictItem("Energy per step", format_quantity(_number(energy), "J"),
                                 _join(f"at {format_quantity(_number(power), 'W')} on average" if power else "",
                                       _over_ranks(energy)), "energy_per_step_j"))
    items.append(_top_bottleneck(report, rank, bottleneck))
    return [i for i in items if i is not None]


def _top_bottleneck(report: Report, rank: int | None, bottleneck: list) -> VerdictItem | None:
    """Where most of the step goes (the bottleneck analyzer's top cause) and what to change: the first finding of
    the cards below, so the verdict and the cards never name two different changes; without the step model, the
    first finding is the bottleneck."""
    found = [f for f in ranked_findings(report.findings) if rank is None or f.rank in (rank, None)]
    change = _change_text(found[0]) if found else ""
    for res in bottleneck:
        cause, share = res.summary.get("top_cause"), res.summary.get("top_cause_share")
        if not is_shown_value(cause):
            continue
        causes = res.tables.get("causes")
        label = str(cause)
        if causes is not None and {"cause", "label"} <= set(causes.columns):
            match = causes.loc[causes["cause"].astype(str) == str(cause), "label"]
            label = str(match.iloc[0]) if len(match) else label
        value = f"{label} ({format_share(share)})" if is_shown_value(share) else label
        detail = f"fix first: {change}" if change else \
            f"no change is predicted to save {format_share(MIN_GAIN_FRACTION)} of step time or more"
        return VerdictItem("Top bottleneck", value, detail, "top_cause")
    if not found:
        return VerdictItem("Top bottleneck", "none found", "no analyzer raised a finding", "findings")
    return VerdictItem("Top bottleneck", found[0].title, _gain_words(found[0]), "findings")


def _change_text(f: Finding) -> str:
    """What to fix first and its predicted gain: "794 chains of elementwise ops run one op at a time (fixing it
    saves about 9.8% of step time, predicted)"; its card below says how."""
    return f"{f.title} ({_gain_words(f)})"


def _gain_words(f: Finding) -> str:
    unit = "energy" if f.analyzer == "power" else "step time"
    return f"fixing it saves about {format_share(f.gain_fraction)} of {unit}, predicted" if f.gain_fraction \
        else "gain unknown"


#: Headline numbers of the other pages: (analyzer, summary key, label, unit override or None).
PAGE_VERDICTS: dict[str, tuple[tuple[str, str, str, str | None], ...]] = {
    "kernels": (("kernels", "kernel_time_ns", "Kernel time", None),
                ("kernels", "gemm_time_pct", "GEMM/conv share", None),
                ("kernels", "tensor_core_time_pct", "On tensor cores", None),
                ("kernels", "fp32_gemm_time_pct", "FP32 GEMM without tensor cores", None),
                ("kernels", "tiny_kernel_time_pct", "Time in tiny kernels", None),
                ("kernels", "launch_delay_p50_ns", "Launch to start (median)", None)),
    "communication": (("communication", "comm_ns", "Communication time", None),
                      ("communication", "exposed_ns", "Exposed (not hidden by compute)", None),
                      ("communication", "overlap_pct", "Hidden under compute", None),
                      ("communication", "median_exposed_pct_per_step", "Exposed share of a step (median)", "%"),
                      ("stragglers", "median_skew_ns", "Arrival skew across ranks (median)", None),
                      ("stragglers", "straggler_ranks", "Late ranks", "count")),
    "memory": (("memory", "peak_allocated_bytes", "Peak allocated", None),
               ("memory", "peak_reserved_bytes", "Peak reserved", None),
               ("memory", "peak_pct_of_capacity", "Peak of device capacity", None),
               ("memory", "peak_rss_bytes", "Peak host memory (RSS)", None),
               ("memory", "h2d_synchronous", "Blocking host-to-device copies", "count"),
               ("memory", "h2d_host_blocked_ns", "Host blocked by copies", None)),
    "power": (("power", "avg_power_w", "Average power", None),
              ("power", "peak_power_w", "Peak power", None),
              ("power", "power_limit_w", "Power limit", None),
              ("power", "energy_per_step_j", "Energy per step", None),
              ("power", "idle_energy_share", "Energy spent idle", None),
              ("power", "energy_j", "Energy in the window", None)),
    "roofline": (("roofline", "mfu_mean", "MFU (mean over steps)", "share"),
                 ("roofline", "model_mfu_mean", "MFU from model FLOPs", "share"),
                 ("roofline", "memory_bound_time_share", "Time memory-bound", None),
                 ("roofline", "compute_bound_time_share", "Time compute-bound", None),
                 ("roofline", "dominant_dtype", "Dominant dtype", None),
                 ("roofline", "peak_flops_per_s", "Peak of that dtype", None)),
    "moe": (("moe", "worst_max_over_mean", "Worst load imbalance (max / mean)", "ratio"),
            ("moe", "worst_layer", "Worst layer", None),
            ("moe", "dead_experts", "Experts that got no tokens", "count"),
            ("moe", "drop_fraction_at_cf", "Tokens dropped at the capacity factor", "share"),
            ("moe", "mean_entropy_norm", "Routing entropy (1 = uniform)", None)),
}


def page_verdict(page: str, report: Report, rank: int | None) -> list[VerdictItem]:
    """The verdict row of a page other than the Overview, from its analyzers' summaries."""
    items = []
    for analyzer, key, label, unit in PAGE_VERDICTS.get(page, ()):
        values = _summary_values(report, analyzer, key, rank)
        if not values:
            continue
        value = _number(values)
        if unit == "ratio":
            text = format_ratio(float(value))
        elif unit == "count" and isinstance(value, (list, tuple)):
            text = ", ".join(str(v) for v in value) if value else ""
        elif unit is not None:
            text = format_quantity(value, unit)
        else:
            text = format_for_key(key, value)
        if text:
            items.append(VerdictItem(label, text, _over_ranks(values), key))
    if page == "power":
        lim, peak = _summary_values(report, "power", "power_limit_w", rank), _summary_values(report, "power",
                                                                                          "peak_power_w", rank)
        if lim and peak and float(_number(lim)) > 0:
            items.insert(0, VerdictItem("Peak power of the limit", format_share(float(_number(peak)) / float(_number(lim))),
                                        "at or near 100%: power-limited", "peak_power_w/power_limit_w"))
    return items


# -- timeline ------------------------------------------------------------------------------------

def timeline_for(run: LoadedRun, rank: int | None, t0_ns: int | None, t1_ns: int | None, width_px: int):
    """The timeline figure of ``run`` (one rank or all) for a window, from the run's memoised lanes."""
    origin = run.origin_ns  # outside the memo below (it is memoised itself)

    def lanes():
        events = pd.concat([t.events for t in run.traces], ignore_index=True) if len(run.traces) > 1 \
            else run.traces[0].events
        return build_lanes(events, origin)

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

def _question(page: str) -> html.H2:
    return html.H2(PAGE_QUESTIONS.get(page, ""), className="question")


#: What the folded details show until they are opened (their tables are sent only then).
DETAILS_PLACEHOLDER = "opening…"


def _details(rep: Report, names: list[str], ctx: PageContext) -> html.Details | None:
    """The folded details of a page; their body (every table: the bulk of a page) is sent when opened."""
    if not names:
        return None
    return html.Details([
        html.Summary(f"Details: every table and number of {', '.join(names)}", id="details-summary", n_clicks=0),
        html.Div(DETAILS_PLACEHOLDER, id="details-body", className="muted"),
    ], className="details", id="details", open=False)


def details_body(page: str, ctx: PageContext) -> list:
    """The body of a page's details: each of its analyzers' summary, findings and tables (or why not)."""
    return [analyzer_section(ctx.run.report, n, ctx.rank, ctx.run_query, origin_ns=ctx.run.origin_ns)
            for n in page_analyzers(page)]


def _page_findings(rep: Report, page: str, rank: int | None, names: list[str]) -> list:
    found = [f for f in ranked_findings(rep.findings)
             if (f.page == page or (page != "overview" and f.analyzer in names))
             and (rank is None or f.rank in (rank, None))]
    return found


def run_status_lines(ctx: PageContext) -> list:
    """What was traced ("3 of 20 steps traced (wait 1, ...)") and how the run ended when not normally."""
    out: list = []
    for trace in ctx.run.traces:
        if ctx.rank is not None and trace.rank != ctx.rank:
            continue
        for line in run_status(trace):
            out.append(html.P(line if len(ctx.run.traces) == 1 else f"rank {trace.rank}: {line}",
                              className="run-warning"))
    loop = next(iter(_results(ctx.run.report, "training_loop", ctx.rank)), None)
    if loop is not None:
        summary = loop.summary
        out.insert(0, html.P(traced_steps_line(int(summary.get("steps") or 0), summary.get("steps_run"),
                                               summary.get("schedule")), className="run-traced muted"))
    return out


def overview_page(ctx: PageContext) -> list:
    """Verdict (step time, where it goes, GPU busy, MFU, energy, top bottleneck), the step plot, top findings."""
    rep = ctx.run.report
    blocks: list = [_question("overview"), *run_status_lines(ctx), verdict_row(overview_verdict(rep, ctx.rank))]
    attribution = _first_table(rep, "bottleneck", "attribution", ctx.rank)
    if attribution is not None:
        blocks.append(_graph(figures.attribution_figure(attribution, _first_table(rep, "bottleneck", "causes", ctx.rank)),
                             "overview-attribution"))
    else:
        blocks.append(_graph(figures.step_phase_figure(_first_table(rep, "training_loop", "steps", ctx.rank)),
                             "overview-steps"))
    if ctx.rank is None and len(ctx.run.ranks) > 1 and blocks[-1] is not None:
        shown = next(iter(_results(rep, "bottleneck" if attribution is not None else "training_loop", None)), None)
        if shown is not None and shown.rank is not None:  # the step plot is one rank's: say which
            blocks[-1].figure.update_layout(title_text=f"{blocks[-1].figure.layout.title.text} (rank {shown.rank}; "
                                                       "pick a rank above, or compare them all below)")
    found = [f for f in ranked_findings(rep.findings) if ctx.rank is None or f.rank in (ctx.rank, None)]
    groups = _one_card_each(ctx, found)
    more = dcc.Link(f"all {findings_count(len(found))} on Recommendations →",
                    href=f"/recommendations?{ctx.run_query}", className="finding-link") \
        if len(groups) > TOP_FINDINGS or len(found) > len(groups) else None
    blocks += [html.H3("Top findings: what to change, largest predicted gain first"),
               _cards(ctx, groups[:TOP_FINDINGS], "overview", empty="No findings for this run."), more]
    blocks.append(_graph(figures.gpu_time_figure(_results(rep, "gpu_time", ctx.rank)), "overview-gpu"))
    if ctx.rank is None and len(ctx.run.ranks) > 1:
        blocks += rank_views(ctx)
    if ctx.run.job is not None and ctx.run.job.failed:
        blocks.append(html.Div("Ranks that could not be analyzed: " + "; ".join(
            f"{k}: {why}" for k, why in ctx.run.job.failed.items()), className="run-warning", id="job-failed"))
    if ctx.run.pending:
        blocks.append(html.Div(f"still analyzing: {', '.join(ctx.run.pending)} (this page updates when done)",
                               className="muted", id="still-analyzing"))
    blocks.append(_details(rep, page_analyzers("overview"), ctx))
    return blocks


def _one_card_each(ctx: PageContext, found: list) -> list:
    """(finding, ranks it stands for) per card: with every rank shown, one card per finding saying which ranks
    have it (a 64-rank job had one finding three times as its top findings); one rank: each finding alone."""
    return one_per_finding(found) if ctx.rank is None and len(ctx.run.ranks) > 1 else [(f, ()) for f in found]


def _cards(ctx: PageContext, groups: list, page: str, empty: str = "No findings.") -> html.Div:
    return findings_list([f for f, _ in groups], ctx.run_query, empty=empty, ranks=[r for _, r in groups],
                         n_ranks=len(ctx.run.ranks), here=page)


def rank_views(ctx: PageContext) -> list:
    """Every rank side by side: step time, phases, exposed communication and lateness per rank."""
    rep = ctx.run.report
    per_rank = _first_table(rep, "job_overview", "per_rank", None)
    lateness = _first_table(rep, "stragglers", "per_rank", None)
    phases = [(r.rank, r.tables.get("phases")) for r in _results(rep, "training_loop", None) if r.rank is not None]
    blocks: list = [html.H3(f"All {len(ctx.run.ranks)} ranks side by side", id="rank-views")]
    blocks.append(_graph(figures.per_rank_figure(per_rank, lateness), "ranks-compare"))
    blocks.append(_graph(figures.phase_share_by_rank(phases), "ranks-phases"))
    if per_rank is not None and not per_rank.empty:
        blocks.append(table_view("per_rank", per_rank, "ranks-table", origin_ns=ctx.run.origin_ns,
                                 first=("rank", "step_median_ns", "step_vs_median_pct", "exposed_comm_pct",
                                        "gpu_idle_pct", "steps")))
    return blocks


def timeline_page(ctx: PageContext) -> list:
    """Lanes per rank and stream plus counters; zooming re-renders at the new level of detail."""
    fig = timeline_for(ctx.run, ctx.rank, None, None, ctx.width_px)
    meta = fig["layout"]["meta"]
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
        html.Div(FLOW_HINT, id="timeline-selection", className="muted"),
        # Not a dcc.Graph: the app draws the figure itself (app.TIMELINE_DRAW_JS) so that a zoom costs the
        # browser one redraw, not three (dcc.Graph re-plots the whole figure to copy the zoom into its prop).
        html.Div(html.Div(id="timeline-plot"), id="timeline-graph", className="timeline-graph"),
        dcc.Store(id="timeline-figure", data=fig),
        dcc.Store(id="timeline-request"),
        dcc.Store(id="timeline-drawn"),
        dcc.Store(id="timeline-click"),
        dcc.Store(id="timeline-flows"),
    ]


#: What the Timeline says until a slice is clicked.
FLOW_HINT = "Click a CPU op, a launch call or a kernel to draw its CPU → GPU flows."


def flows_view(run: LoadedRun, rank: int | None, event: int, width_px: int) -> tuple[dict, str]:
    """(the arrows to draw, a line saying what they are) for a click on event ``event`` of the Timeline."""
    index = run.memo.get("timeline-lanes")
    if index is None:
        timeline_for(run, rank, None, None, width_px)
        index = run.memo["timeline-lanes"]
    found = flows_for(index, event)
    if not found.direction:
        what = index.name[event] if 0 <= event < len(index) else "this"
        return {"annotations": []}, (f"{what}: no CPU → GPU flow "
                                     "(only CPU ops, launch calls and GPU work have one)")
    name = short_name(str(index.name[event]), 60)
    if not found.total:
        what = "launched no GPU work in this trace" if found.direction == "launches" \
            else "has no launch call in this trace"
        return {"annotations": []}, f"{name} {what}"
    noun = "kernel or copy" if found.total == 1 else "kernels and copies"
    shown = f" (the first {len(found.pairs)} drawn)" if len(found.pairs) < found.total else ""
    line = f"{name} launched {found.total} {noun}{shown}" if found.direction == "launches" \
        else f"{name} was launched by {short_name(str(index.name[found.pairs[0][0]]), 60)}"
    return {"annotations": flow_annotations(index, found), "event": int(event)}, line


def generic_page(page: str) -> Callable[[PageContext], list]:
    """A page that answers its question: verdict row, its figures, what to change, its analyzers' details."""

    def render(ctx: PageContext) -> list:
        rep = ctx.run.report
        names = page_analyzers(page)
        reason = page_availability(ctx.run).get(page)
        if reason:  # reached by its URL: its tab is disabled with this reason
            return [_question(page), not_available(None, reason)]
        blocks: list = [_question(page), verdict_row(page_verdict(page, rep, ctx.rank))]
        for fig_id, fig in _dedicated_figures(page, rep, ctx.rank, ctx.run.origin_ns):
            blocks.append(_graph(fig, fig_id))
        found = _page_findings(rep, page, ctx.rank, names)
        if found:
            blocks += [html.H3("What to change"), _cards(ctx, _one_card_each(ctx, found), page)]
        blocks.append(_details(rep, names, ctx))
        return blocks

    return render


def _dedicated_figures(page: str, rep: Report, rank: int | None, origin_ns: int | None = None) -> list:
    out = []
    if page == "kernels":
        cats = _rank_tables(rep, "kernels", "categories", rank)
        out.append(("kernels-categories", figures.category_figure(
            _summed(cats, "category", "total_ns"), "category", "total_ns",
            "Kernel time by category" + _ranks_word(cats))))
        names = _rank_tables(rep, "kernels", "by_name", rank)
        out.append(("kernels-top", figures.category_figure(
            _summed(names, "name", "total_ns", keep=("category",)), "name", "total_ns",
            f"Top {TOP_KERNELS_DRAWN} kernels by total time{_ranks_word(names)} (hover for the full name)",
            colour_col="category", top=TOP_KERNELS_DRAWN)))
    elif page == "communication":
        out.append(("communication-exposed", figures.bar_figure(
            _rank_tables(rep, "communication", "per_step", rank), "step", "exposed_pct",
            "Exposed communication per step", y_title="Exposed communication, share of the step",
            colour=palette.cause_colour("exposed_communication"), colour_col="rank")))
        out.append(("communication-collectives", figures.collectives_figure(
            _rank_tables(rep, "communication", "collectives", rank), origin_ns)))
    elif page == "roofline":
        roofs = _first_table(rep, "roofline", "roofs", rank)
        # The roof of the dtype that carries most of this run's FLOPs (as the analyzer chose it), not
        # the highest row: on an H100 that is FP8, which would mislead for bf16 work.
        roofline = next(iter(_results(rep, "roofline", rank)), None)
        summary = roofline.summary if roofline is not None else {}
        peak_flops, peak_bw = summary.get("peak_flops_per_s"), summary.get("mem_bw_bytes_per_s")
        out.append(("roofline-plot", figures.roofline_figure(
            _rank_tables(rep, "roofline", "ops", rank), roofs, peak_flops, peak_bw)))
        out.append(("roofline-mfu", figures.bar_figure(
            _rank_tables(rep, "roofline", "steps", rank), "step", "mfu", "MFU per step",
            y_title="MFU, share of the dtype's peak", colour=palette.cause_colour("gpu_compute"), colour_col="rank")))
    elif page == "moe":
        out.append(("moe-heatmap", figures.heatmap_figure(
            _first_table(rep, "moe", "expert_load", rank), "layer", "expert", "assignments",
            "Tokens routed per layer × expert", row_order="layer_index")))
        imbalance = _first_table(rep, "moe", "step_imbalance", rank)
        out.append(("moe-imbalance", figures.lines_by_group(
            imbalance, "step", "max_over_mean", ["layer", "phase"],
            "Imbalance over steps (max / mean expert load)", y_title="Max / mean expert load")))
        out.append(("moe-buffering", figures.lines_by_group(
            _first_table(rep, "moe", "cache_curves", rank), "resident_experts", "hit_rate", ["layer", "policy"],
            "Expert buffering hit rate per policy", y_title="Hit rate (0..1)", x_title="Resident experts")))
        out.append(("moe-placement", figures.before_after_figure(
            _first_table(rep, "moe", "placement", rank), "rank", "tokens_before", "tokens_after",
            "Tokens per rank: placement before / after", facet="layer", y_title="Tokens")))
    elif page == "power":
        timeline = _rank_tables(rep, "power", "timeline", rank)
        if timeline is not None and not timeline.empty and "t_ns" in timeline.columns:
            t0 = origin_ns if origin_ns is not None else int(timeline["t_ns"].min())
            timeline = timeline.assign(t_s=(timeline["t_ns"] - t0) / 1e9)  # display unit
        gpu = ["rank", "device"] if timeline is not None and "rank" in timeline.columns else "device"
        out.append(("power-timeline", figures.lines_by_group(timeline, "t_s", "power_w", gpu,
                                                             "Power per GPU over time", y_title="Power (W)",
                                                             x_title="Time since trace start (s)")))
        out.append(("power-clocks", figures.lines_by_group(timeline, "t_s", "sm_clock_mhz", gpu,
                                                           "SM clock per GPU over time", y_title="SM clock (MHz)",
                                                           x_title="Time since trace start (s)")))
        out.append(("power-steps", figures.bar_figure(_rank_tables(rep, "power", "steps", rank), "step", "energy_j",
                                                      "Energy per step", y_title="Energy (J)", colour="#e6550d",
                                                      colour_col="rank")))
        phases = _rank_tables(rep, "power", "phases", rank)
        out.append(("power-phases", figures.category_figure(_summed(phases, "phase", "energy_mj"), "phase",
                                                            "energy_mj", "Energy by phase" + _ranks_word(phases),
                                                            value_title="Energy (mJ)")))
        out.append(("power-throttle", figures.bar_figure(_first_table(rep, "power", "throttle", rank), "reason",
                                                         "time_share", "Throttling: share of time per reason",
                                                         colour_col="device", y_title="Time throttled")))
    elif page == "memory":
        out.append(("memory-series", figures.memory_figure(_rank_tables(rep, "memory", "timeline", rank), origin_ns)))
        out.append(("memory-rss", figures.series_figure(
            _rank_tables(rep, "memory", "host_rss", rank), "ts_ns", ["rss_bytes"], "Host memory (RSS) over time",
            origin_ns, group="rank")))
    if page == "communication":
        out.append(("stragglers-lateness", figures.bar_figure(
            _first_table(rep, "stragglers", "per_rank", None), "rank", "median_lateness_ns",
            "Median collective lateness per rank", y_title="Median lateness",
            colour=palette.cause_colour("exposed_communication"))))
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
        html.Ul([html.Li(f"{n}: {why}") for n, why in ctx.run.report.skipped.items()]
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
        unit = _DIFF_UNITS.get(str(d["unit"]), "")
        rows.append({"metric": d["key"], "group": d["group"], "base (A)": format_quantity(d["base"], unit),
                     "new (B)": format_quantity(d["new"], unit),
                     "change": format_quantity(d["delta"], unit, signed=True) if d["delta"] is not None else "",
                     "ratio": format_ratio(d["ratio"]) if is_shown_value(d["ratio"]) else "",
                     "p value": format_quantity(d["p_value"], "") if is_shown_value(d["p_value"]) else "",
                     "verdict": verdict_words(r.comparison), "gated": "yes" if r.gated else "no"})
    df = pd.DataFrame(rows, columns=["metric", "verdict", "base (A)", "new (B)", "change", "ratio",
                                     "p value", "group", "gated"])
    # Headline metrics first (as trace-diff prints them), then regressions, improvements, the rest.
    order = {"regression": 0, "improvement": 1}
    rank_of = [(0 if r.headline else 1, order.get(r.verdict, 2), i) for i, r in enumerate(report.rows)]
    df = df.iloc[sorted(range(len(df)), key=lambda i: rank_of[i])].reset_index(drop=True)
    step = report.row("step/time")
    headline = []
    if step is not None and is_shown_value(step.comparison.ratio):
        c = step.comparison
        headline.append(html.Div(
            f"Step time {format_quantity(c.base, 'ns')} → {format_quantity(c.new, 'ns')} "
            f"({format_ratio(c.ratio)}): {verdict_words(c)}", className="compare-headline", id="compare-step"))
    mismatch = workload_mismatch(report)
    if mismatch:
        headline.append(html.Div(mismatch, className="warning-line", id="compare-workload"))
    return [html.H3(["trace-diff: ", html.Span(report.verdict, id="compare-verdict")]), *headline,
            html.Div(f"{len(report.failing_rows)} gated regressions of {len(report.gated_rows)} gated metrics "
                     f"(same logic as `torchscope diff A B`)", className="muted"),
            table_view("diff", df, "diff-rows", first=("metric", "verdict", "base (A)", "new (B)", "change", "ratio",
                                                      "p value"))]


#: Per-step work counts that must match for two runs to be the same workload.
WORKLOAD_KEYS = ("work/ops_per_step", "work/kernels_per_step", "work/flops_per_step")
#: Two runs whose work per step differs by more than this ratio (either way) are different workloads.
WORKLOAD_MISMATCH_RATIO = 1.25


def workload_mismatch(report) -> str:
    """A warning when trace-diff's per-step work counts say A and B ran different workloads, else ""."""
    worst = None
    for key in WORKLOAD_KEYS:
        row = report.row(key)
        if row is None or not is_shown_value(row.comparison.ratio) or row.comparison.ratio <= 0:
            continue
        ratio = float(row.comparison.ratio)
        spread = max(ratio, 1.0 / ratio)
        if spread > WORKLOAD_MISMATCH_RATIO and (worst is None or spread > worst[1]):
            worst = (key, spread)
    if worst is None:
        return ""
    what = worst[0].split("/", 1)[1].replace("_", " ")
    return (f"These runs are not the same workload: {what} differ {format_ratio(worst[1])}. "
            "Time differences compare different work, not a faster or slower run.")


def verdict_words(comparison) -> str:
    """A diff verdict in words that match its statistics (2 samples cannot be 'not significant')."""
    verdict = str(comparison.verdict)
    if verdict == "not_significant":
        n = min(int(comparison.n_base or 0), int(comparison.n_new or 0))
        if n < MIN_SAMPLES_TESTED:
            return f"too few steps to test ({comparison.n_base} vs {comparison.n_new})"
        return "within noise (not significant)"
    return verdict.replace("_", " ")


#: trace-diff row units -> the unit format_quantity reads them in.
_DIFF_UNITS = {"ns": "ns", "bytes": "bytes", "%": "%", "pct": "%", "count": "count", "share": "share",
               "fraction": "share", "J": "J", "mJ": "mJ", "W": "W", "flop": "flop", "flop/s": "flop/s",
               "GB/s": "GB/s", "tokens": "count"}


def _summary_tables(run: LoadedRun) -> html.Div:
    rows = []
    for res in run.report.results:
        for k, v in res.summary.items():
            if is_shown_value(v):
                rows.append({"analyzer": res.analyzer, "rank": res.rank, "metric": key_label(k),
                             "value": format_for_key(k, v, origin_ns=run.origin_ns)})
    df = pd.DataFrame(rows, columns=["analyzer", "rank", "metric", "value"])
    return table_view("summary", df, f"summary-{run.entry.run_id}", first=("analyzer", "metric", "value", "rank"))


RENDERERS: dict[str, Callable[[PageContext], list]] = {
    "overview": overview_page,
    "timeline": timeline_page,
    "recommendations": recommendations_page,
    "compare": compare_page,
    **{p: generic_page(p) for p in ("kernels", "communication", "memory", "power", "roofline", "moe")},
}


def render_page(page: str, ctx: PageContext) -> list:
    """The body of ``page`` for the run in ``ctx`` (run and rank pickers on top)."""
    owner = ctx.job or ctx.run
    ranks = owner.ranks
    rank = ctx.job_rank if ctx.job is not None else ctx.rank
    pickers = [param_dropdown("run", [{"label": e.label, "value": e.run_id} for e in ctx.cache.catalog()],
                              owner.entry.run_id, "run")]
    if len(ranks) > 1:
        pickers.append(param_dropdown("rank", [{"label": "all ranks", "value": "all"}]
                                      + [{"label": f"rank {r}", "value": str(r)} for r in ranks],
                                      "all" if rank is None else str(rank), "rank"))
    if ctx.run.job is not None and page not in JOB_PAGES:
        body = [_question(page), html.Div(
            f"This job has {len(ranks)} ranks, analyzed as one summary each: pick a rank above to open its "
            f"{dict(PAGES).get(page, page)} (that rank is then loaded in full).", className="muted", id="pick-rank")]
    else:
        body = RENDERERS[page](ctx)
    return [html.Div(pickers, className="toolbar"), *[b for b in body if b is not None]]


#: How the Runs page says where a recording time came from.
_RECORDED_FROM = {"manifest": "from the run's manifest", "first event": "from the trace's first event",
                  "trace base time": "from the trace's base time"}


# -- Runs page and progress ----------------------------------------------------------------------

def runs_page(cache: RunCache) -> html.Div:
    """Every run under the root with date, devices, steps, median step time and top finding."""
    rows = []
    for e in cache.catalog():
        s = cache.summary(e.run_id) or {}
        state = cache.state(e.run_id)
        started = s.get("started_at_ns")
        date = _dt.datetime.fromtimestamp(started / 1e9, tz=_dt.timezone.utc).strftime("%Y-%m-%d %H:%M") \
            if started else ("not in the trace" if s else "")
        date_cell = html.Td(date, title=_RECORDED_FROM.get(s.get("started_from", ""), ""), className="num")
        q = urlencode({"run": e.run_id})
        status = "loaded" if s else (state.describe() if state.status != "idle" else "not loaded")
        rows.append(html.Tr([
            html.Td(dcc.Link(e.label, href=f"/overview?{q}", className="run-link")),
            html.Td(e.kind), date_cell, html.Td(format_bytes(e.size_bytes), className="num"),
            html.Td(s.get("devices", "")), html.Td(_cell(s.get("ranks"), "count"), className="num"),
            html.Td(_cell(s.get("steps"), "count"), className="num"),
            html.Td(_cell(s.get("median_step_ns"), "ns"), className="num"),
            html.Td(s.get("top_finding", "")), html.Td(status, className="muted num"),
            html.Td(dcc.Link("compare…", href=f"/compare?{q}")),
        ], **{"data-run": e.run_id}))
    head = html.Tr([html.Th(h) for h in ("run", "kind", "recorded (UTC)", "size", "devices", "ranks", "steps",
                                         "median step", "top finding", "status", "")])
    if not rows:
        return html.Div("No runs (trace files or run bundles) found under this folder.", className="muted")
    return html.Div([html.H2("Runs"), html.Table([html.Thead(head), html.Tbody(rows)], className="runs-table",
                                                 id="runs-table")])


def _cell(value: object, unit: str) -> str:
    """A Runs-page cell: the value in its unit, blank while the run is not loaded."""
    return format_quantity(value, unit) if is_shown_value(value) else ""


def progress_view(run_id: str, state) -> html.Div:
    """Progress of a run that is being loaded."""
    pct = int(round(100 * state.fraction))
    return html.Div([
        html.H3(f"Loading {run_id}"),
        html.Div(html.Div(style={"width": f"{pct}%"}, className="bar-fill"), className="bar"),
        html.Div(state.describe(), id="load-progress-text"),
    ], id="load-progress", className="progress")
