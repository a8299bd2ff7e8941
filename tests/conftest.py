"""Shared fixtures: where the real traces are, and the CI rule that nothing skips silently."""

from __future__ import annotations

import importlib
import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_TRACES = REPO_ROOT.parent / "shared" / "traces" / "public"
SAMPLE_TRACES = REPO_ROOT / "sample_traces"
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def require_or_skip(condition: bool, reason: str) -> None:
    """Skip when ``condition`` is false — except in CI, where a missing prerequisite fails the test."""
    if condition:
        return
    if IN_CI:
        pytest.fail(f"missing in CI (must not skip): {reason}")
    pytest.skip(reason)


def require_module(name: str):
    """Import ``name`` or skip (fail in CI) when it is not installed."""
    try:
        return importlib.import_module(name)
    except ImportError as exc:
        require_or_skip(False, f"{name} is not installed ({exc})")


@pytest.fixture(scope="session")
def shared_traces() -> Path:
    """Folder of the real Kineto traces shared beside the repository (never copied into it)."""
    require_or_skip(SHARED_TRACES.is_dir(), f"shared traces not found at {SHARED_TRACES}")
    return SHARED_TRACES


@pytest.fixture(scope="session")
def sample_traces() -> Path:
    """Folder of the run bundles recorded by our own profiler."""
    return SAMPLE_TRACES
