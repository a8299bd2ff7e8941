"""The Dash application: navigation, URL-driven routing, and the interactive callbacks.

All state lives in the URL (``/<page>?run=<run id>&rank=<r>&b=<run id>``): pickers write the
query string, the router reads it. Every run id is resolved by `RunCache.resolve`, which rejects
ids that escape the root folder or name no run. The only non-Dash route is
``/download/perfetto?run=<run id>``, the "Open in Perfetto" export of the annotated trace.
"""

from __future__ import annotations

import gzip
import re
import time
from pathlib import Path
from typing import NamedTuple
from urllib.parse import parse_qs, urlencode

import dash
import dash_ag_grid as dag
from dash import ALL, MATCH, Input, Output, State, ctx, dcc, html, no_update
from flask import Response, abort, request

from torchscope.analyzers.core.errors import TraceError

from torchscope.dashboard.pages import (
    PAGE_ANALYZERS, PAGES, PageContext, details_body, filter_findings, findings_count, flows_view, page_availability,
    progress_view, render_page, required_analyzers, runs_page, timeline_for,
)
from torchscope.dashboard.result_view import findings_list
from torchscope.dashboard.run_cache import RunCache
from torchscope.dashboard.runs import UnsafeRunId
from torchscope.dashboard.timeline import DEFAULT_WIDTH_PX, window_from_relayout

__all__ = ["create_app", "parse_query", "POLL_INTERVAL_MS"]

#: How often a page that waits for a load polls for progress, ms.
POLL_INTERVAL_MS = 250
#: A page whose run is still loading waits this long before showing progress instead (most loads
#: finish within it, which saves a progress render and a poll round trip).
ROUTE_WAIT_S = 1.5
ROUTE_WAIT_STEP_S = 0.02
_ASSETS = Path(__file__).with_name("assets")
_PAGE_IDS = {p for p, _ in PAGES}
_MIN_WIDTH_PX, _MAX_WIDTH_PX = 200, 8000

#: Draws the Timeline figure (store ``timeline-figure``) with the selected slice's flow arrows (store
#: ``timeline-flows``) into ``#timeline-plot`` and, once per plot, binds its events: a relayout of the x
#: axis writes ``timeline-request`` (the window asked for and the plot's real width in px, so "at least
#: one pixel" is exact) and a click on a bar writes ``timeline-click`` (the event's index, the last of
#: its customdata), straight from plotly's events. dcc.Graph would first re-plot the whole figure to
#: copy the zoom into its ``figure`` prop, and only then send the request.
TIMELINE_DRAW_JS = """function(fig, flows) {
    if (!fig) { return window.dash_clientside.no_update; }
    // Arrows whose ends lie outside the window start or end at its edge (never over the lane labels);
    // those entirely on one side of it are left out.
    const r = (fig.layout.xaxis && fig.layout.xaxis.range) || [-Infinity, Infinity];
    const clamp = function(v) { return Math.min(Math.max(v, r[0]), r[1]); };
    const arrows = ((flows && flows.annotations) || []).filter(function(a) {
        return !((a.x < r[0] && a.ax < r[0]) || (a.x > r[1] && a.ax > r[1]));
    }).map(function(a) { return Object.assign({}, a, {x: clamp(a.x), ax: clamp(a.ax)}); });
    const layout = Object.assign({}, fig.layout, {annotations: (fig.layout.annotations || []).concat(arrows)});
    const draw = function() {
        const gd = document.getElementById('timeline-plot');
        if (!gd) { return; }
        if (!window.Plotly) { setTimeout(draw, 30); return; }  // plotly.js still loading (a first page)
        Plotly.react(gd, fig.data, layout, {displaylogo: false, scrollZoom: false}).then(function() {
            gd.dataset.drawnWindow = [(fig.layout.meta || {}).t0_ns, (fig.layout.meta || {}).t1_ns].join('-');
            bind(gd);  // the window of the figure now fully drawn, above: what benchmarks wait for
        });
    };
    const bind = function(gd) {
        if (gd._torchscopeBound) { return; }
        gd._torchscopeBound = true;
        gd.on('plotly_relayout', function(ev) {
            if (!ev || !Object.keys(ev).some(function(k) { return k.indexOf('xaxis') === 0; })) { return; }
            const w = gd._fullLayout && gd._fullLayout.xaxis ? gd._fullLayout.xaxis._length : null;
            window.dash_clientside.set_props('timeline-request', {data: {relayout: ev, width: w}});
        });
        gd.on('plotly_click', function(ev) {
            const pt = ev && ev.points && ev.points[0];
            const cd = pt && pt.customdata;
            if (!cd || cd.length < 4) { return; }  // busy bins and counters have no event
            window.dash_clientside.set_props('timeline-click', {data: {event: cd[cd.length - 1], at: Date.now()}});
        });
    };
    draw();
    const meta = fig.layout.meta || {};
    return [meta.t0_ns, meta.t1_ns, ((flows && flows.annotations) || []).length];
}"""


class _Shown(NamedTuple):
    """What a page shows: ``run`` (for one rank of a job, that rank's own run) and the rank within it, and for a
    job's rank the job and the rank picked."""

    run: object
    rank: int | None
    job: object | None
    job_rank: int | None


def parse_query(search: str | None) -> dict[str, str]:
    """The URL query string as {name: first value}."""
    if not search:
        return {}
    return {k: v[0] for k, v in parse_qs(search.lstrip("?"), keep_blank_values=False).items() if v}


def _rank_of(params: dict, ranks: list[int]) -> int | None:
    raw = params.get("rank")
    if raw in (None, "", "all"):
        return None
    try:
        rank = int(raw)
    except ValueError:
        raise UnsafeRunId(f"rank must be an integer or 'all', got {raw[:40]!r}") from None
    if rank not in ranks:
        raise UnsafeRunId(f"this run has no rank {rank} (ranks: {ranks})")
    return rank


def _nav(page: str, params: dict, unavailable: dict | None = None) -> list:
    """The navigation bar; pages the run cannot fill are shown disabled, the reason on hover."""
    keep = {k: params[k] for k in ("run", "rank") if k in params}
    q = ("?" + urlencode(keep)) if keep else ""
    unavailable = unavailable or {}
    return [html.Span(label, id=f"nav-{pid}", className="nav-link disabled",
                      title=f"not available for this run: {unavailable[pid]}")
            if unavailable.get(pid) and pid != page else
            dcc.Link(label, href=f"/{pid}{q}", id=f"nav-{pid}",
                     className="nav-link active" if pid == page else "nav-link") for pid, label in PAGES]


def _ready_for(page: str, run) -> bool:
    """Whether ``run`` has the analyzer results ``page`` needs."""
    needed = required_analyzers(page)
    if needed is None:
        return run.complete
    return not (needed & set(run.pending))


def _width(value: object) -> int:
    try:
        return int(min(max(int(value), _MIN_WIDTH_PX), _MAX_WIDTH_PX))  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return DEFAULT_WIDTH_PX


def _error(message: str) -> html.Div:
    return html.Div(message, className="error", id="page-error")


def create_app(root: str | Path, *, cache: RunCache | None = None, preload: bool = False) -> dash.Dash:
    """The dashboard app over the runs under ``root`` (a folder of runs, a bundle or a trace file)."""
    cache = cache or RunCache(root, first=tuple(PAGE_ANALYZERS["overview"]))
    app = dash.Dash(__name__, title="torchscope", assets_folder=str(_ASSETS),
                    suppress_callback_exceptions=True, update_title=None)
    app.torchscope_cache = cache  # type: ignore[attr-defined]
    if preload:
        cache.preload()
    app.layout = html.Div([
        dcc.Location(id="url", refresh=False),
        dcc.Store(id="viewport", data=DEFAULT_WIDTH_PX),
        # One tick per answer: each route answer that wants another look arms exactly one more tick
        # (max_intervals), so a tick never fires while the route call before it is still running. Dash drops
        # the answer of a call that a newer call of the same callback overtakes: with free-running ticks and
        # answers slower than the interval (a page drawn under load), every answer was dropped and the page
        # stayed on its progress view.
        dcc.Interval(id="poll", interval=POLL_INTERVAL_MS, disabled=True, max_intervals=0),
        dcc.Store(id="rendered"),  # what the page shows now: skip identical re-renders on poll ticks
        html.Header([html.Span("torchscope", className="brand"), html.Nav(id="nav")], className="header"),
        html.Main(id="page", className="page"),
        # Loads plotly.js while the server is still parsing a run, instead of after the first page
        # with a graph arrives (plotly is the largest script the browser has to compile).
        dcc.Graph(id="plotly-preload", figure={"data": [], "layout": {}}, style={"display": "none"},
                  config={"staticPlot": True}),
        # Likewise the dropdown's script, which Dash fetches only when a page first shows a picker (the
        # Overview's rank and run pickers): fetched after the page's data, it delayed the first paint.
        html.Div(dcc.Dropdown(id="dropdown-preload", options=[]), style={"display": "none"}),
        # And AG Grid's own script (~0.9 MB), fetched when the first grid mounts: a job overview's per-rank
        # grid waited for it after the page had arrived.
        html.Div(dag.AgGrid(id="grid-preload", rowData=[], columnDefs=[]), style={"display": "none"}),
    ])

    def _run_id(params: dict) -> str | None:
        """The run a URL names, else the first of the catalog (None when the folder has none)."""
        if params.get("run"):
            return params["run"]
        catalog = cache.catalog()
        return catalog[0].run_id if catalog else None

    @app.server.before_request
    def _start_loading_early() -> None:
        # A page URL names its run: start parsing it now, while the browser is still booting the app,
        # instead of when the first callback arrives. Bad or unknown ids are left to the page to report.
        page = request.path.strip("/")
        if page not in _PAGE_IDS or page == "runs":
            return
        try:
            run_id = _run_id({"run": request.args.get("run")})
            if run_id:
                cache.get(run_id)
        except (UnsafeRunId, TraceError):
            pass

    app.clientside_callback(
        "function(p) { return Math.max(200, Math.min(8000, Math.round(window.innerWidth - 260))); }",
        Output("viewport", "data"), Input("url", "pathname"))

    def _page_run(params: dict) -> _Shown | None:
        """What a callback's page shows for a URL query (one rank of a job is its own run, loaded on demand), or
        None while that is loading; UnsafeRunId for an id outside the root."""
        run = cache.get(_run_id(params))
        if run is None:
            return None
        rank = _rank_of(params, run.ranks)
        if run.job is None or rank is None:
            return _Shown(run, rank, None, None)
        one = cache.rank_run(run.entry.run_id, rank)
        return None if one is None else _Shown(one, None, run, rank)

    @app.callback(Output("page", "children"), Output("poll", "disabled"), Output("poll", "max_intervals"),
                  Output("nav", "children"), Output("rendered", "data"),
                  Input("url", "pathname"), Input("url", "search"), Input("poll", "n_intervals"),
                  State("viewport", "data"), State("rendered", "data"))
    def route(pathname, search, n_intervals, width, rendered):
        tick = ctx.triggered_id == "poll"
        skip = rendered if tick else None
        # A tick answers at once with what there is; only a new URL waits a little for its run.
        try:
            body, poll_disabled, nav, key = _route(pathname, search, width, skip, wait=not tick)
        except Exception as exc:  # a failed answer arms no tick: say why instead of waiting for nothing
            body, poll_disabled, nav, key = _error(f"this page could not be routed: {type(exc).__name__}: {exc}"), \
                True, no_update, None
        arm = (n_intervals or 0) + (0 if poll_disabled else 1)
        if body is no_update:
            return no_update, poll_disabled, arm, no_update, no_update  # a poll tick with nothing new
        return body, poll_disabled, arm, nav, key

    def _wait_until_ready(run_id: str, page: str, wait: bool = True):
        """The run once ``page`` can be drawn, or what there is after ROUTE_WAIT_S (then: progress view); with
        ``wait=False``, what there is now."""
        deadline = time.monotonic() + (ROUTE_WAIT_S if wait else 0.0)
        while True:
            run = cache.get(run_id)
            if (run is not None and _ready_for(page, run)) or cache.state(run_id).status == "error" \
                    or time.monotonic() >= deadline:
                return run
            time.sleep(ROUTE_WAIT_STEP_S)

    def _wait_for_rank(run_id: str, rank: int, wait: bool = True):
        """Rank ``rank`` of job ``run_id`` once loaded, or None after ROUTE_WAIT_S (then: progress view)."""
        deadline = time.monotonic() + (ROUTE_WAIT_S if wait else 0.0)
        while True:
            run = cache.rank_run(run_id, rank)
            if run is not None or time.monotonic() >= deadline:
                return run
            time.sleep(ROUTE_WAIT_STEP_S)

    def _route(pathname, search, width, skip_key=None, wait=True):
        """(page body, poll disabled, nav, render key) for a URL."""
        page = (pathname or "/").strip("/") or "runs"
        params = parse_query(search)
        if page not in _PAGE_IDS:
            return _error(f"no page {page[:60]!r}"), True, _nav("", params), None
        nav = _nav(page, params)
        if page == "runs":
            done = sum(1 for e in cache.catalog() if cache.summary(e.run_id) is not None)
            key = f"runs|{done}|{cache.busy()}"
            if key == skip_key:
                return no_update, not cache.busy(), nav, key
            return runs_page(cache), not cache.busy(), nav, key
        catalog = cache.catalog()
        if not catalog:
            return _error("No runs (trace files or run bundles) found under this folder."), True, nav, None
        run_id = params.get("run") or catalog[0].run_id
        try:
            cache.resolve(run_id)
            run = _wait_until_ready(run_id, page, wait)
            if run is not None and not _ready_for(page, run):
                return progress_view(run_id, cache.state(run_id)), False, nav, None
            if run is None:
                state = cache.state(run_id)
                if state.status == "error":
                    return _error(f"{run_id}: {state.error}"), True, nav, None
                return progress_view(run_id, state), False, nav, None
            rank = _rank_of(params, run.ranks)
            job = None
            if run.job is not None and rank is not None:  # one rank of a job: that rank, loaded on its own
                job, run = run, _wait_for_rank(run_id, rank, wait)
                if run is None or not _ready_for(page, run):
                    rank_id = f"{job.entry.run_id}#rank{rank}"
                    state = cache.state(rank_id)
                    if state.status == "error":
                        return _error(f"rank {rank}: {state.error}"), True, nav, None
                    return progress_view(f"{run_id}, rank {rank}", state), False, nav, None
            run_b = None
            if page == "compare" and params.get("b"):
                cache.resolve(params["b"])
                run_b = cache.get(params["b"])
                if run_b is None or not run_b.complete:
                    state = cache.state(params["b"])
                    if state.status == "error":
                        return _error(f"{params['b']}: {state.error}"), True, nav, None
                    return progress_view(params["b"], state), False, nav, None
        except UnsafeRunId as exc:
            return _error(f"rejected: {exc}"), True, nav, None
        nav = _nav(page, params, page_availability(run, len(catalog)))
        # The Timeline needs no analyzer: it is not redrawn as they finish (that would undo a zoom).
        key = f"{page}|{search}|{len(run.pending) if required_analyzers(page) != set() else 0}"
        if key == skip_key:
            return no_update, run.complete, nav, key
        try:
            with cache.foreground():
                body = render_page(page, PageContext(run, None if job is not None else rank, params, cache, run_b,
                                                     _width(width), job=job, job_rank=rank))
        except Exception as exc:  # one broken table must not blank the whole app
            return _error(f"this page could not be drawn: {type(exc).__name__}: {exc}"), True, nav, None
        # Keep polling while the run is still being analyzed: the page fills in as analyzers finish.
        return body, run.complete, nav, key

    @app.callback(Output("url", "search"), Input({"type": "param", "name": ALL}, "value"),
                  State("url", "search"), prevent_initial_call=True)
    def params_to_url(values, search):
        if ctx.triggered_id is None:
            # Pickers just drawn by a page fire once with the values the URL already implies (e.g. the
            # default rank): writing them back would only make the page render a second time.
            return no_update
        params = parse_query(search)
        chosen = {spec["id"]["name"]: value for spec, value in zip(ctx.inputs_list[0], values)}
        if "run" in chosen and chosen["run"] not in (None, "") and chosen["run"] != params.get("run"):
            chosen = {"run": chosen["run"]}  # another run: its ranks and comparison differ
            params.pop("rank", None)
            params.pop("b", None)
        for name, value in chosen.items():
            if value in (None, "") or (name == "rank" and value == "all"):
                params.pop(name, None)
            else:
                params[name] = str(value)
        new = "?" + urlencode(params) if params else ""
        return no_update if new == (search or "") else new

    app.clientside_callback(TIMELINE_DRAW_JS, Output("timeline-drawn", "data"), Input("timeline-figure", "data"),
                            Input("timeline-flows", "data"))

    @app.callback(Output("timeline-flows", "data"), Output("timeline-selection", "children"),
                  Input("timeline-click", "data"), State("url", "search"), State("viewport", "data"),
                  prevent_initial_call=True)
    def flows(click, search, width):
        params = parse_query(search)
        try:
            shown = _page_run(params) if isinstance(click, dict) else None
            if shown is None:
                return no_update, no_update
            event = int(click.get("event"))
        except (UnsafeRunId, TypeError, ValueError):
            return no_update, no_update
        return flows_view(shown.run, shown.rank, event, _width(width))

    @app.callback(Output("timeline-figure", "data"), Output("timeline-stats", "children"),
                  Input("timeline-request", "data"), Input("timeline-reset", "n_clicks"),
                  State("url", "search"), State("viewport", "data"), prevent_initial_call=True)
    def zoom(request_, _reset, search, width):
        params = parse_query(search)
        try:
            shown = _page_run(params)
        except UnsafeRunId:
            return no_update, no_update
        if shown is None:
            return no_update, no_update
        run, rank = shown.run, shown.rank
        request_ = request_ if isinstance(request_, dict) else {}
        relayout = request_.get("relayout") if isinstance(request_.get("relayout"), dict) else None
        width = request_.get("width") or width
        try:
            width_px = int(min(max(int(width or DEFAULT_WIDTH_PX), _MIN_WIDTH_PX), _MAX_WIDTH_PX))
        except (TypeError, ValueError):
            width_px = DEFAULT_WIDTH_PX
        if ctx.triggered_id == "timeline-reset":
            window = "full"
        else:
            origin = run.memo["timeline-lanes"].origin_ns if "timeline-lanes" in run.memo else None
            if origin is None:
                timeline_for(run, rank, None, None, width_px)
                origin = run.memo["timeline-lanes"].origin_ns
            window = window_from_relayout(relayout, origin)
        if window is None:
            return no_update, no_update
        t0, t1 = (None, None) if window == "full" else window
        with cache.foreground():
            fig = timeline_for(run, rank, t0, t1, width_px)
        meta = fig["layout"]["meta"]
        return fig, f"{meta.get('drawn', 0)} events drawn, {meta.get('folded', 0)} folded into busy bins"

    @app.callback(Output("details-body", "children"), Output("details-body", "className"),
                  Input("details-summary", "n_clicks"), State("url", "pathname"), State("url", "search"),
                  prevent_initial_call=True)
    def open_details(clicks, pathname, search):
        # The first click opens the folder (Dash does not report <details>' open state): fill it then, once.
        if clicks != 1:
            return no_update, no_update
        page = (pathname or "/").strip("/") or "overview"
        params = parse_query(search)
        try:
            shown = _page_run(params)
        except UnsafeRunId as exc:
            return _error(f"rejected: {exc}"), ""
        if shown is None:
            return no_update, no_update
        return details_body(page, PageContext(shown.run, shown.rank, params, cache, job=shown.job,
                                              job_rank=shown.job_rank)), ""

    # The column chooser of a grid shows the hidden columns it names (client-side: no round trip).
    app.clientside_callback(
        """function(chosen, options, defs) {
            if (!defs) { return window.dash_clientside.no_update; }
            const hideable = new Set((options || []).map(o => o.value));
            const shown = new Set(chosen || []);
            return defs.map(d => hideable.has(d.field) ? Object.assign({}, d, {hide: !shown.has(d.field)}) : d);
        }""",
        Output({"type": "grid", "grid": MATCH}, "columnDefs"),
        Input({"type": "grid-columns", "grid": MATCH}, "value"),
        State({"type": "grid-columns", "grid": MATCH}, "options"),
        State({"type": "grid", "grid": MATCH}, "columnDefs"), prevent_initial_call=True)

    @app.callback(Output("rec-list", "children"), Output("rec-count", "children"),
                  Input("rec-analyzer", "value"), Input("rec-severity", "value"), State("url", "search"),
                  prevent_initial_call=True)
    def filter_recommendations(analyzers_, severities, search):
        params = parse_query(search)
        try:
            shown = _page_run(params)
        except UnsafeRunId:
            return no_update, no_update
        if shown is None:
            return no_update, no_update
        found = filter_findings(shown.run.report, analyzers_, severities)
        q = urlencode({k: params[k] for k in ("run", "rank") if k in params})
        return findings_list(found, q, empty="No findings match."), findings_count(len(found))

    @app.server.route("/download/perfetto")
    def download_perfetto():
        run_id = request.args.get("run", "")
        try:
            entry = cache.resolve(run_id)
            run = cache.load(entry.run_id)
        except UnsafeRunId:
            abort(404)
        except TraceError as exc:
            return Response(f"cannot export: {exc}\n", status=422, mimetype="text/plain")
        from torchscope.analyzers.io.export import annotated_trace_json

        body = gzip.compress(annotated_trace_json(run.data, run.report), compresslevel=5)
        name = re.sub(r"[^A-Za-z0-9._-]+", "_", Path(entry.run_id).name.removesuffix(".gz").removesuffix(".json"))
        return Response(body, mimetype="application/gzip", headers={
            "Content-Disposition": f'attachment; filename="{name or "run"}.perfetto.json.gz"'})

    return app
