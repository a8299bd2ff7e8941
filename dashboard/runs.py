"""The run catalog: which runs live under the dashboard's root folder, and safe run-id resolution.

A *run id* is the POSIX path of a run relative to the root ("." when the root itself is the run).
A run is a run-bundle folder (it has ``manifest.json`` or ``rank<N>.trace.json.gz`` files), or a
single Chrome-trace file (``.json`` / ``.json.gz``) that is not inside a bundle.

Every run id that reaches the server (URL query strings, callback inputs, download links) goes
through `resolve_run`, which only accepts ids of runs in the catalog and whose real path lies
inside the root. Nothing outside the root is ever read or served.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

__all__ = ["RunEntry", "UnsafeRunId", "discover_runs", "resolve_run", "MAX_SCAN_DEPTH", "MAX_RUNS"]

#: Folders deeper than this below the root are not scanned for runs.
MAX_SCAN_DEPTH = 4
#: At most this many runs are listed (a huge folder must not stall the Runs page).
MAX_RUNS = 500
_TRACE_SUFFIXES = (".json", ".json.gz")
_RANK_TRACE = re.compile(r"^rank\d+\.trace\.json(\.gz)?$")
_SKIP_FILE = re.compile(r"^manifest(\.rank\d+)?\.json$")
_MAX_ID_LENGTH = 1024


class UnsafeRunId(ValueError):
    """A run id that is not a run under the root (escapes it, is malformed, or is unknown)."""


@dataclass(frozen=True)
class RunEntry:
    """One run found under the root: its id, absolute path, kind ("bundle" | "trace"), size and mtime."""

    run_id: str
    path: Path
    kind: str
    size_bytes: int
    mtime_ns: int

    @property
    def label(self) -> str:
        """Short name shown in pickers."""
        return self.path.name if self.run_id == "." else self.run_id


def _is_trace_file(path: Path) -> bool:
    name = path.name
    return name.endswith(_TRACE_SUFFIXES) and not _SKIP_FILE.match(name)


def _is_bundle(folder: Path) -> bool:
    try:
        names = os.listdir(folder)
    except OSError:
        return False
    return "manifest.json" in names or any(_RANK_TRACE.match(n) for n in names)


def _entry(root: Path, path: Path, kind: str) -> RunEntry:
    rel = path.relative_to(root)
    run_id = rel.as_posix() if rel.parts else "."
    if kind == "bundle":
        files = [p for p in path.iterdir() if p.is_file()]
        size = sum(p.stat().st_size for p in files)
        mtime = max((p.stat().st_mtime_ns for p in files), default=path.stat().st_mtime_ns)
    else:
        st = path.stat()
        size, mtime = st.st_size, st.st_mtime_ns
    return RunEntry(run_id, path, kind, size, mtime)


def discover_runs(root: str | Path) -> list[RunEntry]:
    """Every run under ``root`` (a folder of runs, a bundle, or one trace file), sorted by id."""
    root = Path(root).resolve()
    if root.is_file():
        return [RunEntry(root.name, root, "trace", root.stat().st_size, root.stat().st_mtime_ns)] \
            if _is_trace_file(root) else []
    if not root.is_dir():
        return []
    if _is_bundle(root):
        return [_entry(root, root, "bundle")]
    found: list[RunEntry] = []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        here = Path(dirpath)
        depth = len(here.relative_to(root).parts)
        dirnames.sort()
        keep = []
        for d in dirnames:
            sub = here / d
            if d.startswith(".") or sub.is_symlink():
                continue
            if _is_bundle(sub):
                found.append(_entry(root, sub, "bundle"))
            elif depth + 1 < MAX_SCAN_DEPTH:
                keep.append(d)
        dirnames[:] = keep
        for f in sorted(filenames):
            p = here / f
            if not f.startswith(".") and not p.is_symlink() and _is_trace_file(p):
                found.append(_entry(root, p, "trace"))
        if len(found) >= MAX_RUNS:
            break
    return sorted(found, key=lambda e: e.run_id)[:MAX_RUNS]


def _check_syntax(run_id: object) -> str:
    """The run id as a clean relative POSIX path string, or UnsafeRunId."""
    if not isinstance(run_id, str) or not run_id:
        raise UnsafeRunId("run id must be a non-empty string")
    if len(run_id) > _MAX_ID_LENGTH or "\x00" in run_id or "\\" in run_id:
        raise UnsafeRunId(f"malformed run id {run_id[:80]!r}")
    pure = PurePosixPath(run_id)
    if pure.is_absolute() or run_id.startswith("~") or ".." in pure.parts or re.match(r"^[A-Za-z]:", run_id):
        raise UnsafeRunId(f"run id {run_id[:80]!r} escapes the root folder")
    return run_id


def resolve_run(root: str | Path, run_id: object, catalog: list[RunEntry] | None = None) -> RunEntry:
    """The catalog entry for ``run_id``; UnsafeRunId when it escapes ``root`` or names no run."""
    run_id = _check_syntax(run_id)
    root_real = Path(root).resolve()
    base = root_real.parent if root_real.is_file() else root_real
    entries = discover_runs(root_real) if catalog is None else catalog
    for entry in entries:
        if entry.run_id == run_id:
            real = entry.path.resolve()
            if real != base and not real.is_relative_to(base):
                raise UnsafeRunId(f"run id {run_id!r} escapes the root folder")
            return entry
    raise UnsafeRunId(f"no run {run_id[:80]!r} under the root folder")
