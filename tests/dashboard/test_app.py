"""Layout and callback tests through Dash's HTTP callback API (no browser), plus the CLI entry."""

from __future__ import annotations

import gzip
import json
import re
import shutil
import threading
import time
from pathlib import Path

import orjson
import pytest

from torchscope import analyzers
from torchscope.cli import build_parser, main
from torchscope.dashboard.app import ROUTE_WAIT_S, create_app
from torchscope.dashboard.pages import PAGES, findings_count
from torchscope.dashboard.ranking import ranked_findings
from torchscope.dashboard.run_cache import RunCache
from tests.dashboard.components import CountingLoader, text_of

pytestmark = pytest.mark.filterwarnings(r"ignore:\s*The dash_table.DataTable will be removed:DeprecationWarning")

TRACES = ("a100_train_2rank_rank0_nccl.json.gz", "cpu_only_rank34.json.gz", "mi250_minitoy_train.json.gz")
NCCL = TRACES[0]


@pytest.fixture(scope="module")
def root(tmp_path_factory, shared_traces) -> Path:
    base = tmp_path_factory.mktemp("dash")
    root = base / "runs"
    root.mkdir()
    for name in TRACES:
        shutil.copy(shared_traces / name, root / name)
    shutil.copy(shared_traces / "a100_alexnet.json.gz", base / "outside.json.gz")  # must never be served
    return root


@pytest.fixture(scope="module")
def env(root):
    loader = CountingLoader()
    cache = RunCache(root, loader=loader)
    app = create_app(root, cache=cache)
    for name in TRACES:
        cache.load(name)
    yield app, cache, loader, app.server.test_client()
    cache.shutdown()


def _key(app, needle: str) -> str:
    return next(k for k in app.callback_map if needle in k)


def call(app, client, output_needle: str, inputs: list, state: list = (), changed: list | None = None):
    """POST one callback invocation; returns (status, response dict or None)."""
    key = _key(app, output_needle)
    cb = app.callback_map[key]
    outputs = [{"id": o.component_id, "property": o.component_property} for o in cb["output"]] \
        if isinstance(cb["output"], list) else None
    if outputs is None:
        outputs = [{"id": p.split(".")[0], "property": p.split(".")[1]} for p in key.strip(".").split("...")]
    body = {"output": key, "outputs": outputs if len(outputs) > 1 else outputs[0], "inputs": list(inputs),
            "state": list(state), "changedPropIds": changed or []}
    resp = client.post("/_dash-update-component", json=body)
    if resp.status_code == 204:
        return 204, None
    payload = resp.get_json() or {}
    if resp.status_code == 200 and not payload.get("response"):
        return 204, None  # every output was no_update
    return resp.status_code, payload.get("response")


def route(app, client, path: str, search: str = ""):
    status, out = call(app, client, "page.children", [
        {"id": "url", "property": "pathname", "value": path},
        {"id": "url", "property": "search", "value": search},
        {"id": "poll", "property": "n_intervals", "value": None},
    ], [{"id": "viewport", "property": "data", "value": 1200},
        {"id": "rendered", "property": "data", "value": None}], ["url.pathname"])
    assert status == 200
    return out


def details(app, client, path: str, search: str = ""):
    """The body the folded details of ``path`` receive when a person opens them."""
    status, out = call(app, client, "details-body.children",
                       [{"id": "details-summary", "property": "n_clicks", "value": 1}],
                       [{"id": "url", "property": "pathname", "value": path},
                        {"id": "url", "property": "search", "value": search}], ["details-summary.n_clicks"])
    assert status == 200
    return out["details-body"]["children"]


def test_layout_has_routing_skeleton_and_every_page_in_the_nav(env):
    app, _, _, client = env
    layout = json.loads(json.dumps(app.layout, cls=__import__("plotly").utils.PlotlyJSONEncoder))
    ids = re.findall(r'"id": "([a-z-]+)"', json.dumps(layout))
    assert {"url", "page", "nav", "poll", "viewport"} <= set(ids)
    out = route(app, client, "/runs")
    nav = json.dumps(out["nav"]["children"])
    for pid, label in PAGES:
        assert f'/{pid}' in nav and label in nav


def test_runs_page_lists_every_run_with_facts_from_the_reports(env):
    app, _, _, client = env
    out = route(app, client, "/")
    text = text_of(out["page"]["children"])
    for name in TRACES:
        assert name in text
    assert "outside.json.gz" not in text
    assert "NVIDIA A100" in text  # device from the loaded trace
    assert out["poll"]["disabled"] is True  # nothing loading


@pytest.mark.parametrize("page", [p for p, _ in PAGES if p != "runs"])
def test_every_page_renders_for_a_loaded_run_without_re_parsing(env, page):
    app, _, loader, client = env
    before = len(loader.calls)
    out = route(app, client, f"/{page}", f"?run={NCCL}")
    text = text_of(out["page"]["children"])
    assert "could not be drawn" not in text and "rejected" not in text
    assert len(loader.calls) == before


def test_overview_shows_top_findings_and_step_breakdown(env):
    app, cache, _, client = env
    out = route(app, client, "/overview", f"?run={NCCL}")
    blob = json.dumps(out["page"]["children"])
    assert "Top findings" in blob
    top = ranked_findings(cache.get(NCCL).report.findings)[0]  # the largest predicted gain leads
    assert top.title in blob
    step_plot = "overview-attribution" if cache.get(NCCL).report.result("bottleneck") else "overview-steps"
    assert step_plot in blob and '"id": "verdict"' in blob


def test_skipped_analyzer_says_why(env):
    app, cache, _, client = env
    rep = cache.get("cpu_only_rank34.json.gz").report
    assert rep.skipped, "the CPU-only trace should skip some analyzer"
    name, reason = next(iter(rep.skipped.items()))
    page = next((p for p, names in __import__("torchscope.dashboard.pages", fromlist=["x"]).PAGE_ANALYZERS.items()
                 if name in names), "recommendations")
    out = route(app, client, f"/{page}", "?run=cpu_only_rank34.json.gz")
    nav = json.dumps(out["nav"]["children"])
    body = text_of(details(app, client, f"/{page}", "?run=cpu_only_rank34.json.gz"))
    # Said where a person looks: on the disabled tab (hover) of a page the run cannot fill, or in the details.
    assert f"not available for this run: {reason}" in body or f"{name}: {reason}" in nav


def test_details_are_sent_only_when_opened(env):
    app, _, _, client = env
    page = json.dumps(route(app, client, "/kernels", f"?run={NCCL}")["page"]["children"])
    assert '"id": "details-body"' in page and "table-kernels-by_name-0" not in page
    opened = json.dumps(details(app, client, "/kernels", f"?run={NCCL}"))
    assert "table-kernels-by_name-0" in opened and "top_kernels" in opened  # named as left out, not repeated


@pytest.mark.parametrize("search", [
    "?run=../outside.json.gz", "?run=%2E%2E%2Foutside.json.gz", "?run=/etc/passwd", "?run=..%5Coutside.json.gz",
    "?run=sub/../../outside.json.gz", "?run=%00", f"?run={NCCL}&rank=../../x", f"?run={NCCL}&rank=7",
])
def test_url_query_cannot_escape_the_root(env, search):
    app, _, loader, client = env
    before = len(loader.calls)
    out = route(app, client, "/overview", search)
    assert "rejected" in text_of(out["page"]["children"])
    assert len(loader.calls) == before


def test_compare_second_run_is_checked_too(env):
    app, _, _, client = env
    out = route(app, client, "/compare", f"?run={NCCL}&b=../outside.json.gz")
    assert "rejected" in text_of(out["page"]["children"])
    ok = route(app, client, "/compare", f"?run={NCCL}&b=mi250_minitoy_train.json.gz")
    text = text_of(ok["page"]["children"])
    assert "A: " + NCCL in text and "B: mi250_minitoy_train.json.gz" in text


@pytest.mark.parametrize("run_id", ["../outside.json.gz", "/etc/passwd", "%2e%2e/outside.json.gz", "", "x" * 3000])
def test_download_rejects_ids_outside_the_root(env, run_id):
    _, _, _, client = env
    assert client.get("/download/perfetto", query_string={"run": run_id}).status_code == 404


def test_download_exports_an_annotated_trace_that_loads_back(env, tmp_path):
    _, cache, _, client = env
    resp = client.get("/download/perfetto", query_string={"run": NCCL})
    assert resp.status_code == 200 and "attachment" in resp.headers["Content-Disposition"]
    out = tmp_path / "x.json.gz"
    out.write_bytes(resp.data)
    doc = orjson.loads(gzip.decompress(resp.data))
    assert len(doc["torchscopeFindings"]) == len(cache.get(NCCL).report.findings)
    back = analyzers.load(out)
    orig = cache.get(NCCL).data
    assert back.events["ts_ns"].min() == orig.events["ts_ns"].min()


def test_static_routes_do_not_serve_files_outside_assets(env):
    _, _, _, client = env
    from dash.exceptions import DependencyException

    for url in ("/assets/../../pyproject.toml", "/assets/%2e%2e/app.py", "/assets/..%2f..%2fpyproject.toml",
                "/_dash-component-suites/../../../etc/passwd", "/_dash-component-suites/dash/..%2f..%2f..%2fsetup.py"):
        try:
            resp = client.get(url)
        except DependencyException:  # Dash refuses unregistered paths by raising
            continue
        assert resp.status_code in (400, 404, 308, 500), url  # 500: Dash raises DependencyException
        assert b"[project]" not in resp.data and b"import" not in resp.data


def _zoom(app, client, relayout, search=f"?run={NCCL}", reset=None):
    return call(app, client, "timeline-figure.data", [
        {"id": "timeline-request", "property": "data", "value": {"relayout": relayout, "width": 1000}},
        {"id": "timeline-reset", "property": "n_clicks", "value": reset},
    ], [{"id": "url", "property": "search", "value": search},
        {"id": "viewport", "property": "data", "value": 1000}],
        ["timeline-reset.n_clicks" if reset else "timeline-request.data"])


def test_timeline_zoom_callback_returns_the_window_at_finer_detail(env):
    app, _, _, client = env
    status, full = _zoom(app, client, {"xaxis.autorange": True})
    assert status == 200
    full_meta = full["timeline-figure"]["data"]["layout"]["meta"]
    status, out = _zoom(app, client, {"xaxis.range[0]": 300.0, "xaxis.range[1]": 300.5})
    fig = out["timeline-figure"]["data"]
    assert fig["layout"]["xaxis"]["range"] == pytest.approx([300.0, 300.5])
    meta = fig["layout"]["meta"]
    assert meta["t1_ns"] - meta["t0_ns"] == 500_000
    assert meta["folded"] < full_meta["folded"]
    assert "events drawn" in out["timeline-stats"]["children"]
    status, _ = _zoom(app, client, {"dragmode": "pan"})
    assert status == 204
    status, _ = _zoom(app, client, {"xaxis.range[0]": 1, "xaxis.range[1]": 2}, search="?run=../outside.json.gz")
    assert status == 204
    status, reset = _zoom(app, client, {"xaxis.range[0]": 1, "xaxis.range[1]": 2}, reset=1)
    assert reset["timeline-figure"]["data"]["layout"]["meta"]["t0_ns"] == full_meta["t0_ns"]


def test_recommendations_filter(env):
    app, cache, _, client = env
    findings = cache.get(NCCL).report.findings
    sev = findings[0].severity

    def filt(analyzers_, severities, search=f"?run={NCCL}"):
        return call(app, client, "rec-list.children", [
            {"id": "rec-analyzer", "property": "value", "value": analyzers_},
            {"id": "rec-severity", "property": "value", "value": severities},
        ], [{"id": "url", "property": "search", "value": search}], ["rec-severity.value"])

    status, out = filt([], [sev])
    expected = [f for f in findings if f.severity == sev]
    assert out["rec-count"]["children"] == findings_count(len(expected))
    blob = json.dumps(out["rec-list"]["children"])
    assert all(f.title in blob for f in expected)
    status, out = filt(["no-such-analyzer"], [])
    assert out["rec-count"]["children"] == "0 findings"
    assert filt([], [sev], "?run=/etc/passwd")[0] == 204


def test_pickers_write_the_url_query(env):
    app, _, _, client = env

    def pick(values, search):
        return call(app, client, "url.search", [[
            {"id": {"type": "param", "name": n}, "property": "value", "value": v} for n, v in values]],
            [{"id": "url", "property": "search", "value": search}], ["x.value"])

    status, out = pick([("run", "mi250_minitoy_train.json.gz")], f"?run={NCCL}&rank=0")
    assert out["url"]["search"] == "?run=mi250_minitoy_train.json.gz"  # another run drops the rank
    status, _ = pick([("run", NCCL)], f"?run={NCCL}")
    assert status == 204
    status, out = pick([("run", NCCL), ("b", None)], f"?run={NCCL}&b=x")
    assert out["url"]["search"] == f"?run={NCCL}"


@pytest.fixture
def held(root):
    """(gate, cache, app, client) over ``root`` whose loader waits at ``gate`` until the test sets it."""
    gate = threading.Event()

    def slow(path):
        gate.wait(10)
        return analyzers.load(path)

    cache = RunCache(root, loader=slow)
    app = create_app(root, cache=cache)
    yield gate, cache, app, app.server.test_client()
    gate.set()
    cache.shutdown()


def test_loading_shows_progress_then_the_page(held):
    gate, cache, app, client = held
    out = route(app, client, "/overview", "?run=mi250_minitoy_train.json.gz")
    assert out["poll"]["disabled"] is False
    assert "Loading mi250_minitoy_train.json.gz" in text_of(out["page"]["children"])
    gate.set()
    cache.load("mi250_minitoy_train.json.gz")
    out = route(app, client, "/overview", "?run=mi250_minitoy_train.json.gz")
    assert out["poll"]["disabled"] is True and "Top findings" in text_of(out["page"]["children"])


def test_a_poll_tick_answers_at_once_and_arms_exactly_one_more(held):
    # Dash drops the answer of a call that a newer call of the same callback overtakes: ticks must not fire
    # while a route call runs, so each answer arms one tick and a tick never waits for the run.
    gate, cache, app, client = held
    run_id = "mi250_minitoy_train.json.gz"

    def tick(n):
        return call(app, client, "page.children", [
            {"id": "url", "property": "pathname", "value": "/overview"},
            {"id": "url", "property": "search", "value": f"?run={run_id}"},
            {"id": "poll", "property": "n_intervals", "value": n}],
            [{"id": "viewport", "property": "data", "value": 1200},
             {"id": "rendered", "property": "data", "value": None}], ["poll.n_intervals"])

    t = time.monotonic()
    out = route(app, client, "/overview", f"?run={run_id}")  # a new URL waits ROUTE_WAIT_S for its run
    assert time.monotonic() - t >= 0.9 * ROUTE_WAIT_S
    assert out["poll"] == {"disabled": False, "max_intervals": 1}
    t = time.monotonic()
    status, out = tick(1)
    assert time.monotonic() - t < 0.5 * ROUTE_WAIT_S  # the tick did not wait
    assert status == 200 and out["poll"] == {"disabled": False, "max_intervals": 2}
    assert "Loading" in text_of(out["page"]["children"])
    gate.set()
    cache.load(run_id)
    status, out = tick(2)
    assert out["poll"] == {"disabled": True, "max_intervals": 2}  # complete: no tick armed
    assert "Top findings" in text_of(out["page"]["children"])


def test_a_route_that_fails_says_why_instead_of_leaving_the_page_waiting(root, monkeypatch):
    cache = RunCache(root)
    app = create_app(root, cache=cache)
    client = app.server.test_client()
    try:
        monkeypatch.setattr(cache, "catalog", lambda refresh=False: 1 / 0)
        out = route(app, client, "/overview", "?run=mi250_minitoy_train.json.gz")
        assert "could not be routed: ZeroDivisionError" in text_of(out["page"]["children"])
        assert out["poll"]["disabled"] is True
    finally:
        cache.shutdown()


def test_bad_trace_shows_the_loader_error(tmp_path):
    (tmp_path / "broken.json").write_text("{not json")
    cache = RunCache(tmp_path)
    app = create_app(tmp_path, cache=cache)
    client = app.server.test_client()
    with pytest.raises(analyzers.TraceError):
        cache.load("broken.json")
    text = text_of(route(app, client, "/overview", "?run=broken.json")["page"]["children"])
    assert "broken.json" in text and "Traceback" not in text
    cache.shutdown()


def test_cli_defaults_are_safe_and_bad_input_exits_2(tmp_path, capsys, root, monkeypatch):
    args = build_parser().parse_args(["dashboard", str(root)])
    assert args.host == "127.0.0.1" and args.port == 8050 and args.debug is False
    assert main(["dashboard", str(tmp_path / "nope")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "nope" in err
    served = {}
    monkeypatch.setattr("torchscope.dashboard.server.serve", lambda path, **kw: served.update(kw, path=path))
    assert main(["dashboard", str(root), "--port", "8123"]) == 0
    assert capsys.readouterr().out == ""  # the start-up line is serve's, printed once the port is bound
    assert served["host"] == "127.0.0.1" and served["port"] == 8123 and served["debug"] is False
    assert served["verbose"] is False and served["title"].startswith("torchscope dashboard: ")
    assert main(["dashboard", str(root), "--host", "0.0.0.0", "--verbose"]) == 0
    assert capsys.readouterr().err.startswith("torchscope: warning: serving on 0.0.0.0")
    assert served["host"] == "0.0.0.0" and served["verbose"] is True


def test_no_pickle_anywhere_in_the_dashboard():
    repo = Path(__file__).resolve().parents[2]
    for path in [*sorted((repo / "dashboard").rglob("*.py")), repo / "analyzers" / "io" / "export.py"]:
        src = path.read_text()
        assert not re.search(r"\b(pickle|cPickle|dill|joblib|shelve)\b", src), path


def test_tables_pass_trace_content_as_text_never_as_markup():
    import pandas as pd
    from torchscope.dashboard.result_view import table_view
    from tests.dashboard.components import tree

    evil = pd.DataFrame({"name": ["<script>alert(1)</script>", "a|b & c", "f()::{lambda(int)#1}"],
                         "dur_ns": [1, 2, 3]})
    view = tree(table_view("t", evil))
    grid = view["props"]["children"][2]["props"]
    # The grid shows cell values as text (React escapes them); no column renders HTML or Markdown.
    assert [r["name"] for r in grid["rowData"]] == list(evil["name"])
    assert not any("cellRenderer" in c for c in grid["columnDefs"])
    assert "dangerously_allow_html" not in json.dumps(view)


def test_pages_render_as_their_analyzers_finish(root):
    from torchscope.analyzers.core.registry import load_analyzers, run_all

    last = list(load_analyzers())[-1]
    assert last not in ("training_loop", "gpu_time")
    gate = threading.Event()

    def analyze(data, only=None, **kw):
        if only == (last,):
            gate.wait(10)
        return run_all(data, only=only, **kw)

    cache = RunCache(root, analyze=analyze)
    app = create_app(root, cache=cache)
    client = app.server.test_client()
    run_id = "mi250_minitoy_train.json.gz"
    try:
        cache.request(run_id)
        for _ in range(200):  # until every analyzer but the last is done
            run = cache.get(run_id)
            if run is not None and run.pending == (last,):
                break
            time.sleep(0.02)
        assert cache.get(run_id).pending == (last,)
        out = route(app, client, "/overview", f"?run={run_id}")
        text = text_of(out["page"]["children"])
        assert "Top findings" in text and f"still analyzing: {last}" in text
        assert out["poll"]["disabled"] is False  # keeps polling until the run is complete
        out = route(app, client, "/timeline", f"?run={run_id}")
        assert "events drawn" in text_of(out["page"]["children"])
        out = route(app, client, "/recommendations", f"?run={run_id}")
        assert "Loading" in text_of(out["page"]["children"])  # needs every analyzer
        gate.set()
        cache.load(run_id)
        out = route(app, client, "/recommendations", f"?run={run_id}")
        assert "findings" in text_of(out["page"]["children"]) and out["poll"]["disabled"] is True
        key = out["rendered"]["data"]
        status, same = call(app, client, "page.children", [
            {"id": "url", "property": "pathname", "value": "/recommendations"},
            {"id": "url", "property": "search", "value": f"?run={run_id}"},
            {"id": "poll", "property": "n_intervals", "value": 5},
        ], [{"id": "viewport", "property": "data", "value": 1200},
            {"id": "rendered", "property": "data", "value": key}], ["poll.n_intervals"])
        assert status == 204 or "page" not in same  # a poll tick with nothing new re-renders nothing
    finally:
        gate.set()
        cache.shutdown()


def test_dedicated_figures_come_from_the_analyzer_tables():
    import pandas as pd
    from torchscope.analyzers.core.result import Result
    from torchscope.analyzers.core.report import Report
    from torchscope.dashboard.pages import _dedicated_figures

    t = pd.DataFrame({"t_ns": [0, 10**9, 2 * 10**9] * 2, "device": [0, 0, 0, 1, 1, 1],
                      "power_w": [100.0, 200, 150, 90, 95, 99], "sm_clock_mhz": [1400.0] * 6})
    power = Result("power", rank=0, tables={
        "timeline": t, "steps": pd.DataFrame({"step": [1, 2], "energy_j": [5.0, 7.0]}),
        "phases": pd.DataFrame({"phase": ["forward", "backward"], "time_ns": [1, 2], "energy_mj": [3.0, 4.0]}),
        "throttle": pd.DataFrame({"device": [0], "reason": ["SwPowerCap"], "time_share": [0.25]})})
    figs = dict(_dedicated_figures("power", Report("x", (power,)), None))
    assert set(figs) == {"power-timeline", "power-clocks", "power-steps", "power-phases", "power-throttle"}
    lines = figs["power-timeline"].data
    assert [tr.name for tr in lines] == ["0", "1"] and list(lines[0].y) == [100.0, 200.0, 150.0]
    assert list(lines[0].x) == [0.0, 1.0, 2.0]  # seconds since the first sample
    assert list(figs["power-steps"].data[0].y) == [5.0, 7.0]
    # Missing tables: no figure, and no error (the tables still show generically).
    assert _dedicated_figures("power", Report("x", (Result("power", rank=0),)), None) == []
    moe = Result("moe", rank=0, tables={"expert_load": pd.DataFrame(
        {"layer": ["l0", "l0", "l1", "l1"], "expert": [0, 1, 0, 1], "assignments": [3, 1, 2, 2]})})
    heat = dict(_dedicated_figures("moe", Report("x", (moe,)), None))["moe-heatmap"].data[0]
    assert [list(r) for r in heat.z] == [[3.0, 1.0], [2.0, 2.0]]


def test_download_of_a_broken_run_says_why(tmp_path):
    (tmp_path / "broken.json").write_text("{not json")
    cache = RunCache(tmp_path)
    client = create_app(tmp_path, cache=cache).server.test_client()
    resp = client.get("/download/perfetto", query_string={"run": "broken.json"})
    assert resp.status_code == 422 and b"broken.json" in resp.data
    cache.shutdown()


def test_opening_a_page_starts_parsing_its_run_before_any_callback(tmp_path, shared_traces):
    shutil.copy(shared_traces / "mi250_minitoy_train.json.gz", tmp_path / "a.json.gz")
    shutil.copy(shared_traces / "cpu_only_rank34.json.gz", tmp_path / "b.json.gz")
    cache = RunCache(tmp_path)
    app = create_app(tmp_path, cache=cache)
    try:
        client = app.server.test_client()
        assert cache.state("b.json.gz").status == "idle"
        assert client.get("/overview?run=b.json.gz").status_code == 200
        assert cache.state("b.json.gz").status != "idle"  # requested by the page load itself
        assert cache.state("a.json.gz").status == "idle"  # nothing else is touched
        assert client.get("/overview?run=../../etc/passwd").status_code == 200  # the page reports it
        assert cache.load("b.json.gz").complete
    finally:
        cache.shutdown()
