"""What a trace or run bundle contains (ranks, devices, events, steps): what `torchscope info` prints."""

from __future__ import annotations

from torchscope.analyzers.core.trace import Trace
from torchscope.analyzers.timeline.steps import WHOLE_TRACE_LABEL, step_count

__all__ = ["describe"]


def describe(trace: Trace) -> dict:
    """Plain-JSON summary of one rank: source, device, span (ms), event counts by kind, steps, streams.

    ``steps`` is ``timeline.steps.step_count``, the count ``analyze`` (training_loop) reports too;
    ``window`` is "steps", or "whole trace" when the trace has no ProfilerStep.
    """
    start_ns, end_ns = trace.span_ns
    steps = step_count(trace)
    kinds = trace.events["kind"].value_counts()
    return {
        "path": trace.meta.path,
        "rank": trace.rank,
        "world_size": trace.meta.world_size,
        "device": trace.meta.device_name,
        "events": int(len(trace.events)),
        "events_by_kind": {str(k): int(v) for k, v in kinds.items() if v},
        "steps": steps,
        "window": "steps" if steps else WHOLE_TRACE_LABEL,
        "span_ms": round((end_ns - start_ns) / 1e6, 3),
        "counters": int(len(trace.counters)),
        "flows": int(len(trace.flows)),
        "streams": {name: int(len(frame)) for name, frame in trace.streams.items()},
        "dropped_events": trace.meta.dropped_events,
        "warnings": list(trace.meta.warnings),
    }
