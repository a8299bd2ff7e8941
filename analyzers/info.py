"""What a trace or run bundle contains (ranks, devices, events, steps) and how its run ended: what `torchscope info` prints.

How a run ended (``run_status``): a bundle whose manifest says ``"complete": false`` reads
"incomplete: <the manifest's incomplete_reason>"; a manifest never finalised (the job was killed
before the profiler stopped) reads "incomplete: KILLED_REASON", the line the loader also puts into
``Trace.meta.warnings`` for such a run (said once, not twice). The loader's other warnings follow,
each as "warning: ...". ``info`` and ``analyze`` print these lines first.
"""

from __future__ import annotations

from torchscope.analyzers.core.trace import Trace
from torchscope.analyzers.timeline.steps import WHOLE_TRACE_LABEL, schedule_words, step_count, steps_run

__all__ = ["describe", "run_status", "KILLED_REASON", "INCOMPLETE_PREFIX"]

#: Why a run whose manifest was never finalised is incomplete (the loader's warning says the same).
KILLED_REASON = "the job ended without stopping the profiler"
#: How a line about an incomplete run begins.
INCOMPLETE_PREFIX = "incomplete: "


def run_status(trace: Trace) -> list[str]:
    """Lines for people on how the run ended ("incomplete: <reason>") and the loader's warnings, incomplete first."""
    manifest = trace.meta.manifest or {}
    warnings = [str(w) for w in trace.meta.warnings]
    incomplete = [w for w in warnings if w.startswith(INCOMPLETE_PREFIX)]
    if manifest.get("complete") is False and not incomplete:
        reason = manifest.get("incomplete_reason")
        if not reason:
            reason = KILLED_REASON if manifest.get("ended_at_ns") is None else "the run did not end normally"
        incomplete.append(INCOMPLETE_PREFIX + str(reason))
    lines = incomplete + [f"warning: {w}" for w in warnings if not w.startswith(INCOMPLETE_PREFIX)]
    return list(dict.fromkeys(lines))  # each said once, in order


def describe(trace: Trace) -> dict:
    """Plain-JSON summary of one rank: source, device, span (ms), event counts by kind, steps, streams, run status.

    ``steps`` is ``timeline.steps.step_count``, the count ``analyze`` (training_loop) reports too;
    ``steps_run`` and ``schedule`` are ``timeline.steps.steps_run`` / ``schedule_words`` (None for a
    plain Kineto trace); ``window`` is "steps", or "whole trace" when the trace has no ProfilerStep;
    ``complete`` is the manifest's (None without one) and ``status`` the ``run_status`` lines.
    """
    start_ns, end_ns = trace.span_ns
    steps = step_count(trace)
    kinds = trace.events["kind"].value_counts()
    manifest = trace.meta.manifest or {}
    complete = manifest.get("complete")
    return {
        "path": trace.meta.path,
        "rank": trace.rank,
        "world_size": trace.meta.world_size,
        "device": trace.meta.device_name,
        "events": int(len(trace.events)),
        "events_by_kind": {str(k): int(v) for k, v in kinds.items() if v},
        "steps": steps,
        "steps_run": steps_run(trace),
        "schedule": schedule_words(trace),
        "window": "steps" if steps else WHOLE_TRACE_LABEL,
        "span_ms": round((end_ns - start_ns) / 1e6, 3),
        "counters": int(len(trace.counters)),
        "flows": int(len(trace.flows)),
        "streams": {name: int(len(frame)) for name, frame in trace.streams.items()},
        "dropped_events": trace.meta.dropped_events,
        "complete": complete if isinstance(complete, bool) else None,
        "incomplete_reason": manifest.get("incomplete_reason"),
        "status": run_status(trace),
        "warnings": list(trace.meta.warnings),
    }
