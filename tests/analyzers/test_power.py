"""Power/energy analyzer on scripted power profiles whose right answers are known."""

from __future__ import annotations

import json

import numpy as np
import pytest

from torchscope.analyzers import gpu_time, load, power
from torchscope.analyzers.core.registry import run_all
from torchscope.analyzers.core.result import NotApplicable
from torchscope.analyzers.roofline import analysis as roofline
from tests.conftest import require_module

T0 = 1_700_000_000_000_000_000  # ns, wall clock of the scripted runs
MS = 1_000_000
S = 1_000_000_000


def _bundle(tmp_path, samples, *, events=None, steps=None, manifest_extra=None, props=None):
    """A run bundle folder: manifest, optional trace, samples and steps streams."""
    run = tmp_path / "run"
    run.mkdir()
    manifest = {"schema_version": 1, "tool": "torchscope", "world_size": 1, "ranks": [0],
                "devices": [{"index": 0, "name": "NVIDIA A100-SXM4-40GB"}], "recorded": {"power": True},
                "unavailable": {}, "user_counts": None}
    manifest.update(manifest_extra or {})
    (run / "manifest.json").write_text(json.dumps(manifest))
    if events is not None:
        doc = {"schemaVersion": 1, "traceEvents": events}
        if props is not None:
            doc["deviceProperties"] = props
        (run / "rank0.trace.json").write_text(json.dumps(doc))
    (run / "rank0.samples.jsonl").write_text("".join(json.dumps(s) + "\n" for s in samples))
    if steps is not None:
        (run / "rank0.steps.jsonl").write_text("".join(json.dumps(s) + "\n" for s in steps))
    data = load(run)
    return data[0] if hasattr(data, "ranks") else data


def _nvml(t_ns, **fields):
    return {"t_ns": int(t_ns), "source": "nvml", "device": 0, **fields}


def _us(t_ns):
    return (t_ns) / 1000.0


def _power_with_needs(trace):
    """The power result as run_all makes it: given the roofline and gpu_time results of the same trace."""
    report = run_all(trace, only=("power",))
    assert "power" not in report.errors, report.errors
    return report.result("power")


# ------------------------------------------------------------------------------------ energy
def test_constant_300w_for_2s_is_600j_and_energy_per_step_and_token(tmp_path):
    samples = [_nvml(T0 + i * 100 * MS, power_mw=300_000, power_limit_mw=400_000) for i in range(21)]
    samples.insert(3, {"t_ns": T0, "source": "host", "cpu_util_pct": 50.0})  # other sources are ignored
    steps = [{"step": 0, "t_ns": T0}, {"step": 1, "t_ns": T0 + S, "tokens": 1000},
             {"step": 2, "t_ns": T0 + 2 * S, "tokens": 1000}]
    trace = _bundle(tmp_path, samples, steps=steps)
    res = power.analyze(trace)
    assert res.summary["energy_j"] == pytest.approx(600.0)
    assert res.summary["method"] == "power integration"
    assert res.summary["avg_power_w"] == pytest.approx(300.0)
    dev = res.table("devices").iloc[0]
    assert dev["avg_power_of_limit"] == pytest.approx(0.75) and dev["peak_power_w"] == pytest.approx(300.0)
    st = res.table("steps")
    assert list(st["step"]) == [1, 2]
    assert st["energy_j"].tolist() == pytest.approx([300.0, 300.0])
    assert st["energy_per_token_j"].tolist() == pytest.approx([0.3, 0.3])
    assert res.summary["tokens_per_j"] == pytest.approx(1000 * 2 / 600)


def test_window_edges_between_samples_are_cut_on_the_power_line():
    t = np.arange(0, 2 * S + 1, 100 * MS)
    p = 200_000.0 * t / S  # a ramp: 200 W per second
    method, curve = power.energy_curve(t, power_mw=p)
    assert method == "power integration"
    e = curve(np.array([int(1.55 * S)])) - curve(np.array([int(0.55 * S)]))
    assert e[0] / 1e3 == pytest.approx(100 * (1.55 ** 2 - 0.55 ** 2))  # ∫ 200 t dt, in J
    assert curve(np.array([-S]))[0] == 0.0 and curve(np.array([5 * S]))[0] / 1e3 == pytest.approx(400.0)


def test_energy_counter_wrap_and_reset(tmp_path):
    start = (1 << 32) - 100_000  # mJ: wraps after about a third of a second at 300 W
    raw = [(start + i * 30_000) % (1 << 32) for i in range(21)]
    assert min(raw) < raw[0]  # it does wrap
    cum = power.unwrap_energy_counter(np.array(raw, dtype=float))
    assert cum[-1] - cum[0] == pytest.approx(600_000)
    # a reset (counter restarts from zero mid-run) is not mistaken for a 4-billion-joule wrap
    reset = power.unwrap_energy_counter(np.array([5e9, 5e9 + 1000, 500, 1500], dtype=float))
    assert reset[-1] - reset[0] == pytest.approx(1000 + 500 + 1000)
    samples = [_nvml(T0 + i * 100 * MS, energy_mj=raw[i], power_mw=250_000) for i in range(21)]
    res = power.analyze(_bundle(tmp_path, samples))
    assert res.summary["method"] == "energy counter"
    assert res.summary["energy_j"] == pytest.approx(600.0)  # the counter wins over the power readings


def test_energy_by_phase(tmp_path):
    # 100 W during "forward" (first second), 300 W during "backward" (second second), sampled every 10 ms;
    # two readings at the switch make the step exact under the piecewise-linear power model
    samples = [_nvml(T0 + i * 10 * MS, power_mw=100_000) for i in range(101)]
    samples += [_nvml(T0 + i * 10 * MS, power_mw=300_000) for i in range(100, 201)]
    events = [
        {"ph": "X", "cat": "torchscope.phase", "name": "forward", "pid": 1, "tid": 1, "ts": _us(T0), "dur": 1e6},
        {"ph": "X", "cat": "torchscope.phase", "name": "backward", "pid": 1, "tid": 1, "ts": _us(T0 + S),
         "dur": 0.5e6},
        {"ph": "X", "cat": "torchscope.phase", "name": "backward", "pid": 1, "tid": 1, "ts": _us(T0 + 1.5 * S),
         "dur": 0.5e6},
    ]
    res = power.analyze(_bundle(tmp_path, samples, events=events))
    ph = res.table("phases").set_index("phase")
    assert ph.loc["forward", "energy_j"] == pytest.approx(100.0, rel=1e-9)
    assert ph.loc["backward", "energy_j"] == pytest.approx(300.0, rel=1e-9)
    assert ph.loc["backward", "count"] == 2
    assert ph["energy_share"].sum() == pytest.approx(1.0)
    assert ph.loc["backward", "avg_power_w"] == pytest.approx(300.0, rel=1e-9)
    assert "(outside phases)" not in ph.index


# ------------------------------------------------------------------------------------ clocks, throttling
def test_throttle_reason_bits_decode_and_match_nvml_constants():
    assert power.decode_throttle_reasons(0x24) == ("sw_power_cap", "sw_thermal_slowdown")
    assert power.decode_throttle_reasons(0) == ()
    assert power.decode_throttle_reasons(0x1000) == ("bit_0x1000",)
    pynvml = require_module("pynvml")
    pairs = {"nvmlClocksThrottleReasonGpuIdle": "gpu_idle", "nvmlClocksThrottleReasonSwPowerCap": "sw_power_cap",
             "nvmlClocksThrottleReasonHwSlowdown": "hw_slowdown",
             "nvmlClocksThrottleReasonSwThermalSlowdown": "sw_thermal_slowdown",
             "nvmlClocksThrottleReasonHwThermalSlowdown": "hw_thermal_slowdown",
             "nvmlClocksThrottleReasonHwPowerBrakeSlowdown": "hw_power_brake_slowdown"}
    for const, name in pairs.items():
        assert power.THROTTLE_REASONS[getattr(pynvml, const)] == name


def test_thermal_throttling_is_a_critical_finding_with_the_timeline(tmp_path):
    samples = []
    for i in range(101):  # 20 % of the time in SW thermal slowdown at a lower clock
        hot = 40 <= i < 60
        samples.append(_nvml(T0 + i * 20 * MS, power_mw=280_000, sm_clock_mhz=1100 if hot else 1410,
                             throttle_reasons=0x20 if hot else 0, temp_c=88 if hot else 70, power_limit_mw=400_000))
    res = power.analyze(_bundle(tmp_path, samples))
    th = res.table("throttle").set_index("reason")
    assert th.loc["sw_thermal_slowdown", "time_share"] == pytest.approx(0.2)
    f = next(f for f in res.findings if f.id == "power.thermal_throttling")
    assert f.severity == "critical" and f.evidence["temp_max_c"] == 88
    tl = res.table("timeline")
    assert len(tl) == 101 and set(tl["reasons"]) == {"", "sw_thermal_slowdown"}


def test_slow_fields_read_once_a_second_hold_until_the_next_reading(tmp_path):
    samples = []
    for i in range(100):  # throttle reasons and limit read every 10th sample (as the sampler does)
        extra = {"throttle_reasons": 0x4 if i >= 50 else 0, "power_limit_mw": 350_000} if i % 10 == 0 else {}
        samples.append(_nvml(T0 + i * 20 * MS, power_mw=340_000, **extra))
    res = power.analyze(_bundle(tmp_path, samples))
    assert res.table("throttle").set_index("reason").loc["sw_power_cap", "time_share"] == pytest.approx(49 / 99)
    assert res.table("devices")["power_limit_w"].iloc[0] == pytest.approx(350.0)
    assert res.table("timeline")["reasons"].iloc[55] == "sw_power_cap"


# ------------------------------------------------------------------------------------ idle, power cap
def _kernel_events(busy):
    """One memory-bound add (cpu op + launch + kernel) per (start_ns, end_ns) of ``busy``."""
    ev = []
    for i, (s, e) in enumerate(busy):
        ev += [
            {"ph": "X", "cat": "cpu_op", "name": "aten::add", "pid": 1, "tid": 1, "ts": _us(s - 50_000), "dur": 20,
             "args": {"Input Dims": [[1 << 26], [1 << 26], []], "Input type": ["float", "float", "Scalar"]}},
            {"ph": "X", "cat": "cuda_runtime", "name": "cudaLaunchKernel", "pid": 1, "tid": 1,
             "ts": _us(s - 45_000), "dur": 5, "args": {"correlation": i + 1}},
            {"ph": "X", "cat": "kernel", "name": "vectorized_elementwise_kernel", "pid": 0, "tid": 7, "ts": _us(s),
             "dur": (e - s) / 1000, "args": {"correlation": i + 1, "stream": 7, "device": 0}},
        ]
    return ev


A100_PROPS = [{"id": 0, "name": "NVIDIA A100-SXM4-40GB", "totalGlobalMem": 42505273344, "numSms": 108}]


def test_idle_energy_from_kernel_gaps(tmp_path):
    busy = [(T0, T0 + S)]  # busy the first second, idle the second
    samples = [_nvml(T0 + i * 10 * MS, power_mw=300_000 if i < 100 else 60_000) for i in range(201)]
    res = power.analyze(_bundle(tmp_path, samples, events=_kernel_events(busy), props=A100_PROPS))
    dev = res.table("devices").iloc[0]
    assert dev["idle_power_w"] == pytest.approx(60.0)
    assert dev["idle_time_ns"] == S
    assert res.summary["idle_energy_j"] == pytest.approx(60.0)
    assert dev["energy_in_idle_gaps_j"] == pytest.approx(60.0, rel=0.02)
    f = next(f for f in res.findings if f.id == power.IDLE_ENERGY)
    assert f.gain_fraction == pytest.approx(60.0 / res.summary["energy_j"])


def test_a_rank_counts_only_the_gpu_its_kernels_ran_on(tmp_path):
    busy = [(T0 + 100 * MS, T0 + 900 * MS)]
    samples = []
    for i in range(11):  # device 0 is this rank's GPU; device 1 belongs to another rank on the host
        samples.append(_nvml(T0 + i * 100 * MS, power_mw=200_000))
        samples.append({**_nvml(T0 + i * 100 * MS, power_mw=400_000), "device": 1})
    res = power.analyze(_bundle(tmp_path, samples, events=_kernel_events(busy), props=A100_PROPS))
    assert res.summary["device_indices"] == [0]
    assert res.summary["energy_j"] == pytest.approx(200.0)
    (tmp_path / "b").mkdir()
    only_samples = power.analyze(_bundle(tmp_path / "b", samples))  # no trace: every sampled GPU counts
    assert only_samples.summary["energy_j"] == pytest.approx(600.0)


def test_power_cap_whatif_model():
    none_bound = power.power_cap_whatif(0.0, 300.0, 60.0)
    assert none_bound["clock_fraction"] == min(power.POWER_CAP_CLOCK_STEPS) and none_bound["slowdown"] == 0
    assert none_bound["energy_saving"] == pytest.approx(1 - (60 + 240 * 0.6 ** 2) / 300)
    assert power.power_cap_whatif(1.0, 300.0, 60.0) is None  # every clock step would cost > 5 %
    half = power.power_cap_whatif(0.5, 300.0, 60.0)
    assert half["slowdown"] <= power.POWER_CAP_MAX_SLOWDOWN and half["clock_fraction"] == 0.95  # 0.9 would cost 5.6 %


def test_power_cap_recommended_for_memory_bound_work(tmp_path):
    # ten 90 ms memory-bound kernels, 10 ms gaps at idle power
    busy = [(T0 + k * 100 * MS, T0 + k * 100 * MS + 90 * MS) for k in range(10)]
    samples = []
    for i in range(201):
        t = T0 + i * 5 * MS
        in_gap = (i * 5) % 100 >= 90
        samples.append(_nvml(t, power_mw=70_000 if in_gap else 330_000, power_limit_mw=400_000))
    trace = _bundle(tmp_path, samples, events=_kernel_events(busy), props=A100_PROPS)
    res = _power_with_needs(trace)
    f = next(f for f in res.findings if f.id == power.POWER_CAP)
    assert f.evidence["compute_bound_share"] == pytest.approx(0.0, abs=1e-9)
    assert f.gain_fraction > power.POWER_CAP_MIN_SAVING
    assert "nvidia-smi -pl" in f.recommendation
    # FLOP/s per watt from the roofline's counted FLOPs (1 FLOP per element of each 2^26-element add)
    assert res.summary["flops_per_j"] == pytest.approx(10 * (1 << 26) / res.summary["energy_j"], rel=0.05)
    # Power never runs another analyzer itself: without their results it has no FLOPs and no power-cap advice.
    alone = power.analyze(trace)
    assert "flops_per_j" not in alone.summary and power.POWER_CAP not in {f.id for f in alone.findings}
    given = power.analyze(trace, roofline_result=roofline.analyze(trace), gpu_time_result=gpu_time.analyze(trace))
    assert given.summary == res.summary and [f.id for f in given.findings] == [f.id for f in res.findings]


def test_fp32_gemms_give_a_mixed_precision_energy_finding(tmp_path):
    ev = [
        {"ph": "X", "cat": "cpu_op", "name": "aten::mm", "pid": 1, "tid": 1, "ts": _us(T0), "dur": 30,
         "args": {"Input Dims": [[4096, 4096], [4096, 4096]], "Input type": ["float", "float"]}},
        {"ph": "X", "cat": "cuda_runtime", "name": "cudaLaunchKernel", "pid": 1, "tid": 1, "ts": _us(T0 + 10_000),
         "dur": 5, "args": {"correlation": 1}},
        {"ph": "X", "cat": "kernel", "name": "ampere_sgemm_128x64_nn", "pid": 0, "tid": 7, "ts": _us(T0 + 50_000),
         "dur": 20_000, "args": {"correlation": 1, "stream": 7, "device": 0}},
    ]
    samples = [_nvml(T0 + i * MS, power_mw=350_000) for i in range(0, 80)]
    res = _power_with_needs(_bundle(tmp_path, samples, events=ev, props=A100_PROPS))
    f = next(f for f in res.findings if f.id == power.MIXED_PRECISION)
    assert f.evidence["roofline_time_saving"] > 0.5
    assert "autocast" in f.recommendation


# ------------------------------------------------------------------------------------ other inputs
def test_counter_events_of_a_plain_trace(tmp_path):
    events = [{"ph": "C", "name": "power_w", "pid": 1, "tid": 0, "ts": _us(T0 + i * 100 * MS), "args": {"gpu0": 200.0}}
              for i in range(11)]
    events.append({"ph": "X", "cat": "cpu_op", "name": "aten::add", "pid": 1, "tid": 1, "ts": _us(T0), "dur": 5})
    path = tmp_path / "plain.json"
    path.write_text(json.dumps({"traceEvents": events}))
    res = power.analyze(load(path))
    assert res.summary["energy_j"] == pytest.approx(200.0)


def test_no_power_samples_says_why(tmp_path):
    samples = [{"t_ns": T0, "source": "nvml", "event": "unavailable", "field": "power_mw",
                "reason": "unavailable (no NVML)"}, {"t_ns": T0, "source": "host", "cpu_util_pct": 3.0}]
    with pytest.raises(NotApplicable, match="no NVML"):
        power.analyze(_bundle(tmp_path, samples))


# ------------------------------------------------------------------------------------ end to end
@pytest.mark.slow
def test_profiler_bundle_through_fake_nvml_gives_the_scripted_energy(tmp_path):
    """profile() with a fake NVML at a constant 300 W under a power cap → the analyzer's joules and advice."""
    require_module("torch")
    require_module("pynvml")
    import time as _time

    from torchscope import profiler
    from tests.profiler.fake_nvml import FakeGpu, make_fake_nvml
    from tests.profiler.workloads_for_tests import TinyNet, train

    gpu = FakeGpu(uuid="GPU-fake-0", readings={"power": 300_000, "throttle": 0x4, "power_limit": 300_000},
                  not_supported={"energy"})
    run = tmp_path / "run"
    with profiler.profile(run, model=(model := TinyNet()), nvml_module=make_fake_nvml([gpu]),
                          host_roofline=False, sample_interval_ms=20) as prof:
        train(model, prof, n_batches=8)
        _time.sleep(0.1)
    nv = [json.loads(line) for line in (run / "rank0.samples.jsonl").read_text().splitlines()]
    nv = [s for s in nv if s.get("source") == "nvml" and "power_mw" in s]
    span_s = (nv[-1]["t_ns"] - nv[0]["t_ns"]) / 1e9
    res = power.analyze(load(run))
    assert res.summary["method"] == "power integration"
    assert res.summary["energy_j"] == pytest.approx(300.0 * span_s, rel=1e-9)
    st = res.table("steps")
    assert list(st["step"]) == list(range(8))  # every step of the loop, step 0 from the manifest's start
    inside = st[st["coverage"] == 1.0]
    assert not inside.empty
    assert inside["energy_j"].to_numpy() == pytest.approx(300.0 * inside["dur_ns"].to_numpy() / 1e9)
    assert (inside["tokens"] == 32).all()  # prof.step(tokens=4×8)
    assert res.table("throttle").set_index("reason").loc["sw_power_cap", "time_share"] == pytest.approx(1.0)
    assert power.POWER_THROTTLING in {f.id for f in res.findings}
    phases = res.table("phases")
    assert {"forward", "backward"} <= set(phases["phase"])
    assert phases["energy_share"].sum() == pytest.approx(1.0)


def test_energy_curve_properties():
    hyp = require_module("hypothesis")
    st = require_module("hypothesis.strategies")

    @hyp.settings(max_examples=60, deadline=None)
    @hyp.given(gaps=st.lists(st.integers(1, 10 * MS), min_size=2, max_size=40),
               watts=st.lists(st.floats(0, 1000), min_size=41, max_size=41),
               cuts=st.lists(st.integers(0, 400 * MS), min_size=3, max_size=3))
    def check(gaps, watts, cuts):
        t = T0 + np.concatenate([[0], np.cumsum(gaps)]).astype(np.int64)
        p = np.array(watts[: t.size]) * 1e3
        _, curve = power.energy_curve(t, power_mw=p)
        a, b, c = sorted(T0 + np.array(cuts, dtype=np.int64))
        e = lambda x, y: float(curve(np.array([y]))[0] - curve(np.array([x]))[0])  # noqa: E731
        assert e(a, b) + e(b, c) == pytest.approx(e(a, c), rel=1e-9, abs=1e-6)  # additive over windows
        assert e(a, c) >= -1e-9  # power is never negative, so neither is energy
        full = e(int(t[0]), int(t[-1]))
        assert full == pytest.approx(float(np.trapezoid(p, t - t[0])) * 1e-9, rel=1e-9, abs=1e-9)
        const = power.energy_curve(t, power_mw=np.full(t.size, 250_000.0))[1]
        assert float(const(np.array([c]))[0] - const(np.array([a]))[0]) == pytest.approx(
            250.0 * (min(c, t[-1]) - min(max(a, t[0]), t[-1])) / 1e9 * 1e3, rel=1e-9, abs=1e-6)

    check()


def test_ids_follow_the_scheme_and_power_needs_its_inputs():
    from torchscope.analyzers.core.findings import FINDING_ID_RE
    from torchscope.analyzers.core.registry import load_analyzers

    for finding_id in (power.THERMAL_THROTTLING, power.POWER_THROTTLING, power.IDLE_ENERGY, power.POWER_CAP,
                       power.MIXED_PRECISION):
        assert FINDING_ID_RE.fullmatch(finding_id) and finding_id.startswith("power.")
    spec = load_analyzers()["power"]
    assert spec.needs == ("roofline", "gpu_time") and set(spec.summary_keys) >= {"energy_j", "idle_energy_share"}
