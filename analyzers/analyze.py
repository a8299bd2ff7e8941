"""`analyze_path(path)`: load a trace, folder of ranks or run bundle and run every analyzer on it."""

from __future__ import annotations

from typing import Callable

from torchscope.analyzers.core.errors import TraceError
from torchscope.analyzers.core.report import Report
from torchscope.analyzers.core.registry import run_all
from torchscope.analyzers.core.trace import TraceSet
from torchscope.analyzers.io.loader import load_set

__all__ = ["analyze_path"]


def analyze_path(path: str, *, rank: int | None = None, hta_compatible: bool = False,
                 progress: Callable[[str], None] | None = None, cache: bool | None = None) -> tuple[TraceSet, Report]:
    """Load ``path`` (optionally one rank of it; ``cache`` as for `load`) and run every analyzer on it."""
    traces = load_set(path, cache=cache)
    if rank is not None:
        if rank not in traces.ranks:
            raise TraceError(path, f"no rank {rank}; ranks are {sorted(traces.ranks)}")
        traces = TraceSet({rank: traces[rank]}, path=traces.path)
    data = traces if len(traces) > 1 else next(iter(traces))
    options = {"gpu_time": {"hta_compatible": True}} if hta_compatible else None
    return traces, run_all(data, progress=progress, options=options)
