"""Shared fixtures: where the real traces are, and the CI rule that nothing skips silently.

The shared corpus of real Kineto traces lives beside the repository (``../shared/traces/public``),
never inside it; ``TORCHSCOPE_SHARED_TRACES`` points elsewhere. A clone without the corpus passes
``python -m pytest`` with those tests skipped (the reason says where it looked); in CI (``CI=true``)
the same tests fail instead. Every test that reads the corpus goes through `shared_traces` or
`shared_trace`, never through the path directly.

The whole session loads through a columnar cache in a temporary folder (`_isolated_trace_cache`), so
tests never read or write the user's real cache; subprocesses inherit it through the environment.
"""

from __future__ import annotations

import importlib
import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
#: The shared corpus: $TORCHSCOPE_SHARED_TRACES, else ../shared/traces/public beside the repository.
SHARED_TRACES = Path(os.environ.get("TORCHSCOPE_SHARED_TRACES") or REPO_ROOT.parent / "shared" / "traces" / "public")
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


def require_shared_traces() -> Path:
    """The shared corpus folder, or skip (fail in CI) when it is not there."""
    require_or_skip(SHARED_TRACES.is_dir(), f"shared traces not found at {SHARED_TRACES} "
                                            "(set TORCHSCOPE_SHARED_TRACES to their folder)")
    return SHARED_TRACES


def shared_trace(name: str) -> Path:
    """Path of one file of the shared corpus, or skip (fail in CI) when it is not there."""
    path = require_shared_traces() / name
    require_or_skip(path.is_file(), f"shared trace {name} not found in {SHARED_TRACES}")
    return path


@pytest.fixture(scope="session", autouse=True)
def _isolated_trace_cache(tmp_path_factory: pytest.TempPathFactory):
    """Point TORCHSCOPE_CACHE_DIR at a session-wide temporary folder, restored afterwards."""
    before = os.environ.get("TORCHSCOPE_CACHE_DIR")
    os.environ["TORCHSCOPE_CACHE_DIR"] = str(tmp_path_factory.mktemp("torchscope-cache"))
    yield Path(os.environ["TORCHSCOPE_CACHE_DIR"])
    if before is None:
        os.environ.pop("TORCHSCOPE_CACHE_DIR", None)
    else:
        os.environ["TORCHSCOPE_CACHE_DIR"] = before


@pytest.fixture(scope="session")
def shared_traces() -> Path:
    """Folder of the real Kineto traces shared beside the repository (never copied into it)."""
    return require_shared_traces()


@pytest.fixture(scope="session")
def sample_traces() -> Path:
    """Folder of the run bundles recorded by our own profiler."""
    return SAMPLE_TRACES
