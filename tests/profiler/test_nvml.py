"""The NVML backend and sampler against the fake pynvml: readings, failures, wrap, MIG, visibility."""

from __future__ import annotations

import pynvml
import pytest

from torchscope.profiler.nvml import (
    CHEAP_FIELDS, EXPENSIVE_FIELDS, NO_NVML_REASON, NullNvml, NvmlDeviceLost, NvmlNotSupported, get_nvml,
    parse_visible_devices,
)
from torchscope.profiler.nvml_sampler import EnergyCounter, NvmlSampler
from tests.profiler.fake_nvml import FakeGpu, make_fake_nvml, make_mig_gpu


def _gpus(n: int = 2) -> list[FakeGpu]:
    return [FakeGpu(uuid=f"GPU-{i}aaaaaaa-1111-2222-3333-44444444444{i}") for i in range(n)]


def test_fake_keeps_real_constants_and_exception_classes():
    fake = make_fake_nvml(_gpus(1))
    assert fake.NVML_ERROR_NOT_SUPPORTED == pynvml.NVML_ERROR_NOT_SUPPORTED
    assert fake.NVMLError is pynvml.NVMLError
    assert isinstance(fake.NVMLError(fake.NVML_ERROR_GPU_IS_LOST), pynvml.NVMLError_GpuIsLost)


def test_no_driver_gives_null_backend_with_reason():
    fake = make_fake_nvml([], init_error=pynvml.NVML_ERROR_LIBRARY_NOT_FOUND)
    backend = get_nvml(fake, visible=None)
    assert isinstance(backend, NullNvml)
    assert backend.reason == NO_NVML_REASON
    assert "Library Not Found" in backend.detail
    assert backend.devices() == []


def test_real_machine_without_gpu_is_null():
    backend = get_nvml(visible=None)  # the installed pynvml on this (GPU-less) machine
    if backend.available:
        pytest.skip("this machine has a working NVML driver; the null path is covered by the fake")
    assert backend.reason == NO_NVML_REASON


def test_cheap_fields_every_tick_expensive_ones_rarely():
    fake = make_fake_nvml(_gpus(2))
    sampler = NvmlSampler(get_nvml(fake, visible=None), interval_s=0.25)  # expensive every 4 ticks
    ticks = [sampler.sample(t_ns=1000 + i) for i in range(8)]
    lines = [line for tick in ticks for line in tick]
    assert {line["device"] for line in lines} == {0, 1}
    assert all(line["source"] == "nvml" for line in lines)
    for i, tick in enumerate(ticks):
        for line in tick:
            assert all(f in line for f in CHEAP_FIELDS)
            has_expensive = all(f in line for f in EXPENSIVE_FIELDS)
            assert has_expensive == (i % 4 == 0)
    assert lines[0]["power_mw"] == 250_000
    assert lines[0]["power_limit_mw"] == 700_000
    assert lines[0]["mem_used_bytes"] == 40 * 1024**3


def test_instant_power_preferred_then_power_usage():
    gpu = FakeGpu(uuid="GPU-x", instant_power=False, readings={"power": lambda n: 100_000 + n})
    backend = get_nvml(make_fake_nvml([gpu]), visible=None)
    assert backend.read(0, "power_mw") == 100_000  # fell back to nvmlDeviceGetPowerUsage
    assert backend.read(0, "power_mw") == 100_001


def test_not_supported_field_is_dropped_with_reason_once():
    gpu = FakeGpu(uuid="GPU-x", not_supported={"temp", "pcie_tx"}, no_permission={"power_limit"})
    sampler = NvmlSampler(get_nvml(make_fake_nvml([gpu]), visible=None), interval_s=1.0)
    lines = [line for i in range(3) for line in sampler.sample(t_ns=i)]
    events = [line for line in lines if line.get("event") == "unavailable"]
    assert sorted(e["field"] for e in events) == ["pcie_tx_kbps", "power_limit_mw", "temp_c"]
    assert any("not supported" in e["reason"] for e in events)
    assert any("permission" in e["reason"] for e in events if e["field"] == "power_limit_mw")
    readings = [line for line in lines if "event" not in line]
    assert len(readings) == 3 and all("temp_c" not in r for r in readings)
    assert all("pcie_rx_kbps" in r for r in readings)  # the other PCIe direction still works


def test_energy_counter_wrap_stays_monotone():
    # a 32-bit counter that wraps: 4294967000, 4294967200, then 100, 400 (mJ)
    raw = [2**32 - 296, 2**32 - 96, 100, 400]
    gpu = FakeGpu(uuid="GPU-x", readings={"energy": lambda n: raw[min(n, len(raw) - 1)]})
    sampler = NvmlSampler(get_nvml(make_fake_nvml([gpu]), visible=None), interval_s=1.0)
    energy = [sampler.sample(t_ns=i)[0]["energy_mj"] for i in range(4)]
    assert energy == [2**32 - 296, 2**32 - 96, 2**32 + 100, 2**32 + 400]


def test_energy_counter_reset_continues_from_last_value():
    counter = EnergyCounter()
    assert [counter.update(v) for v in (5_000_000, 5_000_100, 20, 50)] == [5_000_000, 5_000_100, 5_000_120,
                                                                             5_000_150]


def test_device_lost_mid_run_stops_that_device_only():
    gpus = _gpus(2)
    gpus[1].lost_after_reads = 20  # 14 reads per tick: dies during the second tick
    fake = make_fake_nvml(gpus)
    sampler = NvmlSampler(get_nvml(fake, visible=None), interval_s=1.0)
    lines = [line for i in range(5) for line in sampler.sample(t_ns=i)]
    lost = [line for line in lines if line.get("event") == "unavailable"]
    assert len(lost) == 1 and lost[0]["device"] == 1 and "lost" in lost[0]["reason"]
    dev0 = [line for line in lines if line["device"] == 0 and "event" not in line]
    dev1 = [line for line in lines if line["device"] == 1 and "event" not in line]
    assert len(dev0) == 5 and len(dev1) == 1


def test_backend_translates_vendor_errors():
    gpu = FakeGpu(uuid="GPU-x", not_supported={"temp"}, lost_after_reads=2)  # 1 read at resolve
    backend = get_nvml(make_fake_nvml([gpu]), visible=None)
    with pytest.raises(NvmlNotSupported):
        backend.read(0, "temp_c")
    backend.read(0, "sm_clock_mhz")
    with pytest.raises(NvmlDeviceLost):
        backend.read(0, "sm_clock_mhz")


@pytest.mark.parametrize("value,expected", [
    (None, None), ("", []), ("0,1", ["0", "1"]), ("1,-1,0", ["1"]), ("GPU-ab, MIG-cd", ["GPU-ab", "MIG-cd"]),
])
def test_parse_visible_devices(value, expected):
    assert parse_visible_devices(value) == expected


def test_cuda_visible_devices_by_index_and_uuid():
    gpus = _gpus(3)
    fake = make_fake_nvml(gpus)
    by_index = get_nvml(fake, visible="2,0")
    assert [d.uuid for d in by_index.devices()] == [gpus[2].uuid, gpus[0].uuid]
    assert [d.index for d in by_index.devices()] == [0, 1]
    by_uuid = get_nvml(fake, visible=gpus[1].uuid[:12])  # a unique UUID prefix is enough, as in CUDA
    assert [d.uuid for d in by_uuid.devices()] == [gpus[1].uuid]
    none = get_nvml(fake, visible="")
    assert none.available and none.devices() == []


def test_mig_uuid_resolves_to_instance_and_reads_power_from_parent():
    parent = make_mig_gpu("GPU-parent-0000", ["MIG-aaaa-1111", "MIG-bbbb-2222"])
    parent.readings["power"] = 300_000
    fake = make_fake_nvml([parent])
    backend = get_nvml(fake, visible="MIG-bbbb-2222")
    (dev,) = backend.devices()
    assert dev.uuid == "MIG-bbbb-2222" and dev.mig and dev.parent_uuid == "GPU-parent-0000"
    assert dev.total_memory_bytes == 10 * 1024**3
    sampler = NvmlSampler(backend, interval_s=1.0)
    lines = sampler.sample(t_ns=1)
    reading = next(line for line in lines if "event" not in line)
    assert reading["power_mw"] == 300_000  # the parent's power: a MIG slice has none of its own
    assert "gpu_util_pct" not in reading
    assert any(line.get("field") == "gpu_util_pct" for line in lines if line.get("event"))
