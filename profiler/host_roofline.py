"""Measured CPU roofline of this host: peak fp32 FLOP/s (a large matmul) and memory bandwidth (a
streaming triad), cached per host so a run pays for it once (about 2 s the first time)."""

from __future__ import annotations

import json
import os
import platform
import socket
import time
from pathlib import Path
from typing import Any

__all__ = ["host_roofline", "measure_host_roofline", "cpu_model", "cache_path", "CACHE_VERSION"]

CACHE_VERSION = 1
MATMUL_N = 1024  # fp32 matmul size for the compute peak
MATMUL_SECONDS = 0.8
TRIAD_ELEMENTS = 16 * 1024 * 1024  # 64 MiB per fp32 array: well beyond any last-level cache
TRIAD_SECONDS = 0.8


def cpu_model() -> str:
    """The CPU model name from /proc/cpuinfo (or the platform's processor string)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def cache_path() -> Path:
    """Where measurements are cached (TORCHSCOPE_CACHE_DIR overrides ~/.cache/torchscope)."""
    root = os.environ.get("TORCHSCOPE_CACHE_DIR") or os.path.join(os.path.expanduser("~"), ".cache", "torchscope")
    return Path(root) / "host_roofline.json"


def _key() -> str:
    import torch  # noqa: PLC0415

    return f"{socket.gethostname()}|{cpu_model()}|threads={torch.get_num_threads()}|v{CACHE_VERSION}"


def measure_host_roofline() -> dict[str, Any]:
    """Measure peak fp32 FLOP/s and triad bandwidth now (≈ MATMUL_SECONDS + TRIAD_SECONDS)."""
    import torch  # noqa: PLC0415

    a = torch.randn(MATMUL_N, MATMUL_N)
    b = torch.randn(MATMUL_N, MATMUL_N)
    c = torch.empty(MATMUL_N, MATMUL_N)
    torch.mm(a, b, out=c)  # warm-up
    best = 0.0
    t_end = time.perf_counter() + MATMUL_SECONDS
    while time.perf_counter() < t_end:
        t0 = time.perf_counter_ns()
        torch.mm(a, b, out=c)
        dt = time.perf_counter_ns() - t0
        best = max(best, 2.0 * MATMUL_N**3 / (dt * 1e-9))
    x = torch.empty(TRIAD_ELEMENTS)
    y = torch.rand(TRIAD_ELEMENTS)
    z = torch.rand(TRIAD_ELEMENTS)
    torch.add(y, z, alpha=1.5, out=x)
    bw = 0.0
    t_end = time.perf_counter() + TRIAD_SECONDS
    while time.perf_counter() < t_end:
        t0 = time.perf_counter_ns()
        torch.add(y, z, alpha=1.5, out=x)  # x = y + 1.5 z: reads 2 arrays, writes 1
        dt = time.perf_counter_ns() - t0
        bw = max(bw, 3.0 * 4 * TRIAD_ELEMENTS / (dt * 1e-9))
    return {"peak_flops": {"fp32": best}, "mem_bandwidth_bytes_per_s": bw, "cpu_model": cpu_model(),
            "threads": torch.get_num_threads(), "host": socket.gethostname(),
            "method": f"best of fp32 {MATMUL_N}^3 matmuls; best torch.add triad over {TRIAD_ELEMENTS} fp32",
            "measured_at_ns": time.time_ns()}


def host_roofline(*, use_cache: bool = True) -> dict[str, Any]:
    """This host's roofline, from the cache when it holds one for this host and CPU."""
    path = cache_path()
    key = _key()
    cache: dict[str, Any] = {}
    if use_cache:
        try:
            cache = json.loads(path.read_text())
            if key in cache:
                return dict(cache[key], cached=True)
        except (OSError, ValueError):
            cache = {}
    result = measure_host_roofline()
    if use_cache:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            cache[key] = result
            tmp = path.with_suffix(f".{os.getpid()}.tmp")
            tmp.write_text(json.dumps(cache, indent=2))
            os.replace(tmp, path)
        except OSError:
            pass
    return dict(result, cached=False)
