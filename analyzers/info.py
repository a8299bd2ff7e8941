"""What a trace or run bundle contains (ranks, devices, events, steps): what `torchscope info` prints."""

from __future__ import annotations

from torchscope.analyzers.core.trace import Trace

__all__ = ["describe"]


def describe(trace: Trace) -> dict:
    """Plain-JSON summary of one rank: source, device, span, event counts by kind, steps, streams."""
    start_ns, end_ns = trace.span_ns
    kinds = trace.events["kind"].value_counts()
    return {
        "path": trace.meta.path,
        "rank": trace.rank,
        "world_size": trace.meta.world_size,
        "device": trace.meta.device_name,
        "events": int(len(trace.events)),
        "events_by_kind": {str(k): int(v) for k, v in kinds.items() if v},
        "steps": int(len(trace.steps())),
        "span_ms": round((end_ns - start_ns) / 1e6, 3),
        "counters": int(len(trace.counters)),
        "flows": int(len(trace.flows)),
        "streams": {name: int(len(frame)) for name, frame in trace.streams.items()},
        "dropped_events": trace.meta.dropped_events,
        "warnings": list(trace.meta.warnings),
    }
