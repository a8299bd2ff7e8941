"""torchscope: profile PyTorch training and inference, find each step's bottleneck, say what to change.

    import torchscope

    with torchscope.profile("runs/my_run", model=model) as prof:     # needs torch (the `record` extra)
        for batch in loader:
            train_step(batch)
            prof.step(tokens=batch.numel())

    report = torchscope.run_all(torchscope.load("runs/my_run"))       # no torch needed
    job = torchscope.analyze_job("runs/big_job")                      # rank by rank, in parallel

Beneath this name: ``torchscope.profiler`` (recording, inside the job), ``torchscope.analyzers``
(reading and analysis, never imports torch), ``torchscope.dashboard`` (the Dash app) and
``torchscope.cli`` (the ``torchscope`` and ``trace-diff`` commands).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from torchscope.analyzers.core.errors import TraceError
from torchscope.analyzers.core.findings import Finding
from torchscope.analyzers.core.result import NotApplicable, Result
from torchscope.analyzers.core.report import Report
from torchscope.analyzers.core.registry import run_all
from torchscope.analyzers.core.trace import Trace, TraceMeta, TraceSet
from torchscope.analyzers.io.loader import load, load_set
from torchscope.analyzers.jobs import JobReport, analyze_job

if TYPE_CHECKING:  # for type checkers and IDEs; at run time these come from __getattr__ below
    from torchscope.profiler.options import ProfileOptions
    from torchscope.profiler.session import DEFAULT_SCHEDULE, profile, schedule

__version__ = "0.1.0"

__all__ = [
    "DEFAULT_SCHEDULE", "Finding", "JobReport", "NotApplicable", "ProfileOptions", "Report", "Result", "Trace",
    "TraceError", "TraceMeta", "TraceSet", "analyze_job", "load", "load_set", "profile", "run_all", "schedule",
]

#: The recording API imports torch; the analysis side must not. So these names are resolved on
#: first use (PEP 562), and `import torchscope` works on a machine without torch.
_RECORDING_NAMES = ("profile", "schedule", "DEFAULT_SCHEDULE", "ProfileOptions")


def __getattr__(name: str) -> Any:
    if name in _RECORDING_NAMES:
        from torchscope import profiler

        return getattr(profiler, name)
    raise AttributeError(f"module 'torchscope' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_RECORDING_NAMES))
