"""Run discovery under the root and run-id resolution that never escapes it."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from torchscope.dashboard.runs import UnsafeRunId, discover_runs, resolve_run

TRAVERSALS = [
    "../outside.json.gz", "../../etc/passwd", "/etc/passwd", "sub/../../outside.json.gz", "..", ".",
    "~/x.json", "C:/Windows/win.ini", "sub\\..\\..\\outside.json.gz", "ok.json\x00.gz", "", "a" * 5000,
    "link_out.json.gz", "linkdir/inner.json.gz", "manifest.json",
]


def make_root(tmp_path: Path, shared_traces: Path) -> Path:
    root = tmp_path / "root"
    (root / "sub").mkdir(parents=True)
    bundle = root / "runs" / "exp1"
    bundle.mkdir(parents=True)
    small = shared_traces / "mi250_minitoy_train.json.gz"
    shutil.copy(small, root / "ok.json.gz")
    shutil.copy(small, root / "sub" / "nested.json.gz")
    shutil.copy(small, bundle / "rank0.trace.json.gz")
    (bundle / "manifest.json").write_text('{"schema_version": 1}')
    (bundle / "rank0.samples.jsonl").write_text("")
    (root / "notes.txt").write_text("not a trace")
    outside = tmp_path / "outside.json.gz"
    shutil.copy(small, outside)
    secret = tmp_path / "secretdir"
    secret.mkdir()
    shutil.copy(small, secret / "inner.json.gz")
    os.symlink(outside, root / "link_out.json.gz")
    os.symlink(secret, root / "linkdir")
    return root


def test_discover_runs_finds_traces_and_bundles_only(tmp_path, shared_traces):
    root = make_root(tmp_path, shared_traces)
    ids = [e.run_id for e in discover_runs(root)]
    assert ids == ["ok.json.gz", "runs/exp1", "sub/nested.json.gz"]  # no symlinks, no bundle members
    kinds = {e.run_id: e.kind for e in discover_runs(root)}
    assert kinds["runs/exp1"] == "bundle" and kinds["ok.json.gz"] == "trace"


def test_discover_runs_on_a_bundle_or_a_single_file(tmp_path, shared_traces):
    root = make_root(tmp_path, shared_traces)
    assert [e.run_id for e in discover_runs(root / "runs" / "exp1")] == ["."]
    assert [e.run_id for e in discover_runs(root / "ok.json.gz")] == ["ok.json.gz"]
    assert discover_runs(root / "notes.txt") == []
    assert discover_runs(tmp_path / "missing") == []


@pytest.mark.parametrize("run_id", TRAVERSALS)
def test_resolve_run_rejects_everything_outside_the_catalog(tmp_path, shared_traces, run_id):
    root = make_root(tmp_path, shared_traces)
    with pytest.raises(UnsafeRunId):
        resolve_run(root, run_id)


@pytest.mark.parametrize("bad", [None, 3, ["ok.json.gz"], {"a": 1}])
def test_resolve_run_rejects_non_strings(tmp_path, shared_traces, bad):
    root = make_root(tmp_path, shared_traces)
    with pytest.raises(UnsafeRunId):
        resolve_run(root, bad)


def test_resolve_run_accepts_catalog_ids(tmp_path, shared_traces):
    root = make_root(tmp_path, shared_traces)
    assert resolve_run(root, "sub/nested.json.gz").path == (root / "sub" / "nested.json.gz").resolve()
    assert resolve_run(root, "runs/exp1").kind == "bundle"
    assert resolve_run(root / "ok.json.gz", "ok.json.gz").path.name == "ok.json.gz"
    with pytest.raises(UnsafeRunId):  # the root is one file: its siblings are not served
        resolve_run(root / "ok.json.gz", "notes.txt")
