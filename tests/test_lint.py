"""The repository passes the lint configured in pyproject.toml ([tool.ruff]): pyflakes' rules and syntax errors."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.conftest import require_module

REPO = Path(__file__).resolve().parents[1]


def test_ruff_finds_nothing_under_the_configured_rules():
    require_module("ruff")
    done = subprocess.run([sys.executable, "-m", "ruff", "check", "--no-cache", "--quiet", str(REPO)], cwd=REPO,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    assert "[tool.ruff.lint]" in (REPO / "pyproject.toml").read_text()  # the rules it ran are the project's
