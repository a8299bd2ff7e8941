"""The columnar cache: each trace file's loaded frames saved as Parquet, so a second load skips the parse.

Where: ``$TORCHSCOPE_CACHE_DIR``, else the platform's user cache folder (``$XDG_CACHE_HOME/torchscope``
or ``~/.cache/torchscope``; ``~/Library/Caches/torchscope`` on macOS; ``%LOCALAPPDATA%\\torchscope\\Cache``
on Windows). Off for a load with ``load(..., cache=False)``, ``--no-cache`` or ``TORCHSCOPE_NO_CACHE=1``.

One entry per trace file is a folder named by a key over the file's resolved path, its name (a rank
may come from the name), inode, size, mtime_ns, the rank asked for and the loader's version, holding:

- ``events.parquet``, ``counters.parquet``, ``flows.parquet``: the numeric columns as they are and each
  categorical as its integer codes (its categories, their dtype and order live in ``entry.json``, so
  unused categories such as the unseen ``kind`` values survive exactly);
- ``args`` (each event's args as the raw JSON text the loader keeps) is a binary Parquet column: a
  cached load hands back the same bytes, still undecoded; any other object column would go to
  ``<frame>.objects.json``, one JSON array per column;
- ``entry.json``: the column layout and the TraceMeta, written last.

A changed file has a new key, so it is re-parsed; its old entry ages out. An entry is built in a
temporary folder inside the cache folder and renamed into place: a concurrent reader sees the whole
entry or none, and of two writers of one key the second drops its copy. An unreadable entry is
discarded with a `CacheWarning` and rebuilt. After each write the least recently used entries (reads
touch ``entry.json``) are removed until the cache holds at most ``$TORCHSCOPE_CACHE_MAX_BYTES``
(default 2 GiB). A cache folder that cannot be written turns the cache off for that load with one
warning; the load itself never fails because of the cache.

The folder machinery (write-then-rename, the marker file, LRU eviction, damage and an unwritable
folder) is `EntryFolder`, shared with the rank-summary cache, whose entries live in the
``rank-summaries/`` sub-folder (`torchscope.analyzers.jobs.summary_cache`) under the same bound, on its own.

JSONL streams of a run bundle are not cached: they are small, append-only (a running job grows them)
and re-read on every load. A manifest is not cached either; the loader attaches both on a hit.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import shutil
import sys
import time
import uuid
import warnings
from pathlib import Path
from typing import Callable

import numpy as np
import orjson
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from torchscope.analyzers.core.trace import Trace, TraceMeta

__all__ = ["TraceCache", "EntryFolder", "NoCache", "CacheWarning", "default_cache_dir", "cache_max_bytes", "open_cache",
           "ENV_CACHE_DIR", "ENV_CACHE_MAX_BYTES", "ENV_NO_CACHE", "DEFAULT_MAX_BYTES", "ENTRY_FILE",
           "SUMMARY_FOLDER", "cache_disabled_by_env", "trace_key"]

ENV_CACHE_DIR = "TORCHSCOPE_CACHE_DIR"
ENV_CACHE_MAX_BYTES = "TORCHSCOPE_CACHE_MAX_BYTES"
#: Set to anything but "" or "0" to turn the cache off for every load in the process.
ENV_NO_CACHE = "TORCHSCOPE_NO_CACHE"
#: Default bound on the cache folder's total size, bytes.
DEFAULT_MAX_BYTES = 2 * 1024**3
#: Layout of an entry on disk; bump when this module writes entries differently.
ENTRY_FORMAT = 2
#: A file modified less than this long ago is not stored: a rewrite within the file system's timestamp
#: granularity could keep size and mtime and be mistaken for the cached one (git's "racy" files), seconds.
RACY_WINDOW_S = 2.0
#: Leftover temporary folders (a writer killed mid-write) older than this are removed, seconds.
STALE_TMP_S = 3600
#: The file of an entry written last (its presence says the entry is whole) and touched on each read.
ENTRY_FILE = "entry.json"
#: The rank-summary cache's folder inside the cache folder (`torchscope.analyzers.jobs.summary_cache`).
SUMMARY_FOLDER = "rank-summaries"
_FRAMES = ("events", "counters", "flows")
_TMP_PREFIX = ".tmp-"
_TRASH_PREFIX = ".trash-"


class CacheWarning(UserWarning):
    """The cache could not be used for a file (unreadable entry, unwritable folder); the load went on."""


class _Uncacheable(Exception):
    """A trace whose frames this format would not restore exactly: it is simply not cached."""


def default_cache_dir() -> Path:
    """The cache folder: $TORCHSCOPE_CACHE_DIR, else the platform's user cache folder + torchscope."""
    env = os.environ.get(ENV_CACHE_DIR)
    if env:
        return Path(env).expanduser()
    if sys.platform == "win32":
        base = os.environ.get("LOCALAPPDATA") or str(Path.home() / "AppData" / "Local")
        return Path(base) / "torchscope" / "Cache"
    if sys.platform == "darwin":
        return Path.home() / "Library" / "Caches" / "torchscope"
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "torchscope"


def cache_max_bytes() -> int:
    """The size bound in bytes: $TORCHSCOPE_CACHE_MAX_BYTES (an integer >= 0), else DEFAULT_MAX_BYTES."""
    raw = os.environ.get(ENV_CACHE_MAX_BYTES)
    if not raw:
        return DEFAULT_MAX_BYTES
    try:
        value = int(raw)
    except ValueError:
        value = -1
    if value < 0:
        warnings.warn(f"{ENV_CACHE_MAX_BYTES}={raw!r} is not a byte count; using {DEFAULT_MAX_BYTES}",
                      CacheWarning, stacklevel=2)
        return DEFAULT_MAX_BYTES
    return value


def cache_disabled_by_env() -> bool:
    """True when $TORCHSCOPE_NO_CACHE turns the cache off."""
    return os.environ.get(ENV_NO_CACHE, "") not in ("", "0")


class NoCache:
    """The cache turned off: every lookup misses, nothing is written."""

    def get(self, path: Path, rank: int | None) -> Trace | None:
        """Always a miss."""
        return None

    def put(self, path: Path, rank: int | None, trace: Trace) -> None:
        """Writes nothing."""


class EntryFolder:
    """Entries (one folder each, named by a key) in one folder, bounded to ``max_bytes`` by LRU eviction.

    The machinery the trace cache and the rank-summary cache share: an entry is written in a temporary
    folder and renamed into place, its marker file (``entry.json``, written last) says it is whole and
    is touched on every read for recency; damage discards it with a `CacheWarning`; a folder that cannot
    be read or written turns the cache off with one warning. Sub-folders named in ``reserved`` (another
    cache's folder inside this one) are neither entries nor evicted.
    """

    #: What the warning of a cache turned off says happens instead.
    without = "going on without the cache"

    def __init__(self, root: Path, *, max_bytes: int = DEFAULT_MAX_BYTES, reserved: tuple[str, ...] = ()) -> None:
        self.root = Path(root)
        self.max_bytes = max_bytes
        self.reserved = frozenset(reserved)
        self._off_reason: str | None = None

    @property
    def off(self) -> bool:
        """True once the folder could not be read or written (every lookup then misses)."""
        return self._off_reason is not None

    def marker(self, key: str, path: Path) -> tuple[Path, bytes] | None:
        """(entry folder, its marker's bytes) for ``key``, or None on a miss (``path``: the file it is of)."""
        if self._off_reason is not None:
            return None
        entry = self.root / key
        try:
            return entry, (entry / ENTRY_FILE).read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            self.turn_off(f"cannot read the cache folder {self.root} ({exc.strerror or exc})")
            return None

    def touch(self, entry: Path) -> None:
        """Mark ``entry`` as just used (recency for LRU eviction: atime is often not kept)."""
        try:
            os.utime(entry / ENTRY_FILE)
        except OSError:
            pass

    def store(self, key: str, files: list[tuple[str, Callable[[Path], object]]]) -> None:
        """Write ``files`` ((name, writer) pairs, the marker last) as entry ``key``, then evict to the bound."""
        if self._off_reason is not None:
            return
        tmp = self.root / f"{_TMP_PREFIX}{key}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            tmp.mkdir()
            for name, write in files:
                write(tmp / name)
        except OSError as exc:
            shutil.rmtree(tmp, ignore_errors=True)
            self.turn_off(f"cannot write the cache folder {self.root} ({exc.strerror or exc})")
            return
        try:
            os.rename(tmp, self.root / key)  # atomic: readers see all of the entry or none of it
        except OSError:  # another process stored the same key first: theirs is as good as ours
            shutil.rmtree(tmp, ignore_errors=True)
        self.evict()

    def evict(self) -> None:
        """Remove least recently used entries until the folder holds at most ``max_bytes``."""
        entries = []
        now = time.time()
        try:
            children = list(self.root.iterdir())
        except OSError:
            return
        for child in children:
            if child.name in self.reserved:
                continue
            if child.name.startswith((_TMP_PREFIX, _TRASH_PREFIX)):
                try:
                    if now - child.stat().st_mtime > STALE_TMP_S:
                        shutil.rmtree(child, ignore_errors=True)
                except OSError:
                    pass
                continue
            try:
                used = (child / ENTRY_FILE).stat().st_mtime_ns
                size = sum(f.stat().st_size for f in child.iterdir())
            except OSError:
                continue
            entries.append((used, size, child))
        total = sum(size for _, size, _ in entries)
        for _, size, child in sorted(entries, key=lambda e: e[0]):
            if total <= self.max_bytes:
                break
            _remove_entry(child)
            total -= size

    def entries(self) -> list[Path]:
        """The entry folders now in the cache."""
        try:
            return sorted(p for p in self.root.iterdir()
                          if p.is_dir() and not p.name.startswith(".") and p.name not in self.reserved)
        except OSError:
            return []

    def discard(self, entry: Path, path: Path, why: str, instead: str) -> None:
        """Drop a damaged entry with a `CacheWarning` saying what is done ``instead``; returns None (a miss)."""
        warnings.warn(f"{path}: ignored a damaged cache entry {entry.name} ({why}); {instead}",
                      CacheWarning, stacklevel=3)
        _remove_entry(entry)
        return None

    def turn_off(self, why: str) -> None:
        """Stop using the folder for the rest of this cache's life, with one `CacheWarning`."""
        self._off_reason = why
        warnings.warn(f"{why}; {self.without}", CacheWarning, stacklevel=4)


class TraceCache(EntryFolder):
    """Parquet entries of loaded traces in one folder, bounded to ``max_bytes`` bytes by LRU eviction."""

    without = "loading without the cache"

    def __init__(self, root: Path, version: str, *, max_bytes: int = DEFAULT_MAX_BYTES) -> None:
        super().__init__(root, max_bytes=max_bytes, reserved=(SUMMARY_FOLDER,))
        self.version = version

    # -- lookup --------------------------------------------------------------------------------
    def key(self, path: Path, rank: int | None) -> str | None:
        """The entry name for ``path`` as it is now (None when the file cannot be stat'ed)."""
        found = self._key_and_mtime(path, rank)
        return found[0] if found else None

    def _key_and_mtime(self, path: Path, rank: int | None) -> tuple[str, int] | None:
        return trace_key(path, rank, self.version)

    def get(self, path: Path, rank: int | None) -> Trace | None:
        """The cached Trace of ``path`` (meta.path as given, no manifest, no streams), or None on a miss."""
        key = None if self.off else self.key(path, rank)
        found = self.marker(key, path) if key is not None else None
        if found is None:
            return None
        entry, blob = found
        again = "parsing the file again"
        try:
            layout = orjson.loads(blob)
        except orjson.JSONDecodeError as exc:
            return self.discard(entry, path, f"unreadable {ENTRY_FILE} ({exc})", again)
        try:
            trace = _decode(entry, layout, str(path))
        except FileNotFoundError as exc:
            if not (entry / ENTRY_FILE).exists():  # evicted by another process while we read it
                return None
            return self.discard(entry, path, f"missing {Path(exc.filename or '?').name}", again)
        except Exception as exc:  # noqa: BLE001 - any damage to an entry means: parse the file again
            return self.discard(entry, path, f"{type(exc).__name__}: {exc}", again)
        self.touch(entry)
        return trace

    # -- store ---------------------------------------------------------------------------------
    def put(self, path: Path, rank: int | None, trace: Trace) -> None:
        """Save ``trace`` (as parsed from ``path`` with ``rank``) and evict down to the size bound."""
        if self.off:
            return
        found = self._key_and_mtime(path, rank)
        if found is None or (trace.events.empty and trace.counters.empty):
            return
        key, mtime_ns = found
        if time.time_ns() - mtime_ns < RACY_WINDOW_S * 1e9:
            return
        try:
            files = _encode(trace)
        except (_Uncacheable, orjson.JSONEncodeError):  # e.g. an int beyond 64 bits in args
            return
        self.store(key, files)


def trace_key(path: Path, rank: int | None, version: str) -> tuple[str, int] | None:
    """(entry name, mtime_ns) of trace file ``path`` as it is now, for loader ``version``; None if not stat'able."""
    try:
        resolved = Path(path).resolve()
        st = resolved.stat()
    except OSError:
        return None
    parts = [str(resolved), Path(path).name, st.st_ino, st.st_size, st.st_mtime_ns, rank, version, ENTRY_FORMAT]
    return hashlib.sha256(orjson.dumps(parts)).hexdigest()[:40], st.st_mtime_ns


def open_cache(version: str, enabled: bool | None = None) -> TraceCache | NoCache:
    """The cache for one load: off when ``enabled`` is False (or None and $TORCHSCOPE_NO_CACHE is set)."""
    if enabled is False or (enabled is None and cache_disabled_by_env()):
        return NoCache()
    return TraceCache(default_cache_dir(), version, max_bytes=cache_max_bytes())


def _remove_entry(entry: Path) -> None:
    """Rename away first (atomic), so a reader never finds half of a removed entry."""
    trash = entry.with_name(f"{_TRASH_PREFIX}{entry.name}-{uuid.uuid4().hex[:8]}")
    try:
        os.rename(entry, trash)
    except OSError:
        return
    shutil.rmtree(trash, ignore_errors=True)


# -- encoding ------------------------------------------------------------------------------------

def _encode(trace: Trace) -> list[tuple[str, object]]:
    """(file name, writer) pairs for an entry; raises _Uncacheable when it would not round-trip."""
    files: list[tuple[str, object]] = []
    layout: dict = {"format": ENTRY_FORMAT, "frames": {}, "meta": _meta_to_json(trace.meta)}
    for frame_name in _FRAMES:
        frame: pd.DataFrame = getattr(trace, frame_name)
        if not isinstance(frame.index, pd.RangeIndex) or frame.index.start != 0 or frame.index.step != 1:
            raise _Uncacheable(f"{frame_name} has a non-default index")
        columns, arrays, objects, binary = [], {}, {}, {}
        for name in frame.columns:
            if not isinstance(name, str):
                raise _Uncacheable(f"{frame_name} column {name!r} is not a str")
            col = frame[name]
            dtype = col.dtype
            if isinstance(dtype, pd.CategoricalDtype):
                cats = dtype.categories
                values = cats.tolist()
                if not all(type(v) is str for v in values):
                    raise _Uncacheable(f"{frame_name}.{name} has non-str categories")
                columns.append({"name": name, "kind": "category", "categories": values,
                                "categories_dtype": str(cats.dtype), "ordered": bool(dtype.ordered)})
                arrays[name] = col.cat.codes.to_numpy()
            elif dtype == object and name == "args":
                raw = _raw_args(col.tolist())
                if raw is None:
                    raise _Uncacheable(f"{frame_name}.args does not round-trip through JSON")
                columns.append({"name": name, "kind": "json_bytes"})
                binary[name] = raw
            elif dtype == object:
                values = col.tolist()
                if not _json_round_trips(values):
                    raise _Uncacheable(f"{frame_name}.{name} does not round-trip through JSON")
                columns.append({"name": name, "kind": "object"})
                objects[name] = values
            elif isinstance(dtype, np.dtype) and dtype.kind in "iufb":
                columns.append({"name": name, "kind": "numpy", "dtype": dtype.str})
                arrays[name] = col.to_numpy()
            else:
                raise _Uncacheable(f"{frame_name}.{name} has dtype {dtype}")
        layout["frames"][frame_name] = {"rows": len(frame), "columns": columns}
        table = pa.table({**{k: pa.array(v) for k, v in arrays.items()},
                          **{k: pa.array(v, type=pa.binary()) for k, v in binary.items()}})
        files.append((f"{frame_name}.parquet", lambda p, t=table: pq.write_table(t, p)))
        if objects:
            blob = orjson.dumps(objects)
            files.append((f"{frame_name}.objects.json", lambda p, b=blob: p.write_bytes(b)))
    meta_back = _meta_from_json(orjson.loads(orjson.dumps(layout["meta"])), trace.meta.path)
    if meta_back != dataclasses.replace(trace.meta, manifest=None):
        raise _Uncacheable("meta does not round-trip through JSON")
    entry_blob = orjson.dumps(layout)
    files.append((ENTRY_FILE, lambda p, b=entry_blob: p.write_bytes(b)))  # last: marks the entry whole
    return files


def _raw_args(values: list) -> list | None:
    """Args as raw JSON bytes (None kept): bytes as they are, dicts serialised; None if one would not
    round-trip (a NaN, a non-str key)."""
    out = list(values)
    for i, v in enumerate(out):
        if v is None or type(v) is bytes:
            continue
        if type(v) is not dict or not _json_round_trips([v]):
            return None
        out[i] = orjson.dumps(v)
    return out


def _json_round_trips(values: list) -> bool:
    """True when JSON gives ``values`` back exactly (parsed JSON does, but NaN and inf become null)."""
    blob = orjson.dumps(values)
    # Every "null" in the text is a None in the list: no NaN hides anywhere, no need to decode to check.
    if blob.count(b"null") == values.count(None):
        return True
    return orjson.loads(blob) == values


def _decode(entry: Path, layout: dict, path: str) -> Trace:
    if layout.get("format") != ENTRY_FORMAT:
        raise ValueError(f"entry format {layout.get('format')!r}, expected {ENTRY_FORMAT}")
    frames = {}
    for frame_name in _FRAMES:
        spec = layout["frames"][frame_name]
        table = pq.read_table(entry / f"{frame_name}.parquet")
        objects = None
        if any(c["kind"] == "object" for c in spec["columns"]):
            objects = orjson.loads((entry / f"{frame_name}.objects.json").read_bytes())
        data = {}
        rows = spec["rows"]
        for c in spec["columns"]:
            name = c["name"]
            if c["kind"] == "json_bytes":
                data[name] = pd.Series(table.column(name).to_numpy(zero_copy_only=False), dtype=object)
            elif c["kind"] == "object":
                values = objects[name]
                arr = np.empty(len(values), dtype=object)
                arr[:] = values
                data[name] = pd.Series(arr, dtype=object)
            elif c["kind"] == "category":
                cats = pd.Index(c["categories"], dtype=c["categories_dtype"])
                codes = table.column(name).to_numpy()
                data[name] = pd.Categorical.from_codes(codes, dtype=pd.CategoricalDtype(cats, ordered=c["ordered"]))
            else:
                data[name] = table.column(name).to_numpy().astype(np.dtype(c["dtype"]), copy=False)
            if len(data[name]) != rows:
                raise ValueError(f"{frame_name}.{name} has {len(data[name])} rows, expected {rows}")
        frames[frame_name] = pd.DataFrame(data, index=pd.RangeIndex(rows))
    meta = _meta_from_json(layout["meta"], path)
    return Trace(events=frames["events"], counters=frames["counters"], flows=frames["flows"], meta=meta)


def _meta_to_json(meta: TraceMeta) -> dict:
    out = {f.name: getattr(meta, f.name) for f in dataclasses.fields(meta) if f.name not in ("manifest", "path")}
    out["distributed"] = dict(meta.distributed)
    out["device_properties"] = list(meta.device_properties)
    out["processes"] = [[k, v] for k, v in meta.processes.items()]
    out["threads"] = [[list(k) if isinstance(k, tuple) else k, v] for k, v in meta.threads.items()]
    out["warnings"] = list(meta.warnings)
    return out


def _meta_from_json(doc: dict, path: str) -> TraceMeta:
    fields = dict(doc)
    fields["device_properties"] = tuple(doc["device_properties"])
    fields["processes"] = {k: v for k, v in doc["processes"]}
    fields["threads"] = {tuple(k) if isinstance(k, list) else k: v for k, v in doc["threads"]}
    fields["warnings"] = tuple(doc["warnings"])
    return TraceMeta(path=path, manifest=None, **fields)
