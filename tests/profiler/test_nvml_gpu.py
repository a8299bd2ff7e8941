"""nvml.py / nvml_sampler.py and the CUDA paths of session.py on real hardware. They need an NVIDIA
GPU with a driver; CI and this project's dev machines have none, so these skip there (the only skips
allowed in the profiler tests)."""

from __future__ import annotations

import json

import pytest
import torch

from torchscope.profiler.nvml import get_nvml

_NVML = get_nvml()
HAS_GPU = _NVML.available and bool(_NVML.devices()) and torch.cuda.is_available()
NO_GPU_REASON = "needs an NVIDIA GPU with a driver (NVML + CUDA); this machine has none: " + \
    str(getattr(_NVML, "detail", None) or "torch.cuda.is_available() is False")

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not HAS_GPU, reason=NO_GPU_REASON)]


def test_real_nvml_reads_every_cheap_field():
    from torchscope.profiler.nvml_sampler import NvmlSampler

    sampler = NvmlSampler(get_nvml(), interval_s=0.05)
    lines = sampler.sample(t_ns=1)
    readings = [x for x in lines if "event" not in x]
    assert readings and all(0 < x["power_mw"] < 2_000_000 for x in readings if "power_mw" in x)
    assert all(x["mem_used_bytes"] > 0 for x in readings if "mem_used_bytes" in x)
    sampler.close()


def test_cuda_training_bundle_has_kernels_power_and_cuda_memory(tmp_path):
    from torchscope import profiler
    from tests.profiler.workloads_for_tests import TinyNet

    model = TinyNet().cuda()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with profiler.profile(tmp_path / "run", model=model, host_roofline=False) as prof:
        for _ in range(6):
            x = torch.randint(0, 50, (8, 16), device="cuda")
            loss = model(x).float().mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
            prof.step()
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert manifest["recorded"]["power"] and manifest["recorded"]["cuda_memory"] and manifest["devices"]
    samples = [json.loads(x) for x in (tmp_path / "run" / "rank0.samples.jsonl").read_text().splitlines()]
    assert {"nvml", "cuda_mem", "host"} <= {x["source"] for x in samples}
    import gzip

    with gzip.open(tmp_path / "run" / "rank0.trace.json.gz") as fh:
        trace = json.load(fh)
    assert any(e.get("cat") == "kernel" for e in trace["traceEvents"])
    assert any(e.get("name") == "power_w" for e in trace["traceEvents"] if e.get("ph") == "C")
