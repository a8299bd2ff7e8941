"""`load(path)`: a trace file, a folder of per-rank traces, or a torchscope run bundle → Trace/TraceSet.

A run bundle is a folder with ``manifest.json`` and per-rank files ``rank<N>.trace.json.gz`` plus
append-only JSONL streams ``rank<N>.<stream>.jsonl`` (samples, moe, steps, ...). A job killed
mid-run may leave only the streams: such a rank loads with empty event frames and its streams.

Run status: the profiler writes the manifest at start (``"ended_at_ns": null``, ``"complete": false``)
and rewrites it when the profiler stops (``ended_at_ns`` set; ``complete`` false with an
``incomplete_reason`` when the loop ended by an exception or SIGTERM). A rank whose own manifest
(``manifest.rank<N>.json``, rank 0's is ``manifest.json``) is still the start one, or a folder of our
JSONL streams with no manifest at all, is a job killed before it stopped: each such rank loads with
the warning `KILLED_RUN_WARNING` in ``Trace.meta.warnings``; a run ended by an exception gets
``"incomplete: <reason>"``.

A job can also be loaded one rank at a time: `job_sources` finds where each rank lives without
parsing anything (`RankSource`, picklable), and `load_rank` loads one of them; this is what the
per-rank tasks of ``torchscope.analyzers.jobs`` do, in whatever process or cluster worker runs them.

Each trace file's parsed frames are kept in the columnar cache (`torchscope.analyzers.io.cache`),
keyed by the file's path, size, mtime and `LOADER_VERSION`; a bundle's JSONL streams and manifest
are read afresh on every load and attached to the cached frames.
"""

from __future__ import annotations

import os
import re
import sys
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field, replace
from multiprocessing import get_context
from pathlib import Path
from typing import Iterable, Mapping

import orjson
import pandas as pd

from torchscope.analyzers.io.cache import NoCache, TraceCache, open_cache
from torchscope.analyzers.io.chrome_trace import empty_trace, parse_trace_file, read_json_document
from torchscope.analyzers.core.errors import TraceError
from torchscope.analyzers.core.trace import Trace, TraceSet

__all__ = ["load", "load_set", "find_trace_files", "read_jsonl", "is_run_bundle", "RankSource", "JobSources",
           "job_sources", "load_rank", "run_status_warning", "KILLED_RUN_WARNING"]

MANIFEST_NAME = "manifest.json"
_TRACE_SUFFIXES = (".json", ".json.gz")
_BUNDLE_TRACE = re.compile(r"^rank(\d+)\.trace\.json(\.gz)?$")
_BUNDLE_STREAM = re.compile(r"^rank(\d+)\.([A-Za-z0-9_\-]+)\.jsonl$")
#: Version of what parsing a trace file yields. Bump it with any change to chrome_trace.py or to this
#: module that changes a loaded Trace (a column, a dtype, a value, a warning, TraceMeta): cached entries
#: of other versions are then never read again (and age out of the cache).
LOADER_VERSION = "3"
#: Warning of a rank whose job was killed before the profiler stopped (no final manifest).
KILLED_RUN_WARNING = "incomplete: the job ended without stopping the profiler"
_RANK_MANIFEST = re.compile(r"^manifest\.rank(\d+)\.json$")
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
    job = job_sources(path)
    store = open_cache(LOADER_VERSION, cache)
    manifest = _read_manifest(job.manifest_file) if job.manifest_file is not None else None
    with_trace = [src for src in job.sources if src.trace_file is not None]
    traces = _parse_many([(src.trace_file, src.rank) for src in with_trace], progress, manifest=manifest,
                         streams_by_rank={}, store=store)
    ranks = _by_rank(traces)
    if not job.bundle:
        return TraceSet(ranks=ranks, path=str(path))
    for src in job.sources:
        if src.trace_file is None:  # killed before the trace was written: keep what was flushed
            ranks[src.rank] = empty_trace(job.folder, src.rank, manifest=manifest, streams={}, warnings=(
                f"rank {src.rank} has no trace file (the job ended before writing it); "
                "only its JSONL streams are available",))
        ranks[src.rank] = _attach_bundle_parts(ranks[src.rank], src, manifest)
    return TraceSet(ranks=ranks, path=str(path))


@dataclass(frozen=True)
class RankSource:
    """Where one rank of a job lives (no file read yet): its trace file, JSONL streams and manifests.

    ``rank`` is None for a file of a plain folder whose rank the file itself states (parsing tells);
    ``label`` names the rank in messages before that: the file name.
    """

    label: str
    rank: int | None
    trace_file: Path | None
    stream_files: tuple[tuple[str, Path], ...] = ()
    #: The bundle's manifest.json (None: not a bundle, or a bundle folder without one).
    manifest_file: Path | None = None
    #: This rank's own manifest (manifest.rank<N>.json; manifest.json for rank 0), None when absent.
    rank_manifest_file: Path | None = None
    bundle: bool = False

    @property
    def size_bytes(self) -> int:
        """Bytes on disk of the rank's trace file and streams."""
        files = ([self.trace_file] if self.trace_file is not None else []) + [f for _, f in self.stream_files]
        return sum(_size(f) for f in files)


@dataclass(frozen=True)
class JobSources:
    """The ranks of a job as found on disk: one `RankSource` each, and ranks the manifest lists but lacks."""

    path: Path
    folder: Path
    sources: tuple[RankSource, ...]
    bundle: bool = False
    manifest_file: Path | None = None
    #: Rank -> why it cannot be loaded at all (listed by the manifest, no file of it in the folder).
    missing: Mapping[int, str] = field(default_factory=dict)


def job_sources(path: str | os.PathLike) -> JobSources:
    """Where each rank of ``path`` (a trace file, a folder of traces, a run bundle) lives; reads no trace."""
    path = Path(path)
    if not path.exists():
        raise TraceError(path, "no such file or folder")
    if path.is_file():
        return JobSources(path, path.parent, (RankSource(path.name, None, path),))
    if not path.is_dir():
        raise TraceError(path, "not a file or folder")
    if is_run_bundle(path) or _has_bundle_streams(path):
        return _bundle_sources(path)
    files = find_trace_files(path)
    if not files:
        raise TraceError(path, "folder has no trace files (*.json, *.json.gz) and no manifest.json")
    return JobSources(path, path, tuple(RankSource(f.name, None, f) for f in files))


def load_rank(source: RankSource, *, cache: bool | None = None) -> Trace:
    """Load one rank of a job (as `load_set` would load it), parsing in this process."""
    store = open_cache(LOADER_VERSION, cache)
    manifest = _read_manifest(source.manifest_file) if source.manifest_file is not None else None
    if source.trace_file is None:
        folder = source.stream_files[0][1].parent if source.stream_files else Path(source.label)
        trace = empty_trace(folder, source.rank, manifest=manifest, streams={},
                            warnings=(f"rank {source.rank} has no trace file (the job ended before writing it); "
                                      "only its JSONL streams are available",))
    else:
        (trace,) = _parse_many([(source.trace_file, source.rank)], False, manifest=manifest, streams_by_rank={},
                               store=store)
    return _attach_bundle_parts(trace, source, manifest) if source.bundle else trace


def run_status_warning(manifest: dict | None) -> str | None:
    """The warning a rank's manifest calls for: a killed run, a run ended by an error, or None (complete)."""
    if manifest is None:
        return KILLED_RUN_WARNING
    if manifest.get("complete") is True:
        return None
    if "ended_at_ns" in manifest and manifest.get("ended_at_ns") is None:
        return KILLED_RUN_WARNING  # the start-of-run manifest: the profiler never stopped
    reason = manifest.get("incomplete_reason")
    if manifest.get("complete") is False:
        return f"incomplete: {reason}" if reason else "incomplete: the run did not end normally"
    return None  # an older manifest that does not say


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


def _has_bundle_streams(folder: Path) -> bool:
    """True when ``folder`` holds our JSONL streams (rank<N>.<stream>.jsonl): a bundle, even without manifest."""
    try:
        return any(_BUNDLE_STREAM.match(entry.name) for entry in folder.iterdir())
    except OSError:
        return False


def _read_manifest(path: Path) -> dict:
    manifest = read_json_document(path)
    if not isinstance(manifest, dict):
        raise TraceError(path, f"manifest is a {type(manifest).__name__}, expected an object")
    return manifest


def _bundle_sources(folder: Path) -> JobSources:
    manifest_file = folder / MANIFEST_NAME if is_run_bundle(folder) else None
    manifest = _read_manifest(manifest_file) if manifest_file is not None else None
    trace_files: dict[int, Path] = {}
    streams: dict[int, list[tuple[str, Path]]] = {}
    rank_manifests: dict[int, Path] = {0: manifest_file} if manifest_file is not None else {}
    try:
        entries = sorted(folder.iterdir())
    except PermissionError:
        raise TraceError(folder, "permission denied") from None
    for entry in entries:
        m = _BUNDLE_TRACE.match(entry.name)
        if m:
            rank = int(m.group(1))
            if rank in trace_files:
                raise TraceError(folder, f"two traces for rank {rank}: {trace_files[rank].name} and {entry.name}")
            trace_files[rank] = entry
            continue
        m = _BUNDLE_STREAM.match(entry.name)
        if m:
            streams.setdefault(int(m.group(1)), []).append((m.group(2), entry))
            continue
        m = _RANK_MANIFEST.match(entry.name)
        if m:
            rank_manifests[int(m.group(1))] = entry
    if not trace_files and not streams:
        raise TraceError(folder, "run bundle has no rank<N>.trace.json.gz and no rank<N>.*.jsonl files")
    ranks = sorted(set(trace_files) | set(streams))
    sources = tuple(RankSource(
        label=trace_files[r].name if r in trace_files else f"rank {r}", rank=r, trace_file=trace_files.get(r),
        stream_files=tuple(streams.get(r, ())), manifest_file=manifest_file,
        rank_manifest_file=rank_manifests.get(r), bundle=True) for r in ranks)
    missing = {}
    if manifest is not None:
        listed = _listed_ranks(manifest)
        missing = {r: f"no file of rank {r} in {folder.name} (the manifest lists ranks 0-{max(listed)})"
                   for r in listed if r not in set(ranks)}
    return JobSources(folder, folder, sources, bundle=True, manifest_file=manifest_file, missing=missing)


def _listed_ranks(manifest: dict) -> list[int]:
    """Ranks the manifest says the job had (its ``ranks``, else range(world_size)); [] when it does not say."""
    listed = manifest.get("ranks")
    if isinstance(listed, list) and all(isinstance(r, int) and not isinstance(r, bool) for r in listed):
        return sorted(set(listed))
    world = manifest.get("world_size")
    return list(range(world)) if isinstance(world, int) and not isinstance(world, bool) and world > 0 else []


def _attach_bundle_parts(trace: Trace, source: RankSource, manifest: dict | None) -> Trace:
    """``trace`` with the bundle's manifest, this rank's JSONL streams and their and the run status's warnings."""
    streams: dict[str, pd.DataFrame] = {}
    warns: list[str] = []
    for name, file in source.stream_files:
        frame, stream_warns = read_jsonl(file)
        streams[name] = frame
        warns.extend(stream_warns)
    if source.rank_manifest_file is None or source.rank_manifest_file == source.manifest_file:
        own = manifest
    else:
        own = _read_manifest(source.rank_manifest_file)
    status = run_status_warning(own)
    if status is not None:
        warns.append(status)
    meta = replace(trace.meta, manifest=manifest, warnings=trace.meta.warnings + tuple(warns))
    return replace(trace, meta=meta, streams=streams)


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
    bar = progress_bar(len(jobs), show)
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
    """What a progress bar offers, doing nothing (not a terminal, or one rank)."""

    def update(self, n: int) -> None:
        pass

    def set_postfix_str(self, text: str) -> None:
        pass

    def close(self) -> None:
        pass


def progress_bar(total: int, show: bool, description: str = "loading ranks"):
    """A tqdm bar over ``total`` ranks on stderr, or a silent stand-in when not shown or a single rank."""
    if not show or total < 2:
        return _NoBar()
    from tqdm import tqdm

    return tqdm(total=total, desc=description, unit="rank", file=sys.stderr, leave=False)
