"""Run status on load: a killed run (start-of-run manifest, or none) and a run ended by an error say so per rank."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from torchscope import analyzers
from torchscope.analyzers.io.loader import KILLED_RUN_WARNING, job_sources, load_rank, run_status_warning
from tests.conftest import require_or_skip

BUNDLE = "ddp_gloo_2rank"


@pytest.fixture()
def bundle(sample_traces: Path, tmp_path: Path) -> Path:
    src = sample_traces / BUNDLE
    require_or_skip(src.is_dir(), f"sample run {src} not recorded")
    dst = tmp_path / BUNDLE
    shutil.copytree(src, dst)
    return dst


def _rewrite(path: Path, **changes) -> None:
    doc = json.loads(path.read_text())
    doc.update(changes)
    path.write_text(json.dumps(doc))


def _status(trace) -> list[str]:
    return [w for w in trace.meta.warnings if w.startswith("incomplete:")]


def test_a_complete_run_has_no_status_warning(bundle: Path) -> None:
    traces = analyzers.load(bundle, cache=False)
    assert [_status(t) for t in traces] == [[], []]


def test_a_rank_killed_before_the_profiler_stopped_keeps_its_start_manifest(bundle: Path) -> None:
    # What profiler/session.py writes at start: no end time, not complete.
    _rewrite(bundle / "manifest.rank1.json", ended_at_ns=None, complete=False, ended_by=None, incomplete_reason=None)
    traces = analyzers.load(bundle, cache=False)
    assert _status(traces[0]) == []
    assert _status(traces[1]) == [KILLED_RUN_WARNING]
    assert KILLED_RUN_WARNING == "incomplete: the job ended without stopping the profiler"
    # One rank loaded on its own (the per-rank task) says the same.
    source = next(s for s in job_sources(bundle).sources if s.rank == 1)
    assert _status(load_rank(source, cache=False)) == [KILLED_RUN_WARNING]


def test_a_run_ended_by_an_exception_gives_its_reason(bundle: Path) -> None:
    _rewrite(bundle / "manifest.json", complete=False, incomplete_reason="KeyboardInterrupt in the training loop")
    traces = analyzers.load(bundle, cache=False)
    assert _status(traces[0]) == ["incomplete: KeyboardInterrupt in the training loop"]
    assert _status(traces[1]) == []  # rank 1's own manifest says it stopped normally


def test_a_bundle_without_any_manifest_is_a_killed_run(bundle: Path) -> None:
    for manifest in bundle.glob("manifest*.json"):
        manifest.unlink()
    traces = analyzers.load(bundle, cache=False)
    assert sorted(traces.ranks) == [0, 1]
    assert all(_status(t) == [KILLED_RUN_WARNING] for t in traces)
    assert all(not t.streams["steps"].empty for t in traces)  # the JSONL streams are still attached


def test_status_from_a_manifest() -> None:
    assert run_status_warning({"complete": True, "ended_at_ns": 5}) is None
    assert run_status_warning({"complete": False, "ended_at_ns": None}) == KILLED_RUN_WARNING
    assert run_status_warning(None) == KILLED_RUN_WARNING
    assert run_status_warning({"complete": False, "ended_at_ns": 5}) == "incomplete: the run did not end normally"
    assert run_status_warning({"schema_version": 1}) is None  # an older manifest that does not say


def test_job_sources_reads_no_trace_and_names_missing_ranks(bundle: Path) -> None:
    (bundle / "rank1.trace.json.gz").unlink()
    for stream in bundle.glob("rank1.*.jsonl"):
        stream.unlink()
    job = job_sources(bundle)
    assert [s.rank for s in job.sources] == [0] and job.bundle
    assert list(job.missing) == [1] and "no file of rank 1" in job.missing[1]
