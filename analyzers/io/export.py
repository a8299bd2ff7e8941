"""Export a loaded run as one annotated Chrome trace that opens in Perfetto (`torchscope export`).

The file holds every rank's events, counters and flows on one time axis, our phase/module
annotations as they were loaded, and the analyzers' findings: as global instant events on a
"torchscope findings" track (args: evidence, recommendation, estimated gain) and, in full, under
the top-level key ``torchscopeFindings``. Timestamps are microseconds relative to
``baseTimeNanoseconds`` (the first timestamp), so they keep nanosecond precision and
`torchscope.load` reads the export back to the same absolute ``ts_ns``. With several ranks, each
(rank, pid) becomes its own process, named "rank R · <original name>".
"""

from __future__ import annotations

import gzip
from pathlib import Path
from typing import Iterable

import numpy as np
import orjson
import pandas as pd

from torchscope.analyzers.core.report import Report
from torchscope.analyzers.core.trace import Trace, TraceSet

__all__ = ["annotated_trace", "annotated_trace_json", "write_annotated_trace"]

#: orjson applies report/json.py's rule here at C speed (numpy -> numbers, NaN/inf -> null, keys -> strings,
#: other objects -> str via default=str), without a Python call per value as to_jsonable would make.
_ORJSON_OPTS = orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS


def _traces(data: Trace | TraceSet) -> list[Trace]:
    return list(data) if isinstance(data, TraceSet) else [data]


def _base_ns(traces: list[Trace]) -> int:
    starts = [int(f["ts_ns"].min()) for t in traces for f in (t.events, t.counters, t.flows)
              if f is not None and len(f)]
    return min(starts) if starts else 0


def _pid_map(traces: list[Trace]) -> dict[tuple[int, int], int]:
    """(rank, original pid) → exported pid: unchanged for one rank, renumbered from 1 for several."""
    pairs: list[tuple[int, int]] = []
    for t in traces:
        for frame in (t.events, t.counters, t.flows):
            if frame is not None and len(frame):
                pairs += [(t.rank, int(p)) for p in pd.unique(frame["pid"])]
        pairs += [(t.rank, int(p)) for p in t.meta.processes if _is_int(p)]
    pairs = sorted(set(pairs))
    if len(traces) == 1:
        return {pr: pr[1] for pr in pairs}
    return {pr: i + 1 for i, pr in enumerate(pairs)}


def _is_int(value: object) -> bool:
    try:
        int(value)  # type: ignore[arg-type]
        return True
    except (TypeError, ValueError):
        return False


def _us(ts_ns: np.ndarray, base_ns: int) -> np.ndarray:
    return (np.asarray(ts_ns, dtype=np.int64) - base_ns) / 1000.0


def _event_records(t: Trace, pids: dict, base_ns: int) -> Iterable[dict]:
    ev = t.events
    if ev is None or ev.empty:
        return []
    ts = _us(ev["ts_ns"].to_numpy(), base_ns)
    dur = ev["dur_ns"].to_numpy(dtype=np.int64) / 1000.0
    names = ev["name"].astype(str).to_numpy()
    cats = ev["cat"].astype(str).to_numpy()
    phs = ev["ph"].astype(str).to_numpy()
    pid = [pids[(t.rank, int(p))] for p in ev["pid"].to_numpy()]
    tid = ev["tid"].to_numpy(dtype=np.int64)
    args = ev["args"].to_numpy() if "args" in ev.columns else [None] * len(ev)
    out = []
    for i in range(len(ev)):
        rec = {"ph": "X" if phs[i] not in ("i", "I", "R") else "i", "name": names[i], "cat": cats[i],
               "ts": float(ts[i]), "pid": pid[i], "tid": int(tid[i])}
        if rec["ph"] == "X":
            rec["dur"] = float(dur[i])
        else:
            rec["s"] = "t"
        a = args[i]
        if isinstance(a, dict) and a:
            rec["args"] = a
        out.append(rec)
    return out


def _counter_records(t: Trace, pids: dict, base_ns: int) -> list[dict]:
    c = t.counters
    if c is None or c.empty:
        return []
    ts = _us(c["ts_ns"].to_numpy(), base_ns)
    names = c["name"].astype(str).to_numpy()
    series = c["series"].astype(str).to_numpy()
    vals = c["value"].to_numpy(dtype=np.float64)
    pid = [pids[(t.rank, int(p))] for p in c["pid"].to_numpy()]
    return [{"ph": "C", "name": names[i], "ts": float(ts[i]), "pid": pid[i], "tid": 0,
             "args": {series[i]: (float(vals[i]) if np.isfinite(vals[i]) else None)}}
            for i in range(len(c))]


def _flow_records(t: Trace, pids: dict, base_ns: int) -> list[dict]:
    f = t.flows
    if f is None or f.empty:
        return []
    ts = _us(f["ts_ns"].to_numpy(), base_ns)
    out = []
    for i, row in enumerate(f.itertuples(index=False)):
        rec = {"ph": str(row.ph), "id": int(row.id), "name": str(row.cat), "cat": str(row.cat),
               "ts": float(ts[i]), "pid": pids[(t.rank, int(row.pid))], "tid": int(row.tid)}
        if rec["ph"] in ("t", "f"):
            rec["bp"] = "e"
        out.append(rec)
    return out


def _metadata_records(t: Trace, pids: dict, several: bool) -> list[dict]:
    out = []
    for (rank, pid), new in pids.items():
        if rank != t.rank:
            continue
        name = t.meta.processes.get(pid) or t.meta.processes.get(str(pid)) or f"pid {pid}"
        out.append({"ph": "M", "name": "process_name", "pid": new, "tid": 0,
                    "args": {"name": f"rank {rank} · {name}" if several else str(name)}})
    for key, name in t.meta.threads.items():
        try:
            pid, tid = int(key[0]), int(key[1])
        except (TypeError, ValueError, IndexError):
            continue
        if (t.rank, pid) in pids:
            out.append({"ph": "M", "name": "thread_name", "pid": pids[(t.rank, pid)], "tid": tid,
                        "args": {"name": str(name)}})
    return out


def annotated_trace(data: Trace | TraceSet, report: Report | None = None) -> dict:
    """The run as a Chrome-trace document (dict) with findings on their own track."""
    traces = _traces(data)
    base = _base_ns(traces)
    pids = _pid_map(traces)
    several = len(traces) > 1
    events: list[dict] = []
    for t in traces:
        events += _metadata_records(t, pids, several)
        events += _event_records(t, pids, base)
        events += _counter_records(t, pids, base)
        events += _flow_records(t, pids, base)
    findings = list(report.findings) if report is not None else []
    if findings:
        fpid = max(pids.values(), default=0) + 1
        events.append({"ph": "M", "name": "process_name", "pid": fpid, "tid": 0,
                       "args": {"name": "torchscope findings"}})
        events.append({"ph": "M", "name": "process_sort_index", "pid": fpid, "tid": 0, "args": {"sort_index": -1}})
        for f in findings:
            events.append({"ph": "i", "s": "g", "name": f"[{f.severity}] {f.title}", "cat": "torchscope.finding",
                           "ts": 0.0, "pid": fpid, "tid": 0,
                           "args": {"analyzer": f.analyzer, "rank": f.rank, "recommendation": f.recommendation,
                                    "estimated_gain": f.estimated_gain, **f.to_dict()["evidence"]}})
    first = traces[0].meta if traces else None
    doc: dict = {"traceEvents": events, "displayTimeUnit": "ms", "baseTimeNanoseconds": base,
                 "torchscopeFindings": [f.to_dict() for f in findings]}
    if report is not None:
        doc["torchscopeReport"] = {"skipped": dict(report.skipped), "errors": dict(report.errors)}
    if first is not None:
        if first.device_properties:
            doc["deviceProperties"] = list(first.device_properties)
        if not several and first.distributed:
            doc["distributedInfo"] = dict(first.distributed)
    return doc


def annotated_trace_json(data: Trace | TraceSet, report: Report | None = None) -> bytes:
    """The annotated trace as JSON bytes."""
    return orjson.dumps(annotated_trace(data, report), option=_ORJSON_OPTS, default=str)


def write_annotated_trace(data: Trace | TraceSet, report: Report | None, out: str | Path) -> Path:
    """Write the annotated trace to ``out`` (gzipped when it ends in .gz); returns the path."""
    out = Path(out)
    body = annotated_trace_json(data, report)
    tmp = out.with_name(out.name + ".tmp")
    with (gzip.open(tmp, "wb", compresslevel=5) if out.name.endswith(".gz") else open(tmp, "wb")) as fh:
        fh.write(body)
    tmp.replace(out)
    return out
