"""The run manifest: what ran where, with which options, what was recorded and what was not."""

from __future__ import annotations

import platform
import socket
import sys
from typing import Any

from torchscope.profiler.bundle import SCHEMA_VERSION
from torchscope.profiler.nvml import GpuInfo

__all__ = ["build_manifest", "describe_devices"]


def describe_devices(gpus: list[GpuInfo]) -> list[dict[str, Any]]:
    """Manifest "devices": NVML's view when it has one, else torch.cuda's, else []."""
    out = [{"index": g.index, "name": g.name, "uuid": g.uuid, "total_memory_bytes": g.total_memory_bytes,
            "mig": g.mig, "parent_uuid": g.parent_uuid, "peak": None} for g in gpus]
    if out:
        return out
    try:
        import torch  # noqa: PLC0415

        if torch.cuda.is_available():
            for i in range(torch.cuda.device_count()):
                p = torch.cuda.get_device_properties(i)
                out.append({"index": i, "name": p.name, "uuid": str(getattr(p, "uuid", "")) or None,
                            "total_memory_bytes": int(p.total_memory), "peak": None,
                            "multi_processor_count": p.multi_processor_count,
                            "compute_capability": f"{p.major}.{p.minor}"})
    except Exception:  # noqa: BLE001 - a device description is best effort
        pass
    return out


def build_manifest(*, rank: int, world_size: int, ranks: list[int], started_at_ns: int,
                   ended_at_ns: int | None, devices: list[dict], options: dict, recorded: dict,
                   unavailable: dict, host_roofline: dict | None, user_counts: dict | None,
                   extra: dict | None = None) -> dict[str, Any]:
    """The manifest dict of the bundle contract (see profiler/bundle.py)."""
    import torch  # noqa: PLC0415

    return {
        "schema_version": SCHEMA_VERSION,
        "tool": "torchscope",
        "command": list(sys.argv),
        "host": socket.gethostname(),
        "platform": platform.platform(),
        "python_version": platform.python_version(),
        "started_at_ns": started_at_ns,
        "ended_at_ns": ended_at_ns,
        "torch_version": torch.__version__,
        "cuda_version": torch.version.cuda,
        "rank": rank,
        "world_size": world_size,
        "ranks": ranks,
        "devices": devices,
        "options": options,
        "recorded": recorded,
        "unavailable": unavailable,
        "host_roofline": host_roofline,
        "user_counts": user_counts,
        **(extra or {}),
    }
