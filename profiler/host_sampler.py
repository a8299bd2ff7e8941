"""Host readings for the sample stream: process CPU utilisation, RSS and RAPL package energy."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

__all__ = ["HostSampler", "RAPL_ROOT", "read_rapl_domains"]

RAPL_ROOT = Path("/sys/class/powercap")


def read_rapl_domains(root: Path = RAPL_ROOT) -> list[tuple[Path, int]]:
    """The top-level RAPL package domains under `root` as (energy_uj file, max range in µJ)."""
    domains = []
    if not root.is_dir():
        return domains
    for d in sorted(root.glob("intel-rapl:*")):
        if d.name.count(":") != 1:  # sub-domains (core, uncore, dram) are inside the package
            continue
        energy = d / "energy_uj"
        try:
            max_range = int((d / "max_energy_range_uj").read_text().strip())
        except (OSError, ValueError):
            max_range = 0
        domains.append((energy, max_range))
    return domains


class HostSampler:
    """Process CPU % (of one core) and RSS via psutil; RAPL energy summed over packages when readable."""

    source = "host"

    def __init__(self, *, pid: int | None = None, rapl_root: Path = RAPL_ROOT) -> None:
        import psutil  # noqa: PLC0415 - lazily: only the recording side needs it

        self._proc = psutil.Process(pid or os.getpid())
        self._proc.cpu_percent(None)  # prime: the first call has no interval to measure
        self._pending_reasons: list[tuple[str, str]] = []
        self._rapl: list[tuple[Path, int]] = []
        self._rapl_last: list[int] = []
        self._rapl_total = 0
        domains = read_rapl_domains(Path(rapl_root))
        if not domains:
            self._pending_reasons.append(("rapl_energy_uj", f"no RAPL domains under {rapl_root}"))
        else:
            try:
                self._rapl_last = [int(p.read_text().strip()) for p, _ in domains]
                self._rapl = domains
            except (OSError, ValueError) as exc:
                self._pending_reasons.append(("rapl_energy_uj", f"RAPL not readable ({exc})"))

    def sample(self, t_ns: int) -> list[dict[str, Any]]:
        """One tick: the host line, preceded by any first-time "unavailable" lines."""
        lines: list[dict[str, Any]] = [
            {"t_ns": t_ns, "source": self.source, "event": "unavailable", "field": f, "reason": r}
            for f, r in self._pending_reasons
        ]
        self._pending_reasons.clear()
        with self._proc.oneshot():
            line: dict[str, Any] = {"t_ns": t_ns, "source": self.source,
                                    "cpu_util_pct": self._proc.cpu_percent(None),
                                    "rss_bytes": self._proc.memory_info().rss}
        if self._rapl:
            try:
                for i, (path, max_range) in enumerate(self._rapl):
                    raw = int(path.read_text().strip())
                    delta = raw - self._rapl_last[i]
                    if delta < 0:
                        delta += max_range if max_range > 0 else 0
                        delta = max(delta, 0)
                    self._rapl_total += delta
                    self._rapl_last[i] = raw
                line["rapl_energy_uj"] = self._rapl_total
            except (OSError, ValueError) as exc:
                self._rapl = []
                lines.append({"t_ns": t_ns, "source": self.source, "event": "unavailable",
                              "field": "rapl_energy_uj", "reason": f"RAPL stopped being readable ({exc})"})
        lines.append(line)
        return lines

    def close(self) -> None:
        """Nothing to release."""
