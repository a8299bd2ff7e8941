"""The analyzer registry: runs every analyzer that applies and says which were skipped and why.

An analyzer registers ``analyze(trace, **needs) -> Result`` with the names of the analyzers whose
results it needs (``needs=("roofline", "gpu_time")``). ``run_all`` runs each analyzer once per rank
in dependency order and passes those results in as ``<name>_result`` keyword arguments (None when
the needed analyzer was skipped or failed on that rank). No analyzer calls another's ``analyze``.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Callable, Literal, Mapping

from torchscope.analyzers.core.findings import Page
from torchscope.analyzers.core.report import Report
from torchscope.analyzers.core.result import NotApplicable, Result
from torchscope.analyzers.core.trace import Trace, TraceSet

__all__ = ["AnalyzerSpec", "Report", "Scope", "register", "run_all", "load_analyzers", "REGISTRY", "ANALYZER_MODULES"]

Scope = Literal["rank", "set"]

#: Modules that register analyzers when imported. Add a module here to put it in `run_all`.
ANALYZER_MODULES: tuple[str, ...] = (
    "torchscope.analyzers.training_loop",
    "torchscope.analyzers.gpu_time",
    "torchscope.analyzers.kernels",
    "torchscope.analyzers.communication",
    "torchscope.analyzers.memory",
    "torchscope.analyzers.roofline.analysis",
    "torchscope.analyzers.power",
    "torchscope.analyzers.moe.analysis",
)


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


REGISTRY: dict[str, AnalyzerSpec] = {}


def register(name: str, *, description: str, scope: Scope = "rank", page: Page = "overview",
             needs: tuple[str, ...] = (), summary_keys: Mapping[str, str] | None = None) -> Callable:
    """Decorator that adds ``analyze(trace, **needs) -> Result`` to the registry under ``name``."""
    if scope not in ("rank", "set"):
        raise ValueError(f"scope must be 'rank' or 'set', got {scope!r}")

    def deco(func: Callable[..., Result]) -> Callable[..., Result]:
        REGISTRY[name] = AnalyzerSpec(name, func, description, scope, page, tuple(needs),
                                      dict(summary_keys) if summary_keys is not None else None)
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
    specs = load_analyzers()
    if only is not None:
        wanted = set(only)
        for name in reversed(list(specs)):
            if name in wanted:
                wanted.update(specs[name].needs)
        hidden = wanted - set(only)
    else:
        wanted, hidden = set(specs), set()
    options = options or {}
    traces = list(data) if isinstance(data, TraceSet) else [data]
    results: list[Result] = []
    skipped: dict[str, str] = {}
    errors: dict[str, str] = {}
    # (analyzer, rank) -> result, for the analyzers that need it
    by_rank: dict[tuple[str, int | None], Result] = {}
    for name, spec in specs.items():
        if name not in wanted:
            continue
        if progress is not None:
            progress(name)
        kwargs = dict(options.get(name, {}))
        targets: list[Trace | TraceSet]
        if spec.scope == "set":
            if not isinstance(data, TraceSet) or len(data) < 2:
                skipped[name] = "single rank"
                continue
            targets = [data]
        else:
            targets = traces
        reasons = []
        for target in targets:
            rank = target.rank if isinstance(target, Trace) else None
            given = {f"{need}_result": by_rank.get((need, rank)) for need in spec.needs}
            try:
                result = spec.func(target, **kwargs, **given)
            except NotApplicable as exc:
                reasons.append(str(exc))
                continue
            except Exception as exc:  # an analyzer bug must not hide the other analyzers' results
                errors[name] = f"{type(exc).__name__}: {exc}"
                continue
            by_rank[(name, rank)] = result
            if name not in hidden:
                results.append(result)
        if reasons and len(reasons) == len(targets) and name not in hidden:
            skipped[name] = reasons[0]
    return Report(source=getattr(data, "path", "") or data_path(data), results=tuple(results),
                  skipped=skipped, errors=errors)


def data_path(data: Trace | TraceSet) -> str:
    """The file or folder a trace or trace set was loaded from."""
    if isinstance(data, TraceSet):
        return data.path
    return data.meta.path
