"""Power and energy: energy per step/token/phase, power vs limit, clocks and throttling, idle energy.

Input: the NVML lines of the run bundle's ``samples`` stream (``source == "nvml"``: ``t_ns``,
``device``, ``power_mw``, ``energy_mj``, ``sm_clock_mhz``, ``throttle_reasons``, ``power_limit_mw``,
``gpu_util_pct``, ...), or, for a plain trace, our counter events (``power_w``, ``energy_j``,
``sm_clock_mhz``, ``power_limit_w`` with series ``gpu<N>``).

Energy over a time window, per device:

* with the total-energy counter (``energy_mj``): the counter interpolated linearly at the window's
  ends, after unwrapping. The sampler already makes it monotone; here a backwards step is treated
  again as a 32/64-bit wrap when the wrapped delta is plausible (under half the modulus), else as a
  reset (the counter restarted from zero);
* otherwise by integrating power: power is taken as linear between samples (trapezoids), and a
  window edge between two samples is cut on that line, so the result is exact for piecewise-linear
  power. Windows are clipped to the sampled span (no extrapolation).

When a rank's sampler saw several GPUs but the rank's GPU work ran on a subset (the ``device`` of
its kernels), only that subset counts, so ranks sharing a host do not each count every GPU.

Steps are ``timeline.steps.run_step_windows``: from the ``steps`` stream, which covers every step
of the run (the samples do too, while Kineto records only the scheduled steps): its line
``{"step": s, "t_ns"}`` is written when step *s* ends, so step *s* runs from the previous line's
``t_ns`` (step 0: the manifest's ``started_at_ns``) to its own. Without the stream, the traced step
windows (each ``ProfilerStep#N`` until the next one starts). Tokens/samples per step come from the
``steps`` stream or the manifest's ``user_counts``. Phases are our ``torchscope.phase`` annotations;
a phase's energy is the integral over its intervals. Idle: GPU idle time is the part of the trace
window with no GPU work (or, without GPU events, the sampled time at 0 % utilisation); idle power
is the median power of samples taken while idle (NVML ``GpuIdle`` reason, 0 % utilisation, or inside
an idle gap of the kernel timeline), else the 5th percentile of power; idle energy = time × power.

Power-capping what-if (a documented model, not a measurement): a cap lowers the SM clock to a
fraction *s* of its current value. Compute-bound kernel time scales with 1/*s*; memory-bound
kernels, copies, exposed communication and idle time do not. Power above idle scales with
``s ** POWER_CLOCK_EXPONENT`` (dynamic power ∝ f·V², with voltage falling with frequency in the
DVFS range). The compute-bound share comes from the roofline analyzer (compute-bound operator time;
GPU time it cannot model counts as compute-bound, which makes the estimate conservative) and the
communication/idle shares from the gpu_time analyzer.

Tables of the Result: ``devices`` (per GPU: ``energy_j``, ``avg_power_w``, ``peak_power_w``,
``power_limit_w`` and the ratios to it, ``idle_power_w``, ``idle_time_ns``, ``idle_energy_j``,
``energy_in_idle_gaps_j``, SM clock mean/max, max temperature, ``method``), ``steps`` (``energy_j``,
``avg_power_w``, ``coverage`` of the step by samples, ``tokens``/``samples`` and the energy per
token/sample, ``tokens_per_j``), ``phases`` (``energy_j``, ``energy_share``, ``avg_power_w`` per phase
name, plus "(outside phases)"), ``timeline`` (``t_ns``, ``power_w``, ``sm_clock_mhz``,
``power_limit_w``, ``temp_c``, ``throttle_reasons`` and their decoded names) and ``throttle``
(per device and reason: share of the non-idle sampled time).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Mapping

import numpy as np
import pandas as pd

from torchscope.analyzers.core.findings import Finding
from torchscope.analyzers.core.result import NotApplicable, Result
from torchscope.analyzers.core.registry import register
from torchscope.analyzers.core.trace import Trace
from torchscope.analyzers.roofline.rules import MIXED_PRECISION as ROOFLINE_MIXED_PRECISION
from torchscope.analyzers.timeline.intervals import merge_intervals
from torchscope.analyzers.timeline.steps import run_step_windows

__all__ = [
    "analyze", "nvml_samples", "energy_curve", "unwrap_energy_counter", "decode_throttle_reasons",
    "power_cap_whatif", "THROTTLE_REASONS", "THERMAL_REASONS", "POWER_REASONS",
    "IDLE_ENERGY_MIN_SHARE", "THROTTLE_MIN_SHARE", "POWER_CAP_MAX_SLOWDOWN", "POWER_CAP_MIN_SAVING",
    "POWER_CAP_COMPUTE_BOUND_MAX", "POWER_CLOCK_EXPONENT", "MIXED_PRECISION_MIN_ENERGY_SHARE",
    "IDLE_ENERGY_WARNING_SHARE", "POWER_CAP_ROUND_W", "SUMMARY_KEYS",
    "THERMAL_THROTTLING", "POWER_THROTTLING", "IDLE_ENERGY", "POWER_CAP", "MIXED_PRECISION",
]

ANALYZER = "power"

#: NVML clock-event ("throttle") reason bits (nvmlClocksEventReason*), bit → name.
THROTTLE_REASONS = {
    0x1: "gpu_idle", 0x2: "applications_clocks_setting", 0x4: "sw_power_cap", 0x8: "hw_slowdown",
    0x10: "sync_boost", 0x20: "sw_thermal_slowdown", 0x40: "hw_thermal_slowdown",
    0x80: "hw_power_brake_slowdown", 0x100: "display_clock_setting",
}
THERMAL_REASONS = ("sw_thermal_slowdown", "hw_thermal_slowdown")
POWER_REASONS = ("sw_power_cap", "hw_slowdown", "hw_power_brake_slowdown")
_IDLE_BIT = 0x1

#: The power-cap what-if (and recommendation) accepts at most this slowdown of the step, 0..1.
POWER_CAP_MAX_SLOWDOWN = 0.05
#: Dynamic power ∝ clock ** this exponent in the power-cap model.
POWER_CLOCK_EXPONENT = 2.0
#: Clock fractions the power-cap what-if tries.
POWER_CAP_CLOCK_STEPS = (0.95, 0.9, 0.85, 0.8, 0.75, 0.7, 0.65, 0.6)
#: Idle gaps of the kernel timeline shorter than this do not count for the idle-power estimate.
IDLE_GAP_MIN_NS = 5_000_000

_SAMPLE_COLUMNS = ("t_ns", "device", "power_mw", "energy_mj", "sm_clock_mhz", "mem_clock_mhz",
                   "throttle_reasons", "power_limit_mw", "gpu_util_pct", "temp_c")
#: Fields the sampler reads only every so often (profiler.nvml.EXPENSIVE_FIELDS): carried forward.
_HELD_FIELDS = ("temp_c", "throttle_reasons", "power_limit_mw")
_COUNTER_MAP = {"power_w": ("power_mw", 1e3), "energy_j": ("energy_mj", 1e3), "sm_clock_mhz": ("sm_clock_mhz", 1.0),
                "mem_clock_mhz": ("mem_clock_mhz", 1.0), "power_limit_w": ("power_limit_mw", 1e3),
                "gpu_util_pct": ("gpu_util_pct", 1.0), "temp_c": ("temp_c", 1.0),
                "throttle_reasons": ("throttle_reasons", 1.0)}
_MJ_PER_MW_NS = 1e-9  # 1 mW for 1 ns = 1e-12 J = 1e-9 mJ


# ---------------------------------------------------------------------------------------- inputs
def nvml_samples(trace: Trace) -> pd.DataFrame:
    """NVML readings as one frame sorted by (device, t_ns), from the samples stream or the counters."""
    stream = trace.streams.get("samples") if trace.streams else None
    if stream is not None and not stream.empty and "t_ns" in stream:
        df = stream
        if "source" in df:
            df = df[df["source"].astype(str) == "nvml"]
        if "event" in df:
            df = df[df["event"].isna()]
        out = pd.DataFrame({c: pd.to_numeric(df[c], errors="coerce") if c in df else np.nan for c in _SAMPLE_COLUMNS},
                           index=df.index)
    else:
        out = _from_counters(trace)
    out = out[out["t_ns"].notna()]
    out["t_ns"] = out["t_ns"].astype(np.int64)
    out["device"] = out["device"].fillna(0).astype(np.int64)
    out = out.sort_values(["device", "t_ns"], kind="stable").reset_index(drop=True)
    # Slow fields are read about once a second: a reading holds until the next one.
    for col in _HELD_FIELDS:
        out[col] = out.groupby("device")[col].ffill()
    return out


def _from_counters(trace: Trace) -> pd.DataFrame:
    c = trace.counters
    if c is None or c.empty:
        return pd.DataFrame(columns=_SAMPLE_COLUMNS)
    c = c[c["name"].astype(str).isin(_COUNTER_MAP) & c["series"].astype(str).str.match(r"^gpu\d+$")]
    if c.empty:
        return pd.DataFrame(columns=_SAMPLE_COLUMNS)
    c = c.assign(device=c["series"].astype(str).str.slice(3).astype(np.int64),
                 field=c["name"].astype(str).map(lambda n: _COUNTER_MAP[n][0]),
                 v=c["value"] * c["name"].astype(str).map(lambda n: _COUNTER_MAP[n][1]).astype(float))
    wide = c.pivot_table(index=["ts_ns", "device"], columns="field", values="v", aggfunc="last").reset_index()
    wide = wide.rename(columns={"ts_ns": "t_ns"})
    return pd.DataFrame({col: wide[col] if col in wide else np.nan for col in _SAMPLE_COLUMNS}, index=wide.index)


# ---------------------------------------------------------------------------------------- energy
def unwrap_energy_counter(raw_mj: np.ndarray) -> np.ndarray:
    """A monotone cumulative energy (mJ) from counter readings that may wrap (32/64-bit) or reset."""
    raw = np.asarray(raw_mj, dtype=np.float64)
    if raw.size == 0:
        return raw
    out = np.empty_like(raw)
    out[0] = raw[0]
    for i in range(1, raw.size):
        delta = raw[i] - raw[i - 1]
        if delta < 0:
            modulus = float(1 << 32) if raw[i - 1] < float(1 << 32) else float(1 << 64)
            wrapped = raw[i] + modulus - raw[i - 1]
            delta = wrapped if wrapped <= modulus / 2 else raw[i]  # a wrap, or a reset to zero
        out[i] = out[i - 1] + delta
    return out


def energy_curve(t_ns: np.ndarray, *, power_mw: np.ndarray | None = None,
                 energy_mj: np.ndarray | None = None) -> tuple[str, Callable[[np.ndarray], np.ndarray]]:
    """(method, E) where E(t) is the cumulative energy in mJ at times t (ns) since the first sample."""
    t = np.asarray(t_ns, dtype=np.int64)
    # Wall-clock ns (~1.8e18) lose 256 ns in float64: work relative to the first sample.
    origin = int(t[0]) if t.size else 0

    def rel(q: np.ndarray) -> np.ndarray:
        return (np.asarray(q, dtype=np.int64) - origin).astype(np.float64)

    if energy_mj is not None:
        e = np.asarray(energy_mj, dtype=np.float64)
        ok = ~np.isnan(e)
        if ok.sum() >= 2:
            tt, cum = t[ok], unwrap_energy_counter(e[ok])
            cum = cum - cum[0]
            ft = rel(tt)
            return "energy counter", lambda q: np.interp(rel(q), ft, cum)
    if power_mw is None:
        raise ValueError("neither power nor energy readings")
    p = np.asarray(power_mw, dtype=np.float64)
    ok = ~np.isnan(p)
    tt, pp = rel(t[ok]), p[ok]
    if tt.size == 0:
        raise ValueError("no power readings")
    if tt.size == 1:
        return "power integration", lambda q: np.zeros(np.shape(q))
    seg = np.diff(tt) * (pp[1:] + pp[:-1]) / 2.0 * _MJ_PER_MW_NS
    cum = np.concatenate([[0.0], np.cumsum(seg)])

    def curve(q: np.ndarray) -> np.ndarray:
        q = np.clip(rel(q), tt[0], tt[-1])
        i = np.clip(np.searchsorted(tt, q, side="right") - 1, 0, tt.size - 2)
        dt = q - tt[i]
        span = tt[i + 1] - tt[i]
        with np.errstate(invalid="ignore", divide="ignore"):
            pq = np.where(span > 0, pp[i] + (pp[i + 1] - pp[i]) * dt / span, pp[i])
        return cum[i] + dt * (pp[i] + pq) / 2.0 * _MJ_PER_MW_NS

    return "power integration", curve


class _Device:
    """One device's readings with its energy curve."""

    def __init__(self, index: int, df: pd.DataFrame) -> None:
        self.index = index
        self.df = df
        self.t = df["t_ns"].to_numpy(np.int64)
        self.method, self.E = energy_curve(self.t, power_mw=df["power_mw"].to_numpy(float),
                                           energy_mj=df["energy_mj"].to_numpy(float))
        self.t0, self.t1 = int(self.t[0]), int(self.t[-1])

    def total_energy_mj(self) -> float:
        """Energy (mJ) over the whole sampled span."""
        return float(self.energy_mj(np.array([self.t0]), np.array([self.t1]))[0])

    def energy_mj(self, start_ns: np.ndarray, end_ns: np.ndarray) -> np.ndarray:
        """Energy (mJ) in each window [start, end], clipped to the sampled span."""
        return self.E(np.asarray(end_ns)) - self.E(np.asarray(start_ns))

    def covered_ns(self, start_ns: np.ndarray, end_ns: np.ndarray) -> np.ndarray:
        """Part (ns) of each window inside the sampled span."""
        s = np.clip(np.asarray(start_ns), self.t0, self.t1)
        e = np.clip(np.asarray(end_ns), self.t0, self.t1)
        return np.maximum(e - s, 0)


def decode_throttle_reasons(mask: int | float | None) -> tuple[str, ...]:
    """Names of the NVML clock-event reasons set in ``mask`` (unknown bits as ``bit_0x...``)."""
    if mask is None or (isinstance(mask, float) and math.isnan(mask)):
        return ()
    m = int(mask)
    names = [name for bit, name in THROTTLE_REASONS.items() if m & bit]
    rest = m & ~sum(THROTTLE_REASONS)
    bit = 1
    while rest:
        if rest & bit:
            names.append(f"bit_{bit:#x}")
            rest &= ~bit
        bit <<= 1
    return tuple(names)


# ---------------------------------------------------------------------------------------- steps
def _counts_per_step(trace: Trace, steps: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    n = len(steps)
    tokens = np.full(n, np.nan)
    samples = np.full(n, np.nan)
    counts = (trace.meta.manifest or {}).get("user_counts") or {}
    if isinstance(counts, Mapping):
        if counts.get("tokens_per_step"):
            tokens[:] = float(counts["tokens_per_step"])
        if counts.get("samples_per_step"):
            samples[:] = float(counts["samples_per_step"])
    stream = trace.streams.get("steps") if trace.streams else None
    if stream is not None and not stream.empty and "step" in stream:
        by_step = stream.dropna(subset=["step"]).drop_duplicates("step", keep="last").set_index("step")
        idx = pd.Index(by_step.index.astype(np.int64))
        pos = idx.get_indexer(steps.to_numpy(np.int64))
        for col, arr in (("tokens", tokens), ("samples", samples)):
            if col in by_step:
                vals = pd.to_numeric(by_step[col], errors="coerce").to_numpy(float)
                hit = pos >= 0
                got = np.where(hit, vals[np.maximum(pos, 0)], np.nan)
                arr[~np.isnan(got)] = got[~np.isnan(got)]
    return tokens, samples


def _gpu_busy(trace: Trace) -> tuple[np.ndarray, np.ndarray]:

    gpu = trace.gpu_events()
    if gpu.empty:
        return np.empty(0, np.int64), np.empty(0, np.int64)
    s = gpu["ts_ns"].to_numpy(np.int64)
    return merge_intervals(s, s + gpu["dur_ns"].to_numpy(np.int64))


def _idle_intervals(busy: tuple[np.ndarray, np.ndarray], lo: int, hi: int) -> tuple[np.ndarray, np.ndarray]:
    s, e = busy
    keep = (e > lo) & (s < hi)
    s, e = np.clip(s[keep], lo, hi), np.clip(e[keep], lo, hi)
    starts = np.concatenate([[lo], e])
    ends = np.concatenate([s, [hi]])
    ok = ends > starts
    return starts[ok], ends[ok]


# ---------------------------------------------------------------------------------------- what-if
def power_cap_whatif(compute_bound_share: float, avg_power_w: float, idle_power_w: float,
                     *, max_slowdown: float = POWER_CAP_MAX_SLOWDOWN) -> dict | None:
    """Best clock fraction under the slowdown budget: cap (W), slowdown and energy saving (fractions)."""
    if not (avg_power_w > 0) or avg_power_w <= idle_power_w:
        return None
    f_c = min(max(compute_bound_share, 0.0), 1.0)
    best = None
    for s in POWER_CAP_CLOCK_STEPS:
        time_ratio = f_c / s + (1.0 - f_c)
        power = idle_power_w + (avg_power_w - idle_power_w) * s ** POWER_CLOCK_EXPONENT
        energy_ratio = power / avg_power_w * time_ratio
        slowdown = time_ratio - 1.0
        if slowdown <= max_slowdown + 1e-12 and (best is None or energy_ratio < best["energy_ratio"]):
            best = {"clock_fraction": s, "cap_w": power, "slowdown": slowdown, "energy_ratio": energy_ratio,
                    "energy_saving": 1.0 - energy_ratio}
    return best


# ---------------------------------------------------------------------------------------- devices
@dataclass(frozen=True)
class _Idle:
    """One device's idle figures: time (ns), power (mW), energy at idle power and inside the idle gaps (mJ)."""

    time_ns: int
    power_mw: float
    energy_mj: float  # time × idle power; NaN without an idle power
    gap_energy_mj: float  # measured inside the kernel timeline's idle gaps; NaN without GPU events


def _devices(usable: pd.DataFrame) -> list[_Device]:
    """One ``_Device`` per device with at least two usable samples, by device index."""
    return [_Device(int(idx), df.reset_index(drop=True)) for idx, df in usable.groupby("device", sort=True)
            if len(df) >= 2]


def _idle(d: _Device, busy: tuple[np.ndarray, np.ndarray]) -> _Idle:
    """Idle time, power and energy of one device: gaps of the kernel timeline, else samples at 0 % utilisation."""
    df = d.df
    idle_s, idle_e = _idle_intervals(busy, d.t0, d.t1) if busy[0].size else (np.empty(0), np.empty(0))
    power_mw = _idle_power_mw(df, idle_s, idle_e)
    if busy[0].size:
        idle_ns = int((idle_e - idle_s).sum())
        gap_mj = float(d.energy_mj(idle_s, idle_e).sum())
    else:
        util = df["gpu_util_pct"].to_numpy(float)
        idle_ns = int(_weighted_time(d.t, util == 0)) if not np.isnan(util).all() else 0
        gap_mj = math.nan
    energy_mj = idle_ns * power_mw * _MJ_PER_MW_NS if not math.isnan(power_mw) else math.nan
    return _Idle(idle_ns, power_mw, energy_mj, gap_mj)


def _nanmax(values: np.ndarray) -> float:
    return float(np.nanmax(values)) if not np.isnan(values).all() else math.nan


def _device_row(d: _Device, idle: _Idle) -> dict:
    """One row of the ``devices`` table: energy (J), power (W) and its ratio to the limit, idle figures, clocks."""
    df = d.df
    e_mj = d.total_energy_mj()
    span = d.t1 - d.t0
    limit = float(np.nanmedian(df["power_limit_mw"])) if df["power_limit_mw"].notna().any() else math.nan
    avg_w = e_mj / span / _MJ_PER_MW_NS / 1e3 if span > 0 else math.nan
    peak_w = _nanmax(df["power_mw"].to_numpy(float)) / 1e3
    clocks = df["sm_clock_mhz"].to_numpy(float)
    return {
        "device": d.index, "samples": len(df), "span_ns": span, "method": d.method,
        "energy_j": e_mj / 1e3, "avg_power_w": avg_w, "peak_power_w": peak_w,
        "power_limit_w": limit / 1e3, "avg_power_of_limit": avg_w / (limit / 1e3) if limit > 0 else math.nan,
        "peak_power_of_limit": peak_w / (limit / 1e3) if limit > 0 else math.nan,
        "idle_power_w": idle.power_mw / 1e3, "idle_time_ns": idle.time_ns,
        "idle_energy_j": idle.energy_mj / 1e3, "energy_in_idle_gaps_j": idle.gap_energy_mj / 1e3,
        "sm_clock_mean_mhz": float(np.nanmean(clocks)) if not np.isnan(clocks).all() else math.nan,
        "sm_clock_max_mhz": _nanmax(clocks),
        "temp_max_c": float(np.nanmax(df["temp_c"])) if df["temp_c"].notna().any() else math.nan,
    }


def _device_timeline(d: _Device) -> pd.DataFrame:
    """One device's readings for the ``timeline`` table (W, MHz, °C, throttle mask and its decoded names)."""
    df = d.df
    reasons = df["throttle_reasons"].to_numpy(float)
    return pd.DataFrame({
        "t_ns": d.t, "device": d.index, "power_w": df["power_mw"].to_numpy(float) / 1e3,
        "sm_clock_mhz": df["sm_clock_mhz"].to_numpy(float),
        "power_limit_w": df["power_limit_mw"].to_numpy(float) / 1e3, "temp_c": df["temp_c"].to_numpy(float),
        "throttle_reasons": reasons, "reasons": [",".join(decode_throttle_reasons(r)) for r in reasons],
    })


def _throttle_rows(d: _Device) -> list[dict]:
    """Rows of the ``throttle`` table for one device: each reason's share of its busy sampled time."""
    shares = _reason_shares(d.t, d.df["throttle_reasons"].to_numpy(float), busy_only=True)
    return [{"device": d.index, "reason": name, "time_share": share} for name, share in shares.items()]


def _summary(devices: list[_Device], own: str, devices_df: pd.DataFrame, idle: list[_Idle], steps_df: pd.DataFrame,
             perf: dict) -> dict:
    """The summary (keys: ``SUMMARY_KEYS``)."""
    total_mj = sum(d.total_energy_mj() for d in devices)
    idle_mj = sum(0.0 if math.isnan(i.energy_mj) else i.energy_mj for i in idle)
    summary = {
        "devices": len(devices), "device_indices": [d.index for d in devices], "devices_from": own,
        "method": ",".join(sorted({d.method for d in devices})),
        "sampled_ns": int(max(d.t1 for d in devices) - min(d.t0 for d in devices)), "energy_j": total_mj / 1e3,
        "avg_power_w": float(devices_df["avg_power_w"].sum()),
        "peak_power_w": float(devices_df["peak_power_w"].max()),
        "power_limit_w": float(devices_df["power_limit_w"].sum()) if devices_df["power_limit_w"].notna().any()
        else math.nan,
        "idle_time_ns": int(sum(i.time_ns for i in idle)), "idle_energy_j": idle_mj / 1e3,
        "idle_energy_share": idle_mj / total_mj if total_mj > 0 else math.nan,
        **perf,
    }
    if not steps_df.empty:
        summary["energy_per_step_j"] = float(steps_df["energy_j"].mean())
        if steps_df["energy_per_token_j"].notna().any():
            summary["energy_per_token_j"] = float(steps_df["energy_per_token_j"].mean())
        if steps_df["energy_per_sample_j"].notna().any():
            summary["energy_per_sample_j"] = float(steps_df["energy_per_sample_j"].mean())
    return summary


# ---------------------------------------------------------------------------------------- analyze
#: Every key the power Result's summary can hold: what it is, with its unit.
SUMMARY_KEYS: dict[str, str] = {
    "devices": "number of GPUs counted for this rank",
    "device_indices": "their NVML indices, list of int",
    "devices_from": "which GPUs count: 'all sampled devices' or 'devices the rank's GPU work ran on'",
    "method": "how energy was measured: 'energy counter' and/or 'power integration' (comma-joined)",
    "sampled_ns": "span from the first to the last sample over the counted GPUs, ns",
    "energy_j": "energy of the counted GPUs over their sampled spans, J",
    "avg_power_w": "sum over GPUs of their average power, W",
    "peak_power_w": "highest single reading of any GPU, W",
    "power_limit_w": "sum over GPUs of their median power limit, W (NaN when not read)",
    "idle_time_ns": "GPU idle time summed over GPUs, ns",
    "idle_energy_j": "idle time × idle power summed over GPUs, J",
    "idle_energy_share": "idle energy ÷ energy, 0..1 (NaN without energy)",
    "tokens_per_j": "only with token counts: tokens per joule over the steps",
    "samples_per_j": "only with sample counts: samples per joule over the steps",
    "flops_per_j": "only with a roofline result with counted FLOPs: FLOPs per joule over its steps",
    "energy_per_step_j": "only with steps: mean energy per step, J",
    "energy_per_token_j": "only with steps and token counts: mean energy per token, J",
    "energy_per_sample_j": "only with steps and sample counts: mean energy per sample, J",
}


@register(ANALYZER, page="power",
          description="Energy per step/token/phase, power vs limit, throttling, idle energy, power-cap what-if",
          needs=("roofline", "gpu_time"), summary_keys=SUMMARY_KEYS)
def analyze(trace: Trace, *, roofline_result: Result | None = None, gpu_time_result: Result | None = None) -> Result:
    """Power and energy of a run from its NVML samples (tables in J, W, MHz; times in ns).

    ``roofline_result`` and ``gpu_time_result`` (passed by ``run_all``; None when those were skipped)
    give FLOPs per joule and the power-cap and mixed-precision findings.
    """
    samples = nvml_samples(trace)
    usable = samples[samples["power_mw"].notna() | samples["energy_mj"].notna()]
    if usable.empty:
        reason = _unavailable_reason(trace)
        raise NotApplicable(f"no GPU power samples{': ' + reason if reason else ''}")
    usable, own = _own_devices(trace, usable)
    devices = _devices(usable)
    if not devices:
        raise NotApplicable("fewer than two power samples per device")
    busy = _gpu_busy(trace)
    idle = [_idle(d, busy) for d in devices]
    devices_df = pd.DataFrame([_device_row(d, i) for d, i in zip(devices, idle)])
    timeline_df = pd.concat([_device_timeline(d) for d in devices], ignore_index=True)
    throttle_df = pd.DataFrame([row for d in devices for row in _throttle_rows(d)],
                               columns=["device", "reason", "time_share"])
    steps_df = _steps_table(trace, devices)
    phases_df = _phases_table(trace, devices, sum(d.total_energy_mj() for d in devices))
    summary = _summary(devices, own, devices_df, idle, steps_df,
                       _perf_per_watt(steps_df, devices, roofline_result))
    idle_power_w = {d.index: i.power_mw / 1e3 for d, i in zip(devices, idle)}
    findings = _findings(trace, devices_df, throttle_df, summary, idle_power_w, roofline_result, gpu_time_result)
    return Result(analyzer=ANALYZER, rank=trace.rank, summary=summary, findings=tuple(findings), tables={
        "devices": devices_df, "steps": steps_df, "phases": phases_df, "timeline": timeline_df,
        "throttle": throttle_df,
    })


def _own_devices(trace: Trace, samples: pd.DataFrame) -> tuple[pd.DataFrame, str]:
    """Keep the device this rank ran on when its sampler also saw other GPUs (no double counting)."""
    sampled = set(samples["device"].unique().tolist())
    if len(sampled) <= 1:
        return samples, "all sampled devices"
    gpu = trace.gpu_events()
    used = set(gpu.loc[gpu["device"] >= 0, "device"].unique().tolist()) if not gpu.empty else set()
    if used and used <= sampled and used != sampled:
        return samples[samples["device"].isin(used)], "devices the rank's GPU work ran on"
    return samples, "all sampled devices"


def _unavailable_reason(trace: Trace) -> str:
    stream = trace.streams.get("samples") if trace.streams else None
    if stream is not None and "event" in stream and "field" in stream:
        unavailable = stream["event"].astype(str) == "unavailable"
        rows = stream[unavailable & stream["field"].astype(str).isin(["power_mw", "energy_mj", "power"])]
        if not rows.empty and "reason" in rows:
            return str(rows["reason"].iloc[0])
    manifest = trace.meta.manifest or {}
    reason = (manifest.get("unavailable") or {}).get("power")
    return str(reason) if reason else ""


def _weighted_time(t: np.ndarray, mask: np.ndarray) -> float:
    """Time (ns) during which ``mask`` holds, each sample standing for the interval to the next one."""
    if t.size < 2:
        return 0.0
    dt = np.diff(t)
    return float(dt[mask[:-1]].sum())


def _reason_shares(t: np.ndarray, reasons: np.ndarray, *, busy_only: bool) -> dict[str, float]:
    """Share of sampled (non-idle) time each throttle reason was active."""
    if t.size < 2 or np.isnan(reasons).all():
        return {}
    known = ~np.isnan(reasons[:-1])  # time before the first reading is not counted
    r = np.where(np.isnan(reasons), 0, reasons).astype(np.int64)
    dt = np.diff(t).astype(float)
    r0 = r[:-1]
    base = known & (((r0 & _IDLE_BIT) == 0) if busy_only else np.ones(r0.size, bool))
    total = dt[base].sum()
    if total <= 0:
        return {}
    return {name: float(dt[base & ((r0 & bit) != 0)].sum() / total)
            for bit, name in THROTTLE_REASONS.items() if bit != _IDLE_BIT and ((r0 & bit) != 0).any()}


def _idle_power_mw(df: pd.DataFrame, idle_s: np.ndarray, idle_e: np.ndarray) -> float:
    p = df["power_mw"].to_numpy(float)
    if np.isnan(p).all():
        return math.nan
    t = df["t_ns"].to_numpy(np.int64)
    reasons = df["throttle_reasons"].to_numpy(float)
    util = df["gpu_util_pct"].to_numpy(float)
    idle = (~np.isnan(reasons) & ((np.nan_to_num(reasons).astype(np.int64) & _IDLE_BIT) != 0)) | (util == 0)
    long_gap = (idle_e - idle_s) >= IDLE_GAP_MIN_NS
    if long_gap.any():
        gs, ge = idle_s[long_gap], idle_e[long_gap]
        pos = np.searchsorted(gs, t, side="right") - 1
        idle |= (pos >= 0) & (t < ge[np.maximum(pos, 0)]) & (t >= gs[np.maximum(pos, 0)])
    vals = p[idle & ~np.isnan(p)]
    if vals.size:
        return float(np.median(vals))
    return float(np.nanpercentile(p, 5))


def _steps_table(trace: Trace, devices: list[_Device]) -> pd.DataFrame:
    cols = ["step", "start_ns", "dur_ns", "energy_j", "avg_power_w", "coverage", "tokens", "samples",
            "energy_per_token_j", "energy_per_sample_j", "tokens_per_j"]
    w = run_step_windows(trace)
    if w.empty:
        return pd.DataFrame(columns=cols)
    s, e = w["start_ns"].to_numpy(np.int64), w["end_ns"].to_numpy(np.int64)
    energy = sum(d.energy_mj(s, e) for d in devices) / 1e3
    covered = np.max([d.covered_ns(s, e) for d in devices], axis=0)
    dur = e - s
    tokens, samples = _counts_per_step(trace, w["step"])
    with np.errstate(divide="ignore", invalid="ignore"):
        out = pd.DataFrame({
            "step": w["step"].to_numpy(np.int64), "start_ns": s, "dur_ns": dur, "energy_j": energy,
            "avg_power_w": np.where(covered > 0, energy / (covered / 1e9), np.nan),
            "coverage": np.where(dur > 0, covered / dur, np.nan), "tokens": tokens, "samples": samples,
            "energy_per_token_j": energy / tokens, "energy_per_sample_j": energy / samples,
            "tokens_per_j": tokens / energy,
        })
    return out[out["coverage"] > 0].reset_index(drop=True)[cols]


def _phases_table(trace: Trace, devices: list[_Device], total_mj: float) -> pd.DataFrame:
    cols = ["phase", "count", "time_ns", "energy_j", "energy_share", "avg_power_w"]
    ph = trace.of_kind("phase")
    if ph.empty:
        return pd.DataFrame(columns=cols)
    s = ph["ts_ns"].to_numpy(np.int64)
    e = s + ph["dur_ns"].to_numpy(np.int64)
    energy = sum(d.energy_mj(s, e) for d in devices)
    covered = np.max([d.covered_ns(s, e) for d in devices], axis=0)
    df = pd.DataFrame({"phase": ph["name"].astype(str).to_numpy(), "time_ns": covered, "energy_mj": energy})
    g = df.groupby("phase", sort=False).agg(count=("time_ns", "size"), time_ns=("time_ns", "sum"),
                                            energy_mj=("energy_mj", "sum")).reset_index()
    outside = total_mj - g["energy_mj"].sum()
    span = max(d.t1 for d in devices) - min(d.t0 for d in devices)
    if outside > 1e-6 * max(total_mj, 1.0):
        g = pd.concat([g, pd.DataFrame([{"phase": "(outside phases)", "count": 0,
                                         "time_ns": max(span - int(g["time_ns"].sum()), 0), "energy_mj": outside}])],
                      ignore_index=True)
    g["energy_j"] = g["energy_mj"] / 1e3
    g["energy_share"] = g["energy_mj"] / total_mj if total_mj > 0 else np.nan
    with np.errstate(divide="ignore", invalid="ignore"):
        g["avg_power_w"] = np.where(g["time_ns"] > 0, g["energy_j"] / (g["time_ns"] / 1e9), np.nan)
    return g.sort_values("energy_j", ascending=False, ignore_index=True)[cols]


def _perf_per_watt(steps: pd.DataFrame, devices: list[_Device], roofline_result: Result | None) -> dict:
    """Tokens, samples and FLOPs per joule (FLOPs: the roofline's counted FLOPs over its steps)."""
    out: dict[str, float] = {}
    if not steps.empty:
        e = steps["energy_j"].sum()
        if steps["tokens"].notna().any() and e > 0:
            out["tokens_per_j"] = float(steps["tokens"].sum(skipna=True) / e)
        if steps["samples"].notna().any() and e > 0:
            out["samples_per_j"] = float(steps["samples"].sum(skipna=True) / e)
    if roofline_result is not None and "steps" in roofline_result.tables:
        rs = roofline_result.table("steps")
        if not rs.empty and rs["flops"].sum() > 0:
            s = rs["ts_ns"].to_numpy(np.int64)
            e = s + rs["dur_ns"].to_numpy(np.int64)
            joules = sum(d.energy_mj(s, e) for d in devices).sum() / 1e3
            if joules > 0:
                out["flops_per_j"] = float(rs["flops"].sum() / joules)
    return out


# ---------------------------------------------------------------------------------------- findings
def _pct(x: float) -> str:
    return f"{100 * x:.1f}%"


# ------------------------------------------------------------------------------- throttling
THERMAL_THROTTLING = "power.thermal_throttling"
POWER_THROTTLING = "power.power_throttling"
#: Raise a throttling finding when a thermal/power reason is active this share of the busy sampled time.
THROTTLE_MIN_SHARE = 0.05
#: Hardware power reasons: the board protects itself, so power throttling by them is critical.
_HW_POWER_REASONS = ("hw_slowdown", "hw_power_brake_slowdown")


def _throttling(trace: Trace, devices: pd.DataFrame, throttle: pd.DataFrame, kind: str) -> Finding | None:
    """Thermal (critical) or power (warning; critical for hardware reasons) throttling of a GPU's busy time."""
    reasons = THERMAL_REASONS if kind == "thermal" else POWER_REASONS
    rows = throttle[throttle["reason"].isin(reasons)]
    if rows.empty:
        return None
    worst = rows.loc[rows["time_share"].idxmax()]
    if worst["time_share"] < THROTTLE_MIN_SHARE:
        return None
    dev = devices[devices["device"] == worst["device"]].iloc[0]
    hw = kind == "power" and worst["reason"] in _HW_POWER_REASONS
    clocked = bool(dev["sm_clock_max_mhz"]) and not math.isnan(dev["sm_clock_max_mhz"])
    lost = worst["time_share"] * (1 - dev["sm_clock_mean_mhz"] / dev["sm_clock_max_mhz"]) if clocked else 0.0
    return Finding(
        id=THERMAL_THROTTLING if kind == "thermal" else POWER_THROTTLING, analyzer=ANALYZER,
        severity="critical" if (kind == "thermal" or hw) else "warning",
        title=f"GPU {int(worst['device'])} clocks were held back by {worst['reason']} "
              f"{_pct(worst['time_share'])} of its busy time",
        evidence={"device": int(worst["device"]), "reason": str(worst["reason"]),
                  "time_share": round(float(worst["time_share"]), 4),
                  "sm_clock_mean_mhz": dev["sm_clock_mean_mhz"], "sm_clock_max_mhz": dev["sm_clock_max_mhz"],
                  "temp_max_c": dev["temp_max_c"], "avg_power_of_limit": dev["avg_power_of_limit"]},
        recommendation=("Check cooling and airflow (inlet temperature, fan/thermal solution, neighbouring "
                        "GPUs); thermal slowdown lowers clocks whatever the workload." if kind == "thermal" else
                        "The GPU runs into its power limit: confirm the limit (nvidia-smi -q -d POWER) is the "
                        "board default; if the work is memory-bound this costs little, if compute-bound a higher "
                        "limit or better cooling restores the clock."),
        estimated_gain=f"up to {_pct(lost)} of busy time: the share throttled × the clock lost (mean vs max SM clock)"
        if clocked else "unknown (no clock readings)",
        gain_fraction=float(min(max(lost, 0), 1)), rank=trace.rank, page="power",
    )


# ------------------------------------------------------------------------------- idle energy
IDLE_ENERGY = "power.idle_energy"
#: Raise the idle-gap finding when idle energy is at least this share of the sampled energy.
IDLE_ENERGY_MIN_SHARE = 0.10
#: The idle-energy finding is a warning (else info) from this share of the sampled energy.
IDLE_ENERGY_WARNING_SHARE = 0.25


def _idle_energy(trace: Trace, summary: dict, idle_power: dict[int, float]) -> Finding | None:
    """Idle time × idle power is a large share of the energy: remove the idle gaps."""
    share = summary.get("idle_energy_share")
    if share is None or math.isnan(share) or share < IDLE_ENERGY_MIN_SHARE:
        return None
    return Finding(
        id=IDLE_ENERGY, analyzer=ANALYZER, severity="warning" if share >= IDLE_ENERGY_WARNING_SHARE else "info",
        title=f"The GPU idled for {summary['idle_time_ns'] / 1e9:.2f} s, "
              f"{_pct(share)} of the sampled energy at idle power",
        evidence={"idle_time_ns": summary["idle_time_ns"], "idle_energy_j": round(summary["idle_energy_j"], 3),
                  "idle_power_w": {int(k): round(v, 1) for k, v in idle_power.items()},
                  "energy_j": round(summary["energy_j"], 3)},
        recommendation="Remove the idle gaps: overlap data loading with compute (DataLoader num_workers, "
                       "pin_memory, prefetch), avoid host syncs (.item(), .cpu()) in the loop, use CUDA graphs "
                       "for launch-bound steps; see the gpu_time analyzer for where the gaps are.",
        estimated_gain=f"up to {_pct(share)} of the energy: idle time × idle power",
        gain_fraction=float(min(share, 1.0)), rank=trace.rank, page="power",
    )


# ------------------------------------------------------------------------------- power cap
POWER_CAP = "power.power_cap"
#: The power-cap finding is raised only when the what-if saves at least this share of energy ...
POWER_CAP_MIN_SAVING = 0.05
#: ... and compute-bound work is at most this share of the window (memory/communication-bound runs).
POWER_CAP_COMPUTE_BOUND_MAX = 0.5
#: The recommended cap is rounded to a multiple of this, W.
POWER_CAP_ROUND_W = 5


def _bound_mix(trace: Trace, roofline_result: Result | None, gpu_time_result: Result | None) -> dict | None:
    """Shares of the GPU window: compute-bound kernels (scale with clock) vs the rest; None without gpu_time."""
    if trace.gpu_events().empty or gpu_time_result is None:
        return None
    row = gpu_time_result.table("breakdown").iloc[0]
    window = float(row["window_ns"])
    if window <= 0:
        return None
    compute = float(row["compute_ns"])
    source = "gpu_time only (all compute kernels counted as compute-bound)"
    cb_share_of_compute = 1.0
    if roofline_result is not None:
        ops = roofline_result.table("ops")
        kernels = ops[~ops["category"].isin(("communication", "transfer"))]
        total = float(kernels["time_ns"].sum())
        memory_bound = float(kernels.loc[kernels["bound"] == "memory", "time_ns"].sum())
        if total > 0:
            cb_share_of_compute = 1.0 - memory_bound / total
            source = "roofline bound per operator × gpu_time compute share (unmodelled kernels as compute-bound)"
    return {
        "compute_bound_share": compute / window * cb_share_of_compute,
        "memory_bound_share": compute / window * (1 - cb_share_of_compute),
        "communication_share": float(row["communication_ns"]) / window,
        "copy_share": (float(row["memcpy_ns"]) + float(row["memset_ns"])) / window,
        "idle_share": float(row["idle_ns"]) / window,
        "source": source,
    }


def _power_cap(trace: Trace, devices: pd.DataFrame, idle_power: dict[int, float], mix: dict) -> Finding | None:
    """Little compute-bound work: a power cap saves energy for at most POWER_CAP_MAX_SLOWDOWN longer steps."""
    avg_w = float(devices["avg_power_w"].mean())
    idle_w = float(np.nanmean(list(idle_power.values()))) if idle_power else math.nan
    if math.isnan(idle_w) or mix["compute_bound_share"] > POWER_CAP_COMPUTE_BOUND_MAX:
        return None
    best = power_cap_whatif(mix["compute_bound_share"], avg_w, idle_w)
    if best is None or best["energy_saving"] < POWER_CAP_MIN_SAVING:
        return None
    limit = float(devices["power_limit_w"].mean())
    cap = POWER_CAP_ROUND_W * round(best["cap_w"] / POWER_CAP_ROUND_W)
    return Finding(
        id=POWER_CAP, analyzer=ANALYZER, severity="info",
        title=f"Only {_pct(mix['compute_bound_share'])} of GPU time is compute-bound: a power cap "
              f"saves energy at little cost",
        evidence={k: round(v, 4) for k, v in mix.items() if isinstance(v, float)}
        | {"bound_source": mix["source"], "avg_power_w": round(avg_w, 1), "idle_power_w": round(idle_w, 1),
           "power_limit_w": limit, "clock_fraction": best["clock_fraction"]},
        recommendation=f"Cap the board power near {cap} W (nvidia-smi -pl {cap}, or NVML "
                       "nvmlDeviceSetPowerManagementLimit), or lock lower SM clocks (nvidia-smi -lgc); "
                       "re-measure with torchscope to confirm the slowdown.",
        estimated_gain=f"about {_pct(best['energy_saving'])} less energy for {_pct(best['slowdown'])} "
                       f"longer steps (model: SM clock × {best['clock_fraction']}, compute-bound time "
                       f"scales with 1/clock, power above idle with clock^{POWER_CLOCK_EXPONENT:g})",
        gain_fraction=float(min(best["energy_saving"], 1.0)), rank=trace.rank, page="power",
    )


# ------------------------------------------------------------------------------- mixed precision
MIXED_PRECISION = "power.mixed_precision"
#: Raise the mixed-precision energy finding when the roofline's FP32 GEMM saving is this share of time.
MIXED_PRECISION_MIN_ENERGY_SHARE = 0.05


def _mixed_precision(trace: Trace, devices: pd.DataFrame, summary: dict,
                     roofline_result: Result | None) -> Finding | None:
    """The roofline's mixed-precision time saving, as energy at the same average power."""
    if roofline_result is None:
        return None
    mp = next((f for f in roofline_result.findings if f.id == ROOFLINE_MIXED_PRECISION), None)
    if mp is None or mp.gain_fraction < MIXED_PRECISION_MIN_ENERGY_SHARE:
        return None
    avg_w = float(devices["avg_power_w"].mean())
    per_step = summary.get("energy_per_step_j")
    return Finding(
        id=MIXED_PRECISION, analyzer=ANALYZER, severity="info",
        title="FP32 matrix work costs energy that tensor cores would save",
        evidence={"roofline_time_saving": round(mp.gain_fraction, 4), "avg_power_w": round(avg_w, 1),
                  **({"energy_per_step_j": round(per_step, 3)} if per_step else {})},
        recommendation=mp.recommendation,
        estimated_gain=f"about {_pct(mp.gain_fraction)} of the energy"
                       + (f" (≈ {mp.gain_fraction * per_step:.2f} J per step)" if per_step else "")
                       + ": the roofline's time saving at the same average power",
        gain_fraction=float(min(mp.gain_fraction, 1.0)), rank=trace.rank, page="power",
    )


def _findings(trace: Trace, devices: pd.DataFrame, throttle: pd.DataFrame, summary: dict,
              idle_power: dict[int, float], roofline_result: Result | None,
              gpu_time_result: Result | None) -> list[Finding]:
    """Every power rule's finding, in report order (the power-cap and mixed-precision rules need gpu_time)."""
    found = [_throttling(trace, devices, throttle, "thermal"), _throttling(trace, devices, throttle, "power"),
             _idle_energy(trace, summary, idle_power)]
    mix = _bound_mix(trace, roofline_result, gpu_time_result)
    if mix is not None:
        found += [_power_cap(trace, devices, idle_power, mix),
                  _mixed_precision(trace, devices, summary, roofline_result)]
    return [f for f in found if f is not None]
