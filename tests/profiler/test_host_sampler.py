"""Host sampler: CPU %, RSS and RAPL package energy (a fake powercap tree stands in for /sys)."""

from __future__ import annotations

import time
from pathlib import Path

from torchscope.profiler.host_sampler import HostSampler, read_rapl_domains


def _rapl(root: Path, energies: list[int], max_range: int = 1000) -> list[Path]:
    files = []
    for i, e in enumerate(energies):
        d = root / f"intel-rapl:{i}"
        (d / f"intel-rapl:{i}:0").mkdir(parents=True)  # a sub-domain, which must be ignored
        (d / "max_energy_range_uj").write_text(f"{max_range}\n")
        (d / "energy_uj").write_text(f"{e}\n")
        (d / f"intel-rapl:{i}:0" / "energy_uj").write_text("5\n")
        files.append(d / "energy_uj")
    return files


def test_cpu_and_rss(tmp_path):
    s = HostSampler(rapl_root=tmp_path / "none")
    first = s.sample(1)
    assert first[0] == {"t_ns": 1, "source": "host", "event": "unavailable", "field": "rapl_energy_uj",
                        "reason": f"no RAPL domains under {tmp_path / 'none'}"}
    # Burn a measurable amount of CPU: the kernel accounts process time in clock ticks (10 ms), so a
    # fixed small loop can round to zero on a busy machine.
    start = time.process_time()
    while time.process_time() - start < 0.05:
        sum(i * i for i in range(10_000))
    line = s.sample(2)[-1]
    assert line["rss_bytes"] > 10 * 1024 * 1024 and line["cpu_util_pct"] > 0
    assert all("event" not in x for x in s.sample(3))  # the reason is written once


def test_rapl_sums_packages_and_handles_wrap(tmp_path):
    files = _rapl(tmp_path, [100, 200], max_range=1000)
    assert len(read_rapl_domains(tmp_path)) == 2
    s = HostSampler(rapl_root=tmp_path)
    assert s.sample(1)[-1]["rapl_energy_uj"] == 0
    files[0].write_text("150\n")
    files[1].write_text("260\n")
    assert s.sample(2)[-1]["rapl_energy_uj"] == 110
    files[0].write_text("50\n")  # wrapped: 150 -> 1000 -> 50 is +900
    assert s.sample(3)[-1]["rapl_energy_uj"] == 1010


def test_rapl_unreadable_is_reported_not_raised(tmp_path):
    files = _rapl(tmp_path, [100])
    s = HostSampler(rapl_root=tmp_path)
    files[0].unlink()
    lines = s.sample(1)
    assert any(x.get("event") == "unavailable" and x["field"] == "rapl_energy_uj" for x in lines)
    assert "rapl_energy_uj" not in lines[-1] and "rss_bytes" in lines[-1]
