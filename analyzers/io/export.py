"""Export a loaded run as one annotated Chrome trace that opens in Perfetto (`torchscope export`).

The file holds every rank's events, counters and flows on one time axis, our phase/module
annotations as they were loaded, the source's process/thread metadata, and the analyzers' findings:
one slice per finding on a "torchscope findings" process (args: evidence, recommendation, estimated
gain) and, in full, under the top-level key ``torchscopeFindings``. Timestamps are microseconds
relative to ``baseTimeNanoseconds`` (the first timestamp), so they keep nanosecond precision and
`torchscope.load` reads the export back to the same absolute ``ts_ns``. With several ranks, each
(rank, pid) becomes its own process, named "rank R · <original name>", ordered by rank.

Metadata (``ph: "M"``: process_name, process_labels, process_sort_index, thread_name,
thread_sort_index) is what Perfetto names and orders tracks by. The reader keeps only the names
(``TraceMeta.processes``/``threads``), so the export copies the ``M`` events from the source file
when it is still there, and otherwise rebuilds them from the Trace: names from the meta, "CPU" /
"GPU <device>" labels from the kinds of each pid's events, processes sorted host first, threads by
tid. The rebuild loses what only the file held: a name written twice for one thread, labels and sort
indices of processes that have no events, and metadata of non-integer pids (Kineto's "Spans").

A finding's slice spans its evidence window (`finding_window_ns`): the steps its evidence names
(``step``/``steps``/``worst_step``/``slowest_step``), else its ``start_ns``..``end_ns`` evidence,
else the whole profiled window of its rank (first step start to last step end, or the rank's event
span without steps); a finding without a rank spans every rank's window.
"""

from __future__ import annotations

import gzip
import re
from pathlib import Path
from typing import Iterable

import numpy as np
import orjson
import pandas as pd

from torchscope.analyzers.core.args import decode_args
from torchscope.analyzers.core.findings import Finding
from torchscope.analyzers.core.report import Report
from torchscope.analyzers.core.trace import GPU_WORK_KINDS, Trace, TraceSet
from torchscope.analyzers.io.chrome_trace import MAX_TRACE_BYTES
from torchscope.analyzers.timeline.steps import step_windows

__all__ = ["annotated_trace", "annotated_trace_json", "write_annotated_trace", "finding_window_ns",
           "METADATA_NAMES", "FINDINGS_TRACK"]

#: The metadata events (``ph: "M"``) Perfetto names, labels and orders processes and threads by.
METADATA_NAMES = ("process_name", "process_labels", "process_sort_index", "thread_name", "thread_sort_index")
#: Name of the process that holds one slice per finding.
FINDINGS_TRACK = "torchscope findings"
#: Evidence keys that name the step(s) a finding is about.
_STEP_KEYS = ("step", "steps", "worst_step", "slowest_step")
_PH_M = re.compile(rb'"ph"\s*:\s*"M"')

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
    args = decode_args(ev["args"]) if "args" in ev.columns else [None] * len(ev)
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


def _source_metadata(t: Trace) -> list[dict] | None:
    """The ``M`` events of the file ``t`` was read from, or None when it is gone or unreadable."""
    path = Path(t.meta.path)
    try:
        with open(path, "rb") as fh:
            raw = fh.read(MAX_TRACE_BYTES + 1)
        if raw[:2] == b"\x1f\x8b":
            raw = gzip.decompress(raw)
    except (OSError, EOFError, gzip.BadGzipFile):
        return None
    out = []
    for match in _PH_M.finditer(raw):
        item = _enclosing_object(raw, match.start())
        if not isinstance(item, dict) or item.get("ph") != "M":
            return _whole_file_metadata(raw)  # an odd layout (braces inside strings): parse it all
        out.append(item)
    return out


def _enclosing_object(raw: bytes, pos: int) -> object:
    """The JSON object around byte ``pos`` (metadata events are small: found by brace depth), or None."""
    depth, lo = 0, pos
    while lo > 0 and pos - lo < 4096:
        lo -= 1
        c = raw[lo]
        if c == 0x7D:  # }
            depth += 1
        elif c == 0x7B:  # {
            if depth == 0:
                break
            depth -= 1
    depth, hi = 0, lo
    while hi < len(raw) and hi - lo < 8192:
        c = raw[hi]
        hi += 1
        if c == 0x7B:
            depth += 1
        elif c == 0x7D:
            depth -= 1
            if depth == 0:
                break
    try:
        return orjson.loads(raw[lo:hi])
    except orjson.JSONDecodeError:
        return None


def _whole_file_metadata(raw: bytes) -> list[dict] | None:
    try:
        doc = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    events = doc.get("traceEvents") if isinstance(doc, dict) else doc
    return [e for e in events if type(e) is dict and e.get("ph") == "M"] if isinstance(events, list) else None


def _rebuilt_metadata(t: Trace, pids: dict) -> list[dict]:
    """Metadata rebuilt from the Trace alone: names from its meta, labels from event kinds, host pids first."""
    ev = t.events
    gpu_device: dict[int, int] = {}
    host: set[int] = set()
    if ev is not None and len(ev):
        is_gpu = ev["kind"].isin(GPU_WORK_KINDS).to_numpy()
        dev = ev["device"].to_numpy() if "device" in ev.columns else np.full(len(ev), -1)
        for pid, d in zip(ev["pid"].to_numpy()[is_gpu], dev[is_gpu]):
            if _is_int(d) and int(d) >= 0:
                gpu_device.setdefault(int(pid), int(d))
        host = {int(p) for p in pd.unique(ev["pid"].to_numpy()[~is_gpu])} - set(gpu_device)
    out: list[dict] = []
    mine = sorted(pid for rank, pid in pids if rank == t.rank)
    order = sorted(mine, key=lambda p: (p not in host, p in gpu_device, gpu_device.get(p, 0), p))
    for index, pid in enumerate(order):
        name = t.meta.processes.get(pid) or t.meta.processes.get(str(pid))
        if name is not None:
            out.append({"ph": "M", "name": "process_name", "pid": pid, "tid": 0, "args": {"name": str(name)}})
        if pid in gpu_device or pid in host:
            label = f"GPU {gpu_device[pid]}" if pid in gpu_device else "CPU"
            out.append({"ph": "M", "name": "process_labels", "pid": pid, "tid": 0, "args": {"labels": label}})
        out.append({"ph": "M", "name": "process_sort_index", "pid": pid, "tid": 0, "args": {"sort_index": index}})
    for key, name in t.meta.threads.items():
        try:
            pid, tid = int(key[0]), int(key[1])
        except (TypeError, ValueError, IndexError):
            continue
        out.append({"ph": "M", "name": "thread_name", "pid": pid, "tid": tid, "args": {"name": str(name)}})
        out.append({"ph": "M", "name": "thread_sort_index", "pid": pid, "tid": tid, "args": {"sort_index": tid}})
    return out


def _metadata_records(traces: list[Trace], pids: dict) -> list[dict]:
    """Every rank's metadata events with pids mapped; with several ranks, names and process order by rank."""
    several = len(traces) > 1
    out: list[dict] = []
    order: list[tuple[int, float, int, dict]] = []  # (rank, source sort index, new pid, event) to renumber
    for t in traces:
        source = _source_metadata(t)
        for item in (source if source is not None else _rebuilt_metadata(t, pids)):
            name, args = item.get("name"), item.get("args")
            if name not in METADATA_NAMES or not isinstance(args, dict):
                continue
            pid = item.get("pid")
            key = (t.rank, int(pid)) if _is_int(pid) else None
            if key in pids:
                pid = pids[key]
            elif several:
                continue  # a track of no event (Kineto's "Spans"): it would collide across ranks
            rec = {"ph": "M", "name": name, "pid": pid, "tid": item.get("tid", 0), "args": dict(args)}
            if several and name == "process_name":
                rec["args"]["name"] = f"rank {t.rank} · {args.get('name')}"
            if several and name == "process_sort_index":
                index = args.get("sort_index")
                order.append((t.rank, float(index) if _is_int(index) else 0.0, int(pid), rec))
            out.append(rec)
    for new_index, (*_, rec) in enumerate(sorted(order, key=lambda o: o[:3])):
        rec["args"]["sort_index"] = new_index
    if several:  # a process the metadata never named still says which rank it belongs to
        named = {r["pid"] for r in out if r["name"] == "process_name"}
        out += [{"ph": "M", "name": "process_name", "pid": new, "tid": 0, "args": {"name": f"rank {rank} · pid {pid}"}}
                for (rank, pid), new in pids.items() if new not in named]
    return out


def _profiled_window_ns(t: Trace) -> tuple[int, int]:
    """The rank's profiled window, ns: first step start to last step end, else its event span."""
    windows = step_windows(t)
    if len(windows):
        return int(windows["start_ns"].iloc[0]), int(windows["end_ns"].iloc[-1])
    return t.span_ns


def _evidence_steps(evidence) -> list[int]:
    steps: list[int] = []
    for key in _STEP_KEYS:
        value = evidence.get(key)
        for v in (value if isinstance(value, (list, tuple, np.ndarray)) else [value]):
            if _is_int(v) and not isinstance(v, bool):
                steps.append(int(v))
    return steps


def finding_window_ns(finding: Finding, data: Trace | TraceSet) -> tuple[int, int]:
    """(start, end) in ns of the time a finding is about: its evidence's steps or range, else its rank's window."""
    traces = [t for t in _traces(data) if finding.rank is None or t.rank == finding.rank] or _traces(data)
    evidence = finding.evidence or {}
    steps = set(_evidence_steps(evidence))
    if steps:
        spans = []
        for t in traces:
            w = step_windows(t)
            w = w[w["step"].isin(steps)]
            if len(w):
                spans.append((int(w["start_ns"].min()), int(w["end_ns"].max())))
        if spans:
            return min(s for s, _ in spans), max(e for _, e in spans)
    lo, hi = evidence.get("start_ns"), evidence.get("end_ns")
    if _is_int(lo) and _is_int(hi) and int(hi) > int(lo):
        return int(lo), int(hi)
    spans = [_profiled_window_ns(t) for t in traces]
    spans = [s for s in spans if s[1] > s[0]] or [(0, 0)]
    return min(s for s, _ in spans), max(e for _, e in spans)


def _finding_records(findings: list[Finding], data: Trace | TraceSet, fpid: int, base_ns: int) -> list[dict]:
    """One slice per finding, each on its own thread of the findings process, spanning its evidence window."""
    out: list[dict] = [
        {"ph": "M", "name": "process_name", "pid": fpid, "tid": 0, "args": {"name": FINDINGS_TRACK}},
        {"ph": "M", "name": "process_sort_index", "pid": fpid, "tid": 0, "args": {"sort_index": -1}},
    ]
    for tid, f in enumerate(findings, start=1):
        start, end = finding_window_ns(f, data)
        where = f" (rank {f.rank})" if f.rank is not None else ""
        out.append({"ph": "M", "name": "thread_name", "pid": fpid, "tid": tid, "args": {"name": f"{f.id}{where}"}})
        out.append({"ph": "M", "name": "thread_sort_index", "pid": fpid, "tid": tid, "args": {"sort_index": tid}})
        out.append({"ph": "X", "name": f"[{f.severity}] {f.title}", "cat": "torchscope.finding",
                    "ts": (start - base_ns) / 1000.0, "dur": max(end - start, 1) / 1000.0, "pid": fpid, "tid": tid,
                    "args": {"id": f.id, "analyzer": f.analyzer, "rank": f.rank, "recommendation": f.recommendation,
                             "estimated_gain": f.estimated_gain, **f.to_dict()["evidence"]}})
    return out


def annotated_trace(data: Trace | TraceSet, report: Report | None = None) -> dict:
    """The run as a Chrome-trace document (dict) with findings on their own track."""
    traces = _traces(data)
    base = _base_ns(traces)
    pids = _pid_map(traces)
    several = len(traces) > 1
    events: list[dict] = _metadata_records(traces, pids)
    for t in traces:
        events += _event_records(t, pids, base)
        events += _counter_records(t, pids, base)
        events += _flow_records(t, pids, base)
    findings = list(report.findings) if report is not None else []
    if findings:
        events += _finding_records(findings, data, max(pids.values(), default=0) + 1, base)
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
