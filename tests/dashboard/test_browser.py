"""End-to-end: the dashboard in headless Chromium on a real sample run and a shared Kineto trace.

Every page is opened for both runs; the tests then choose a run and a rank, zoom the timeline with
the mouse, filter findings and pick a run to compare, and check that the content changed the way
it should (figure data read back from the browser's plotly objects). Any SEVERE browser console
message fails the test. Screenshots go to a temporary artifacts folder printed at the start.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import tempfile
import threading
import time
from pathlib import Path

import pytest

from torchscope import analyzers
from torchscope.dashboard.app import ROUTE_WAIT_S, create_app
from torchscope.dashboard.pages import DETAILS_PLACEHOLDER, PAGES, findings_count
from torchscope.dashboard.run_cache import RunCache
from tests.conftest import require_module, require_or_skip

pytestmark = [pytest.mark.browser, pytest.mark.slow,
              pytest.mark.filterwarnings(r"ignore:\s*The dash_table.DataTable will be removed:DeprecationWarning")]

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
BUNDLE = "ddp_gloo_2rank"  # sample run recorded by our profiler: 2 ranks, phases, counters
SHARED = "a100_train_2rank_rank0_nccl.json.gz"  # real Kineto trace from an A100 NCCL job
MOE = "moe_train"  # sample run with MoE routing recorded
SLOW = "slow/mi250_minitoy_train.json.gz"  # loaded through a deliberately slow loader
WAIT_S = 20
_ARTIFACTS: list[Path] = []


def artifacts() -> Path:
    """Folder for this session's screenshots ($TORCHSCOPE_ARTIFACTS, else a new temporary one)."""
    if not _ARTIFACTS:
        folder = Path(os.environ.get("TORCHSCOPE_ARTIFACTS") or tempfile.mkdtemp(prefix="torchscope-e2e-"))
        folder.mkdir(parents=True, exist_ok=True)
        _ARTIFACTS.append(folder)
    return _ARTIFACTS[0]


@pytest.fixture(scope="module")
def root(tmp_path_factory, shared_traces, sample_traces) -> Path:
    root = tmp_path_factory.mktemp("e2e") / "runs"
    root.mkdir()
    bundle = sample_traces / BUNDLE
    require_or_skip(bundle.is_dir(), f"sample run {bundle} not recorded yet")
    shutil.copytree(bundle, root / BUNDLE)
    if (sample_traces / MOE).is_dir():
        shutil.copytree(sample_traces / MOE, root / MOE)
    shutil.copy(shared_traces / SHARED, root / SHARED)
    (root / "slow").mkdir()
    shutil.copy(shared_traces / "mi250_minitoy_train.json.gz", root / SLOW)
    return root


@pytest.fixture(scope="module")
def server(root):
    import logging

    from werkzeug.serving import make_server

    logging.getLogger("werkzeug").setLevel(logging.WARNING)

    def loader(path: Path):
        if path.parent.name == "slow":
            # Longer than a page waits for its run before it shows progress instead.
            time.sleep(ROUTE_WAIT_S + 1.5)
        return analyzers.load(path)

    cache = RunCache(root, loader=loader)
    for run_id in (BUNDLE, SHARED) + ((MOE,) if (root / MOE).is_dir() else ()):
        cache.load(run_id)  # parsed once; pages below never parse (a busy machine parses MoE for > WAIT_S)
    app = create_app(root, cache=cache)
    srv = make_server("127.0.0.1", 0, app.server, threaded=True)
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{srv.server_port}"
    srv.shutdown()
    cache.shutdown()


@pytest.fixture(scope="module")
def driver():
    require_or_skip(Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists(),
                    "chromium / chromium-driver not installed (apt-get install -y chromium chromium-driver)")
    webdriver = require_module("selenium.webdriver")
    from selenium.webdriver.chrome.service import Service

    options = chrome_options()
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    drv = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    drv.set_page_load_timeout(WAIT_S)
    print(f"\nscreenshots: {artifacts()}")
    yield drv
    drv.quit()


# -- helpers -------------------------------------------------------------------------------------

def chrome_options():
    """Headless Debian Chromium that downloads nothing and phones no one (this machine has no network)."""
    from selenium import webdriver

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--no-first-run", "--window-size=1500,1000"):
        options.add_argument(flag)
    return options


def wait(drv, condition, timeout=WAIT_S, what="condition"):
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(drv, timeout, poll_frequency=0.1).until(lambda d: condition(d), message=what)


def severe_logs(drv) -> list[str]:
    return [e["message"] for e in drv.get_log("browser") if e["level"] == "SEVERE"]


def shot(drv, name: str) -> Path:
    path = artifacts() / f"{name}.png"
    drv.save_screenshot(str(path))
    return path


def settled(drv) -> bool:
    """The page has been routed: #page has content, nothing is loading and every graph is drawn."""
    return drv.execute_script("""
        const page = document.getElementById('page');
        if (!page || !page.children.length) return false;
        if (document.querySelector('[data-dash-is-loading="true"]')) return false;
        if (document.getElementById('load-progress')) return false;
        const graphs = page.querySelectorAll('.dash-graph, #timeline-graph');  // the timeline draws itself
        for (const g of graphs) { if (!g.querySelector('.js-plotly-plot .main-svg')) return false; }
        return true;""")


def open_page(drv, base: str, path: str) -> str:
    drv.get(base + path)
    wait(drv, settled, what=f"{path} to render")
    return drv.find_element("id", "page").text


def active_nav(drv) -> str | None:
    return drv.execute_script("const a = document.querySelector('.nav-link.active'); return a && a.textContent;")


def goto(drv, page: str, label: str) -> str:
    """Navigate inside the app with the nav bar (no reload) and wait for the new page."""
    drv.find_element("id", f"nav-{page}").click()
    wait(drv, lambda d: active_nav(d) == label and settled(d), what=f"page {page}")
    return drv.find_element("id", "page").text


def full_data(drv, graph_id: str) -> list[dict]:
    """The graph's plotly `_fullData` (decoded by plotly; base64 arrays are decoded here too)."""
    raw = drv.execute_script("""
        const gd = document.querySelector('#' + arguments[0] + ' .js-plotly-plot');
        if (!gd || !gd._fullData) return null;
        return JSON.stringify(gd._fullData.map(t => ({name: t.name, type: t.type,
            x: Array.from(t.x || []), base: t.base ? Array.from(t.base) : null,
            z: t.z ? Array.from(t.z, r => Array.from(r)) : null,
            y: Array.from(t.y || []).map(String)})));""", graph_id)
    assert raw is not None, f"no plotly graph {graph_id}"
    return [_decode(t) for t in json.loads(raw)]


def _decode(trace: dict) -> dict:
    for key in ("x", "base"):
        v = trace.get(key)
        if isinstance(v, dict) and "bdata" in v:  # typed array that arrived base64-encoded
            import numpy as np

            trace[key] = np.frombuffer(base64.b64decode(v["bdata"]), dtype=v["dtype"]).tolist()
    return trace


def layout_meta(drv, graph_id: str) -> dict:
    return drv.execute_script("""
        const gd = document.querySelector('#' + arguments[0] + ' .js-plotly-plot');
        return gd && gd._fullLayout ? JSON.parse(JSON.stringify({meta: gd._fullLayout.meta,
            range: gd._fullLayout.xaxis.range, width: gd._fullLayout.xaxis._length})) : null;""", graph_id)


def choose(drv, dropdown_id: str | dict, label: str) -> None:
    """Open a Dash 4 dropdown and click the option with ``label``."""
    from selenium.webdriver.common.by import By

    dom_id = json.dumps(dropdown_id, separators=(",", ":"), sort_keys=True) if isinstance(dropdown_id, dict) \
        else dropdown_id
    button = wait(drv, lambda d: next(iter(d.find_elements(By.XPATH, f"//button[@id='{dom_id}']")), None),
                  what=f"dropdown {dom_id}")
    button.click()
    option = wait(drv, lambda d: next((o for o in d.find_elements(By.CSS_SELECTOR, "[role='option']")
                                       if o.text.strip() == label), None), what=f"option {label!r}")
    option.click()


# -- tests ---------------------------------------------------------------------------------------

def nav_state(drv) -> dict:
    """{page id: None when offered, else the reason shown on hover} from the navigation bar."""
    return drv.execute_script("""
        const out = {};
        for (const el of document.querySelectorAll('#nav .nav-link')) {
            out[el.id.slice(4)] = el.classList.contains('disabled') ? (el.title || 'disabled') : null; }
        return out;""")


@pytest.mark.parametrize("run_id", [BUNDLE, SHARED])
def test_every_page_opens_without_console_errors(driver, server, run_id):
    drv = driver
    drv.get_log("browser")
    texts, sources = {}, {}
    texts["overview"] = open_page(drv, server, f"/overview?run={run_id}")
    offered = nav_state(drv)
    for page, label in sorted(PAGES, key=lambda p: p[0] != "overview"):  # overview is already open
        if offered[page] is not None:
            continue  # not offered for this run (checked below)
        if page != "overview":
            texts[page] = goto(drv, page, label)
        sources[page] = drv.page_source
        shot(drv, f"{run_id.split('.')[0]}-{page}")
        assert "could not be drawn" not in texts[page] and "rejected" not in texts[page], (page, texts[page][:300])
        assert "not available for this run" not in texts[page], page  # no banner pages among the tabs
        if page != "runs":
            assert f"run={run_id}" in drv.current_url  # the nav keeps the chosen run
    assert BUNDLE in texts["runs"] and SHARED in texts["runs"]
    assert "Top findings" in texts["overview"] and "STEP TIME" in texts["overview"].upper()
    assert "events drawn" in texts["timeline"]
    assert "Analyzers that did not run" in texts["recommendations"]
    if run_id == SHARED:
        assert "kernels-top" in sources["kernels"] and "Kernel time by category" in sources["kernels"]
        assert "communication-exposed" in sources["communication"]
        assert "no MoE routing" in offered["moe"]
    else:
        assert "stragglers-lateness" in sources["communication"]
        assert "no GPU events" in offered["kernels"]
    assert severe_logs(drv) == []


_RAW_HEADER = r"(^|[^A-Za-z])[a-z]+(_[a-z0-9]+)*_(ns|bytes|pct|gbps|mj|ts)($|[^A-Za-z])"


def screen_text(drv) -> dict:
    """What a person can read: the page text with every details folder opened, grid headers and cells."""
    if drv.execute_script("const d = document.querySelector('#details > summary'); if (!d) return false; d.click(); return true;"):
        wait(drv, lambda d: d.execute_script(
            "const b = document.getElementById('details-body'); return b && b.textContent !== arguments[0];",
            DETAILS_PLACEHOLDER), what="details sent when opened")
    time.sleep(0.8)  # grids in the opened folder lay out their rows
    return drv.execute_script("""
        const grab = sel => Array.from(document.querySelectorAll(sel)).map(e => e.textContent.trim());
        return {text: document.getElementById('page').innerText,
                headers: grab('#page .ag-header-cell-text'), cells: grab('#page .ag-cell')};""")


def axis_fits(drv) -> list[str]:
    """Plotly axes (outside the timeline) whose range runs far past the data drawn on them."""
    return drv.execute_script("""
        const bad = [];
        for (const gd of document.querySelectorAll('#page .js-plotly-plot')) {
            if (gd.closest('#timeline-graph')) continue;
            const fl = gd._fullLayout;
            for (const ax of ['xaxis', 'yaxis']) {
                const a = fl[ax];
                if (!a || a.type === 'category' || !a.range) continue;
                const vals = [], stacks = {};
                for (const t of gd._fullData) {
                    const key = ax[0];
                    let arr = Array.from(t[key] || []);
                    if (t.type === 'bar' && t.orientation === 'h' && key === 'x' && t.base) continue;
                    const valueAxis = t.type === 'bar' && ((t.orientation === 'h') === (key === 'x'));
                    if (valueAxis) arr = arr.concat([0]);
                    if (valueAxis && fl.barmode === 'stack') {  // a stack reaches the sum of its bars
                        const cats = Array.from(t[key === 'x' ? 'y' : 'x'] || []);
                        arr.forEach((v, i) => { if (i < cats.length && typeof v === 'number')
                            stacks[cats[i]] = (stacks[cats[i]] || 0) + v; });
                    }
                    for (const v of arr) { if (typeof v === 'number' && isFinite(v)) vals.push(v); }
                }
                for (const v of Object.values(stacks)) vals.push(v);
                if (!vals.length) continue;
                let lo = Math.min(...vals), hi = Math.max(...vals);
                let r0 = a.range[0], r1 = a.range[1];
                if (a.type === 'log') {
                    const pos = vals.filter(v => v > 0); if (!pos.length) continue;
                    lo = Math.log10(Math.min(...pos)); hi = Math.log10(Math.max(...pos));
                    if (r0 < lo - 1 || r1 > hi + 1) bad.push(gd.parentElement.id + ' ' + ax + ' ' + [r0, r1, lo, hi]);
                } else {
                    const span = Math.max(hi - lo, Math.abs(hi), 1e-12);
                    if (r0 < lo - 0.5 * span || r1 > hi + 0.5 * span) bad.push(gd.parentElement.id + ' ' + ax + ' ' + [r0, r1, lo, hi]);
                }
            }
        }
        return bad;""")


@pytest.mark.parametrize("run_id", [BUNDLE, SHARED])
def test_pages_read_in_words_and_units_with_axes_fitted_to_the_data(driver, server, run_id):
    import re

    open_page(driver, server, f"/overview?run={run_id}")
    offered = [p for p, reason in nav_state(driver).items() if reason is None and p not in ("runs", "compare")]
    for page in offered:
        open_page(driver, server, f"/{page}?run={run_id}")
        seen = screen_text(driver)
        raw = [h for h in seen["headers"] if re.search(_RAW_HEADER, h)]
        assert not raw, (page, raw)
        junk = [c for c in seen["cells"] if c.lower() in ("nan", "none", "-1", "null", "undefined")]
        assert not junk, (page, junk[:5])
        epoch = re.findall(r"\b\d{1,3}(?:,\d{3}){5,}\b|\b\d{16,}\b", seen["text"] + " ".join(seen["cells"]))
        assert not epoch, (page, epoch[:3])
        assert not re.search(r"(?<![\w.])(nan|None)(?![\w.])", seen["text"]), page
        assert axis_fits(driver) == [], page
    assert severe_logs(driver) == []


def test_runs_page_link_opens_the_run(driver, server):
    from selenium.webdriver.common.by import By

    open_page(driver, server, "/runs")
    driver.find_element(By.XPATH, f"//a[@class='run-link' and text()='{SHARED}']").click()
    wait(driver, lambda d: "/overview" in d.current_url and settled(d), what="overview of the chosen run")
    assert f"run={SHARED}" in driver.current_url
    assert "Top findings" in driver.find_element("id", "page").text
    assert severe_logs(driver) == []


def test_choose_run_and_rank_changes_the_content(driver, server):
    open_page(driver, server, f"/timeline?run={BUNDLE}")
    both = layout_meta(driver, "timeline-graph")["meta"]["lanes"]
    assert any(l.startswith("rank 0 ·") for l in both) and any(l.startswith("rank 1 ·") for l in both)
    choose(driver, {"type": "param", "name": "rank"}, "rank 1")
    wait(driver, lambda d: "rank=1" in d.current_url and settled(d)
         and all(l.startswith("rank 1 ·") for l in (layout_meta(d, "timeline-graph") or {"meta": {"lanes": ["x"]}})["meta"]["lanes"]),
         what="timeline of rank 1 only")
    shot(driver, "timeline-rank1")
    choose(driver, {"type": "param", "name": "run"}, SHARED)
    wait(driver, lambda d: f"run={SHARED}" in d.current_url and "rank=" not in d.current_url and settled(d),
         what="the other run")
    lanes = layout_meta(driver, "timeline-graph")["meta"]["lanes"]
    assert any("GPU" in l for l in lanes) and not any(l.startswith("rank 1 ·") for l in lanes)
    assert severe_logs(driver) == []


def test_mouse_zoom_on_the_timeline_redraws_at_finer_detail(driver, server):
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By

    open_page(driver, server, f"/timeline?run={SHARED}")
    before = layout_meta(driver, "timeline-graph")
    time.sleep(0.5)  # let dcc.Graph bind its relayout handler before the drag
    drag = driver.find_element(By.CSS_SELECTOR, "#timeline-graph .nsewdrag")
    w = drag.size["width"]
    # Drag a box over 4% of the width in the middle of the lanes.
    ActionChains(driver).move_to_element_with_offset(drag, int(-0.02 * w), 0).click_and_hold() \
        .move_by_offset(int(0.04 * w), 10).release().perform()
    wait(driver, lambda d: (layout_meta(d, "timeline-graph") or {"meta": {}})["meta"].get("t0_ns") != before["meta"]["t0_ns"],
         what="server re-render of the zoomed window")
    wait(driver, settled, what="zoomed figure drawn")
    after = layout_meta(driver, "timeline-graph")
    shot(driver, "timeline-zoomed")
    span_before = before["meta"]["t1_ns"] - before["meta"]["t0_ns"]
    span_after = after["meta"]["t1_ns"] - after["meta"]["t0_ns"]
    assert 0.01 * span_before < span_after < 0.1 * span_before
    assert after["meta"]["folded"] < before["meta"]["folded"]
    # Every bar the server sent is at least one pixel wide at the new scale (or folded into bins).
    ms_per_px = (after["range"][1] - after["range"][0]) / after["width"]
    traces = full_data(driver, "timeline-graph")
    bars = [t for t in traces if t["type"] == "bar" and t["name"] not in ("sub-pixel busy",)]
    assert bars and sum(len(t["x"]) for t in bars) == after["meta"]["drawn"]
    for t in bars:
        for base, dur in zip(t["base"], t["x"]):
            visible = min(base + dur, after["range"][1]) - max(base, after["range"][0])
            assert visible >= ms_per_px * 0.999
    assert "events drawn" in driver.find_element("id", "timeline-stats").text
    driver.find_element("id", "timeline-reset").click()
    wait(driver, lambda d: (layout_meta(d, "timeline-graph") or {"meta": {}})["meta"].get("t0_ns") == before["meta"]["t0_ns"],
         what="reset zoom")
    assert severe_logs(driver) == []


def test_filter_findings_by_severity(driver, server):
    from selenium.webdriver.common.by import By

    text = open_page(driver, server, f"/recommendations?run={BUNDLE}")
    cards = driver.find_elements(By.CSS_SELECTOR, "#rec-list .finding")
    severities = {c.get_attribute("data-severity") for c in cards}
    assert cards, text[:300]
    total = len(cards)
    pick = sorted(severities)[0]
    choose(driver, "rec-severity", pick)
    wait(driver, lambda d: set(d.execute_script(
        "return Array.from(document.querySelectorAll('#rec-list .finding')).map(c => c.dataset.severity);")) == {pick},
        what="filtered list")
    shown = driver.find_elements(By.CSS_SELECTOR, "#rec-list .finding")
    assert driver.find_element("id", "rec-count").text == findings_count(len(shown))
    assert len(shown) <= total and all(c.get_attribute("data-severity") == pick for c in shown)
    shot(driver, "recommendations-filtered")
    link = shown[0].find_element(By.CSS_SELECTOR, "a.finding-link")
    page = link.get_attribute("href").split("/")[3].split("?")[0]
    link.click()
    wait(driver, lambda d: f"/{page}?" in d.current_url and settled(d), what="evidence page")
    assert severe_logs(driver) == []


def test_compare_two_runs(driver, server):
    open_page(driver, server, f"/compare?run={BUNDLE}")
    choose(driver, {"type": "param", "name": "b"}, SHARED)
    wait(driver, lambda d: "b=" in d.current_url and settled(d)
         and d.find_elements("id", "compare-verdict"), what="trace-diff of the two runs")
    text = driver.find_element("id", "page").text
    assert f"B: {SHARED}" in text and "trace-diff: " in text
    shot(driver, "compare")
    assert "step/time" in driver.page_source, text[:1500]  # a diff row (maybe in the folded part)
    shot(driver, "compare")
    assert severe_logs(driver) == []


def test_a_slow_load_shows_progress_then_the_page(driver, server):
    driver.get(f"{server}/overview?run={SLOW}")
    wait(driver, lambda d: d.find_elements("id", "load-progress"), timeout=ROUTE_WAIT_S + 5,
         what="progress display")
    assert "Loading" in driver.find_element("id", "load-progress").text
    shot(driver, "progress")
    wait(driver, settled, what="page after loading")
    assert "Top findings" in driver.find_element("id", "page").text
    assert severe_logs(driver) == []


def test_traversal_in_the_address_bar_is_rejected(driver, server):
    text = open_page(driver, server, "/overview?run=..%2F..%2Fetc%2Fpasswd")
    assert "rejected" in text and "root:x:0:0" not in driver.page_source
    driver.get(f"{server}/download/perfetto?run=../{SHARED}")
    assert "root:x:0:0" not in driver.page_source and "traceEvents" not in driver.page_source
    errors = severe_logs(driver)  # the refused download is the only error, and it is a 404
    assert len(errors) == 1 and "404" in errors[0] and "download/perfetto" in errors[0]


def test_moe_heatmap_shows_the_analyzer_load(driver, server, root):
    require_or_skip((root / MOE).is_dir(), f"sample run {MOE} not recorded")
    open_page(driver, server, f"/moe?run={MOE}")
    heat = [t for t in full_data(driver, "moe-heatmap") if t["type"] == "heatmap"][0]
    load = analyzers.run_all(analyzers.load(root / MOE), only=("moe",)).result("moe").table("expert_load")
    expected = load.pivot_table(index="layer", columns="expert", values="assignments", aggfunc="sum")
    assert heat["z"] == expected.to_numpy(dtype=float).tolist()
    assert heat["y"] == [str(i) for i in expected.index]
    shot(driver, "moe")
    assert severe_logs(driver) == []


def test_all_ranks_overview_shows_every_rank(driver, server, root):
    open_page(driver, server, f"/overview?run={BUNDLE}")
    ranks = {str(t.meta.rank) for t in analyzers.load(root / BUNDLE)}
    assert len(ranks) == 2
    rows = full_data(driver, "ranks-compare")
    assert len(rows) == 3 and all({str(x) for x in t["x"]} == ranks for t in rows), rows
    phases = {y for t in full_data(driver, "ranks-phases") for y in t["y"]}
    assert phases == {f"rank {r}" for r in ranks}
    shot(driver, "overview-all-ranks")
    assert severe_logs(driver) == []


def test_timeline_hover_values_are_the_traces_start_and_duration(driver, server, root):
    from torchscope.analyzers.report.units import format_duration_ns, format_timestamp_ns

    open_page(driver, server, f"/timeline?run={SHARED}")
    hover = driver.execute_script("""
        const gd = document.querySelector('#timeline-graph .js-plotly-plot');
        const t = gd._fullData.find(t => t.name === 'step');
        return {template: t.hovertemplate, rows: Array.from(t.customdata).map(r => Array.from(r))};""")
    assert "lasted" in hover["template"] and "%{x" not in hover["template"]
    events = analyzers.load(root / SHARED).events
    origin = int(events["ts_ns"].min())
    steps = events[events["name"].astype(str).str.startswith("ProfilerStep#")]
    expected = {str(n): (format_timestamp_ns(int(ts), origin), format_duration_ns(int(d)))
                for n, ts, d in zip(steps["name"], steps["ts_ns"], steps["dur_ns"])}
    assert hover["rows"] and all(expected[name] == (start, dur) for name, start, dur, *_ in hover["rows"])
    assert severe_logs(driver) == []


#: The bars of a Timeline trace, widest first, with where each one's middle is on screen (px from the
#: plot's top left).
_BARS_JS = """
const gd = document.querySelector('#timeline-graph .js-plotly-plot');
const t = gd._fullData.find(t => t.name === arguments[0]);
if (!t) return [];
const xa = gd._fullLayout.xaxis, ya = gd._fullLayout.yaxis;
const out = [];
for (let i = 0; i < t.x.length; i++) {
    const mid = Math.max(t.base[i] + t.x[i] / 2, xa.range[0]);
    out.push({x: xa._offset + xa.l2p(mid), y: ya._offset + ya.c2p(ya.d2c(t.y[i])),
              start: t.base[i], dur: t.x[i], lane: t.y[i], name: t.customdata[i][0]});
}
return out.sort((a, b) => b.dur - a.dur);
"""


def bars(drv, trace_name: str) -> list[dict]:
    """Bars of the Timeline trace ``trace_name``, widest first."""
    return drv.execute_script(_BARS_JS, trace_name)


def click_bar(drv, bar: dict) -> None:
    """Click the middle of ``bar`` (from `bars`) with the mouse."""
    from selenium.webdriver.common.action_chains import ActionChains

    plot = drv.find_element("css selector", "#timeline-graph .js-plotly-plot")
    size = plot.size
    ActionChains(drv).move_to_element_with_offset(plot, int(bar["x"] - size["width"] / 2),
                                                  int(bar["y"] - size["height"] / 2)).click().perform()


def flow_arrows(drv) -> list[dict]:
    return drv.execute_script("""
        const gd = document.querySelector('#timeline-graph .js-plotly-plot');
        return (gd.layout.annotations || []).filter(a => a.name === 'flow').map(a => ({x: a.x, ax: a.ax, y: a.y, ay: a.ay}));""")


def test_clicking_a_slice_draws_arrows_to_the_gpu_work_it_launched_and_back(driver, server, root):
    import re

    import numpy as np

    from torchscope.analyzers.timeline.launches import launches
    from torchscope.dashboard.timeline import MAX_FLOW_ARROWS

    open_page(driver, server, f"/timeline?run={SHARED}")
    time.sleep(0.5)  # the page binds its click handler once the figure is drawn
    trace = analyzers.load(root / SHARED)
    origin = int(trace.events["ts_ns"].min())
    work = launches(trace)

    def launched_by(op: dict):
        """The GPU work whose launch call ran on the op's thread inside the op, in launch order."""
        tid = int(re.search(r"CPU thread (-?\d+)", op["lane"]).group(1))
        s_ns, e_ns = origin + op["start"] * 1e6, origin + (op["start"] + op["dur"]) * 1e6
        mine = work[(work["launch_tid"] == tid) & (work["launch_ts_ns"] >= s_ns - 1)
                    & (work["launch_ts_ns"] <= e_ns + 1)]
        return tid, mine.sort_values("launch_ts_ns", kind="stable")

    op = next(b for b in bars(driver, "CPU op") if len(launched_by(b)[1]))  # the widest op that launches work
    tid, mine = launched_by(op)
    click_bar(driver, op)
    wait(driver, lambda d: flow_arrows(d), what="flow arrows of the clicked op")
    text = driver.find_element("id", "timeline-selection").text
    assert f"launched {len(mine)} " in text, text
    arrows = flow_arrows(driver)
    assert len(arrows) == min(len(mine), MAX_FLOW_ARROWS)
    expected = ((mine["ts_ns"].to_numpy()[:MAX_FLOW_ARROWS] - origin) / 1e6).tolist()
    assert sorted(a["x"] for a in arrows) == pytest.approx(sorted(expected), abs=1e-6)
    assert all("GPU" in a["y"] and f"CPU thread {tid}" in a["ay"] for a in arrows)
    shot(driver, "timeline-flows-op")
    kernels = bars(driver, "kernel")

    def alone(k: dict) -> bool:  # no other kernel of its lane overlaps it: the click can only mean this one
        return not any(o is not k and o["lane"] == k["lane"] and o["start"] < k["start"] + k["dur"]
                       and k["start"] < o["start"] + o["dur"] for o in kernels)

    kernel = next(k for k in kernels if alone(k))
    click_bar(driver, kernel)
    wait(driver, lambda d: "was launched by" in d.find_element("id", "timeline-selection").text,
         what="the kernel's launch")
    arrows = flow_arrows(driver)
    assert len(arrows) == 1 and arrows[0]["y"] == kernel["lane"]
    # The arrow ends where GPU work of the trace starts, under the mouse, and starts at its launch call.
    at = kernel["start"] <= arrows[0]["x"] <= kernel["start"] + kernel["dur"]
    row = work.iloc[int(np.argmin(np.abs((work["ts_ns"].to_numpy() - origin) / 1e6 - arrows[0]["x"])))]
    assert at and (row["ts_ns"] - origin) / 1e6 == pytest.approx(arrows[0]["x"], abs=1e-6)
    assert arrows[0]["ax"] == pytest.approx((row["launch_ts_ns"] - origin) / 1e6, abs=1e-6)
    shot(driver, "timeline-flows-kernel")
    assert severe_logs(driver) == []


JOB = "job4"  # a 4-rank bundle of shared job128 ranks, opened from per-rank summaries


def test_a_job_opens_from_rank_summaries_and_loads_one_rank_only_when_picked(driver, tmp_path, shared_traces):
    import logging

    from werkzeug.serving import make_server

    root = tmp_path / "runs"
    folder = root / JOB
    folder.mkdir(parents=True)
    (folder / "manifest.json").write_text(json.dumps({"schema_version": 1, "tool": "torchscope", "world_size": 4,
                                                      "ranks": [0, 1, 2, 3], "complete": True, "ended_at_ns": 1}))
    for rank in range(4):
        shutil.copy(shared_traces / f"job128_rank{rank % 2}.json.gz", folder / f"rank{rank}.trace.json.gz")
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    cache = RunCache(root, job_min_ranks=4)
    cache.load(JOB)  # the rank tasks ran; the page below draws from their summaries
    srv = make_server("127.0.0.1", 0, create_app(root, cache=cache).server, threaded=True)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{srv.server_port}"
    try:
        driver.get_log("browser")
        driver.get(f"{base}/overview?run={JOB}")
        wait(driver, settled, 180, "the job overview")
        assert cache.get(JOB).job is not None  # analyzed as one task per rank
        # Every rank in the per-rank views, from the summaries; no rank loaded in full for it.
        rows = full_data(driver, "ranks-compare")
        assert len(rows) == 3 and all({str(x) for x in t["x"]} == {"0", "1", "2", "3"} for t in rows), rows
        assert all(cache.state(f"{JOB}#rank{r}").status == "idle" for r in range(4))
        shot(driver, "job-overview")
        open_page(driver, base, f"/timeline?run={JOB}")
        assert "pick a rank above" in driver.find_element("id", "pick-rank").text
        choose(driver, {"type": "param", "name": "rank"}, "rank 2")
        wait(driver, lambda d: "rank=2" in d.current_url and settled(d) and d.find_elements("id", "timeline-graph"),
             60, "rank 2's timeline")
        lanes = layout_meta(driver, "timeline-graph")["meta"]["lanes"]
        assert lanes and any("GPU" in lane for lane in lanes)
        assert cache.state(f"{JOB}#rank2").status in ("analyzing", "ready")  # only the rank picked was loaded
        assert all(cache.state(f"{JOB}#rank{r}").status == "idle" for r in (0, 1, 3))
        # The picker keeps every rank of the job, and the chosen one.
        picker = driver.find_element("xpath", """//button[@id='{"name":"rank","type":"param"}']""")
        assert "rank 2" in picker.text
        shot(driver, "job-rank2-timeline")
        assert severe_logs(driver) == []
    finally:
        srv.shutdown()
        cache.shutdown()
