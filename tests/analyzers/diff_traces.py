"""Synthetic Kineto-style traces and run bundles for the trace-diff tests (written, then loaded for real)."""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Sequence

import numpy as np

T0_US = 1_700_000_000_000_000.0  # an epoch-like start, µs
KERNEL = "void at::native::gemm_kernel<128, 4, float>(float*, float const*, int)"
ELEMENTWISE = "void at::native::vectorized_elementwise_kernel<4, at::native::AddFunctor<float> >(int, float*)"
NCCL = "ncclKernel_AllReduce_RING_LL_Sum_float(ncclWorkElem)"


def noisy_steps(mean_ms: float, n: int, *, noise: float = 0.01, seed: int = 0) -> list[float]:
    """``n`` step durations around ``mean_ms`` with relative noise (deterministic)."""
    rng = np.random.default_rng(seed)
    return [float(x) for x in mean_ms * (1.0 + noise * rng.standard_normal(n))]


def trace_events(step_ms: Sequence[float], *, first_step: int = 1, ops: Sequence[str] = ("aten::mm", "aten::add"),
                 flops_per_op: float | None = 1e6, gpu: bool = True, comm_fraction: float = 0.0,
                 phases: bool = True, memory_peak_bytes: float | None = None, gloo: bool = False) -> list[dict]:
    """Chrome trace events: ProfilerStep annotations, phases, CPU ops, launches and kernels per step."""
    events: list[dict] = []
    t = T0_US
    corr = 1
    for i, ms in enumerate(step_ms):
        dur = ms * 1000.0
        events.append({"ph": "X", "cat": "user_annotation", "name": f"ProfilerStep#{first_step + i}",
                       "pid": 1, "tid": 1, "ts": t, "dur": dur})
        if phases:
            events.append({"ph": "X", "cat": "torchscope.phase", "name": "forward", "pid": 1, "tid": 99,
                           "ts": t + 1.0, "dur": dur * 0.4})
            events.append({"ph": "X", "cat": "torchscope.phase", "name": "backward", "pid": 1, "tid": 99,
                           "ts": t + 2.0 + dur * 0.4, "dur": dur * 0.5})
        slot = dur / (len(ops) + 2)
        for j, op in enumerate(ops):
            ts = t + 5.0 + j * slot
            args = {"External id": corr}
            if op == "aten::mm":  # [32, 64] x [64, 16]: 2·32·64·16 = 65536 FLOPs by shape
                args.update({"Input Dims": [[32, 64], [64, 16]], "Input type": ["float", "float"]})
                if flops_per_op is not None:
                    args["flops"] = flops_per_op
            events.append({"ph": "X", "cat": "cpu_op", "name": op, "pid": 1, "tid": 1, "ts": ts, "dur": slot * 0.5,
                           "args": args})
            if gpu:
                events.append({"ph": "X", "cat": "cuda_runtime", "name": "cudaLaunchKernel", "pid": 1, "tid": 1,
                               "ts": ts + 1.0, "dur": 3.0, "args": {"correlation": corr}})
                # the kernel starts later than its launch and may run past the CPU step's end
                events.append({"ph": "X", "cat": "kernel", "name": KERNEL if op == "aten::mm" else ELEMENTWISE,
                               "pid": 0, "tid": 7, "ts": ts + slot * 0.6, "dur": slot * 0.8,
                               "args": {"correlation": corr, "stream": 7, "device": 0}})
            corr += 1
        if gpu and comm_fraction > 0:
            ts = t + dur * 0.7
            events.append({"ph": "X", "cat": "cuda_runtime", "name": "cudaLaunchKernel", "pid": 1, "tid": 1,
                           "ts": ts, "dur": 3.0, "args": {"correlation": corr}})
            events.append({"ph": "X", "cat": "kernel", "name": NCCL, "pid": 0, "tid": 8, "ts": ts + 10.0,
                           "dur": dur * comm_fraction, "args": {"correlation": corr, "stream": 8, "device": 0}})
            corr += 1
        if gloo:
            events.append({"ph": "X", "cat": "user_annotation", "name": "gloo:all_reduce", "pid": 1, "tid": 1,
                           "ts": t + dur * 0.8, "dur": dur * 0.1})
        if memory_peak_bytes is not None:
            events.append({"ph": "i", "s": "t", "cat": "cpu_instant_event", "name": "[memory]", "pid": 1, "tid": 1,
                           "ts": t + dur * 0.5, "args": {"Total Allocated": memory_peak_bytes * (0.5 + 0.5 * (i % 2)),
                                                          "Total Reserved": memory_peak_bytes * 1.5,
                                                          "Bytes": 1024, "Device Type": 1, "Device Id": 0}})
        t += dur + 50.0  # a short gap between steps
    return events


def write_trace(path: Path, step_ms: Sequence[float], **kwargs) -> Path:
    """Write a gzipped Chrome trace of synthetic steps to ``path``; returns the path."""
    doc = {"schemaVersion": 1, "traceEvents": trace_events(step_ms, **kwargs)}
    path.parent.mkdir(parents=True, exist_ok=True)
    with gzip.open(path, "wt", encoding="utf-8") as fh:
        json.dump(doc, fh)
    return path


def write_bundle(folder: Path, step_ms: Sequence[float], *, power_w: float | None = None,
                 moe_counts: Sequence[Sequence[Sequence[int]]] | None = None, **kwargs) -> Path:
    """A run bundle: manifest, rank0 trace, samples (power/energy) and MoE counts per step × layer."""
    folder.mkdir(parents=True, exist_ok=True)
    events = trace_events(step_ms, **kwargs)
    (folder / "manifest.json").write_text(json.dumps({
        "schema_version": 1, "tool": "torchscope", "command": ["train.py"], "host": "test", "world_size": 1,
        "ranks": [0], "devices": [], "options": {}, "recorded": {"kineto": True}, "unavailable": {},
    }))
    with gzip.open(folder / "rank0.trace.json.gz", "wt", encoding="utf-8") as fh:
        json.dump({"schemaVersion": 1, "traceEvents": events}, fh)
    steps = [e for e in events if e["name"].startswith("ProfilerStep#")]
    t_first = int(steps[0]["ts"] * 1000) - 1_000_000
    t_last = int((steps[-1]["ts"] + steps[-1]["dur"]) * 1000) + 1_000_000
    lines = []
    if power_w is not None:
        energy_mj = 0.0
        for t_ns in range(t_first, t_last + 1, 1_000_000):  # 1 ms samples
            lines.append({"t_ns": t_ns, "source": "nvml", "device": 0, "power_mw": power_w * 1000.0,
                          "energy_mj": energy_mj})
            energy_mj += power_w * 1.0  # W × 1 ms = mJ
    (folder / "rank0.samples.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    if moe_counts is not None:
        first = int(steps[0]["name"].split("#")[1])
        rows = [{"type": "router", "layer": f"layers.{k}.router", "layer_index": k,
                 "num_experts": len(moe_counts[0][k]), "top_k": 2} for k in range(len(moe_counts[0]))]
        for i, per_layer in enumerate(moe_counts):
            for k, counts in enumerate(per_layer):
                rows.append({"type": "counts", "step": first + i, "phase": "train", "layer": f"layers.{k}.router",
                             "tokens": sum(counts) // 2, "counts": list(counts)})
        (folder / "rank0.moe.jsonl").write_text("".join(json.dumps(x) + "\n" for x in rows))
    return folder
