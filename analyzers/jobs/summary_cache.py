"""The rank-summary cache: each rank task's `RankSummary` kept on disk, so a job opened again loads no trace.

Beside the trace cache (`torchscope.analyzers.io.cache`), in its folder's ``rank-summaries/``
sub-folder, with the same machinery (`EntryFolder`): an entry is written in a temporary folder and
renamed into place, the least recently used entries go once the folder holds more than
``$TORCHSCOPE_CACHE_MAX_BYTES`` (this folder on its own), a damaged entry is dropped with a
`CacheWarning` and the rank analyzed again, and ``cache=False`` / ``--no-cache`` /
``TORCHSCOPE_NO_CACHE=1`` turn it off with the trace cache. No pickle: an entry is a JSON document
and Parquet files (`torchscope.analyzers.io.tree_store`), read back only into the records of the
analyzer modules.

The key of a rank's entry is everything its summary follows from:

- the rank's files as they are now: the trace cache's key of its trace file (path, name, inode,
  size, mtime, rank, loader version) and the path, inode, size and mtime of its JSONL streams and
  manifests (a running job appends to its streams and rewrites its manifest at the end);
- what the task was asked: the analyzers (``only``), their options, the rows a table is cut to;
- the analyzers' version: `ANALYZERS_VERSION` (bump it when results change in a way the next item
  misses) and a hash of the analyzers' source files, registry and the versions of numpy, pandas
  and pyarrow (`analyzers_fingerprint`): an edited analyzer invalidates every summary by itself.

A rank whose files changed less than the trace cache's racy window ago, or changed while it was being
analyzed, is not stored; nor is a summary holding a value the format would not give back exactly.
"""

from __future__ import annotations

import functools
import hashlib
import time
from dataclasses import replace
from pathlib import Path
from typing import Mapping

import orjson

from torchscope.analyzers.core.registry import ANALYZER_MODULES, JobLevelRun, load_analyzers
from torchscope.analyzers.io.cache import (ENTRY_FILE, RACY_WINDOW_S, SUMMARY_FOLDER, EntryFolder, cache_disabled_by_env,
                                           cache_max_bytes, default_cache_dir, trace_key)
from torchscope.analyzers.io.loader import LOADER_VERSION, RankSource
from torchscope.analyzers.io.tree_store import TREE_FILE, Unstorable, read_tree, tree_files
from torchscope.analyzers.jobs.summary import SUMMARY_TABLE_ROWS, RankSummary, TaskSettings

__all__ = ["SummaryCache", "NoSummaryCache", "open_summary_cache", "analyzers_fingerprint", "ANALYZERS_VERSION",
           "SUMMARY_FORMAT", "RECORD_MODULES"]

#: Bump when an analyzer's results change without a change to the analyzers' source (e.g. a dependency's).
ANALYZERS_VERSION = "1"
#: Layout of a summary entry; bump when `RankSummary` or what this module stores of it changes.
SUMMARY_FORMAT = 1
#: Modules whose dataclasses an entry may hold (a summary, its run, results, findings, skeleton, parts).
RECORD_MODULES: frozenset[str] = frozenset({
    "torchscope.analyzers.jobs.summary", "torchscope.analyzers.core.registry", "torchscope.analyzers.core.result",
    "torchscope.analyzers.core.findings", "torchscope.analyzers.core.trace", *ANALYZER_MODULES})
_ANALYZERS_PACKAGE = Path(__file__).resolve().parents[1]


@functools.lru_cache(maxsize=1)
def analyzers_fingerprint() -> str:
    """A hash of what the analyzers compute with: their source files, the registry, numpy/pandas/pyarrow versions."""
    import numpy
    import pandas
    import pyarrow

    digest = hashlib.sha256()
    digest.update(orjson.dumps([ANALYZERS_VERSION, numpy.__version__, pandas.__version__, pyarrow.__version__]))
    for name, spec in load_analyzers().items():
        digest.update(orjson.dumps([name, spec.scope, list(spec.needs), spec.func.__module__]))
    for path in sorted(_ANALYZERS_PACKAGE.rglob("*.py")):  # an installed wheel has them too
        try:
            digest.update(path.relative_to(_ANALYZERS_PACKAGE).as_posix().encode())
            digest.update(path.read_bytes())
        except OSError:
            continue
    return digest.hexdigest()[:20]


class NoSummaryCache:
    """The summary cache turned off: every lookup misses, nothing is written."""

    def key(self, source: RankSource, settings: TaskSettings) -> str | None:
        """No key: nothing is looked up."""
        return None

    def get(self, key: str, source: RankSource) -> RankSummary | None:
        """Always a miss."""
        return None

    def put(self, key: str, source: RankSource, settings: TaskSettings, summary: RankSummary) -> bool:
        """Writes nothing."""
        return False

    def job_level_key(self, summaries: Mapping[int, RankSummary]) -> str | None:
        """No key: nothing is looked up."""
        return None

    def get_job_level(self, key: str, path: Path) -> JobLevelRun | None:
        """Always a miss."""
        return None

    def put_job_level(self, key: str, level: JobLevelRun) -> bool:
        """Writes nothing."""
        return False


class SummaryCache(EntryFolder):
    """Rank summaries (and the job-level pass over them) as JSON + Parquet entries in one folder, LRU-bounded."""

    without = "analyzing without the summary cache"

    def key(self, source: RankSource, settings: TaskSettings) -> str | None:
        """The entry name of ``source`` as its files are now, for ``settings`` (None: not cacheable)."""
        found = self._key_and_newest(source, settings)
        return found[0] if found else None

    def _key_and_newest(self, source: RankSource, settings: TaskSettings) -> tuple[str, int] | None:
        files = [("manifest", source.manifest_file), ("rank_manifest", source.rank_manifest_file),
                 *source.stream_files]
        parts: list = [SUMMARY_FORMAT, analyzers_fingerprint(), source.label, source.rank, source.bundle,
                       SUMMARY_TABLE_ROWS]
        newest = 0
        if source.trace_file is not None:
            found = trace_key(source.trace_file, source.rank, LOADER_VERSION)
            if found is None:
                return None
            parts += [str(source.trace_file), found[0]]
            newest = found[1]
        for role, path in files:
            stat = _stat(path) if path is not None else None
            if path is not None and stat is None:
                return None
            parts.append([role, str(path) if path is not None else None, stat])
            newest = max(newest, stat[-1] if stat else 0)
        parts.append(sorted(set(settings.only)) if settings.only is not None else None)
        try:
            parts.append(orjson.loads(orjson.dumps(dict(settings.options), option=orjson.OPT_SORT_KEYS)))
            blob = orjson.dumps(parts, option=orjson.OPT_SORT_KEYS)
        except (orjson.JSONEncodeError, TypeError):  # options JSON cannot spell: no key, no caching
            return None
        return hashlib.sha256(blob).hexdigest()[:40], newest

    def get(self, key: str, source: RankSource) -> RankSummary | None:
        """The summary stored under ``key`` (``cached`` True, ``cache_key`` set), or None on a miss."""
        summary = self._read(key, Path(source.trace_file or source.label), RankSummary, "analyzing the rank again")
        return replace(summary, cached=True, cache_key=key) if summary is not None else None

    def put(self, key: str, source: RankSource, settings: TaskSettings, summary: RankSummary) -> bool:
        """Store ``summary`` under ``key`` unless the rank's files changed since (or too recently to tell);
        True when it is stored."""
        if self.off:
            return False
        now = self._key_and_newest(source, settings)
        if now is None or now[0] != key or time.time_ns() - now[1] < RACY_WINDOW_S * 1e9:
            return False
        return self._write(key, replace(summary, cached=False, cache_key=None))

    # -- the job-level pass ------------------------------------------------------------------------
    def job_level_key(self, summaries: Mapping[int, RankSummary]) -> str | None:
        """The entry name of the job-level pass over ``summaries`` (None unless every one has a cache key).

        A rank's key already holds the analyzers asked, their options and the analyzers' version, and
        the job-level pass is a function of the ranks' parts and those alone.
        """
        keys = [[rank, summary.cache_key] for rank, summary in sorted(summaries.items())]
        if self.off or not keys or any(key is None for _, key in keys):
            return None
        return hashlib.sha256(orjson.dumps(["job level", SUMMARY_FORMAT, keys])).hexdigest()[:40]

    def get_job_level(self, key: str, path: Path) -> JobLevelRun | None:
        """The job-level pass stored under ``key``, or None on a miss (``path``: the job, for messages)."""
        return self._read(key, path, JobLevelRun, "running the job-level analyses again")

    def put_job_level(self, key: str, level: JobLevelRun) -> bool:
        """Store the job-level pass under ``key``; True when it is stored."""
        return False if self.off else self._write(key, level)

    # -- entries -----------------------------------------------------------------------------------
    def _read(self, key: str, path: Path, kind: type, instead: str):
        found = self.marker(key, path)
        if found is None:
            return None
        entry, blob = found
        try:
            value = read_tree(entry, blob, RECORD_MODULES)
            if type(value) is not kind:
                raise ValueError(f"holds a {type(value).__name__}, not a {kind.__name__}")
        except FileNotFoundError as exc:
            if not (entry / ENTRY_FILE).exists():  # evicted by another process while we read it
                return None
            return self.discard(entry, path, f"missing {Path(exc.filename or '?').name}", instead)
        except Exception as exc:  # noqa: BLE001 - any damage to an entry means: compute it again
            return self.discard(entry, path, f"{type(exc).__name__}: {exc}", instead)
        self.touch(entry)
        return value

    def _write(self, key: str, value: object) -> bool:
        try:
            files = tree_files(value, RECORD_MODULES)
        except Unstorable:
            return False
        # The document is written last: it is the entry's marker.
        self.store(key, [(ENTRY_FILE if name == TREE_FILE else name, write) for name, write in files])
        return not self.off


def _stat(path: Path) -> list | None:
    """[resolved path, inode, size, mtime_ns] of ``path``, None when it cannot be stat'ed."""
    try:
        resolved = Path(path).resolve()
        st = resolved.stat()
    except OSError:
        return None
    return [str(resolved), st.st_ino, st.st_size, st.st_mtime_ns]


def open_summary_cache(enabled: bool | None = None, folder: str | None = None) -> SummaryCache | NoSummaryCache:
    """The summary cache in ``folder`` (None: the default cache folder): off when ``enabled`` is False (or None
    and $TORCHSCOPE_NO_CACHE is set)."""
    if enabled is False or (enabled is None and cache_disabled_by_env()):
        return NoSummaryCache()
    root = Path(folder) if folder is not None else default_cache_dir()
    return SummaryCache(root / SUMMARY_FOLDER, max_bytes=cache_max_bytes())
