"""torchscope.analyzers: load traces and run bundles, analyze them, report findings. Never imports torch."""

from torchscope.analyzers.core.errors import TraceError
from torchscope.analyzers.core.findings import Finding
from torchscope.analyzers.core.result import NotApplicable, Result
from torchscope.analyzers.io.loader import load, load_set
from torchscope.analyzers.core.report import Report
from torchscope.analyzers.core.registry import run_all
from torchscope.analyzers.core.trace import Trace, TraceMeta, TraceSet

__all__ = [
    "Finding", "NotApplicable", "Report", "Result", "Trace", "TraceError", "TraceMeta", "TraceSet",
    "load", "load_set", "run_all",
]
