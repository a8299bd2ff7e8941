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
  misses) and a hash of the source of the modules the analyzers asked import (read from their
  ``import`` statements, through the whole analyzers package: the loader, timeline, core ...), their
  wiring in the registry and the versions of numpy, pandas and pyarrow (`analyzers_fingerprint`): an
  edited analyzer invalidates the summaries it is part of by itself, and only those.

A rank whose files changed less than the trace cache's racy window ago, or changed while it was being
analyzed, is not stored; nor is a summary holding a value the format would not give back exactly.
"""

from __future__ import annotations

import functools
import hashlib
import re
import time
from dataclasses import replace
from pathlib import Path
from typing import Iterable, Mapping

import orjson

from torchscope.analyzers.core.registry import ANALYZER_MODULES, JobLevelRun, load_analyzers, select
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
#: Modules every summary follows from besides its analyzers' (the task; through its imports the loader, the
#: summary's records and their storage).
_TASK_MODULES = ("torchscope.analyzers.jobs.rank_task",)
_PACKAGE = "torchscope.analyzers"
_ANALYZERS_PACKAGE = Path(__file__).resolve().parents[1]


def analyzers_fingerprint(names: Iterable[str]) -> str:
    """A hash of what analyzers ``names`` compute with: the source of their modules and of every module of
    the analyzers package those import (the task's and loader's too), the registry's wiring of them, and the
    versions of numpy, pandas and pyarrow. An analyzer edited elsewhere does not change it."""
    specs = load_analyzers()
    chosen = sorted({name for name in names if name in specs})
    return _fingerprint(tuple(chosen))


@functools.lru_cache(maxsize=32)
def _fingerprint(names: tuple[str, ...]) -> str:
    import numpy
    import pandas
    import pyarrow

    specs = load_analyzers()
    digest = hashlib.sha256()
    digest.update(orjson.dumps([ANALYZERS_VERSION, numpy.__version__, pandas.__version__, pyarrow.__version__]))
    roots = set(_TASK_MODULES)
    for name in names:
        spec = specs[name]
        digest.update(orjson.dumps([name, spec.scope, list(spec.needs), spec.func.__module__]))
        roots.add(spec.func.__module__)
        if spec.reduce is not None:
            roots.add(spec.reduce.__module__)
    for path in sorted(_imported_files(frozenset(roots))):
        try:
            digest.update(path.relative_to(_ANALYZERS_PACKAGE).as_posix().encode())
            digest.update(path.read_bytes())
        except OSError:  # no source (a build without .py files): the versions above still hold
            continue
    return digest.hexdigest()[:20]


def _module_file(module: str) -> Path | None:
    """The source file of a module of the analyzers package (None: not one of its modules)."""
    if module != _PACKAGE and not module.startswith(_PACKAGE + "."):
        return None
    parts = module.split(".")[2:]
    base = _ANALYZERS_PACKAGE.joinpath(*parts)
    for path in (base.with_suffix(".py"), base / "__init__.py"):
        if path.is_file():
            return path
    return None


#: An import statement at the start of a line: ``from X import names`` (parenthesised names may span lines) or
#: ``import X, Y``. Read as text, not parsed (parsing the package costs ~0.2 s): an import spelled in a docstring
#: counts too, which only ever adds a file to the hash.
_IMPORT = re.compile(rb"^[ \t]*(?:from[ \t]+([\w.]+)[ \t]+import[ \t]+(\([^)]*\)|[^\n#]*)|import[ \t]+([^\n#]+))", re.M)


def _imported_files(roots: frozenset[str]) -> set[Path]:
    """Source files of ``roots`` and of every analyzers module they import, directly or not (an import inside a
    function counts too), with their packages' ``__init__`` files."""
    seen: set[str] = set()
    files: set[Path] = set()
    todo = list(roots)
    while todo:
        module = todo.pop()
        if module in seen:
            continue
        seen.add(module)
        path = _module_file(module)
        if path is None:
            continue
        files.add(path)
        parent = module.rpartition(".")[0]
        if parent.startswith(_PACKAGE):
            todo.append(parent)
        try:
            text = path.read_bytes()
        except OSError:
            continue
        package = module if path.name == "__init__.py" else parent
        for match in _IMPORT.finditer(text):
            source, names, plain = (g.decode() if g is not None else None for g in match.groups())
            if plain is not None:
                todo.extend(name.split()[0] for name in plain.split(",") if name.strip())
                continue
            if source.startswith("."):  # relative: one dot is this package
                level = len(source) - len(source.lstrip("."))
                anchor = package.split(".")[: len(package.split(".")) - level + 1]
                source = ".".join(anchor + ([source.lstrip(".")] if source.lstrip(".") else []))
            todo.append(source)
            todo.extend(f"{source}.{name.split()[0]}" for name in names.strip("()").split(",") if name.strip())
    return files


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
        specs, _ = select(settings.only)
        parts: list = [SUMMARY_FORMAT, analyzers_fingerprint(specs), source.label, source.rank, source.bundle,
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
