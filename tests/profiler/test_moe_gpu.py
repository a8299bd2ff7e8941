"""RouterRecorder on a real CUDA device: the router hooks must not synchronise with the host.

Needs an NVIDIA GPU; skips elsewhere (like tests/profiler/test_nvml_gpu.py)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from torchscope.profiler.moe import FOLD_CALLS, RouterRecorder

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]


class ListWriter:
    def __init__(self) -> None:
        self.lines: list[dict] = []

    def write(self, obj: dict) -> None:
        self.lines.append(obj)


class CudaTopKRouter(nn.Module):
    """A transformers-5-style router: (logits, top-k weights, top-k indices), no host reads."""

    def __init__(self, hidden: int = 64, num_experts: int = 16, top_k: int = 4) -> None:
        super().__init__()
        self.num_experts, self.top_k = num_experts, top_k
        self.weight = nn.Parameter(torch.randn(num_experts, hidden))

    def forward(self, x: torch.Tensor):
        logits = x @ self.weight.t()
        weights, indices = logits.softmax(-1).topk(self.top_k, dim=-1)
        return logits, weights, indices


def test_router_hooks_do_not_synchronize_and_count_exactly():
    torch.manual_seed(0)
    router = CudaTopKRouter().cuda()
    writer = ListWriter()
    recorder = RouterRecorder(writer, sample_tokens=8)
    assert recorder.attach(nn.Sequential(router)) == 1
    x = torch.randn(4096, 64, device="cuda")
    chosen = []
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")  # any host sync inside the hooks raises (and trips their Guard)
    try:
        for _ in range(FOLD_CALLS + 5):  # past one fold: the adding-up runs under the debug mode too
            chosen.append(router(x)[2])
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert recorder.routers == ["0"], "a hook synchronised with the host and was switched off"
    recorder.step(0)
    (line,) = [l for l in writer.lines if l["type"] == "counts"]
    flat = torch.cat(chosen).reshape(-1).cpu()
    assert line["counts"] == [int((flat == e).sum()) for e in range(16)]
    assert line["tokens"] == (FOLD_CALLS + 5) * 4096
    (tokens,) = [l for l in writer.lines if l["type"] == "tokens"]
    assert len(tokens["experts"]) == 8
