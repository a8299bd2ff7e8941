"""`trace-diff --no-cache`: the diff parses both runs again and leaves the columnar cache untouched."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import pytest

from torchscope.analyzers.io import cache as cache_mod
from torchscope.cli import main, trace_diff_main


def _old_copy(source: Path, dst: Path) -> Path:
    shutil.copyfile(source, dst)
    t = time.time() - 3600  # older than the cache's racy window, so a load would store it
    os.utime(dst, (t, t))
    return dst


def _entries(folder: Path) -> list[Path]:
    return [p for p in folder.iterdir() if not p.name.startswith(".")] if folder.is_dir() else []


def test_trace_diff_no_cache_writes_no_entry(shared_traces: Path, tmp_path: Path, monkeypatch, capsys) -> None:
    folder = tmp_path / "cache"
    monkeypatch.setenv(cache_mod.ENV_CACHE_DIR, str(folder))
    monkeypatch.delenv(cache_mod.ENV_NO_CACHE, raising=False)
    base = _old_copy(shared_traces / "job128_rank0.json.gz", tmp_path / "base.json.gz")
    new = _old_copy(shared_traces / "job128_rank1.json.gz", tmp_path / "new.json.gz")
    code = trace_diff_main([str(base), str(new), "--no-cache", "--fail-on", "never"])
    assert code == 0 and _entries(folder) == []
    assert os.environ.get(cache_mod.ENV_NO_CACHE) is None  # the flag does not outlive the command
    assert main(["diff", str(base), str(new), "--fail-on", "never"]) == 0
    assert len(_entries(folder)) == 2  # without the flag both runs are stored
    capsys.readouterr()


def test_no_cache_is_in_the_help(capsys) -> None:
    with pytest.raises(SystemExit):
        trace_diff_main(["--help"])
    assert "--no-cache" in capsys.readouterr().out
