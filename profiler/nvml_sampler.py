"""Per-device NVML readings for the sample stream: cheap fields every tick, expensive ones rarely."""

from __future__ import annotations

from typing import Any

from torchscope.profiler.nvml import (
    CHEAP_FIELDS, EXPENSIVE_FIELDS, NvmlDeviceLost, NvmlError, NvmlNoPermission, NvmlNotSupported, NullNvml,
    RealNvml,
)

__all__ = ["NvmlSampler", "EXPENSIVE_EVERY_S", "EnergyCounter"]

EXPENSIVE_EVERY_S = 1.0  # expensive NVML fields are read about this often


class EnergyCounter:
    """Makes a device's total-energy counter monotone across a wrap (32- or 64-bit) or a reset."""

    def __init__(self) -> None:
        self._last: int | None = None
        self._offset = 0

    def update(self, raw_mj: int) -> int:
        """The monotone total energy in mJ for a new raw counter reading."""
        if self._last is not None and raw_mj < self._last:
            modulus = 1 << 32 if self._last < (1 << 32) else 1 << 64
            delta = raw_mj + modulus - self._last
            if delta > modulus // 2:  # not a plausible wrap: the counter was reset; continue from here
                delta = raw_mj
            self._offset += self._last + delta - raw_mj
        self._last = raw_mj
        return raw_mj + self._offset


def _reason(exc: NvmlError) -> str:
    if isinstance(exc, NvmlNotSupported):
        return f"not supported by the device ({exc})"
    if isinstance(exc, NvmlNoPermission):
        return f"no permission ({exc})"
    if isinstance(exc, NvmlDeviceLost):
        return f"device lost during the run ({exc})"
    return f"NVML error ({exc})"


class NvmlSampler:
    """Reads every visible device; a field that fails is dropped with its reason written once."""

    source = "nvml"

    def __init__(self, backend: RealNvml | NullNvml, *, interval_s: float = 0.05) -> None:
        self.backend = backend
        self.devices = backend.devices()
        self._expensive_every = max(1, round(EXPENSIVE_EVERY_S / max(interval_s, 1e-3)))
        self._tick = 0
        self._dead_fields: dict[tuple[int, str], str] = {}
        self._lost: set[int] = set()
        self._energy = {d.index: EnergyCounter() for d in self.devices}

    @property
    def unavailable(self) -> dict[tuple[int, str], str]:
        """(device, field) -> reason, for every field that stopped or never worked."""
        return dict(self._dead_fields)

    def sample(self, t_ns: int) -> list[dict[str, Any]]:
        """One tick: a line per live device, plus one "unavailable" line per newly failed field."""
        lines: list[dict[str, Any]] = []
        fields = CHEAP_FIELDS + (EXPENSIVE_FIELDS if self._tick % self._expensive_every == 0 else ())
        self._tick += 1
        for dev in self.devices:
            if dev.index in self._lost:
                continue
            line: dict[str, Any] = {"t_ns": t_ns, "source": self.source, "device": dev.index}
            for field in fields:
                if (dev.index, field) in self._dead_fields:
                    continue
                try:
                    value = self.backend.read(dev.index, field)
                except NvmlDeviceLost as exc:
                    self._lost.add(dev.index)
                    reason = _reason(exc)
                    for f in CHEAP_FIELDS + EXPENSIVE_FIELDS:
                        if (dev.index, f) not in self._dead_fields:
                            self._dead_fields[(dev.index, f)] = reason
                    lines.append({"t_ns": t_ns, "source": self.source, "device": dev.index,
                                  "event": "unavailable", "field": "*", "reason": reason})
                    break
                except NvmlError as exc:
                    reason = _reason(exc)
                    self._dead_fields[(dev.index, field)] = reason
                    lines.append({"t_ns": t_ns, "source": self.source, "device": dev.index,
                                  "event": "unavailable", "field": field, "reason": reason})
                    continue
                if field == "energy_mj":
                    value = self._energy[dev.index].update(value)
                line[field] = value
            if dev.index not in self._lost and len(line) > 3:
                lines.append(line)
        return lines

    def close(self) -> None:
        """Release NVML."""
        self.backend.shutdown()
