"""Parse one Chrome Trace Event Format file (as torch.profiler/Kineto writes it) into a `Trace`.

Accepted: ``.json`` or gzipped JSON, either an object with ``traceEvents`` or a bare event array.
Timestamps are microseconds (possibly fractional, strings, or large integers) and become int64
nanoseconds; ``baseTimeNanoseconds`` is added when present so that ``ts_ns`` is absolute.
Precision: an integer or string timestamp converts exactly; a float keeps what float64 holds
(sub-nanosecond for Kineto's base-relative times, ~0.1 µs for epoch-microsecond floats).

Decoding: events are read by msgspec straight into typed records (`_Event`) holding only the keys we
use, with ``args`` kept as the raw JSON text (``bytes``) for `core.args.decode_args` to decode where an
analysis needs them; the integer args every row carries (stream, device, correlation, External id) are
pulled out in one more typed pass over that text. A batch whose events do not fit the types (a bool
timestamp, an event that is not an object) is read by the generic decoder (orjson, dicts), which keeps
the same rules; a file that is not strict JSON (NaN) goes to Python's json and its precise errors.

Whole-file problems raise `TraceError`; individually malformed events are dropped and counted.
"""

from __future__ import annotations

import gzip
import json
import os
import re
import zlib
from decimal import Decimal, InvalidOperation
from operator import attrgetter
from pathlib import Path
from typing import Any

import msgspec
import numpy as np
import orjson
import pandas as pd
from pandas.api.types import infer_dtype

from torchscope.analyzers.core.args import decode_one, gc_paused
from torchscope.analyzers.core.errors import TraceError
from torchscope.analyzers.core.trace import KINDS, Trace, TraceMeta

try:  # ISA-L's inflate: the same streams as zlib's, about twice as fast
    from isal import isal_zlib as _inflate_lib
except ImportError:  # pragma: no cover - isal is a dependency; zlib is the fallback where it has no wheel
    _inflate_lib = zlib

try:  # pandas' C routine that pulls keys out of many dicts at once: 3× faster than dict.get passes
    from pandas._libs.lib import dicts_to_array as _dicts_to_array
except ImportError:  # pragma: no cover - depends on the pandas version
    _dicts_to_array = None

__all__ = ["parse_trace_file", "read_json_document", "kind_of_category", "empty_trace", "MAX_TRACE_BYTES"]

#: Refuse traces whose uncompressed JSON exceeds this many bytes (a parsed trace needs ~10× in RAM).
MAX_TRACE_BYTES = int(os.environ.get("TORCHSCOPE_MAX_TRACE_BYTES", 2 * 1024**3))
_GZIP_MAGIC = b"\x1f\x8b"
_READ_CHUNK = 16 * 1024 * 1024
#: |ts| in µs above which × 1000 would overflow int64.
_MAX_ABS_US = 9.2e15
#: Integers at or above this magnitude are not exact in float64 (2**53).
_EXACT_FLOAT_INT = 2.0**53
_RANK_IN_NAME = re.compile(r"rank[_\-.]?(\d+)", re.IGNORECASE)

#: Category spellings (lower-cased, spaces as underscores) → normalised kind.
_KIND_BY_CATEGORY = {
    "kernel": "kernel",
    # CUPTI range profiling (counter collection) writes each kernel as a range: still a kernel.
    "cuda_profiler_range": "kernel",
    "gpu_memcpy": "memcpy", "memcpy": "memcpy",
    "gpu_memset": "memset", "memset": "memset",
    "gpu_user_annotation": "gpu_annotation",
    "cuda_runtime": "runtime", "runtime": "runtime", "hip_runtime": "runtime", "cuda_runtime_api": "runtime",
    "cuda_driver": "driver", "driver": "driver",
    "cuda_sync": "cuda_sync",
    "cpu_op": "cpu_op", "operator": "cpu_op",
    "user_annotation": "annotation",
    "python_function": "python", "python": "python",
    "torchscope.phase": "phase",
    "torchscope.module": "module",
    "cpu_instant_event": "instant",
}
_FLOW_PHASES = frozenset(("s", "t", "f"))
_INT_ARGS = (("stream", "stream"), ("device", "device"), ("correlation", "correlation"),
             ("External id", "external_id"))
#: The args keys each event's frame row carries as integer columns.
_ARG_KEYS = tuple(key for key, _ in _INT_ARGS)


def kind_of_category(category: str) -> str:
    """Normalised kind for a raw event category, whatever the Kineto version that wrote it."""
    key = str(category).strip().lower().replace(" ", "_")
    return _KIND_BY_CATEGORY.get(key, "other")


def read_json_document(path: Path, *, max_bytes: int = MAX_TRACE_BYTES) -> Any:
    """Read a JSON or gzipped-JSON file; TraceError names the file and what is wrong."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(2)
            fh.seek(0)
            if head == _GZIP_MAGIC:
                raw = _read_gzip(path, fh, max_bytes)
            else:
                raw = fh.read(max_bytes + 1)
    except TraceError:
        raise
    except FileNotFoundError:
        raise TraceError(path, "no such file") from None
    except IsADirectoryError:
        raise TraceError(path, "is a directory, expected a trace file") from None
    except PermissionError:
        raise TraceError(path, "permission denied") from None
    except OSError as exc:
        raise TraceError(path, f"cannot read: {exc.strerror or exc}") from None
    if len(raw) > max_bytes:
        raise TraceError(path, f"larger than the {max_bytes / 1024**3:.1f} GiB limit "
                               "(set TORCHSCOPE_MAX_TRACE_BYTES to raise it)")
    if not raw.strip():
        raise TraceError(path, "empty file")
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        error = exc
    # Python's json (and some producers) write NaN/Infinity, which orjson refuses: accept them here
    # so that only the events holding them are dropped, not the whole trace.
    try:
        return json.loads(raw)
    except (ValueError, RecursionError):
        raise TraceError(path, f"invalid JSON ({error})") from None


def _read_gzip(path: Path, fh, max_bytes: int) -> bytes:
    parts, total = [], 0
    try:
        with gzip.GzipFile(fileobj=fh) as gz:
            while True:
                chunk = gz.read(_READ_CHUNK)
                if not chunk:
                    break
                total += len(chunk)
                if total > max_bytes:
                    raise TraceError(path, f"decompresses to more than the {max_bytes / 1024**3:.1f} GiB "
                                           "limit (set TORCHSCOPE_MAX_TRACE_BYTES to raise it)")
                parts.append(chunk)
    except EOFError:
        raise TraceError(path, "truncated gzip (compressed stream ended early)") from None
    except (gzip.BadGzipFile, zlib.error) as exc:
        raise TraceError(path, f"corrupt gzip ({exc})") from None
    return b"".join(parts)


def parse_trace_file(path: str | Path, *, rank: int | None = None, manifest: dict | None = None,
                     streams: dict | None = None) -> Trace:
    """Load one Chrome-trace/Kineto file into a Trace (``rank`` overrides what the file says)."""
    path = Path(path)
    with gc_paused():  # columns of scalars and bytes: nothing for the collector to find
        streamed = _read_kineto_streaming(path)
        if streamed is not None:
            top, collector = streamed
        else:
            top, collector = _read_whole(path)
        if collector.seen == 0:
            raise TraceError(path, "trace has no events ('traceEvents' is empty)")
        return _build_trace(path, collector, top, rank=rank, manifest=manifest, streams=streams or {})


def _read_whole(path: Path) -> tuple[dict, "_Collector"]:
    """Parse the whole document at once (any valid layout; gives precise errors)."""
    typed = _read_whole_typed(path)
    if typed is not None:
        return typed
    doc = read_json_document(path)
    if isinstance(doc, list):
        events, top = doc, {}
    elif isinstance(doc, dict):
        if "traceEvents" not in doc:
            raise TraceError(path, "not a Chrome trace: no 'traceEvents' key")
        events, top = doc.pop("traceEvents"), doc
        if not isinstance(events, list):
            raise TraceError(path, f"'traceEvents' is a {type(events).__name__}, expected a list")
    else:
        raise TraceError(path, f"not a Chrome trace: top level is a {type(doc).__name__}")
    collector = _Collector()
    collector.add(events)
    return top, collector


_TOP_DECODER = msgspec.json.Decoder(dict[str, msgspec.Raw])
_TOP_VALUE = msgspec.json.Decoder()


def _read_whole_typed(path: Path) -> tuple[dict, "_Collector"] | None:
    """The whole document through the typed decoder; None when anything is unusual.

    The generic reader then re-reads the file and, for a broken one, says precisely what is wrong.
    """
    try:
        raw = _read_bytes(path)
        first = raw.lstrip()[:1]
        collector = _Collector()
        if first == b"[":
            collector.add_raw(raw)
            return {}, collector
        if first != b"{":
            return None
        parts = _TOP_DECODER.decode(raw)
        events = parts.pop("traceEvents", None)
        if events is None or bytes(events).lstrip()[:1] != b"[":
            return None
        top = {key: _TOP_VALUE.decode(value) for key, value in parts.items()}
        collector.add_raw(bytes(events))
        return top, collector
    except (OSError, TraceError, _NotKineto, msgspec.MsgspecError, orjson.JSONDecodeError, RecursionError):
        return None


def _read_bytes(path: Path, max_bytes: int = MAX_TRACE_BYTES) -> bytes:
    with open(path, "rb") as fh:
        return b"".join(_decompressed_pieces(fh, max_bytes))


#: Kineto writes one event per indented block: this separator only occurs between top-level events
#: (a raw newline never occurs inside a JSON string, and nested objects are indented deeper).
_KINETO_SEPARATOR = b"\n  },\n  {"
_EVENTS_START = re.compile(rb'"traceEvents"\s*:\s*\[')
_STREAM_CHUNK = 1024 * 1024
_HEAD_LIMIT = 1024 * 1024
_ARRAY_CLOSE_TRIES = 64


class _NotKineto(Exception):
    """The streaming reader cannot handle this file; the whole-file reader takes over."""


def _read_kineto_streaming(path: Path, *, max_bytes: int = MAX_TRACE_BYTES) -> tuple[dict, "_Collector"] | None:
    """Parse a Kineto-formatted trace chunk by chunk while decompressing, keeping only columns.

    Peak memory is one chunk's parse tree instead of the whole document's. Returns None when the
    file is not laid out the way Kineto writes it (or anything looks off): the caller then parses
    the whole document, which also produces the precise error for broken files.
    """
    try:
        with open(path, "rb") as fh:
            return _stream_events(_decompressed_pieces(fh, max_bytes))
    except (OSError, _NotKineto, orjson.JSONDecodeError, msgspec.DecodeError):
        return None


def _decompressed_pieces(fh, max_bytes: int):
    """Yield the file's (gunzipped) bytes in pieces of at most _STREAM_CHUNK."""
    gzipped = fh.read(2) == _GZIP_MAGIC
    fh.seek(0)
    total = 0
    if not gzipped:
        while piece := fh.read(_STREAM_CHUNK):
            total += len(piece)
            if total > max_bytes:
                raise _NotKineto
            yield piece
        return
    inflate = _inflate_lib.decompressobj(wbits=31)
    try:
        while not inflate.eof:
            data = fh.read(_STREAM_CHUNK // 16)
            if not data:
                break
            while data:
                out = inflate.decompress(data, _STREAM_CHUNK)
                total += len(out)
                if total > max_bytes:
                    raise _NotKineto
                yield out
                data = inflate.unconsumed_tail
        if not inflate.eof or inflate.unused_data or fh.read(1):
            raise _NotKineto  # truncated, or several gzip members: the whole-file reader decides
    except (zlib.error, _inflate_lib.error):
        raise _NotKineto from None


def _stream_events(pieces) -> tuple[dict, "_Collector"]:
    collector = _Collector()
    buf = b""
    head: bytes | None = None
    for piece in pieces:
        buf += piece
        if head is None:
            match = _EVENTS_START.search(buf)
            if match is None:
                if len(buf) > _HEAD_LIMIT:
                    raise _NotKineto
                continue
            head, buf = buf[: match.end() - 1], buf[match.end():]
        if len(buf) >= _STREAM_CHUNK:
            cut = buf.rfind(_KINETO_SEPARATOR)
            if cut < 0:
                if len(buf) > 4 * _STREAM_CHUNK:
                    raise _NotKineto
                continue
            end = cut + 4  # through the closing brace of the last complete event
            collector.add_raw(b"[" + buf[:end] + b"]")
            buf = buf[end + 1:]  # drop the comma; the rest starts with the next event
    result = _finish_stream(head, buf, collector)
    if result is None:
        raise _NotKineto
    return result


def _finish_stream(head: bytes | None, rest: bytes, collector: "_Collector") -> tuple[dict, "_Collector"] | None:
    """Split the last bytes into the final events and the top-level keys after the array."""
    if head is None:
        return None
    close = len(rest)
    for _ in range(_ARRAY_CLOSE_TRIES):
        close = rest.rfind(b"]", 0, close)
        if close < 0:
            return None
        try:
            top = orjson.loads(head + b"[]" + rest[close + 1:])
        except orjson.JSONDecodeError:
            continue
        if not isinstance(top, dict):
            return None
        try:
            collector.add_raw(b"[" + rest[:close] + b"]")
        except (msgspec.DecodeError, orjson.JSONDecodeError):
            continue
        top.pop("traceEvents", None)
        return top, collector
    return None


def empty_trace(path: str | Path, rank: int, *, manifest: dict | None, streams: dict,
                warnings: tuple[str, ...] = ()) -> Trace:
    """A Trace with no events (e.g. a killed job's rank that left only its JSONL streams)."""
    empty = _Collector()
    drops = empty.drops
    events = _events_frame(empty.columns("complete"), empty.columns("instant"), drops, 0)
    events["rank"] = np.zeros(0, dtype=np.int32)
    world = (manifest or {}).get("world_size")
    meta = TraceMeta(path=str(path), rank=rank, manifest=manifest, warnings=warnings,
                     world_size=world if isinstance(world, int) and world > 0 else 1)
    counters = _counters_frame([], drops, 0, rank)
    flows = _flows_frame(empty.columns("flow"), drops, 0, rank)
    return Trace(events, counters, flows, meta, streams)


class _Drops:
    """Counts dropped events and remembers the first reason of each sort."""

    def __init__(self) -> None:
        self.count = 0
        self.reasons: dict[str, int] = {}

    def add(self, reason: str, n: int = 1) -> None:
        if n:
            self.count += n
            self.reasons[reason] = self.reasons.get(reason, 0) + n


#: Keys pulled out of every event; the collector keeps one object column per key.
_EVENT_KEYS = ("ph", "ts", "dur", "name", "cat", "pid", "tid", "args", "id")
_COLUMN = {key: i for i, key in enumerate(_EVENT_KEYS)}

_Number = int | float | str | None


class _Event(msgspec.Struct, gc=False):
    """One event as the typed decoder reads it: the keys we use, ``args`` kept as raw JSON text.

    Not tracked by the garbage collector (``gc=False``: it holds no containers), so decoding a batch
    of them does not set off collections. The types are what valid traces hold; a batch with anything
    else (a bool timestamp, a non-object event) fails validation and is read by the generic decoder
    instead, which keeps the old rules.
    """

    ph: str | None = None
    ts: _Number = None
    dur: _Number = None
    name: str | None = None
    cat: str | None = None
    pid: _Number = None
    tid: _Number = None
    id: _Number = None
    args: msgspec.Raw = msgspec.Raw()


class _IntArgs(msgspec.Struct, gc=False):
    """The integer args every event's frame row carries; other keys are skipped unparsed."""

    stream: Any = None
    device: Any = None
    correlation: Any = None
    external_id: Any = msgspec.field(default=None, name="External id")


_EVENTS_DECODER = msgspec.json.Decoder(list[_Event])
_INT_ARGS_DECODER = msgspec.json.Decoder(list[_IntArgs])
_EMPTY_OBJECT = b"{}"
_RAW_NULL = b"null"


def _decode_events(raw: bytes) -> list[_Event] | None:
    """A JSON array of events decoded into `_Event`s; None when some event does not fit the types.

    Raises msgspec.DecodeError when ``raw`` is not valid JSON (NaN, truncation): the caller decides.
    """
    try:
        return _EVENTS_DECODER.decode(raw)
    except msgspec.ValidationError:
        return None


_GROUPS = ("complete", "instant", "flow")
_KIND_DTYPE = pd.CategoricalDtype(pd.Index(KINDS, dtype="str"))
_KIND_CODE = {kind: i for i, kind in enumerate(KINDS)}
_PH_DTYPE = pd.CategoricalDtype(pd.Index(["X", "i", "I"], dtype="str"))


class _Collector:
    """Sorts events by phase and keeps only their columns, so a chunk's parse tree can be freed."""

    def __init__(self) -> None:
        self.drops = _Drops()
        self.seen = 0
        #: per batch: its columns and each row's group (_GROUPS index; -1: kept as a dict, or ignored)
        self._parts: list[tuple[dict[str, np.ndarray], np.ndarray]] = []
        self.counters: list[dict] = []
        self.metadata: list[dict] = []
        self.begin_end: list[dict] = []
        self._strings: dict[str, str] = {}

    def add_raw(self, raw: bytes) -> None:
        """Take one batch as the bytes of a JSON array; msgspec.DecodeError if it is not valid JSON."""
        events = _decode_events(raw)
        if events is None:
            self.add(orjson.loads(raw))
        else:
            self.add_structs(events)

    def add_structs(self, events: list[_Event]) -> None:
        """Take one batch of typed events (their args stay raw JSON bytes)."""
        n = len(events)
        self.seen += n
        if not n:
            return
        seen = self._strings
        columns = {}
        for key in _EVENT_KEYS:
            values = map(attrgetter(key), events)
            if key == "args":
                arr = np.fromiter(map(bytes, values), dtype=object, count=n)
                arr[(arr == b"") | (arr == _RAW_NULL)] = None  # absent or null: no args
                columns.update(_int_args_of_raw(arr))
                columns[key] = arr
                continue
            if key in ("name", "cat"):
                # msgspec makes a new str per occurrence: keep one object per distinct name (kernel
                # names are long and repeat thousands of times)
                values = list(values)
                values = map(seen.setdefault, values, values)
            columns[key] = np.fromiter(values, dtype=object, count=n)
        self._take(columns, lambda idx: [_event_dict(events[i], columns["args"][i]) for i in idx])

    def add(self, events: list) -> None:
        """Take one batch of events parsed as dicts (the generic decoder's path)."""
        self.seen += len(events)
        if not all(type(e) is dict for e in events):
            dicts = [e for e in events if type(e) is dict]
            self.drops.add("event is not an object", len(events) - len(dicts))
            events = dicts
        if not events:
            return
        columns = _columns_of(_table(events, _EVENT_KEYS))
        seen = self._strings
        for key in ("name", "cat"):
            # orjson makes a new str per occurrence too; values here may be anything (even unhashable)
            columns[key] = _objects([seen.setdefault(v, v) if type(v) is str else v for v in columns[key]])
        self._take(columns, lambda idx: [events[i] for i in idx])

    def _take(self, columns: dict[str, np.ndarray], dicts) -> None:
        """Sort one batch's rows by phase; ``dicts(indices)`` gives those rows' events as dicts."""
        ph = columns["ph"]
        is_complete = ph == "X"
        is_instant = (ph == "i") | (ph == "I")
        is_flow = (ph == "s") | (ph == "t") | (ph == "f")
        is_counter, is_meta = ph == "C", ph == "M"
        is_begin_end = (ph == "B") | (ph == "E")
        known = is_complete | is_instant | is_flow | is_counter | is_meta | is_begin_end
        if not known.all():
            # other phases (async b/e/n, object snapshots...) carry nothing we analyze: ignored on purpose
            self.drops.add("event has no 'ph' string", sum(type(p) is not str for p in ph[~known]))
        group = np.full(len(ph), -1, dtype=np.int8)
        for code, mask in enumerate((is_complete, is_instant, is_flow)):
            group[mask] = code
        self._parts.append((columns, group))
        for mask, target in ((is_counter, self.counters), (is_meta, self.metadata), (is_begin_end, self.begin_end)):
            if mask.any():
                target.extend(dicts(np.flatnonzero(mask)))

    def close_begin_end(self) -> None:
        """Turn the collected B/E pairs into complete events."""
        if self.begin_end:
            paired = _pair_begin_end(self.begin_end, self.drops)
            if paired:
                self._parts.append((_columns_of(_table(paired, _EVENT_KEYS)), np.zeros(len(paired), np.int8)))
            self.begin_end = []

    def columns(self, group: str) -> dict[str, np.ndarray]:
        """Object columns of one group ("complete", "instant" or "flow"), by event key."""
        keys = _EVENT_KEYS + _ARG_KEYS
        code = _GROUPS.index(group)
        parts = [(columns, rows == code) for columns, rows in self._parts]
        parts = [(columns, mask) for columns, mask in parts if mask.any()]
        if not parts:
            return {key: np.empty(0, dtype=object) for key in keys}
        return {key: np.concatenate([columns[key][mask] for columns, mask in parts]) for key in keys}


def _columns_of(table: np.ndarray) -> dict[str, np.ndarray]:
    """The columns of a [rows, len(_EVENT_KEYS)] object table of parsed events, by event key, with
    the integer args pulled out (`_ARG_KEYS`); args that are not an object become None."""
    columns = {key: table[:, i] for key, i in _COLUMN.items()}
    args = columns["args"] = _objects([a if type(a) is dict else None for a in columns["args"]])
    columns.update(_int_args_of_dicts(args))
    return columns


def _int_args_of_dicts(args) -> dict[str, np.ndarray]:
    """Each event's integer args (`_ARG_KEYS`) from its args dict (None: no args)."""
    table = _table([a if a is not None else _NO_ARGS for a in args], _ARG_KEYS)
    return {key: table[:, i] for i, key in enumerate(_ARG_KEYS)}


def _int_args_of_raw(raws: np.ndarray) -> dict[str, np.ndarray]:
    """Each event's integer args (`_ARG_KEYS`) from raw args JSON (None: no args), one decoder call."""
    n = len(raws)
    try:
        parsed = _INT_ARGS_DECODER.decode(b"[" + b",".join(np.where(raws == None, _EMPTY_OBJECT, raws)) + b"]")  # noqa: E711
    except msgspec.MsgspecError:  # some event's args are not an object: one at a time
        return _int_args_of_dicts([decode_one(r) for r in raws])
    return {key: np.fromiter(map(attrgetter(field_name), parsed), dtype=object, count=n)
            for key, field_name in zip(_ARG_KEYS, _IntArgs.__struct_fields__)}


def _event_dict(event: _Event, raw_args: bytes | None) -> dict:
    """A typed event as the dict the generic decoder would have made (for the few non-span phases)."""
    out = {key: value for key in _EVENT_KEYS[:-1] if (value := getattr(event, key)) is not None}
    if raw_args is not None:
        out["args"] = decode_one(raw_args)
    return out


def _build_trace(path: Path, collector: _Collector, top: dict, *, rank: int | None, manifest: dict | None,
                 streams: dict) -> Trace:
    drops = collector.drops
    warnings: list[str] = []
    collector.close_begin_end()
    base_ns = _base_time_ns(top.get("baseTimeNanoseconds"), path, warnings)
    ev_frame = _events_frame(collector.columns("complete"), collector.columns("instant"), drops, base_ns)
    dist = top.get("distributedInfo") if isinstance(top.get("distributedInfo"), dict) else {}
    resolved_rank = _resolve_rank(rank, dist, path, warnings)
    ev_frame["rank"] = np.full(len(ev_frame), resolved_rank, dtype=np.int32)
    counter_frame = _counters_frame(collector.counters, drops, base_ns, resolved_rank)
    flow_frame = _flows_frame(collector.columns("flow"), drops, base_ns, resolved_rank)
    processes, threads = _names(collector.metadata)

    if ev_frame.empty and counter_frame.empty and not streams:
        detail = "; ".join(f"{n}× {r}" for r, n in drops.reasons.items()) or "only metadata events"
        raise TraceError(path, f"no usable events ({detail})")
    if drops.count:
        detail = "; ".join(f"{n}× {r}" for r, n in drops.reasons.items())
        warnings.append(f"dropped {drops.count} malformed events ({detail})")

    props = top.get("deviceProperties")
    device_props = tuple(p for p in props if isinstance(p, dict)) if isinstance(props, list) else ()
    world = dist.get("world_size")
    meta = TraceMeta(
        path=str(path),
        rank=resolved_rank,
        world_size=world if isinstance(world, int) and world > 0 else 1,
        distributed=dist,
        device_properties=device_props,
        schema_version=top.get("schemaVersion"),
        trace_name=top.get("traceName") if isinstance(top.get("traceName"), str) else None,
        base_time_ns=base_ns,
        manifest=manifest,
        processes=processes,
        threads=threads,
        dropped_events=drops.count,
        warnings=tuple(warnings),
    )
    return Trace(events=ev_frame, counters=counter_frame, flows=flow_frame, meta=meta, streams=streams)


def _base_time_ns(value: Any, path: Path, warnings: list[str]) -> int:
    if value is None:
        return 0
    ns = _scalar_to_int(value)
    if ns is None:
        warnings.append(f"ignored baseTimeNanoseconds {value!r} (not an integer)")
        return 0
    return ns


def _resolve_rank(rank: int | None, dist: dict, path: Path, warnings: list[str]) -> int:
    if rank is not None:
        return int(rank)
    stated = _scalar_to_int(dist.get("rank")) if "rank" in dist else None
    if stated is not None and stated >= 0:
        return stated
    if "rank" in dist:
        warnings.append(f"ignored distributedInfo.rank {dist.get('rank')!r}")
    match = _RANK_IN_NAME.search(path.name)
    return int(match.group(1)) if match else 0


def _pair_begin_end(items: list[dict], drops: _Drops) -> list[dict]:
    """Turn B/E pairs (per pid/tid, properly nested) into complete events."""
    stacks: dict[tuple, list[dict]] = {}
    out = []
    for e in sorted(items, key=lambda x: (_sort_key(x.get("ts")), x.get("ph") == "B")):
        key = (str(e.get("pid")), str(e.get("tid")))
        if e.get("ph") == "B":
            stacks.setdefault(key, []).append(e)
            continue
        stack = stacks.get(key)
        if not stack:
            drops.add("'E' event without a matching 'B'")
            continue
        b = stack.pop()
        start, end = _scalar_to_float(b.get("ts")), _scalar_to_float(e.get("ts"))
        if start is None or end is None:
            drops.add("'B'/'E' event with a bad 'ts'")
            continue
        done = dict(b)
        done["ph"] = "X"
        done["dur"] = end - start
        if isinstance(e.get("args"), dict):
            done["args"] = {**(b.get("args") if isinstance(b.get("args"), dict) else {}), **e["args"]}
        out.append(done)
    drops.add("'B' event never closed", sum(len(s) for s in stacks.values()))
    return out


def _sort_key(ts: Any) -> float:
    value = _scalar_to_float(ts)
    return value if value is not None else float("inf")


def _events_frame(complete: dict[str, np.ndarray], instant: dict[str, np.ndarray], drops: _Drops,
                  base_ns: int) -> pd.DataFrame:
    n_complete, n_instant = len(complete["ts"]), len(instant["ts"])
    ts_ns, ts_ok = _us_to_ns(np.concatenate([complete["ts"], instant["ts"]]))
    dur_ns, dur_ok = _us_to_ns(complete["dur"])
    dur_ns = np.concatenate([dur_ns, np.zeros(n_instant, dtype=np.int64)])
    dur_ok = np.concatenate([dur_ok & (dur_ns[:n_complete] >= 0), np.ones(n_instant, dtype=bool)])
    keep = ts_ok & dur_ok
    drops.add("missing or non-numeric 'ts'", int((~ts_ok).sum()))
    drops.add("missing, negative or non-numeric 'dur'", int((ts_ok & ~dur_ok).sum()))
    columns = {k: np.concatenate([complete[k], instant[k]])
               for k in ("name", "cat", "args", "ph", "pid", "tid") + _ARG_KEYS}
    if not keep.all():
        columns = {k: col[keep] for k, col in columns.items()}
        ts_ns, dur_ns = ts_ns[keep], dur_ns[keep]
    ts_ns = ts_ns + base_ns

    names = _strings(columns["name"])
    cats = _strings(columns["cat"])
    args = columns["args"]
    phs, pids, tids = columns["ph"], columns["pid"], columns["tid"]
    name_cat = _categorical(names)
    cat_cat = _categorical(cats)
    ph_codes = np.where(phs == "X", 0, np.where(phs == "i", 1, np.where(phs == "I", 2, -1))).astype(np.int8)
    ph = pd.Categorical.from_codes(ph_codes, dtype=_PH_DTYPE)

    kind_of_code = np.array([_KIND_CODE[kind_of_category(c)] for c in cat_cat.categories], dtype=np.int8)
    kinds = kind_of_code[cat_cat.codes] if len(cat_cat.categories) else np.zeros(0, dtype=np.int8)
    is_instant = ph_codes != 0
    if is_instant.any():
        memory_code = name_cat.categories.get_indexer(["[memory]"])[0]
        is_memory = is_instant & (np.asarray(name_cat.codes) == memory_code) if memory_code >= 0 else \
            np.zeros(len(kinds), dtype=bool)
        kinds = kinds.copy()
        kinds[is_instant & ~is_memory] = _KIND_CODE["instant"]
        kinds[is_memory] = _KIND_CODE["memory"]
    frame = {
        "ts_ns": ts_ns,
        "dur_ns": dur_ns,
        "name": name_cat,
        "cat": cat_cat,
        "kind": pd.Categorical.from_codes(kinds, dtype=_KIND_DTYPE),
        "ph": ph,
        "pid": _ints(pids),
        "tid": _ints(tids),
    }
    for key, column in _INT_ARGS:
        frame[column] = _ints(columns[key])
    del columns
    frame["args"] = pd.Series(args, dtype=object)
    out = pd.DataFrame(frame)
    return out.sort_values("ts_ns", kind="stable", ignore_index=True)


_NO_ARGS: dict = {}


def _table(rows: list[dict], keys) -> np.ndarray:
    """Object array [len(rows), len(keys)] of each dict's values (NaN or None where a key is absent)."""
    keys = list(keys)
    if _dicts_to_array is not None and rows:
        return _dicts_to_array(rows, keys)
    table = np.empty((len(rows), len(keys)), dtype=object)
    for i, row in enumerate(rows):  # element by element: list values must not broadcast
        for j, key in enumerate(keys):
            table[i, j] = row.get(key)
    return table


def _counters_frame(items: list[dict], drops: _Drops, base_ns: int, rank: int) -> pd.DataFrame:
    ts_ns, ok = _us_to_ns([e.get("ts") for e in items])
    rec_ts, rec_pid, rec_name, rec_series, rec_value = [], [], [], [], []
    for e, t, good in zip(items, ts_ns, ok):
        args = e.get("args")
        if not good or not isinstance(args, dict):
            drops.add("counter event without a numeric 'ts' or an 'args' object")
            continue
        pid = _scalar_to_int(e.get("pid"))
        for series, value in args.items():
            v = _scalar_to_float(value)
            if v is None:
                continue
            rec_ts.append(int(t) + base_ns)
            rec_pid.append(-1 if pid is None else pid)
            rec_name.append(str(e.get("name", "")))
            rec_series.append(str(series))
            rec_value.append(v)
    return pd.DataFrame({
        "ts_ns": np.array(rec_ts, dtype=np.int64),
        "pid": np.array(rec_pid, dtype=np.int64),
        "name": pd.Categorical(rec_name),
        "series": pd.Categorical(rec_series),
        "value": np.array(rec_value, dtype=np.float64),
        "rank": np.full(len(rec_ts), rank, dtype=np.int32),
    }).sort_values("ts_ns", kind="stable", ignore_index=True)


def _flows_frame(flow: dict[str, list], drops: _Drops, base_ns: int, rank: int) -> pd.DataFrame:
    ts, ids, phs, cats, pids, tids = (flow[k] for k in ("ts", "id", "ph", "cat", "pid", "tid"))
    ts_ns, ok = _us_to_ns(ts)
    ids = _ints(ids)
    ok &= ids != -1
    drops.add("flow event without a numeric 'ts' or 'id'", int((~ok).sum()))
    if not ok.all():
        phs, cats, pids, tids = (col[ok] for col in (phs, cats, pids, tids))
    return pd.DataFrame({
        "id": ids[ok],
        "ph": pd.Categorical(phs, categories=["s", "t", "f"]),
        "cat": pd.Categorical(_strings(cats)),
        "ts_ns": ts_ns[ok] + base_ns,
        "pid": _ints(pids),
        "tid": _ints(tids),
        "rank": np.full(int(ok.sum()), rank, dtype=np.int32),
    })


def _names(items: list[dict]) -> tuple[dict, dict]:
    processes: dict = {}
    threads: dict = {}
    for e in items:
        args = e.get("args")
        if not isinstance(args, dict) or not isinstance(args.get("name"), str):
            continue
        pid = _scalar_to_int(e.get("pid"))
        pid = e.get("pid") if pid is None else pid
        if e.get("name") == "process_name":
            processes[pid] = args["name"]
        elif e.get("name") == "thread_name":
            tid = _scalar_to_int(e.get("tid"))
            threads[(pid, e.get("tid") if tid is None else tid)] = args["name"]
    return processes, threads


def _us_to_ns(values) -> tuple[np.ndarray, np.ndarray]:
    """Microsecond values (int, float or numeric string) → (int64 ns, valid mask)."""
    arr = _objects(values)
    n = len(arr)
    if n == 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=bool)
    kind = infer_dtype(arr, skipna=False)
    if kind == "integer":
        try:
            ints = arr.astype(np.int64)
        except OverflowError:
            ints = None
        if ints is not None:
            ok = np.abs(ints) < _MAX_ABS_US
            return np.where(ok, ints, 0) * 1000, ok
    elif kind in ("floating", "mixed-integer-float", "integer-na"):
        f = arr.astype(np.float64)
        ok = np.isfinite(f) & (np.abs(f) < _MAX_ABS_US)
        safe = np.where(ok, f, 0.0)
        whole = np.floor(safe)
        ns = whole.astype(np.int64) * 1000 + np.rint((safe - whole) * 1000.0).astype(np.int64)
        return ns, ok
    out = np.zeros(n, dtype=np.int64)
    ok = np.zeros(n, dtype=bool)
    for i, v in enumerate(arr):
        ns = _scalar_us_to_ns(v)
        if ns is not None:
            out[i] = ns
            ok[i] = True
    return out, ok


def _scalar_us_to_ns(v: Any) -> int | None:
    if type(v) is bool or v is None:
        return None
    if isinstance(v, int):
        return v * 1000 if abs(v) < _MAX_ABS_US else None
    if isinstance(v, float):
        if not np.isfinite(v) or abs(v) >= _MAX_ABS_US:
            return None
        whole = np.floor(v)
        return int(whole) * 1000 + int(round((v - whole) * 1000.0))
    if isinstance(v, str):
        try:
            d = Decimal(v.strip())
        except InvalidOperation:
            return None
        if not d.is_finite() or abs(d) >= Decimal(_MAX_ABS_US):
            return None
        return int((d * 1000).to_integral_value())
    return None


def _scalar_to_float(v: Any) -> float | None:
    if type(v) is bool or v is None:
        return None
    try:
        f = float(v)
    except (TypeError, ValueError, OverflowError):
        return None
    return f if np.isfinite(f) else None


def _scalar_to_int(v: Any) -> int | None:
    if type(v) is bool or v is None:
        return None
    if isinstance(v, int):
        return v
    if isinstance(v, float):
        return int(v) if np.isfinite(v) and v == int(v) else None
    if isinstance(v, str):
        s = v.strip()
        try:
            return int(s, 0)
        except ValueError:
            return None
    return None


def _ints(values) -> np.ndarray:
    """Integer-ish values → int64 array with -1 where a value is missing or not an integer."""
    arr = _objects(values)
    if len(arr) == 0:
        return np.zeros(0, dtype=np.int64)
    kind = infer_dtype(arr, skipna=False)
    if kind == "integer":
        try:
            return arr.astype(np.int64)
        except OverflowError:
            pass
    elif kind in ("floating", "mixed-integer-float", "integer-na"):  # ints with NaN where the key was absent
        f = arr.astype(np.float64)
        finite = np.isfinite(f)
        if not (np.abs(f[finite]) >= _EXACT_FLOAT_INT).any():
            ok = finite & (f == np.floor(np.where(finite, f, 0.0)))
            return np.where(ok, f, -1.0).astype(np.int64)
    elif kind == "mixed-integer":  # the typed decoder's ints with None where absent, or a few strings
        types = np.fromiter(map(type, arr), dtype=object, count=len(arr))
        is_int = types == int
        out = np.full(len(arr), -1, dtype=np.int64)
        try:
            out[is_int] = arr[is_int].astype(np.int64)
        except OverflowError:
            pass
        else:
            other = ~is_int & (types != type(None))
            if other.any():  # strings ("0x1f", " 7") and floats, one by one as the fallback below reads them
                out[other] = [_int_or_missing(v) for v in arr[other]]
            return out
    if kind.startswith("mixed"):  # e.g. ints with a few "Spans"-like strings or None
        f = pd.to_numeric(arr, errors="coerce").astype(np.float64)
        finite = np.isfinite(f)
        if not (np.abs(f[finite]) >= _EXACT_FLOAT_INT).any():
            out = np.where(finite & (f == np.floor(np.where(finite, f, 0.0))), f, -1.0).astype(np.int64)
            for i in np.flatnonzero(~finite):  # only strings can still hold an integer ("0x1f", " 7")
                if type(arr[i]) is str:
                    out[i] = _int_or_missing(arr[i])
            for i in np.flatnonzero((out == 0) | (out == 1)):  # to_numeric reads True/False as 1/0
                if type(arr[i]) is bool:
                    out[i] = -1
            return out
    return np.array([_int_or_missing(v) for v in arr], dtype=np.int64)


def _objects(values) -> np.ndarray:
    """A 1-D object array of ``values`` (a list or an array), without numpy broadcasting nested lists."""
    if isinstance(values, np.ndarray) and values.ndim == 1:
        return values if values.dtype == object else values.astype(object)
    arr = np.empty(len(values), dtype=object)
    for i, v in enumerate(values):
        arr[i] = v
    return arr


def _categorical(values) -> pd.Categorical:
    """pd.Categorical(values) for strings (sorted str categories), hashing once instead of converting
    the whole column to pandas' string type first."""
    codes, uniques = pd.factorize(_objects(values), sort=True)
    return pd.Categorical.from_codes(codes, dtype=pd.CategoricalDtype(pd.Index(uniques, dtype="str")))


def _strings(values: np.ndarray) -> np.ndarray | list:
    """Names/categories as strings: "" where missing, str() of anything else."""
    if len(values) and infer_dtype(values, skipna=False) == "string":
        return values
    return [v if type(v) is str else _missing_or_str(v) for v in values]


def _missing_or_str(v: Any) -> str:
    """"" for a missing value (None, or NaN where a column lacked the key), else str(v)."""
    return "" if v is None or v != v else str(v)


def _int_or_missing(v: Any) -> int:
    """An integer-ish value as an int64, -1 where it is missing, not an integer or beyond int64."""
    iv = _scalar_to_int(v)
    return -1 if iv is None or not -2**63 <= iv < 2**63 else iv
