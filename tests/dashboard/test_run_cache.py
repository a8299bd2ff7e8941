"""RunCache: loads each run once in the background, publishes results as analyzers finish, evicts LRU,
and summarises each run for the Runs page from the analyzers' own summary keys."""

from __future__ import annotations

import os
import shutil
import sys
import threading
from pathlib import Path

import pytest

from torchscope.analyzers.core.errors import TraceError
from torchscope.dashboard.run_cache import LOADER_NICE, LoadState, RunCache
from torchscope.dashboard.runs import UnsafeRunId
from tests.conftest import SAMPLE_TRACES
from tests.dashboard.components import CountingLoader

SHARED = ("mi250_minitoy_train.json.gz", "cpu_only_rank34.json.gz")
BUNDLES = ("gpt_train", "ddp_gloo_2rank")


@pytest.fixture(scope="module")
def root(tmp_path_factory, shared_traces) -> Path:
    root = tmp_path_factory.mktemp("cache") / "runs"
    root.mkdir()
    for name in SHARED:
        shutil.copy(shared_traces / name, root / name)
    for name in BUNDLES:
        shutil.copytree(SAMPLE_TRACES / name, root / name)
    return root


@pytest.fixture()
def cache(root):
    loader = CountingLoader()
    cache = RunCache(root, loader=loader)
    cache.loader_calls = loader.calls  # type: ignore[attr-defined]
    yield cache
    cache.shutdown()


def test_catalog_lists_traces_and_bundles(cache):
    ids = [e.run_id for e in cache.catalog()]
    assert ids == sorted([*SHARED, *BUNDLES])
    assert {e.run_id: e.kind for e in cache.catalog()}["gpt_train"] == "bundle"


@pytest.mark.parametrize("run_id", BUNDLES)
def test_runs_page_facts_are_the_training_loops_own_summary_keys(cache, run_id):
    run = cache.load(run_id)
    loop = run.report.result("training_loop")
    facts = cache.summary(run_id)
    assert facts["steps"] == loop.summary["steps"] and facts["steps"] > 0
    assert facts["median_step_ns"] == loop.summary["step_median_ns"] > 0
    assert facts["ranks"] == len(run.ranks) and facts["n_findings"] == len(run.report.findings)
    assert facts["started_at_ns"] is None or facts["started_at_ns"] > 0


def test_runs_page_names_the_device_or_says_cpu_only(cache):
    for run_id, devices in (("mi250_minitoy_train.json.gz", "AMD Radeon Graphics"), ("cpu_only_rank34.json.gz",
                                                                                     "CPU only"),
                            ("gpt_train", "CPU only")):
        cache.load(run_id)
        assert cache.summary(run_id)["devices"] == devices, run_id


def test_a_run_is_parsed_once_and_every_analyzer_ran(cache):
    run = cache.load("gpt_train")
    again = cache.load("gpt_train")
    assert run is again and run.complete and run.pending == ()
    assert len(cache.loader_calls) == 1
    assert cache.state("gpt_train").status == "ready" and cache.state("gpt_train").fraction == 1.0
    ran = {r.analyzer for r in run.report.results} | set(run.report.skipped) | set(run.report.errors)
    assert "training_loop" in ran and not run.report.errors


def test_memoised_computes_once_per_run(cache):
    run = cache.load("mi250_minitoy_train.json.gz")
    calls = []
    assert run.memoised("k", lambda: calls.append(1) or 42) == 42
    assert run.memoised("k", lambda: calls.append(1) or 43) == 42 and calls == [1]


def test_cache_evicts_least_recently_used_but_keeps_summaries(root):
    loader = CountingLoader()
    cache = RunCache(root, loader=loader, max_runs=1)
    try:
        cache.load("mi250_minitoy_train.json.gz")
        cache.load("cpu_only_rank34.json.gz")
        assert cache.get("mi250_minitoy_train.json.gz") is None  # evicted; reload queued
        assert cache.summary("mi250_minitoy_train.json.gz") is not None
        cache.load("mi250_minitoy_train.json.gz")
        assert len(loader.calls) == 3
    finally:
        cache.shutdown()


def test_an_evicted_run_is_parsed_again_and_a_load_in_progress_is_kept(root):
    gate = threading.Event()
    loader = CountingLoader()

    def gated(path):
        gate.wait(30)
        return loader(path)

    cache = RunCache(root, loader=gated)
    try:
        gate.set()
        run = cache.load("gpt_train")
        cache.evict("gpt_train")
        assert cache.state("gpt_train").status == "idle"
        gate.clear()
        assert cache.get("gpt_train") is None  # queues the parse again, held at the gate
        cache.evict("gpt_train")  # in progress: left alone
        assert cache.state("gpt_train").status in ("queued", "parsing")
        gate.set()
        again = cache.load("gpt_train")
        assert again is not run and again.complete and len(loader.calls) == 2
    finally:
        gate.set()
        cache.shutdown()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="per-thread nice values are Linux's")
def test_the_loader_thread_runs_at_a_lower_priority_than_the_server(cache):
    cache.load("gpt_train")  # the worker has started and set its priority
    worker = cache._worker
    assert os.getpriority(os.PRIO_PROCESS, worker.native_id) == \
        min(19, os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) + LOADER_NICE)
    assert os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) < os.getpriority(os.PRIO_PROCESS,
                                                                                       worker.native_id)


def test_a_bad_file_is_an_error_state_not_a_dead_worker(tmp_path):
    (tmp_path / "broken.json").write_text("{not json")
    cache = RunCache(tmp_path)
    try:
        with pytest.raises(TraceError):
            cache.load("broken.json")
        state = cache.state("broken.json")
        assert state.status == "error" and "could not load" in state.describe()
        assert cache.summary("broken.json") is None
    finally:
        cache.shutdown()


@pytest.mark.parametrize("bad", ["../outside.json.gz", "/etc/passwd", "", "nope.json"])
def test_run_ids_outside_the_catalog_are_refused(cache, bad):
    with pytest.raises(UnsafeRunId):
        cache.request(bad)


def test_load_state_progress_text():
    state = LoadState(status="analyzing", stage="running analyzer kernels (2/8)", done=3, total=9)
    assert state.fraction == pytest.approx(3 / 9)
    assert state.describe().startswith("running analyzer kernels (2/8) (3/9 steps")
    assert LoadState().fraction == 0.0 and LoadState(status="ready").fraction == 1.0


def test_no_analyzer_starts_while_a_page_is_drawn(tmp_path, shared_traces):
    """`foreground`: between two analyzers the loader waits for the render in progress."""
    import time as _time

    from torchscope.analyzers.core.registry import run_all

    shutil.copy(shared_traces / "mi250_minitoy_train.json.gz", tmp_path / "one.json.gz")
    started: list[float] = []

    def analyze(data, only=None, **kw):
        started.append(_time.monotonic())
        return run_all(data, only=only, **kw)

    cache = RunCache(tmp_path, analyze=analyze)
    try:
        with cache.foreground():
            cache.request("one.json.gz")
            deadline = _time.monotonic() + 30
            while cache.get("one.json.gz") is None and _time.monotonic() < deadline:
                _time.sleep(0.01)
            held_at = _time.monotonic()
            _time.sleep(0.5)
            during = [t for t in started if t >= held_at]
        released_at = _time.monotonic()
        run = cache.load("one.json.gz")
        assert during == []  # parsed, but no analyzer began while the page was being drawn
        assert run.complete and started and started[0] >= released_at - 0.05
    finally:
        cache.shutdown()


def test_shutdown_stops_a_load_at_its_next_stage_and_waits_for_the_thread(tmp_path, shared_traces):
    """A stopped server must not exit with the loader still inside a load (the interpreter's teardown would run
    under it): shutdown ends the load between analyzers and says whether the thread has ended."""
    from torchscope.analyzers.core.registry import run_all

    shutil.copy(shared_traces / "mi250_minitoy_train.json.gz", tmp_path / "one.json.gz")
    inside, release = threading.Event(), threading.Event()
    ran: list[str] = []

    def analyze(data, only=None, **kw):
        ran.append(only[0])
        inside.set()
        release.wait(30)
        return run_all(data, only=only, **kw)

    cache = RunCache(tmp_path, analyze=analyze)
    try:
        cache.request("one.json.gz")
        assert inside.wait(60)  # the first analyzer is running
        assert cache.shutdown(wait_s=0.2) is False  # still inside it
        release.set()
        assert cache.shutdown(wait_s=30) is True
        assert ran == ran[:1]  # no analyzer began after the shutdown
        assert not cache._worker.is_alive()
    finally:
        release.set()
        cache.shutdown()


WARM_UP_THEN_DRAW = """
import gc, sys
import pandas as pd
from torchscope.dashboard import figures
from torchscope.dashboard.run_cache import _warm_up
_warm_up()
frozen = gc.get_freeze_count()
before = {m for m in sys.modules if m.startswith(("plotly", "narwhals"))}
phases = [(r, pd.DataFrame({"phase": ["forward", "backward"], "share_pct": [40.0, 60.0]})) for r in range(3)]
fig = figures.phase_share_by_rank(phases)
from plotly.io.json import to_json_plotly
to_json_plotly(fig.to_plotly_json())
late = sorted({m for m in sys.modules if m.startswith(("plotly", "narwhals"))} - before)
print(frozen, late)
"""


def test_the_warm_up_leaves_a_page_figure_nothing_to_import_and_freezes_what_it_built():
    """A page's first figure imported ~60 plotly/narwhals modules and met a full collection of the start-up's
    ~200K objects (0.2-0.3 s of a 64-rank job's first Overview). Run in a new process: freezing is for good."""
    import subprocess

    out = subprocess.run([sys.executable, "-c", WARM_UP_THEN_DRAW], capture_output=True, text=True, timeout=120,
                         check=True).stdout.split(maxsplit=1)
    assert int(out[0]) > 10_000, out  # the collector no longer walks what the imports built
    assert out[1].strip() == "[]", f"imported while drawing: {out[1]}"
