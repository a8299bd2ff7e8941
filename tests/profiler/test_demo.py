"""record_demo() profiles the real GPT workload and returns a complete run folder."""

from __future__ import annotations

import json

import pytest

from torchscope.profiler import demo


@pytest.mark.slow
def test_record_demo(tmp_path, monkeypatch):
    monkeypatch.setattr(demo, "DEMO_STEPS", 10)
    monkeypatch.setenv("TORCHSCOPE_CACHE_DIR", str(tmp_path / "cache"))
    from torchscope.profiler import host_roofline as hr

    monkeypatch.setattr(hr, "MATMUL_SECONDS", 0.05)
    monkeypatch.setattr(hr, "TRIAD_SECONDS", 0.05)
    monkeypatch.setattr(hr, "TRIAD_ELEMENTS", 1 << 20)
    run = demo.record_demo(tmp_path / "demo")
    assert run == (tmp_path / "demo").resolve()
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["complete"] and manifest["steps"] == 10 and manifest["user_counts"]["tokens_per_step"] == 1024
    assert (run / "rank0.trace.json.gz").stat().st_size > 10_000
