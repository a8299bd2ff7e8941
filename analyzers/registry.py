"""The analyzer registry: runs every analyzer that applies and says which were skipped and why."""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Callable, Mapping

from .findings import Finding, NotApplicable, Result, SEVERITIES
from .trace import Trace, TraceSet

__all__ = ["AnalyzerSpec", "Report", "register", "run_all", "REGISTRY"]

#: Modules that register analyzers when imported. Add a module here to put it in `run_all`.
ANALYZER_MODULES: tuple[str, ...] = (
    "analyzers.training_loop",
    "analyzers.gpu_time",
    "analyzers.kernels",
    "analyzers.communication",
    "analyzers.memory",
    "analyzers.roofline",
    "analyzers.power",
    "analyzers.moe",
)


@dataclass(frozen=True)
class AnalyzerSpec:
    """How to run one analyzer: per rank (`scope="rank"`) or once over all ranks (`scope="set"`)."""

    name: str
    func: Callable[..., Result]
    description: str
    scope: str = "rank"
    page: str = "overview"


REGISTRY: dict[str, AnalyzerSpec] = {}


def register(name: str, *, description: str, scope: str = "rank", page: str = "overview") -> Callable:
    """Decorator that adds ``analyze(trace, **options) -> Result`` to the registry under ``name``."""
    if scope not in ("rank", "set"):
        raise ValueError(f"scope must be 'rank' or 'set', got {scope!r}")

    def deco(func: Callable[..., Result]) -> Callable[..., Result]:
        REGISTRY[name] = AnalyzerSpec(name, func, description, scope, page)
        return func

    return deco


@dataclass(frozen=True)
class Report:
    """Results of all analyzers on one trace or trace set, with skipped analyzers and reasons."""

    source: str
    results: tuple[Result, ...]
    skipped: Mapping[str, str] = field(default_factory=dict)
    errors: Mapping[str, str] = field(default_factory=dict)

    def result(self, name: str, rank: int | None = None) -> Result | None:
        """The result of analyzer ``name`` (for ``rank``, or the first one when rank is None)."""
        for res in self.results:
            if res.analyzer == name and (rank is None or res.rank == rank):
                return res
        return None

    @property
    def findings(self) -> list[Finding]:
        """All findings, largest estimated gain first, then by severity."""
        order = {s: i for i, s in enumerate(reversed(SEVERITIES))}
        found = [f for r in self.results for f in r.findings]
        return sorted(found, key=lambda f: (-f.gain_fraction, order[f.severity], f.analyzer, f.id))


def load_analyzers() -> Mapping[str, AnalyzerSpec]:
    """Import every analyzer module so that it registers itself; specs in ANALYZER_MODULES order."""
    for module in ANALYZER_MODULES:
        importlib.import_module(module)
    # REGISTRY fills in import order, which depends on who imported what first (a test, the diff):
    # the run order must not, so it follows ANALYZER_MODULES and then registration order.
    position = {module: i for i, module in enumerate(ANALYZER_MODULES)}
    ordered = sorted(REGISTRY.values(), key=lambda spec: position.get(spec.func.__module__, len(position)))
    return {spec.name: spec for spec in ordered}


def run_all(
    data: Trace | TraceSet,
    *,
    only: tuple[str, ...] | None = None,
    options: Mapping[str, Mapping] | None = None,
    progress: Callable[[str], None] | None = None,
) -> Report:
    """Run every registered analyzer that applies to ``data`` and collect a Report."""
    specs = load_analyzers()
    options = options or {}
    traces = list(data) if isinstance(data, TraceSet) else [data]
    results: list[Result] = []
    skipped: dict[str, str] = {}
    errors: dict[str, str] = {}
    for name, spec in specs.items():
        if only is not None and name not in only:
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
            try:
                results.append(spec.func(target, **kwargs))
            except NotApplicable as exc:
                reasons.append(str(exc))
            except Exception as exc:  # an analyzer bug must not hide the other analyzers' results
                errors[name] = f"{type(exc).__name__}: {exc}"
        if reasons and len(reasons) == len(targets):
            skipped[name] = reasons[0]
    return Report(source=getattr(data, "path", "") or data_path(data), results=tuple(results),
                  skipped=skipped, errors=errors)


def data_path(data: Trace | TraceSet) -> str:
    """The file or folder a trace or trace set was loaded from."""
    if isinstance(data, TraceSet):
        return data.path
    return data.meta.path
