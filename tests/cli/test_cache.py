"""The columnar cache from the command line: `--no-cache` on analyze, info and export; warnings as one line."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from torchscope.analyzers.io import cache as cache_mod
from torchscope.cli import main


@pytest.fixture
def cache_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh cache folder for this test only."""
    folder = tmp_path / "cache"
    monkeypatch.setenv(cache_mod.ENV_CACHE_DIR, str(folder))
    monkeypatch.delenv(cache_mod.ENV_NO_CACHE, raising=False)
    return folder


def _entries(folder: Path) -> list[Path]:
    return [p for p in folder.iterdir() if not p.name.startswith(".")] if folder.is_dir() else []


def _old_copy(shared_traces: Path, tmp_path: Path, name: str = "job128_rank1.json.gz") -> Path:
    dst = tmp_path / name
    shutil.copyfile(shared_traces / name, dst)
    t = time.time() - 3600  # older than the cache's racy window
    os.utime(dst, (t, t))
    return dst


@pytest.mark.parametrize("command", ["info", "analyze", "export"])
def test_no_cache_writes_no_entry_and_the_default_writes_one(command: str, shared_traces: Path, tmp_path: Path,
                                                             cache_dir: Path, capsys: pytest.CaptureFixture) -> None:
    path = str(_old_copy(shared_traces, tmp_path))
    extra = ["-o", str(tmp_path / "out.json.gz"), "--no-findings"] if command == "export" else []
    assert main([command, path, "--no-cache", *extra]) == 0
    assert _entries(cache_dir) == []
    assert os.environ.get(cache_mod.ENV_NO_CACHE) is None  # the flag does not outlive the command
    assert main([command, path, *extra]) == 0
    assert len(_entries(cache_dir)) == 1
    capsys.readouterr()


def test_info_from_the_cache_prints_what_a_parse_prints(shared_traces: Path, tmp_path: Path, cache_dir: Path,
                                                        capsys: pytest.CaptureFixture) -> None:
    path = str(_old_copy(shared_traces, tmp_path))
    outputs = []
    for argv in (["--no-cache"], [], []):  # parse, parse and store, read the entry
        assert main(["info", path, "--format", "json", *argv]) == 0
        outputs.append(json.loads(capsys.readouterr().out))
    assert outputs[0] == outputs[1] == outputs[2]
    assert outputs[2]["ranks"][0]["events_by_kind"]["kernel"] == 1104


def test_a_damaged_entry_is_one_warning_line_and_the_command_succeeds(shared_traces: Path, tmp_path: Path,
                                                                      cache_dir: Path) -> None:
    path = str(_old_copy(shared_traces, tmp_path))
    env = {**os.environ, cache_mod.ENV_CACHE_DIR: str(cache_dir)}
    cmd = [sys.executable, "-c", "import sys; from torchscope.cli import main; sys.exit(main())", "info", path]
    assert subprocess.run(cmd, env=env, capture_output=True, text=True).returncode == 0
    (entry,) = _entries(cache_dir)
    (entry / "events.parquet").write_bytes(b"PAR1 not really")
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    assert proc.returncode == 0 and "rank 1 of 128" in proc.stdout
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("torchscope: warning:") and "damaged cache entry" in lines[0]


def test_the_environment_switch_turns_the_cache_off_for_every_command(shared_traces: Path, tmp_path: Path,
                                                                     cache_dir: Path, monkeypatch) -> None:
    monkeypatch.setenv(cache_mod.ENV_NO_CACHE, "1")
    path = str(shared_traces / "mi250_minitoy_train.json.gz")
    assert main(["info", path]) == 0
    assert main(["analyze", path, "--format", "json"]) == 0
    assert main(["export", path, "-o", str(tmp_path / "out.json.gz"), "--no-findings"]) == 0
    assert _entries(cache_dir) == []
