"""torchscope analyzers: load traces and run bundles, analyze them, report findings. Never imports torch."""

from .errors import TraceError
from .findings import Finding, NotApplicable, Result
from .loader import load, load_set
from .registry import Report, run_all
from .trace import Trace, TraceMeta, TraceSet

__all__ = [
    "Finding", "NotApplicable", "Report", "Result", "Trace", "TraceError", "TraceMeta", "TraceSet",
    "load", "load_set", "run_all",
]
