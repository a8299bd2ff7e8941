"""A fake ``pynvml`` module serving scripted readings, for NVML sampler tests without a GPU.

It keeps the installed pynvml's constants and exception classes (so ``NVMLError(code)`` maps to
the same subclasses the real library raises) and replaces the functions the backend calls.
Scenario knobs: per-device scripted readings (a callable of the read count, or a constant),
fields that raise NotSupported, an energy counter that wraps, a device that is lost after N
reads, MIG devices with MIG UUIDs, and an init that fails like a machine without a driver.
"""

from __future__ import annotations

import types
from dataclasses import dataclass, field
from typing import Any, Callable

import pynvml as _real

# every NVML_* constant and NVMLError* class of the installed pynvml, unchanged
_EXPORTS = {k: getattr(_real, k) for k in dir(_real) if k.startswith(("NVML_", "NVMLError"))}


@dataclass
class FakeGpu:
    """One scripted device. Values are constants or callables of the per-field read count."""

    uuid: str
    name: str = "NVIDIA H100 80GB HBM3"
    total_memory_bytes: int = 80 * 1024**3
    readings: dict[str, Any] = field(default_factory=dict)
    not_supported: set[str] = field(default_factory=set)
    no_permission: set[str] = field(default_factory=set)
    lost_after_reads: int | None = None  # the device raises GPU_IS_LOST after this many field reads
    mig_children: list["FakeGpu"] = field(default_factory=list)
    parent: "FakeGpu | None" = None
    instant_power: bool = True  # whether NVML_FI_DEV_POWER_INSTANT is served
    reads: int = 0
    counts: dict[str, int] = field(default_factory=dict)


DEFAULT_READINGS = {
    "power": 250_000, "energy": lambda n: 1_000_000 + 25_000 * n, "sm_clock": 1980, "mem_clock": 2619,
    "util_gpu": 97, "util_mem": 55, "mem_used": 40 * 1024**3, "temp": 61, "pcie_tx": 1200, "pcie_rx": 800,
    "throttle": 0, "power_limit": 700_000,
}


def make_fake_nvml(gpus: list[FakeGpu], *, init_error: int | None = None) -> types.ModuleType:
    """A module object with pynvml's API over `gpus` (pass it as profile(nvml_module=...))."""
    mod = types.ModuleType("fake_pynvml")
    mod.__dict__.update(_EXPORTS)
    mod.gpus = gpus
    mod.init_calls = 0
    mod.shutdown_calls = 0
    NVMLError = _real.NVMLError

    def _read(gpu: FakeGpu, key: str) -> Any:
        if gpu.lost_after_reads is not None and gpu.reads >= gpu.lost_after_reads:
            raise NVMLError(_real.NVML_ERROR_GPU_IS_LOST)
        if key in gpu.not_supported:
            raise NVMLError(_real.NVML_ERROR_NOT_SUPPORTED)
        if key in gpu.no_permission:
            raise NVMLError(_real.NVML_ERROR_NO_PERMISSION)
        gpu.reads += 1
        n = gpu.counts.get(key, 0)
        gpu.counts[key] = n + 1
        value = gpu.readings.get(key, DEFAULT_READINGS[key])
        return value(n) if callable(value) else value

    def nvmlInit() -> None:
        mod.init_calls += 1
        if init_error is not None:
            raise NVMLError(init_error)

    def nvmlShutdown() -> None:
        mod.shutdown_calls += 1

    def nvmlDeviceGetCount() -> int:
        return len(gpus)

    def nvmlDeviceGetHandleByIndex(i: int) -> FakeGpu:
        if i >= len(gpus):
            raise NVMLError(_real.NVML_ERROR_INVALID_ARGUMENT)
        return gpus[i]

    def nvmlDeviceGetUUID(h: FakeGpu) -> str:
        return h.uuid

    def nvmlDeviceGetName(h: FakeGpu) -> str:
        return h.name

    def nvmlDeviceGetMemoryInfo(h: FakeGpu) -> Any:
        return types.SimpleNamespace(total=h.total_memory_bytes, used=_read(h, "mem_used"),
                                     free=h.total_memory_bytes - 1)

    def nvmlDeviceGetMigMode(h: FakeGpu) -> tuple[int, int]:
        if not h.mig_children:
            return (_real.NVML_DEVICE_MIG_DISABLE, _real.NVML_DEVICE_MIG_DISABLE)
        return (_real.NVML_DEVICE_MIG_ENABLE, _real.NVML_DEVICE_MIG_ENABLE)

    def nvmlDeviceGetMaxMigDeviceCount(h: FakeGpu) -> int:
        return 7 if h.mig_children else 0

    def nvmlDeviceGetMigDeviceHandleByIndex(h: FakeGpu, j: int) -> FakeGpu:
        if j >= len(h.mig_children):
            raise NVMLError(_real.NVML_ERROR_NOT_FOUND)
        return h.mig_children[j]

    def nvmlDeviceGetFieldValues(h: FakeGpu, ids: list[int]) -> list[Any]:
        out = []
        for fid in ids:
            if fid == _real.NVML_FI_DEV_POWER_INSTANT and h.instant_power and "power" not in h.not_supported:
                v = _read(h, "power")
                out.append(types.SimpleNamespace(fieldId=fid, nvmlReturn=_real.NVML_SUCCESS,
                                                 value=types.SimpleNamespace(uiVal=v)))
            else:
                out.append(types.SimpleNamespace(fieldId=fid, nvmlReturn=_real.NVML_ERROR_NOT_SUPPORTED,
                                                 value=types.SimpleNamespace(uiVal=0)))
        return out

    def nvmlDeviceGetPowerUsage(h: FakeGpu) -> int:
        return _read(h, "power")

    def nvmlDeviceGetTotalEnergyConsumption(h: FakeGpu) -> int:
        return _read(h, "energy")

    def nvmlDeviceGetClockInfo(h: FakeGpu, kind: int) -> int:
        return _read(h, "sm_clock" if kind == _real.NVML_CLOCK_SM else "mem_clock")

    def nvmlDeviceGetUtilizationRates(h: FakeGpu) -> Any:
        if h.parent is not None:  # MIG instances do not report utilisation
            raise NVMLError(_real.NVML_ERROR_NOT_SUPPORTED)
        return types.SimpleNamespace(gpu=_read(h, "util_gpu"), memory=_read(h, "util_mem"))

    def nvmlDeviceGetTemperature(h: FakeGpu, sensor: int) -> int:
        return _read(h, "temp")

    def nvmlDeviceGetPcieThroughput(h: FakeGpu, counter: int) -> int:
        return _read(h, "pcie_tx" if counter == _real.NVML_PCIE_UTIL_TX_BYTES else "pcie_rx")

    def nvmlDeviceGetCurrentClocksEventReasons(h: FakeGpu) -> int:
        return _read(h, "throttle")

    def nvmlDeviceGetEnforcedPowerLimit(h: FakeGpu) -> int:
        return _read(h, "power_limit")

    for name, fn in list(locals().items()):
        if name.startswith("nvml") and callable(fn):
            setattr(mod, name, fn)
    return mod


def make_mig_gpu(uuid: str, children: list[str]) -> FakeGpu:
    """A MIG-enabled GPU whose instances have the given MIG UUIDs."""
    parent = FakeGpu(uuid=uuid)
    parent.mig_children = [FakeGpu(uuid=c, name=parent.name, total_memory_bytes=10 * 1024**3, parent=parent)
                           for c in children]
    return parent


Reading = Callable[[int], Any]
