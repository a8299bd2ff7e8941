"""The run bundle: the folder one profiled run writes, and the writers for its files.

Layout of a run folder (``runs/<name>/``)::

    manifest.json              rank 0's manifest (see below); written at start and rewritten at the end
    manifest.rank<N>.json      the manifest of every other rank (its own devices, options, ...)
    rank<N>.trace.json.gz      Chrome trace of rank N: Kineto's trace with our counters ("ph": "C")
                               and our annotations ("cat": "torchscope.phase" / "torchscope.module")
                               merged in on Kineto's clock
    rank<N>.samples.jsonl      sampler readings, appended during the run, flushed at least every second
    rank<N>.steps.jsonl        one line per ``prof.step()``: {"step", "t_ns", "tokens"?, "samples"?}
    rank<N>.moe.jsonl          MoE router records (only when routers were found)

Every JSONL line is one JSON object. Sample lines carry ``"t_ns"`` (``time.time_ns()``, the wall
clock the loader also uses for trace timestamps) and ``"source"`` ("nvml" | "host" | "cuda_mem").
A field a sampler cannot read is left out of its lines; the reason is written once as
``{"t_ns", "source", "event": "unavailable", "field", "reason"}``.

The manifest is per run. With several ranks, rank 0 writes ``manifest.json`` and each other rank
writes ``manifest.rank<N>.json``; all of them follow the same schema
(``schema_version``, ``tool``, ``command``, ``host``, ``started_at_ns``, ``ended_at_ns``,
``torch_version``, ``cuda_version``, ``world_size``, ``ranks``, ``devices``, ``options``,
``recorded``, ``unavailable``, ``host_roofline``, ``user_counts``).

Manifest and trace are written atomically (a temporary file in the same folder, then a rename),
so a reader never sees half a file; JSONL streams are append-only so a killed job keeps its data
up to the last flush.
"""

from __future__ import annotations

import gzip
import os
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Iterable

try:  # orjson is a dependency of the package; json is the fallback for odd environments
    import orjson as _orjson
except ImportError:  # pragma: no cover - exercised only without orjson
    _orjson = None
import json

__all__ = [
    "SCHEMA_VERSION",
    "FLUSH_INTERVAL_S",
    "JsonlWriter",
    "manifest_path",
    "stream_path",
    "trace_path",
    "dumps",
    "atomic_write_bytes",
    "write_json_atomic",
    "write_trace_atomic",
]

SCHEMA_VERSION = 1
FLUSH_INTERVAL_S = 1.0  # a JSONL stream is flushed to the OS at least this often while written to
_BUFFER_LIMIT_BYTES = 1 << 20  # flush earlier when this much is buffered


def manifest_path(run_dir: Path, rank: int) -> Path:
    """The manifest file of `rank` in `run_dir` (rank 0: manifest.json)."""
    return Path(run_dir) / ("manifest.json" if rank == 0 else f"manifest.rank{rank}.json")


def trace_path(run_dir: Path, rank: int) -> Path:
    """The merged Chrome trace of `rank` in `run_dir`."""
    return Path(run_dir) / f"rank{rank}.trace.json.gz"


def stream_path(run_dir: Path, rank: int, stream: str) -> Path:
    """The JSONL stream `stream` ("samples", "steps", "moe") of `rank` in `run_dir`."""
    return Path(run_dir) / f"rank{rank}.{stream}.jsonl"


def _default(obj: Any) -> Any:
    """JSON fallback for numpy scalars, paths, tuples and the like."""
    if hasattr(obj, "item"):
        return obj.item()
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if isinstance(obj, (set, frozenset)):
        return sorted(obj)
    return str(obj)


def dumps(obj: Any) -> bytes:
    """Serialise `obj` as compact JSON bytes (numpy values become plain numbers)."""
    if _orjson is not None:
        return _orjson.dumps(obj, default=_default, option=_orjson.OPT_SERIALIZE_NUMPY)
    return json.dumps(obj, default=_default, separators=(",", ":")).encode()


class JsonlWriter:
    """Thread-safe append-only JSONL writer that reaches the OS at least every FLUSH_INTERVAL_S.

    ``write(obj)`` buffers one line; the buffer goes to the file when it is older than the flush
    interval, when it grows past 1 MiB, on ``flush()`` and on ``close()``. The profiler's sampler
    thread calls ``flush()`` on every tick, so lines written by a hook are on disk within about a
    second even when no further line follows. Writing after ``close()`` is ignored.
    """

    def __init__(self, path: Path | str, *, flush_interval_s: float = FLUSH_INTERVAL_S) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._flush_interval_ns = int(flush_interval_s * 1e9)
        self._lock = threading.Lock()
        self._fd: int | None = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        self._buf: list[bytes] = []
        self._buf_bytes = 0
        self._last_flush_ns = time.monotonic_ns()
        self.lines_written = 0

    @property
    def closed(self) -> bool:
        """True once close() has run."""
        return self._fd is None

    def write(self, obj: dict) -> None:
        """Append one JSON object as a line."""
        line = dumps(obj) + b"\n"
        with self._lock:
            if self._fd is None:
                return
            self._buf.append(line)
            self._buf_bytes += len(line)
            self.lines_written += 1
            if (
                self._buf_bytes >= _BUFFER_LIMIT_BYTES
                or time.monotonic_ns() - self._last_flush_ns >= self._flush_interval_ns
            ):
                self._flush_locked()

    def write_many(self, objs: Iterable[dict]) -> None:
        """Append several JSON objects, one line each."""
        for obj in objs:
            self.write(obj)

    def flush(self) -> None:
        """Hand everything buffered to the OS (survives a SIGKILL of this process)."""
        with self._lock:
            self._flush_locked()

    def _flush_locked(self) -> None:
        self._last_flush_ns = time.monotonic_ns()
        if self._fd is None or not self._buf:
            return
        data = b"".join(self._buf)
        self._buf.clear()
        self._buf_bytes = 0
        view = memoryview(data)
        while view:
            n = os.write(self._fd, view)
            view = view[n:]

    def close(self) -> None:
        """Flush and close the file; later writes are dropped."""
        with self._lock:
            if self._fd is None:
                return
            try:
                self._flush_locked()
            finally:
                os.close(self._fd)
                self._fd = None

    def __enter__(self) -> "JsonlWriter":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def atomic_write_bytes(path: Path | str, data: bytes) -> Path:
    """Write `data` to `path` via a temporary file in the same folder and a rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    return path


def write_json_atomic(path: Path | str, obj: Any) -> Path:
    """Write `obj` as indented JSON to `path` atomically."""
    if _orjson is not None:
        data = _orjson.dumps(obj, default=_default, option=_orjson.OPT_INDENT_2 | _orjson.OPT_SERIALIZE_NUMPY)
    else:
        data = json.dumps(obj, default=_default, indent=2).encode()
    return atomic_write_bytes(path, data + b"\n")


def write_trace_atomic(path: Path | str, trace: dict, *, compresslevel: int = 4) -> Path:
    """Write a Chrome trace dict gzipped to `path` atomically."""
    return atomic_write_bytes(path, gzip.compress(dumps(trace), compresslevel=compresslevel, mtime=0))
