"""`load(path)`: a trace file, a folder of per-rank traces, or a torchscope run bundle → Trace/TraceSet.

A run bundle is a folder with ``manifest.json`` and per-rank files ``rank<N>.trace.json.gz`` plus
append-only JSONL streams ``rank<N>.<stream>.jsonl`` (samples, moe, steps, ...). A job killed
mid-run may leave only the streams: such a rank loads with empty event frames and its streams.

Each trace file's parsed frames are kept in the columnar cache (`torchscope.analyzers.io.cache`),
keyed by the file's path, size, mtime and `LOADER_VERSION`; a bundle's JSONL streams and manifest
are read afresh on every load and attached to the cached frames.
"""

from __future__ import annotations

import os
import re
import sys
from concurrent.futures import ProcessPoolExecutor
from dataclasses import replace
from multiprocessing import get_context
from pathlib import Path
from typing import Iterable

import orjson
import pandas as pd

from torchscope.analyzers.io.cache import NoCache, TraceCache, open_cache
from torchscope.analyzers.io.chrome_trace import empty_trace, parse_trace_file, read_json_document
from torchscope.analyzers.core.errors import TraceError
from torchscope.analyzers.core.trace import Trace, TraceSet

__all__ = ["load", "load_set", "find_trace_files", "read_jsonl", "is_run_bundle"]

MANIFEST_NAME = "manifest.json"
_TRACE_SUFFIXES = (".json", ".json.gz")
_BUNDLE_TRACE = re.compile(r"^rank(\d+)\.trace\.json(\.gz)?$")
_BUNDLE_STREAM = re.compile(r"^rank(\d+)\.([A-Za-z0-9_\-]+)\.jsonl$")
#: Version of what parsing a trace file yields. Bump it with any change to chrome_trace.py or to this
#: module that changes a loaded Trace (a column, a dtype, a value, a warning, TraceMeta): cached entries
#: of other versions are then never read again (and age out of the cache).
LOADER_VERSION = "1"
#: Load ranks in worker processes when the files add up to more than this (below, start-up costs more).
PARALLEL_MIN_BYTES = 8 * 1024 * 1024


def load(path: str | os.PathLike, *, progress: bool | None = None, cache: bool | None = None) -> Trace | TraceSet:
    """Load a trace file, a folder of per-rank traces or a run bundle (one rank → Trace).

    ``cache``: use the columnar cache (None: yes unless $TORCHSCOPE_NO_CACHE is set).
    """
    loaded = load_set(path, progress=progress, cache=cache)
    if len(loaded) == 1:
        return next(iter(loaded))
    return loaded


def load_set(path: str | os.PathLike, *, progress: bool | None = None, cache: bool | None = None) -> TraceSet:
    """Like `load`, but always returns a TraceSet (of one rank for a single file)."""
    path = Path(path)
    if not path.exists():
        raise TraceError(path, "no such file or folder")
    store = open_cache(LOADER_VERSION, cache)
    if path.is_file():
        (trace,) = _parse_many([(path, None)], progress, manifest=None, streams_by_rank={}, store=store)
        return TraceSet(ranks={trace.rank: trace}, path=str(path))
    if not path.is_dir():
        raise TraceError(path, "not a file or folder")
    if is_run_bundle(path):
        return _load_bundle(path, progress, store)
    files = find_trace_files(path)
    if not files:
        raise TraceError(path, "folder has no trace files (*.json, *.json.gz) and no manifest.json")
    traces = _parse_many([(f, None) for f in files], progress, manifest=None, streams_by_rank={}, store=store)
    return TraceSet(ranks=_by_rank(traces), path=str(path))


def is_run_bundle(path: Path) -> bool:
    """True when ``path`` is a folder written by torchscope's profiler (has a manifest.json)."""
    return (path / MANIFEST_NAME).is_file()


def find_trace_files(folder: Path) -> list[Path]:
    """Trace files directly inside ``folder`` (not recursive), sorted by name."""
    try:
        entries = sorted(folder.iterdir())
    except PermissionError:
        raise TraceError(folder, "permission denied") from None
    return [p for p in entries if p.is_file() and p.name.endswith(_TRACE_SUFFIXES) and p.name != MANIFEST_NAME]


def read_jsonl(path: Path) -> tuple[pd.DataFrame, list[str]]:
    """Read an append-only JSONL stream; a torn last line (killed writer) is dropped with a warning."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise TraceError(path, f"cannot read: {exc.strerror or exc}") from None
    records, bad = [], 0
    lines = raw.split(b"\n")
    for line in lines:
        if not line.strip():
            continue
        try:
            obj = orjson.loads(line)
        except orjson.JSONDecodeError:
            bad += 1
            continue
        if isinstance(obj, dict):
            records.append(obj)
        else:
            bad += 1
    warnings = [f"{path.name}: skipped {bad} unreadable lines"] if bad else []
    return pd.DataFrame.from_records(records) if records else pd.DataFrame(), warnings


def _load_bundle(folder: Path, progress: bool | None, store: TraceCache | NoCache) -> TraceSet:
    manifest = read_json_document(folder / MANIFEST_NAME)
    if not isinstance(manifest, dict):
        raise TraceError(folder / MANIFEST_NAME, f"manifest is a {type(manifest).__name__}, expected an object")
    trace_files: dict[int, Path] = {}
    streams_by_rank: dict[int, dict[str, pd.DataFrame]] = {}
    stream_warnings: dict[int, list[str]] = {}
    for entry in sorted(folder.iterdir()):
        m = _BUNDLE_TRACE.match(entry.name)
        if m:
            rank = int(m.group(1))
            if rank in trace_files:
                raise TraceError(folder, f"two traces for rank {rank}: {trace_files[rank].name} and {entry.name}")
            trace_files[rank] = entry
            continue
        m = _BUNDLE_STREAM.match(entry.name)
        if m:
            rank, stream = int(m.group(1)), m.group(2)
            frame, warns = read_jsonl(entry)
            streams_by_rank.setdefault(rank, {})[stream] = frame
            stream_warnings.setdefault(rank, []).extend(warns)
    if not trace_files and not streams_by_rank:
        raise TraceError(folder, "run bundle has no rank<N>.trace.json.gz and no rank<N>.*.jsonl files")
    traces = _parse_many(sorted((f, r) for r, f in trace_files.items()), progress, manifest=manifest,
                         streams_by_rank=streams_by_rank, store=store)
    ranks = _by_rank(traces)
    for rank, streams in streams_by_rank.items():
        if rank not in ranks:  # killed before the trace was written: keep what was flushed
            ranks[rank] = empty_trace(folder, rank, manifest=manifest, streams=streams, warnings=(
                f"rank {rank} has no trace file (the job ended before writing it); "
                "only its JSONL streams are available",))
    for rank, warns in stream_warnings.items():
        if warns:
            t = ranks[rank]
            ranks[rank] = replace(t, meta=replace(t.meta, warnings=t.meta.warnings + tuple(warns)))
    return TraceSet(ranks=ranks, path=str(folder))


def _by_rank(traces: Iterable[Trace]) -> dict[int, Trace]:
    ranks: dict[int, Trace] = {}
    for t in traces:
        if t.rank in ranks:
            raise TraceError(Path(t.meta.path).parent,
                             f"two traces claim rank {t.rank}: {Path(ranks[t.rank].meta.path).name} "
                             f"and {Path(t.meta.path).name}")
        ranks[t.rank] = t
    return ranks


def _parse_one(job: tuple[Path, int | None, dict | None, dict]) -> Trace:
    path, rank, manifest, streams = job
    return parse_trace_file(path, rank=rank, manifest=manifest, streams=streams)


def _parse_many(files: list[tuple[Path, int | None]], progress: bool | None, *, manifest: dict | None,
                streams_by_rank: dict, store: TraceCache | NoCache) -> list[Trace]:
    jobs = [(f, r, manifest, streams_by_rank.get(r, {}) if r is not None else {}) for f, r in files]
    show = sys.stderr.isatty() if progress is None else progress
    bar = _progress_bar(len(jobs), show)
    out: list[Trace | None] = []
    misses = []
    try:
        for i, (f, r, man, streams) in enumerate(jobs):
            hit = store.get(f, r)
            if hit is not None:  # the cache holds frames and parsed meta; manifest and streams are this load's
                hit = replace(hit, meta=replace(hit.meta, manifest=man), streams=streams)
                bar.update(1)
            else:
                misses.append(i)
            out.append(hit)
        for i, trace in zip(misses, _parse_jobs([jobs[i] for i in misses], bar)):
            out[i] = trace
            f, r, _, _ = jobs[i]
            store.put(f, r, trace)
        return out  # type: ignore[return-value]
    finally:
        bar.close()


def _parse_jobs(jobs: list, bar) -> Iterable[Trace]:
    total_bytes = sum(_size(job[0]) for job in jobs)
    workers = min(len(jobs), os.cpu_count() or 1)
    if workers > 1 and total_bytes >= PARALLEL_MIN_BYTES:
        # spawn: a forked child of a threaded parent (dash, samplers) can deadlock.
        with ProcessPoolExecutor(max_workers=workers, mp_context=get_context("spawn")) as pool:
            for trace in pool.map(_parse_one, jobs):
                bar.update(1)
                yield trace
        return
    for job in jobs:
        trace = _parse_one(job)
        bar.update(1)
        yield trace


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


class _NoBar:
    def update(self, n: int) -> None:
        pass

    def close(self) -> None:
        pass


def _progress_bar(total: int, show: bool):
    if not show or total < 2:
        return _NoBar()
    from tqdm import tqdm

    return tqdm(total=total, desc="loading ranks", unit="rank", file=sys.stderr, leave=False)
