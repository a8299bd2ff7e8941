"""NVML behind a tiny interface: a real backend over pynvml and a null backend when there is none.

``get_nvml()`` returns a backend. The real one imports pynvml lazily, resolves the devices this
process may see (``CUDA_VISIBLE_DEVICES`` with indices, GPU UUIDs and MIG UUIDs), caches their
handles and reads one named field at a time. Vendor errors are translated here, once, into
``NvmlError`` and its subclasses; nothing outside this module sees a pynvml exception.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from types import ModuleType
from typing import Any, Callable

__all__ = [
    "NO_NVML_REASON",
    "NvmlError",
    "NvmlNotSupported",
    "NvmlNoPermission",
    "NvmlDeviceLost",
    "GpuInfo",
    "NullNvml",
    "RealNvml",
    "get_nvml",
    "parse_visible_devices",
    "CHEAP_FIELDS",
    "EXPENSIVE_FIELDS",
]

NO_NVML_REASON = "unavailable (no NVML)"

# Fields read on every sampler tick, and those read only every so often (slower NVML calls,
# or values that change slowly). The names are the sample-line keys of the bundle contract.
CHEAP_FIELDS = ("power_mw", "energy_mj", "sm_clock_mhz", "mem_clock_mhz", "gpu_util_pct",
                "mem_util_pct", "mem_used_bytes")
EXPENSIVE_FIELDS = ("temp_c", "pcie_tx_kbps", "pcie_rx_kbps", "throttle_reasons", "power_limit_mw")
# Fields that a MIG instance handle cannot report; they are read from the parent GPU.
_PARENT_FIELDS = {"power_mw", "energy_mj", "sm_clock_mhz", "mem_clock_mhz", "temp_c",
                  "pcie_tx_kbps", "pcie_rx_kbps", "throttle_reasons", "power_limit_mw"}


class NvmlError(Exception):
    """An NVML call failed (translated from the vendor's exception)."""


class NvmlNotSupported(NvmlError):
    """The device does not support this query."""


class NvmlNoPermission(NvmlError):
    """The process may not make this query."""


class NvmlDeviceLost(NvmlError):
    """The device fell off the bus or vanished during the run."""


@dataclass(frozen=True)
class GpuInfo:
    """A device visible to this process: its CUDA-visible index and identity."""

    index: int
    uuid: str
    name: str
    total_memory_bytes: int | None
    mig: bool = False
    parent_uuid: str | None = None


def parse_visible_devices(value: str | None) -> list[str] | None:
    """The entries of CUDA_VISIBLE_DEVICES (None when unset: all devices are visible)."""
    if value is None:
        return None
    entries: list[str] = []
    for raw in value.split(","):
        item = raw.strip()
        if not item:
            break  # CUDA stops at the first empty/invalid entry
        if item.lstrip("-").isdigit():
            if int(item) < 0:
                break
        entries.append(item)
    return entries


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class NullNvml:
    """The backend when NVML cannot be used: no devices, and the reason why."""

    available = False

    def __init__(self, reason: str = NO_NVML_REASON, detail: str | None = None) -> None:
        self.reason = reason
        self.detail = detail

    def devices(self) -> list[GpuInfo]:
        """No devices."""
        return []

    def read(self, index: int, field: str) -> int:
        """Always fails: there is no NVML."""
        raise NvmlError(self.reason)

    def shutdown(self) -> None:
        """Nothing to release."""


class RealNvml:
    """NVML through a pynvml module (the real one, or a fake with the same API in tests)."""

    available = True
    reason: str | None = None

    def __init__(self, nvml: ModuleType, visible: str | None = None) -> None:
        self._nvml = nvml
        self.detail: str | None = None
        self._handles: list[Any] = []
        self._parents: list[Any] = []
        self._devices: list[GpuInfo] = []
        self._power_field_ok: dict[int, bool] = {}
        self._translate(nvml.nvmlInit)
        try:
            self._resolve(parse_visible_devices(visible))
        except BaseException:
            self.shutdown()
            raise

    # ---- errors -------------------------------------------------------------------------------
    def _translate(self, fn: Callable[..., Any], *args: Any) -> Any:
        nvml = self._nvml
        try:
            return fn(*args)
        except nvml.NVMLError as exc:
            code = getattr(exc, "value", None)
            msg = str(exc)
            if code == nvml.NVML_ERROR_NOT_SUPPORTED or code == getattr(nvml, "NVML_ERROR_FUNCTION_NOT_FOUND", -1):
                raise NvmlNotSupported(msg) from None
            if code == nvml.NVML_ERROR_NO_PERMISSION:
                raise NvmlNoPermission(msg) from None
            if code in (nvml.NVML_ERROR_GPU_IS_LOST, getattr(nvml, "NVML_ERROR_GPU_NOT_FOUND", -1)):
                raise NvmlDeviceLost(msg) from None
            raise NvmlError(msg) from None

    # ---- devices ------------------------------------------------------------------------------
    def _all_physical(self) -> list[Any]:
        nvml = self._nvml
        count = self._translate(nvml.nvmlDeviceGetCount)
        return [self._translate(nvml.nvmlDeviceGetHandleByIndex, i) for i in range(count)]

    def _mig_children(self, handle: Any) -> list[Any]:
        nvml = self._nvml
        try:
            current, _pending = self._translate(nvml.nvmlDeviceGetMigMode, handle)
        except NvmlError:
            return []
        if current != nvml.NVML_DEVICE_MIG_ENABLE:
            return []
        children = []
        for j in range(self._translate(nvml.nvmlDeviceGetMaxMigDeviceCount, handle)):
            try:
                children.append(self._translate(nvml.nvmlDeviceGetMigDeviceHandleByIndex, handle, j))
            except NvmlError:
                continue
        return children

    def _resolve(self, entries: list[str] | None) -> None:
        nvml = self._nvml
        physical = self._all_physical()
        uuids = [_text(self._translate(nvml.nvmlDeviceGetUUID, h)) for h in physical]
        chosen: list[tuple[Any, Any]] = []  # (handle, parent handle or None)
        if entries is None:
            chosen = [(h, None) for h in physical]
        for item in entries or []:
            if item.lstrip("-").isdigit():
                i = int(item)
                if i >= len(physical):
                    break
                chosen.append((physical[i], None))
            elif item.startswith("MIG-"):
                found = None
                for h in physical:
                    for child in self._mig_children(h):
                        if _text(self._translate(nvml.nvmlDeviceGetUUID, child)).startswith(item):
                            found = (child, h)
                            break
                    if found:
                        break
                if found is None:
                    break
                chosen.append(found)
            else:
                matches = [h for h, u in zip(physical, uuids) if u.startswith(item)]
                if len(matches) != 1:
                    break
                chosen.append((matches[0], None))
        for idx, (handle, parent) in enumerate(chosen):
            uuid = _text(self._translate(nvml.nvmlDeviceGetUUID, handle))
            try:
                name = _text(self._translate(nvml.nvmlDeviceGetName, parent if parent is not None else handle))
            except NvmlError:
                name = "unknown"
            try:
                total = int(self._translate(nvml.nvmlDeviceGetMemoryInfo, handle).total)
            except NvmlError:
                total = None
            parent_uuid = _text(self._translate(nvml.nvmlDeviceGetUUID, parent)) if parent is not None else None
            self._handles.append(handle)
            self._parents.append(parent)
            self._devices.append(GpuInfo(idx, uuid, name, total, parent is not None, parent_uuid))

    def devices(self) -> list[GpuInfo]:
        """The devices this process may see, in CUDA order."""
        return list(self._devices)

    # ---- fields -------------------------------------------------------------------------------
    def read(self, index: int, field: str) -> int:
        """One reading of `field` (a sample-line key such as "power_mw") from visible device `index`."""
        nvml = self._nvml
        handle = self._handles[index]
        parent = self._parents[index]
        h = parent if (parent is not None and field in _PARENT_FIELDS) else handle
        if field == "power_mw":
            return self._power_mw(index, h)
        if field == "energy_mj":
            return int(self._translate(nvml.nvmlDeviceGetTotalEnergyConsumption, h))
        if field == "sm_clock_mhz":
            return int(self._translate(nvml.nvmlDeviceGetClockInfo, h, nvml.NVML_CLOCK_SM))
        if field == "mem_clock_mhz":
            return int(self._translate(nvml.nvmlDeviceGetClockInfo, h, nvml.NVML_CLOCK_MEM))
        if field == "gpu_util_pct":
            return int(self._translate(nvml.nvmlDeviceGetUtilizationRates, h).gpu)
        if field == "mem_util_pct":
            return int(self._translate(nvml.nvmlDeviceGetUtilizationRates, h).memory)
        if field == "mem_used_bytes":
            return int(self._translate(nvml.nvmlDeviceGetMemoryInfo, h).used)
        if field == "temp_c":
            return int(self._translate(nvml.nvmlDeviceGetTemperature, h, nvml.NVML_TEMPERATURE_GPU))
        if field == "pcie_tx_kbps":
            return int(self._translate(nvml.nvmlDeviceGetPcieThroughput, h, nvml.NVML_PCIE_UTIL_TX_BYTES))
        if field == "pcie_rx_kbps":
            return int(self._translate(nvml.nvmlDeviceGetPcieThroughput, h, nvml.NVML_PCIE_UTIL_RX_BYTES))
        if field == "throttle_reasons":
            fn = getattr(nvml, "nvmlDeviceGetCurrentClocksEventReasons", None) or \
                nvml.nvmlDeviceGetCurrentClocksThrottleReasons
            return int(self._translate(fn, h))
        if field == "power_limit_mw":
            return int(self._translate(nvml.nvmlDeviceGetEnforcedPowerLimit, h))
        raise KeyError(field)

    def _power_mw(self, index: int, h: Any) -> int:
        """Instantaneous power where the driver offers it, else the (averaged) power usage."""
        nvml = self._nvml
        if self._power_field_ok.get(index, True):
            try:
                values = self._translate(nvml.nvmlDeviceGetFieldValues, h, [nvml.NVML_FI_DEV_POWER_INSTANT])
                value = values[0]
                if getattr(value, "nvmlReturn", nvml.NVML_SUCCESS) == nvml.NVML_SUCCESS:
                    return int(value.value.uiVal)
                self._power_field_ok[index] = False
            except NvmlDeviceLost:
                raise
            except NvmlError:
                self._power_field_ok[index] = False
        return int(self._translate(nvml.nvmlDeviceGetPowerUsage, h))

    def shutdown(self) -> None:
        """Release NVML."""
        try:
            self._nvml.nvmlShutdown()
        except Exception:  # noqa: BLE001 - shutting down must never fail the caller
            pass


def get_nvml(module: ModuleType | None = None, *, visible: str | None | object = ...) -> RealNvml | NullNvml:
    """A working NVML backend, or a NullNvml saying why there is none.

    `module` replaces ``import pynvml`` (tests pass a fake); `visible` replaces the
    CUDA_VISIBLE_DEVICES environment variable.
    """
    if visible is ...:
        visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if module is None:
        try:
            import pynvml as module  # noqa: PLC0415 - imported lazily on purpose
        except Exception as exc:  # noqa: BLE001
            return NullNvml(NO_NVML_REASON, f"pynvml not importable: {exc}")
    try:
        backend = RealNvml(module, visible)  # type: ignore[arg-type]
    except Exception as exc:  # noqa: BLE001 - any failure to start NVML means: no NVML
        return NullNvml(NO_NVML_REASON, f"{type(exc).__name__}: {exc}")
    return backend
