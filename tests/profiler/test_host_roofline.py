"""The host roofline is measured once per host (the one test that really measures it) and cached."""

from __future__ import annotations

import json

import pytest

from torchscope.profiler import host_roofline as hr


@pytest.mark.slow
def test_measured_once_then_cached(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCHSCOPE_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(hr, "MATMUL_SECONDS", 0.3)
    monkeypatch.setattr(hr, "TRIAD_SECONDS", 0.3)
    first = hr.host_roofline()
    assert first["cached"] is False
    assert 1e8 < first["peak_flops"]["fp32"] < 1e14  # somewhere between a toy and a large server
    assert 1e8 < first["mem_bandwidth_bytes_per_s"] < 1e13
    assert first["cpu_model"] == hr.cpu_model()
    cache = json.loads((tmp_path / "host_roofline.json").read_text())
    assert len(cache) == 1 and next(iter(cache)).startswith(first["host"])

    def must_not_measure():
        raise AssertionError("measured again despite the cache")

    monkeypatch.setattr(hr, "measure_host_roofline", must_not_measure)
    second = hr.host_roofline()
    assert second["cached"] is True and second["peak_flops"] == first["peak_flops"]


def test_profile_records_cached_roofline_in_manifest(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCHSCOPE_CACHE_DIR", str(tmp_path))
    fake = {"peak_flops": {"fp32": 1.0e11}, "mem_bandwidth_bytes_per_s": 2.0e10, "cpu_model": hr.cpu_model()}
    (tmp_path / "host_roofline.json").write_text(json.dumps({hr._key(): fake}))
    from torchscope import profiler

    with profiler.profile(tmp_path / "run", kineto=False) as prof:
        prof.step()
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert manifest["host_roofline"]["peak_flops"] == {"fp32": 1.0e11}
    assert manifest["recorded"]["host_roofline"] is True
