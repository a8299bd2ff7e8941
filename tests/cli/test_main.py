"""The command line: one entry point, subcommands, the trace-diff alias, exit codes."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest

from torchscope.cli import build_parser, main


def test_help_lists_working_subcommands(capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as info:
        main(["--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    for command in ("info", "analyze", "diff", "dashboard"):
        assert command in out


def test_unknown_subcommand_is_a_usage_error(capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as info:
        main(["frobnicate"])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1


def test_info_json_on_a_shared_trace(shared_traces, capsys: pytest.CaptureFixture) -> None:
    assert main(["info", str(shared_traces / "job128_rank1.json.gz"), "--format", "json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["schema_version"] == 1
    (rank,) = doc["ranks"]
    assert rank["rank"] == 1 and rank["world_size"] == 128 and rank["steps"] == 2
    assert rank["events_by_kind"]["kernel"] == 1104


def test_console_scripts_are_installed() -> None:
    for script in ("torchscope", "trace-diff"):
        assert shutil.which(script), f"{script} not on PATH: install with pip install -e ."
    proc = subprocess.run(["trace-diff", "--help"], capture_output=True, text=True)
    assert proc.returncode == 0 and "BASE" in proc.stdout.upper()


def test_every_subcommand_parser_has_a_handler() -> None:
    parser = build_parser()
    sub = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction")
    assert sub.choices
    for name, p in sub.choices.items():
        assert callable(p.get_default("func")), name


def test_python_dash_m_entry_point(shared_traces) -> None:
    proc = subprocess.run([sys.executable, "-m", "torchscope", "info", str(shared_traces / "cpu_only_rank34.json.gz")],
                          capture_output=True, text=True)
    assert proc.returncode == 0 and "rank 34 of 300" in proc.stdout
