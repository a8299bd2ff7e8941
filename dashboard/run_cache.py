"""Parsed runs and their reports, loaded once in the background and kept for every callback.

Callbacks never parse: they ask `RunCache.get(run_id)` for a ready `LoadedRun` (or call
`request` to queue a load and show `state` as progress). One worker thread loads runs in the
order asked; at most ``max_runs`` parsed runs stay in memory (least recently used leaves first),
while the small per-run summaries shown on the Runs page are kept for every run ever loaded.
"""

from __future__ import annotations

import gc
import os
import sys
import threading
import time
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from torchscope.analyzers.core.errors import TraceError
from torchscope.analyzers.core.report import Report
from torchscope.analyzers.core.registry import drop_superseded, load_analyzers, run_all
from torchscope.analyzers.report.units import format_bytes

from torchscope.dashboard.ranking import ranked_findings
from torchscope.dashboard.runs import RunEntry, UnsafeRunId, discover_runs, resolve_run

__all__ = ["LoadState", "LoadedRun", "RunCache", "DEFAULT_MAX_RUNS", "CATALOG_TTL_S", "JOB_MIN_RANKS",
           "JOB_ANALYZERS", "recorded_at_ns"]

#: Parsed runs kept in memory at once.
DEFAULT_MAX_RUNS = 4
#: The run catalog is re-scanned at most this often, seconds.
CATALOG_TTL_S = 5.0
#: Runs of at least this many ranks open as jobs: one task per rank (`analyze_job`, in parallel worker
#: processes) returning a small summary, the job-level views from those; each rank is loaded in full only
#: when one of its pages is opened. Fewer ranks load as one TraceSet, every analyzer on every rank.
JOB_MIN_RANKS = 8
#: What each rank's task of a job runs: the job overview's needs (step time, exposed communication,
#: collectives for stragglers, and the step model: where each rank's time goes, by cause, and what to change)
#: and the job-level analyses on them.
JOB_ANALYZERS = ("training_loop", "communication", "gpu_time", "bottleneck", "stragglers", "job_overview")
#: Added to the loader thread's nice value (Linux): background work yields the CPU to what a person waits for.
LOADER_NICE = 10
#: The loader waits at most this long, between two analyzers, for the page renders in progress (a
#: render and an analyzer share one interpreter lock: run together, both take about twice as long).
FOREGROUND_WAIT_S = 2.0


@dataclass
class LoadState:
    """Where the load of one run stands: status, what it is doing, how far, and any error."""

    status: str = "idle"  # idle | queued | parsing | analyzing | ready | error
    stage: str = ""
    done: int = 0
    total: int = 0
    started_at: float = 0.0
    finished_at: float = 0.0
    error: str = ""

    @property
    def fraction(self) -> float:
        """Progress in [0, 1] (parsing counts as the first step)."""
        if self.status == "ready":
            return 1.0
        return (self.done / self.total) if self.total else 0.0

    def describe(self) -> str:
        """One line for the progress display."""
        elapsed = (self.finished_at or time.monotonic()) - self.started_at if self.started_at else 0.0
        if self.status == "error":
            return f"could not load: {self.error}"
        if self.status == "ready":
            return f"loaded in {elapsed:.1f} s"
        return f"{self.stage} ({self.done}/{self.total} steps, {elapsed:.1f} s)" if self.total else self.stage


@dataclass
class LoadedRun:
    """A parsed run (Trace or TraceSet), its analyzer Report, and memoised presentation data."""

    entry: RunEntry
    data: Any
    report: Report
    load_s: float
    memo: dict = field(default_factory=dict)
    lock: threading.RLock = field(default_factory=threading.RLock)  # a memoised value may use another
    #: Analyzers not run yet; ``report`` grows as each finishes.
    pending: tuple = ()
    #: For a job opened from per-rank summaries (JOB_MIN_RANKS ranks or more): its `JobReport`; ``data``
    #: then holds only each rank's skeleton, and a rank's own pages load it on demand (`RunCache.rank_run`).
    job: Any = None
    #: Rank -> its trace file, for a job.
    rank_files: dict = field(default_factory=dict)

    @property
    def complete(self) -> bool:
        """True once every analyzer has run."""
        return not self.pending

    @property
    def traces(self) -> list:
        """The per-rank traces (one for a single trace)."""
        return list(self.data) if hasattr(self.data, "ranks") else [self.data]

    @property
    def ranks(self) -> list[int]:
        """Rank ids present in the run."""
        return [t.meta.rank for t in self.traces]

    @property
    def origin_ns(self) -> int | None:
        """Start of the run's first event on the trace clock, ns (timestamps read relative to it)."""
        def first() -> int | None:
            starts = [int(t.events["ts_ns"].min()) for t in self.traces if t.events is not None and len(t.events)]
            return min(starts) if starts else None

        return self.memoised("origin-ns", first)

    def memoised(self, key: Any, compute: Callable[[], Any]) -> Any:
        """``compute()`` once per key for this run (e.g. the timeline's lane index)."""
        with self.lock:
            if key not in self.memo:
                self.memo[key] = compute()
            return self.memo[key]


def _default_loader(path: Path) -> Any:
    from torchscope import analyzers

    return analyzers.load(path)


class RunCache:
    """The runs under one root folder, loaded on request in a background thread and cached."""

    def __init__(self, root: str | Path, *, max_runs: int = DEFAULT_MAX_RUNS,
                 loader: Callable[[Path], Any] | None = None,
                 analyze: Callable[..., Report] | None = None, first: tuple[str, ...] = (),
                 job_min_ranks: int = JOB_MIN_RANKS) -> None:
        self.root = Path(root).resolve()
        self.max_runs = max_runs
        self._loader = loader or _default_loader
        self._analyze = analyze or run_all
        self._first = tuple(first)  # analyzers to run before the others (what the first page needs)
        self.job_min_ranks = job_min_ranks
        self._lock = threading.RLock()
        self._runs: OrderedDict[str, LoadedRun] = OrderedDict()
        self._states: dict[str, LoadState] = {}
        self._summaries: dict[str, dict] = {}
        self._catalog: list[RunEntry] = []
        self._catalog_at = -1e9
        self._queue: list[RunEntry] = []  # loads waiting; the front is loaded next
        self._wake = threading.Condition(self._lock)
        self._closed = False
        self._foreground = 0  # page renders in progress (see `foreground`)
        self._idle = threading.Condition(self._lock)
        self._worker = threading.Thread(target=self._work, name="torchscope-load", daemon=True)
        self._worker.start()

    # -- catalog ---------------------------------------------------------------------------------
    def catalog(self, refresh: bool = False) -> list[RunEntry]:
        """Runs under the root (re-scanned at most every CATALOG_TTL_S seconds)."""
        with self._lock:
            if refresh or time.monotonic() - self._catalog_at > CATALOG_TTL_S:
                self._catalog = discover_runs(self.root)
                self._catalog_at = time.monotonic()
            return list(self._catalog)

    def resolve(self, run_id: object) -> RunEntry:
        """The catalog entry of ``run_id``; UnsafeRunId if it is not a run under the root."""
        try:
            return resolve_run(self.root, run_id, self.catalog())
        except UnsafeRunId:
            if isinstance(run_id, str) and run_id and ".." not in run_id:
                return resolve_run(self.root, run_id, self.catalog(refresh=True))
            raise

    # -- priority --------------------------------------------------------------------------------
    @contextmanager
    def foreground(self) -> Iterator[None]:
        """While inside, the loader starts no further analyzer (for at most FOREGROUND_WAIT_S each time):
        the page a person waits for is drawn before the results nobody has asked for yet."""
        with self._lock:
            self._foreground += 1
        try:
            yield
        finally:
            with self._lock:
                self._foreground -= 1
                self._idle.notify_all()

    def _wait_for_foreground(self) -> None:
        deadline = time.monotonic() + FOREGROUND_WAIT_S
        with self._lock:
            while self._foreground > 0 and not self._closed:
                left = deadline - time.monotonic()
                if left <= 0:
                    return
                self._idle.wait(left)

    # -- loading ---------------------------------------------------------------------------------
    def state(self, run_id: str) -> LoadState:
        """Current load state of ``run_id`` (status "idle" if never requested)."""
        with self._lock:
            return self._states.get(run_id, LoadState())

    def request(self, run_id: object, *, background: bool = False) -> LoadState:
        """Queue a load of ``run_id`` unless it is loaded or loading; returns its state.

        A plain request goes to the front of the queue (the user is waiting for it);
        ``background=True`` (preloading for the Runs page) goes to the back.
        """
        entry = self.resolve(run_id)
        with self._lock:
            state = self._states.get(entry.run_id)
            if entry.run_id in self._runs:
                self._runs.move_to_end(entry.run_id)
                return state or LoadState(status="ready")
            if state is not None and state.status == "queued":
                # Still waiting: a plain request moves it to the front. Taken off the queue by the worker but
                # not yet marked parsing: it is being loaded, so it must not be queued a second time.
                if not background and any(e.run_id == entry.run_id for e in self._queue):
                    self._queue = [e for e in self._queue if e.run_id != entry.run_id]
                    self._queue.insert(0, entry)
                return state
            if state is not None and state.status not in ("idle", "error", "ready"):
                return state
            state = LoadState(status="queued", stage="waiting for the loader", started_at=time.monotonic())
            self._states[entry.run_id] = state
            if background:
                self._queue.append(entry)
            else:
                self._queue.insert(0, entry)
            self._wake.notify()
        return state

    def preload(self) -> int:
        """Queue every run of the catalog in the background; returns how many were queued."""
        n = 0
        for entry in self.catalog():
            if self.summary(entry.run_id) is None and self.state(entry.run_id).status in ("idle",):
                self.request(entry.run_id, background=True)
                n += 1
        return n

    def busy(self) -> bool:
        """True while any load is queued or running."""
        with self._lock:
            return any(s.status in ("queued", "parsing", "analyzing") for s in self._states.values())

    def _work(self) -> None:
        _lower_priority()
        _warm_up(lambda: self._closed)
        while True:
            with self._lock:
                while not self._queue and not self._closed:
                    self._wake.wait()
                if self._closed:
                    return
                entry = self._queue.pop(0)
            self._load(entry)

    def get(self, run_id: object) -> LoadedRun | None:
        """The parsed run (maybe still being analyzed: see ``pending``), or None; never parses here."""
        entry = self.resolve(run_id)
        with self._lock:
            run = self._runs.get(entry.run_id)
            if run is not None:
                self._runs.move_to_end(entry.run_id)
                return run
            state = self._states.get(entry.run_id)
        if state is None or state.status in ("idle",) or (state.status == "ready"):
            self.request(entry.run_id)  # evicted or never asked: load again in the background
        return None

    def load(self, run_id: object, timeout_s: float = 600.0) -> LoadedRun:
        """Load and analyze ``run_id`` (or wait for the background load); TraceError on failure."""
        entry = self.resolve(run_id)
        self.request(entry.run_id)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            with self._lock:
                run = self._runs.get(entry.run_id)
                state = self._states.get(entry.run_id)
            if run is not None and run.complete:
                return run
            if state is not None and state.status == "error":
                raise TraceError(entry.path, state.error)
            time.sleep(0.02)
        raise TimeoutError(f"loading {entry.run_id} took longer than {timeout_s} s")

    def evict(self, run_id: object) -> None:
        """Forget the parsed run ``run_id`` (and its state): the next `get` parses it again. A load in progress
        is left to finish."""
        entry = self.resolve(run_id)
        with self._lock:
            state = self._states.get(entry.run_id)
            if state is not None and state.status in ("queued", "parsing", "analyzing"):
                return
            self._runs.pop(entry.run_id, None)
            self._states.pop(entry.run_id, None)

    def summary(self, run_id: str) -> dict | None:
        """Small facts about a loaded run for the Runs page (devices, steps, top finding), or None."""
        with self._lock:
            return self._summaries.get(run_id)

    def rank_run(self, run_id: object, rank: int) -> LoadedRun | None:
        """Rank ``rank`` of job ``run_id`` loaded in full (queued on first ask, like `get`), or None meanwhile."""
        job = self.get(run_id)
        if job is None or job.job is None or rank not in job.rank_files:
            return None
        rank_id = f"{job.entry.run_id}#rank{rank}"
        with self._lock:
            run = self._runs.get(rank_id)
            if run is not None:
                self._runs.move_to_end(rank_id)
                return run
            state = self._states.get(rank_id)
            if state is None or state.status in ("idle", "ready"):
                path = job.rank_files[rank]
                stat = path.stat()
                entry = RunEntry(rank_id, path, "trace", stat.st_size, stat.st_mtime_ns)
                self._states[rank_id] = LoadState(status="queued", stage="waiting for the loader",
                                                  started_at=time.monotonic())
                self._queue.insert(0, entry)
                self._wake.notify()
        return None

    def _job_sources(self, entry: RunEntry):
        """The rank files of ``entry`` when it is a job of at least ``job_min_ranks`` ranks, else None."""
        if entry.kind == "trace" or "#rank" in entry.run_id:
            return None
        from torchscope.analyzers.io.loader import job_sources

        try:
            sources = job_sources(entry.path)
        except TraceError:
            return None
        return sources if len(sources.sources) >= self.job_min_ranks else None

    def _load_job(self, entry: RunEntry, state: LoadState, sources) -> None:
        """One task per rank (`analyze_job`) then the job-level views; the run is published when all are in."""
        from torchscope.analyzers.jobs import analyze_job

        t0 = time.monotonic()
        state.started_at, state.total, state.done = t0, 1, 0
        state.status = "analyzing"
        state.stage = f"analyzing {len(sources.sources)} ranks, one task each (their summaries make the job view)"
        job = self._attempt(entry, state, lambda: analyze_job(entry.path, only=JOB_ANALYZERS, partial_ok=True,
                                                             progress=False))
        if job is None:
            return
        files = {s.rank: s.trace_file for s in sources.sources if s.rank is not None and s.trace_file is not None}
        for rank, summary in job.ranks.items():  # a plain folder's files say their rank only once parsed
            if rank not in files and getattr(summary, "label", None):
                files[rank] = sources.folder / summary.label
        run = LoadedRun(entry, job.header_traces(), job.report, time.monotonic() - t0, job=job,
                        rank_files={r: Path(f) for r, f in files.items() if f is not None and r in job.ranks})
        with self._lock:
            self._publish(entry.run_id, run)
            self._summaries[entry.run_id] = _summarise(run)
            state.status, state.stage, state.done = "ready", "ready", 1
            state.finished_at = time.monotonic()

    def _attempt(self, entry: RunEntry, state, work):
        """``work()``, or None once its failure is recorded on the run's state: a bad file says why, and a
        bug in the loader or a job task shows in the page instead of killing the worker."""
        try:
            return work()
        except TraceError as exc:
            self._fail(entry, state, str(exc))
        except Exception as exc:
            self._fail(entry, state, f"{type(exc).__name__}: {exc}")
        return None

    def _publish(self, run_id: str, run: LoadedRun) -> None:
        """Make ``run`` the newest of the runs kept, dropping the least recently used beyond max_runs
        (with their states). Call with the lock held."""
        self._runs[run_id] = run
        self._runs.move_to_end(run_id)
        while len(self._runs) > self.max_runs:
            old, _ = self._runs.popitem(last=False)
            if old != run_id:
                self._states.pop(old, None)

    def _load(self, entry: RunEntry) -> None:
        """Parse, publish the run, then run the analyzers one by one, publishing each result."""
        state = self._states[entry.run_id]
        sources = self._job_sources(entry)
        if sources is not None:
            self._load_job(entry, state, sources)
            return
        names = sorted(load_analyzers(), key=lambda n: (n not in self._first,
                                                        self._first.index(n) if n in self._first else 0))
        total = 1 + len(names)
        t0 = time.monotonic()
        state.started_at = t0
        state.total = total
        state.status, state.stage = "parsing", f"parsing {entry.label} ({format_bytes(entry.size_bytes)})"
        data = self._attempt(entry, state, lambda: self._loader(entry.path))
        if data is None or self._closed:
            return
        # Published at once: the timeline needs no analyzer, and each page renders as soon as
        # its own analyzers are done (see LoadedRun.pending).
        run = LoadedRun(entry, data, Report(source=str(entry.path), results=()), 0.0, pending=tuple(names))
        with self._lock:
            self._publish(entry.run_id, run)
            state.done, state.status = 1, "analyzing"
        results: list = []
        skipped: dict = {}
        errors: dict = {}
        for i, name in enumerate(names):
            self._wait_for_foreground()
            if self._closed:
                return
            state.stage = f"running analyzer {name} ({i + 1}/{len(names)})"
            try:
                part = self._analyze(data, only=(name,))
            except Exception as exc:  # run_all contains analyzer errors; this is a last resort
                part = Report(source=str(entry.path), results=(), errors={name: f"{type(exc).__name__}: {exc}"})
            results += part.results
            skipped.update(part.skipped)
            errors.update(part.errors)
            run.report = Report(source=part.source or str(entry.path), results=drop_superseded(results),
                                skipped=dict(skipped), errors=dict(errors))
            run.pending = tuple(names[i + 1:])
            state.done = 2 + i
        run.load_s = time.monotonic() - t0
        with self._lock:
            self._summaries[entry.run_id] = _summarise(run)
            state.status, state.stage, state.done = "ready", "ready", total
            state.finished_at = time.monotonic()

    def _fail(self, entry: RunEntry, state: LoadState, message: str) -> None:
        with self._lock:
            state.status, state.error, state.finished_at = "error", message, time.monotonic()

    def shutdown(self, wait_s: float = 0.0) -> bool:
        """Stop the loader thread: pending loads are dropped, and a load in progress stops at its next stage
        (after the parse, between analyzers). Waits up to ``wait_s`` for the thread to end; True once it has.

        A process should not exit with the thread still inside a parse or a Parquet write: the interpreter's
        and pyarrow's teardown then run under it (a served dashboard stopped mid-load once ended in SIGABRT)."""
        with self._lock:
            self._closed = True
            self._queue.clear()
            self._wake.notify_all()
            self._idle.notify_all()
        if wait_s > 0 and self._worker is not threading.current_thread():
            self._worker.join(wait_s)
        return not self._worker.is_alive()


def _lower_priority() -> None:
    """Give this (the loader) thread a lower CPU priority, where the platform has per-thread nice values (Linux):
    parsing and the analyzers nobody waits for yet then yield the CPU to the page renders and to a browser on
    the same machine. On 2 cores, a cold Overview's first paint took a median 1.49 s (0.94-4.1 s) at the same
    priority and 1.13 s (1.06-2.4 s) at LOADER_NICE, the browser's scripts competing with the parse."""
    if not sys.platform.startswith("linux"):
        return
    try:
        tid = threading.get_native_id()
        os.setpriority(os.PRIO_PROCESS, tid, min(19, os.getpriority(os.PRIO_PROCESS, tid) + LOADER_NICE))
    except (AttributeError, OSError):
        pass


def _warm_up(closed: Callable[[], bool] = lambda: False) -> None:
    """Import what the first load needs (the loader, the Parquet cache, every analyzer) before it is asked for:
    on a fresh server these imports were half a second of the first page's wait. Stops early once ``closed()``."""
    try:
        import pyarrow.parquet  # noqa: F401  (the trace cache's reader)

        from torchscope.analyzers.io import loader  # noqa: F401

        if closed():
            return
        load_analyzers()
        if closed():
            return
        _warm_up_plotly()
    except Exception:  # noqa: BLE001 - a failed import shows when the load itself runs
        pass
    # What the imports built lives as long as the server: out of the collector's sight, a full collection no
    # longer walks ~200K objects that never die (0.14-0.16 s, landing in whichever page was being drawn). One
    # collection first, so no garbage of the start-up is frozen with them.
    if not closed():
        gc.collect()
        gc.freeze()


def _warm_up_plotly() -> None:
    """Build and serialise one small figure the way the pages do: plotly imports a validator module the first
    time each layout part, trace part or input kind is used, and Dash serialises through plotly.io's JSON. On a
    fresh server these imports were ~0.2 s of the first page (a 64-rank job's Overview: 0.28 s -> 0.09 s)."""
    import pandas as pd
    import plotly.graph_objects as go
    from plotly.io.json import to_json_plotly
    from plotly.subplots import make_subplots

    fig = make_subplots(rows=2, cols=1, shared_xaxes=True)
    fig.add_trace(go.Bar(x=pd.Series([1.0]), y=pd.Series(["a"]), orientation="h", name="a", marker_color="#000000",
                         customdata=["a"], hovertemplate="%{x}<extra></extra>"), row=1, col=1)
    fig.add_trace(go.Scatter(x=[0.0, 1.0], y=[1.0, 2.0], mode="lines"), row=2, col=1)
    fig.update_layout(title={"text": "a"}, legend={"orientation": "h"}, margin={"l": 1, "r": 1, "t": 1, "b": 1},
                      annotations=[{"text": "a", "showarrow": False}], barmode="stack", height=100,
                      hoverlabel={"namelength": -1}, font={"size": 12})
    fig.update_xaxes(title_text="x", range=[0, 1])
    fig.update_yaxes(title_text="y", type="category", autorange="reversed")
    to_json_plotly(fig.to_plotly_json())


def _unnamed_device(traces: list) -> str:
    """What the Runs page says for a run whose traces name no device: CPU only, or a GPU the trace does not name."""
    for t in traces:
        ev = t.events
        if ev is not None and len(ev) and "kind" in ev and bool((ev["kind"] == "kernel").any()):
            return "GPU (model not in the trace)"
    return "CPU only"


def _summarise(run: LoadedRun) -> dict:
    """Runs-page facts taken from the loaded data and the analyzers' results (never recomputed)."""
    traces = run.traces
    devices = sorted({t.meta.device_name for t in traces if t.meta.device_name}) or [_unnamed_device(traces)]
    loop = run.report.result("training_loop")  # its SUMMARY_KEYS: "steps" and "step_median_ns"
    summary = dict(loop.summary) if loop is not None else {}
    findings = ranked_findings(run.report.findings)
    started, started_from = recorded_at_ns(traces[0]) if traces else (None, "")
    return {
        "ranks": len(traces),
        "devices": ", ".join(devices),
        "steps": summary.get("steps"),
        "median_step_ns": summary.get("step_median_ns"),
        "top_finding": f"[{findings[0].severity}] {findings[0].title}" if findings else "—",
        "n_findings": len(findings),
        "started_at_ns": started,
        "started_from": started_from,
    }


#: Wall-clock times before this (2015-01-01, ns since the epoch) are not taken for a recording time:
#: a trace clock that starts at boot or at zero has small values, not a date.
EPOCH_FLOOR_NS = 1_420_070_400 * 10**9
#: ... nor after this (2100-01-01).
EPOCH_CEILING_NS = 4_102_444_800 * 10**9


def recorded_at_ns(trace: Any) -> tuple[int | None, str]:
    """When a trace was recorded (ns since the epoch) and from what: the manifest, Kineto's base time, or the
    first event when the trace clock is the wall clock; (None, "") when the trace does not say."""
    meta = trace.meta
    manifest = meta.manifest or {}
    events = trace.events
    first = int(events["ts_ns"].min()) if events is not None and len(events) else None
    # The manifest's start, else the first event when the trace clock is the wall clock (Kineto on
    # recent PyTorch), else Kineto's base time (which can predate the profiled window by weeks).
    for value, source in ((manifest.get("started_at_ns"), "manifest"), (first, "first event"),
                          (getattr(meta, "base_time_ns", 0), "trace base time")):
        try:
            v = int(value or 0)
        except (TypeError, ValueError):
            continue
        if EPOCH_FLOOR_NS <= v <= EPOCH_CEILING_NS:
            return v, source
    return None, ""

