"""The analyzer registry: runs every analyzer that applies and says which were skipped and why.

An analyzer registers ``analyze(trace, **needs) -> Result`` with the names of the analyzers whose
results it needs (``needs=("roofline", "gpu_time")``). ``run_all`` runs each analyzer once per rank
in dependency order and passes those results in as ``<name>_result`` keyword arguments (None when
the needed analyzer was skipped or failed on that rank). No analyzer calls another's ``analyze``.

A job-level analyzer (``scope="set"``) that registers a ``reduce(trace, **needs)`` sees the ranks
only through what ``reduce`` keeps of each (a small picklable part: a few reduced tables); its
``analyze(parts: {rank: part})`` runs on those parts. This is what lets a job of many ranks be
analyzed one rank at a time (``torchscope.analyzers.jobs``): `run_rank` is the whole per-rank pass
(rank analyzers, then the reductions), `run_job_level` the pass over the parts, and `run_all` is
both, in one process. A set analyzer without ``reduce`` is given the whole TraceSet and cannot run
on a job analyzed rank by rank.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Iterable, Literal, Mapping

from torchscope.analyzers.core.findings import Page
from torchscope.analyzers.core.report import Report
from torchscope.analyzers.core.result import NotApplicable, Result
from torchscope.analyzers.core.trace import Trace, TraceSet

__all__ = ["AnalyzerSpec", "Report", "Scope", "RankRun", "JobLevelRun", "register", "run_all", "run_rank",
           "run_job_level", "select", "drop_superseded", "load_analyzers", "REGISTRY", "ANALYZER_MODULES", "NO_REDUCE_REASON"]

Scope = Literal["rank", "set"]

#: Modules that register analyzers when imported. Add a module here to put it in `run_all`.
ANALYZER_MODULES: tuple[str, ...] = (
    "torchscope.analyzers.training_loop",
    "torchscope.analyzers.gpu_time",
    "torchscope.analyzers.kernels",
    "torchscope.analyzers.communication",
    "torchscope.analyzers.bottleneck.analysis",
    "torchscope.analyzers.memory",
    "torchscope.analyzers.roofline.analysis",
    "torchscope.analyzers.power",
    "torchscope.analyzers.moe.analysis",
    "torchscope.analyzers.jobs.overview",
)
#: Why a set analyzer without ``reduce`` is skipped on a job analyzed rank by rank.
NO_REDUCE_REASON = "needs every rank's full trace at once (no per-rank reduce)"


@dataclass(frozen=True)
class AnalyzerSpec:
    """How to run one analyzer: per rank (`scope="rank"`) or once over all ranks (`scope="set"`)."""

    name: str
    func: Callable[..., Result]
    description: str
    scope: Scope = "rank"
    page: Page = "overview"
    #: Analyzers whose results this one is given, as ``<name>_result=`` keyword arguments.
    needs: tuple[str, ...] = ()
    #: Every key the summary may hold -> what it is, with its unit (the documented contract).
    summary_keys: Mapping[str, str] | None = None
    #: Set scope only: ``reduce(trace, **needs) -> part``, what one rank contributes; ``func`` then
    #: receives ``{rank: part}`` instead of the TraceSet.
    reduce: Callable[..., Any] | None = None
    #: Finding ids of other analyzers this one replaces: on a rank where it ran, those are dropped
    #: (one finding per cause; the older rule still speaks where this analyzer could not run).
    supersedes: tuple[str, ...] = ()


REGISTRY: dict[str, AnalyzerSpec] = {}


def register(name: str, *, description: str, scope: Scope = "rank", page: Page = "overview",
             needs: tuple[str, ...] = (), summary_keys: Mapping[str, str] | None = None,
             reduce: Callable[..., Any] | None = None, supersedes: tuple[str, ...] = ()) -> Callable:
    """Decorator that adds ``analyze(trace, **needs) -> Result`` to the registry under ``name``."""
    if scope not in ("rank", "set"):
        raise ValueError(f"scope must be 'rank' or 'set', got {scope!r}")
    if reduce is not None and scope != "set":
        raise ValueError(f"{name}: only a set-scope analyzer has a reduce")

    def deco(func: Callable[..., Result]) -> Callable[..., Result]:
        REGISTRY[name] = AnalyzerSpec(name, func, description, scope, page, tuple(needs),
                                      dict(summary_keys) if summary_keys is not None else None, reduce,
                                      tuple(supersedes))
        return func

    return deco


def load_analyzers() -> Mapping[str, AnalyzerSpec]:
    """Import every analyzer module so that it registers itself; specs in ANALYZER_MODULES order."""
    for module in ANALYZER_MODULES:
        importlib.import_module(module)
    # REGISTRY fills in import order, which depends on who imported what first (a test, the diff):
    # the run order must not, so it follows ANALYZER_MODULES and then registration order.
    position = {module: i for i, module in enumerate(ANALYZER_MODULES)}
    ordered = sorted(REGISTRY.values(), key=lambda spec: position.get(spec.func.__module__, len(position)))
    return _dependency_order({spec.name: spec for spec in ordered})


def _dependency_order(specs: Mapping[str, AnalyzerSpec]) -> dict[str, AnalyzerSpec]:
    """``specs`` reordered so that every analyzer follows those it needs (stable otherwise)."""
    done: dict[str, AnalyzerSpec] = {}
    visiting: set[str] = set()

    def visit(name: str) -> None:
        if name in done or name not in specs:
            return
        if name in visiting:
            raise ValueError(f"analyzers need each other in a cycle through {name!r}")
        visiting.add(name)
        for need in specs[name].needs:
            visit(need)
        visiting.discard(name)
        done[name] = specs[name]

    for name in specs:
        visit(name)
    return done


def select(only: tuple[str, ...] | None = None) -> tuple[dict[str, AnalyzerSpec], frozenset[str]]:
    """The analyzers to run, in run order (``only`` and, silently, what they need), and the silent ones."""
    specs = load_analyzers()
    if only is None:
        return dict(specs), frozenset()
    wanted = set(only)
    for name in reversed(list(specs)):
        if name in wanted:
            wanted.update(specs[name].needs)
    return {n: s for n, s in specs.items() if n in wanted}, frozenset(wanted - set(only))


@dataclass(frozen=True)
class RankRun:
    """One rank's pass: its analyzers' results, why the others did not apply, errors, and its set parts."""

    rank: int
    results: Mapping[str, Result] = field(default_factory=dict)
    not_applicable: Mapping[str, str] = field(default_factory=dict)
    errors: Mapping[str, str] = field(default_factory=dict)
    #: Set analyzer name -> what ``reduce`` kept of this rank.
    parts: Mapping[str, Any] = field(default_factory=dict)


def run_rank(trace: Trace, specs: Mapping[str, AnalyzerSpec], *, options: Mapping[str, Mapping] | None = None,
             progress: Callable[[str], None] | None = None) -> RankRun:
    """Run the rank analyzers of ``specs`` on one trace, then the reduce of each set analyzer."""
    options = options or {}
    results: dict[str, Result] = {}
    not_applicable: dict[str, str] = {}
    errors: dict[str, str] = {}
    parts: dict[str, Any] = {}
    for name, spec in specs.items():
        if spec.scope == "set" and spec.reduce is None:
            continue
        if progress is not None:
            progress(name)
        given = {f"{need}_result": results.get(need) for need in spec.needs}
        try:
            if spec.scope == "set":
                parts[name] = spec.reduce(trace, **given)
            else:
                results[name] = spec.func(trace, **dict(options.get(name, {})), **given)
        except NotApplicable as exc:
            not_applicable[name] = str(exc)
        except Exception as exc:  # an analyzer bug must not hide the other analyzers' results
            errors[name] = f"{type(exc).__name__}: {exc}"
    return RankRun(trace.rank, results, not_applicable, errors, parts)


@dataclass(frozen=True)
class JobLevelRun:
    """The set analyzers' pass: their results (rank None), skip reasons and errors."""

    results: Mapping[str, Result] = field(default_factory=dict)
    skipped: Mapping[str, str] = field(default_factory=dict)
    errors: Mapping[str, str] = field(default_factory=dict)


def run_job_level(specs: Mapping[str, AnalyzerSpec], parts_by_rank: Mapping[int, Mapping[str, Any]], *,
                  traces: TraceSet | None = None, options: Mapping[str, Mapping] | None = None,
                  progress: Callable[[str], None] | None = None) -> JobLevelRun:
    """Run each set analyzer of ``specs`` on the ranks' parts (or, without reduce, on ``traces``)."""
    options = options or {}
    results: dict[str, Result] = {}
    skipped: dict[str, str] = {}
    errors: dict[str, str] = {}
    ranks = sorted(parts_by_rank)
    for name, spec in specs.items():
        if spec.scope != "set":
            continue
        if len(ranks) < 2:
            skipped[name] = "single rank"
            continue
        if spec.reduce is None and traces is None:
            skipped[name] = NO_REDUCE_REASON
            continue
        if progress is not None:
            progress(name)
        try:
            if spec.reduce is None:
                result = spec.func(traces, **dict(options.get(name, {})))
            else:
                parts = {rank: parts_by_rank[rank][name] for rank in ranks if name in parts_by_rank[rank]}
                result = spec.func(parts, **dict(options.get(name, {})))
        except NotApplicable as exc:
            skipped[name] = str(exc)
            continue
        except Exception as exc:  # an analyzer bug must not hide the other analyzers' results
            errors[name] = f"{type(exc).__name__}: {exc}"
            continue
        results[name] = result
    return JobLevelRun(results, skipped, errors)


def combine(specs: Mapping[str, AnalyzerSpec], hidden: frozenset[str], rank_runs: list[RankRun],
            job: JobLevelRun, *, source: str) -> Report:
    """One Report from the ranks' passes and the job-level pass, in run order (analyzer, then rank)."""
    results: list[Result] = []
    skipped: dict[str, str] = {}
    errors: dict[str, str] = {}
    runs = sorted(rank_runs, key=lambda run: run.rank)
    for name, spec in specs.items():
        if spec.scope == "set":
            if name in job.results and name not in hidden:
                results.append(job.results[name])
            if name in job.skipped and name not in hidden:
                skipped[name] = job.skipped[name]
            if name in job.errors:
                errors[name] = job.errors[name]
        else:
            if name not in hidden:
                results.extend(run.results[name] for run in runs if name in run.results)
            reasons = [run.not_applicable[name] for run in runs if name in run.not_applicable]
            if runs and reasons and len(reasons) == len(runs) and name not in hidden:
                skipped[name] = reasons[0]
        for run in runs:  # a reduce or rank analyzer that failed on some rank: the last rank's message
            if name in run.errors:
                errors[name] = run.errors[name]
    return Report(source=source, results=drop_superseded(results), skipped=skipped, errors=errors)


def drop_superseded(results: Iterable[Result]) -> tuple[Result, ...]:
    """``results`` without the findings that an analyzer present for the same rank supersedes."""
    results = tuple(results)
    gone: dict[int | None, set[str]] = {}
    for res in results:
        spec = REGISTRY.get(res.analyzer)
        if spec is not None and spec.supersedes:
            gone.setdefault(res.rank, set()).update(spec.supersedes)
    if not gone:
        return results
    out = []
    for res in results:
        drop = gone.get(res.rank, set())
        if drop and any(f.id in drop for f in res.findings):
            res = replace(res, findings=tuple(f for f in res.findings if f.id not in drop))
        out.append(res)
    return tuple(out)


def run_all(
    data: Trace | TraceSet,
    *,
    only: tuple[str, ...] | None = None,
    options: Mapping[str, Mapping] | None = None,
    progress: Callable[[str], None] | None = None,
) -> Report:
    """Run every registered analyzer that applies to ``data`` and collect a Report.

    ``only`` limits the run to those analyzers (and, silently, what they need); ``options`` passes
    keyword options per analyzer name.
    """
    specs, hidden = select(only)
    traces = list(data) if isinstance(data, TraceSet) else [data]
    several = isinstance(data, TraceSet) and len(data) >= 2
    # A single trace has no job level: its set analyzers' reductions would be thrown away.
    rank_specs = specs if several else {n: s for n, s in specs.items() if s.scope == "rank"}
    runs = [run_rank(trace, rank_specs, options=options, progress=progress) for trace in traces]
    parts = {run.rank: run.parts for run in runs}
    if not several:
        parts = {run.rank: {} for run in runs[:1]}
    job = run_job_level(specs, parts, traces=data if several else None, options=options, progress=progress)
    return combine(specs, hidden, runs, job, source=getattr(data, "path", "") or data_path(data))


def data_path(data: Trace | TraceSet) -> str:
    """The file or folder a trace or trace set was loaded from."""
    if isinstance(data, TraceSet):
        return data.path
    return data.meta.path
