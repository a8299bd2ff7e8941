"""Fixtures shared by the analyzer tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from torchscope.analyzers.io import cache as cache_mod


@pytest.fixture
def cache_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh, empty cache folder for this test only (the trace cache and the rank-summary cache)."""
    folder = tmp_path / "cache"
    monkeypatch.setenv(cache_mod.ENV_CACHE_DIR, str(folder))
    monkeypatch.delenv(cache_mod.ENV_NO_CACHE, raising=False)
    monkeypatch.delenv(cache_mod.ENV_CACHE_MAX_BYTES, raising=False)
    return folder
